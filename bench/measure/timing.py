"""Timing protocol: warm up until steady, then time until the median is known to ±2% or the
soft budget is spent; a hard cap per cell is the only thing that may end a cell early.

Clocks
    CPU work is synchronous, so a host clock read on each side of an iteration is exact; the
    clock is injectable (``clock``, default ``time.perf_counter_ns``, integer nanoseconds) and the
    same clock governs every budget and cap decision, so a test can script what each step "takes".
    CUDA work is asynchronous: each iteration is bracketed by CUDA events recorded on the current
    stream and the host synchronises once per block, after the block, before reading them; the
    clock still governs budget and cap decisions. The body of a timed block is only the step and
    two clock reads (or two event records) into preallocated lists: block sizing, statistics and
    every stop decision happen between blocks (see tests/benchmarks/timing_overhead.py).

Warm-up (never enters the statistics)
    Warm-up iterations run one at a time (on CUDA, one synchronize each: they are never used as
    samples, only to decide) and are grouped into consecutive, non-overlapping blocks. A block's
    size is set when it starts: ``warmup_block`` (3) iterations, fewer for a slow step, so that a
    block holds about ``warmup_block_s`` (1 s) of work (at least 1; the estimate is the latest
    iteration). Warm-up ends at the end of a block once at least ``min_warmup`` (3) iterations
    have run and the medians m_prev, m_last of the last two blocks agree:
    ``|m_last - m_prev| <= warmup_tolerance * min(m_prev, m_last)`` (tolerance 5%). So a fast
    step warms up for at least 6 iterations and a step of a second or more for at least 3 (its
    first, cold iteration, then two that agree): slow cells spend their time on samples. The
    soft budget never shortens it. Only the hard cap may cut it (the cell then has no samples,
    stop "time-cap"); ``max_warmup_iters`` is a safety valve against a step that never settles
    (only reachable when no cap bounds the cell): timing then goes on, flagged "warmup-unsteady".

Samples
    Timed iterations run in blocks. The sample rules: at least ``min_iters`` (10) iterations and at
    least ``min_time_s`` (1 s) of summed iteration times (``max_iters`` may end the second rule,
    never the first: ``max_iters >= min_iters``). Once they hold, timing stops at the first block
    boundary where the 95% CI of the median lies within ±``ci_tolerance`` (2%) of the median
    (``median - low <= 0.02 * median`` and ``high - median <= 0.02 * median``): "converged"; or
    where the budget is spent (``budget_s`` seconds on the clock since the first timed iteration
    began): "budget"; or at ``max_iters`` timed iterations: "max-iters". In that order of
    precedence, and before the cap.

Hard cap (``max_time_s``, seconds on the clock from entry, warm-up included; None = no cap)
    No iteration starts unless it is predicted to end by the cap, the prediction being the median
    of the three latest iteration times (the first iteration of a cell, with nothing to predict
    from, starts if the cap has not passed). Blocks are shortened to the iterations predicted to
    fit. When no further iteration fits, the cell ends with stop "time-cap", flag "time-cap".

Block size (timed)
    ``floor(block_s / est)`` iterations (est = the same three-iteration median), at least 1,
    at most ``max_iters - n`` and what fits before the cap; once the sample rules hold, also at
    most ``ceil(budget_left / est)`` so a block does not run far past the budget. ``block_s=0``
    gives one-iteration blocks, i.e. a decision after every iteration.

Statistics (times in ms, x_(1) <= ... <= x_(n) sorted, 1-based)
    * median: ``statistics.median`` (mean of the two middle values for even n);
    * percentiles p10 / p90 (and p99 where n >= 100): linear interpolation between order
      statistics, i.e. numpy's default ("linear", Hyndman-Fan type 7): with h = (n - 1) * p
      (0-based), j = floor(h): x[j] + (h - j) * (x[j+1] - x[j]);
    * cv: sample standard deviation (n - 1) / mean; 0 when every time is 0; NaN for n < 2. Shown,
      never a flag: dispersion is a property of the step, not an error;
    * ci95 of the median: the distribution-free order-statistic interval ``[x_(l), x_(n+1-l)]``
      with the exact binomial rank: the largest l whose coverage
      ``1 - 2 * P(Bin(n, 1/2) <= l - 1)`` is still >= 95%. That coverage is recorded
      (``latency_ci_coverage``; n = 10: ranks 2 and 9, 97.9%; n = 100: ranks 40 and 61, 96.5%).
      Below n = 6 no interval reaches 95% ([min, max] covers 93.8% at n = 5) and none is given.
      The coverage is that of a fixed n: timing stops at the first block whose interval is narrow
      enough, which lowers the true coverage somewhat (sequential testing); the flags below and
      the repeats of bench.stats, not this interval, carry comparisons.

Throughput (bench.scenarios.step): images over the summed time of the timed blocks, the
sustained rate of timm's benchmark.py and MLPerf Offline; the median step is the latency.

Result flags (each means a figure may be wrong): "wide-ci" (the CI's half-width exceeds 2% of
the median on either side, or there is no CI: this includes a cell that stopped on its budget
before converging), "drift" (n >= 18 and the medians of the first and last thirds differ by more
than 2% of the median, with their own 95% intervals disjoint: the step changed speed while it was
timed), "few-samples" (fewer than 10 timed iterations), "time-cap" (the cap ended the cell),
"warmup-unsteady" (warm-up ended by ``max_warmup_iters`` or by the cap before it was steady).
``stable`` is True when none of them is raised.

Several ranks (``measure_lockstep``): every continue / stop / block-size decision goes through
``agree`` (an all-reduce MAX; a minimum is agreed as ``-agree(-x)``), between blocks, so every
rank runs exactly the same number of warm-up and timed iterations under the same rules: warm-up
ends when every rank is steady, timing converges when every rank's CI has converged, the budget
and the cap end it when any rank's has run out. ``measure`` is the same loop with ``agree`` the
identity.
"""
from __future__ import annotations

import collections
import fractions
import functools
import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from bench.record import thinned  # one thinning rule (MAX_KEPT_SAMPLES) for writers and readers

FEW_SAMPLES = 10         # fewer timed iterations than this: "few-samples"
WIDE_CI = 0.02           # a CI half-width above this share of the median: "wide-ci"
DRIFT_MIN_N = 18         # the drift test needs thirds of at least 6, the smallest n with a 95% interval
CI_LEVEL = 0.95
WARMUP_CAP_SHARE = 0.5   # warm-up stops (unsteady, flagged) before it would pass half the hard cap
RECORD_KEYS = ("iters", "warmup_iters", "latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_p99_ms",
               "latency_cv", "latency_ci95_ms", "latency_ci_coverage", "latency_samples_ms", "latency_blocks",
               "samples_thinned", "timing_stable", "timing_stop", "timing_flags")
DOUBT_FLAGS = ("wide-ci", "drift", "few-samples", "time-cap", "warmup-unsteady")


# --------------------------------------------------------------------------- statistics
def median(values: list[float]) -> float:
    """``statistics.median`` (mean of the two middle values for even n); NaN if empty."""
    return statistics.median(values) if values else math.nan


def percentile(sorted_ms: list[float], p: float) -> float:
    """Linear interpolation between order statistics (numpy default, type 7); NaN if empty."""
    n = len(sorted_ms)
    if n == 0:
        return math.nan
    h = (n - 1) * p
    j = math.floor(h)
    if j + 1 >= n:
        return sorted_ms[n - 1]
    return sorted_ms[j] + (h - j) * (sorted_ms[j + 1] - sorted_ms[j])


EXACT_RANKS_MAX_N = 20000  # exact integer binomial sums up to here (30 ms at the top); scipy above


@functools.lru_cache(maxsize=4096)
def median_ci95_ranks(n: int) -> tuple[int, int] | None:
    """1-based ranks (l, n + 1 - l) of the distribution-free 95% CI of the median: the largest l
    whose exact coverage ``1 - 2 * P(Bin(n, 1/2) <= l - 1)`` is >= 95%; None below n = 6, where
    even [min, max] covers less.

    Written by hand: torch.utils.benchmark reports only the median and IQR, and scipy has no
    order-statistic interval of the median. The stopping rule asks after every block, so it is
    cached and, up to ``EXACT_RANKS_MAX_N``, summed in exact integers (C(n, k) over 2^n) rather
    than asked of scipy.stats.binom rank by rank: that took 1 s of a 2 s cell, its import 0.6 s
    of it. Both give the same ranks for every n below 3,000 (checked when this was written)."""
    if n < 1:
        return None
    if n > EXACT_RANKS_MAX_N:
        return _ranks_by_scipy(n)
    tail = round((1 - CI_LEVEL) / 2 * 1000)  # P(Bin <= l - 1) <= 25/1000 on each side
    lo = 0
    for k, below in enumerate(_counts_below(n, (n + 1) // 2)):
        if 1000 * below > tail * (1 << n):
            break
        lo = k + 1
    return (lo, n + 1 - lo) if lo else None


def _counts_below(n: int, upto: int):
    """sum of C(n, j) for j <= k, for k = 0 .. upto - 1, in exact integers (over 2^n: P(Bin(n, 1/2) <= k))."""
    term, below = 1, 0
    for k in range(upto):
        below += term
        yield below
        term = term * (n - k) // (k + 1)


def ci_coverage(n: int, lo: int) -> float:
    """Exact coverage of [x_(lo), x_(n+1-lo)] as an interval for the median of a continuous
    distribution: 1 - 2 * P(Bin(n, 1/2) <= lo - 1) (in exact integers up to EXACT_RANKS_MAX_N)."""
    if n > EXACT_RANKS_MAX_N:
        from scipy.stats import binom

        return float(1 - 2 * binom.cdf(lo - 1, n, 0.5))
    below = collections.deque(_counts_below(n, lo), maxlen=1)  # the last sum: j <= lo - 1
    return float(1 - fractions.Fraction(2 * (below[0] if below else 0), 1 << n))


def _ranks_by_scipy(n: int) -> tuple[int, int] | None:
    import numpy as np
    from scipy.stats import binom

    lows = np.arange(1, (n + 1) // 2 + 1)  # coverage falls as lo rises: the last lo that keeps 95%
    kept = np.nonzero(1 - 2 * binom.cdf(lows - 1, n, 0.5) >= CI_LEVEL)[0]
    return (int(lows[kept[-1]]), n + 1 - int(lows[kept[-1]])) if kept.size else None


def median_ci95(sorted_ms: list[float]) -> tuple[float, float]:
    """[x_(l), x_(u)] with the ranks of ``median_ci95_ranks``; (NaN, NaN) below n = 6."""
    ranks = median_ci95_ranks(len(sorted_ms))
    if ranks is None:
        return math.nan, math.nan
    return sorted_ms[ranks[0] - 1], sorted_ms[ranks[1] - 1]


def ci_within(sorted_ms: list[float], tolerance: float) -> bool:
    """Is the 95% CI of the median within +-tolerance of the median? False without a CI."""
    ranks = median_ci95_ranks(len(sorted_ms))
    if ranks is None:
        return False
    med = statistics.median(sorted_ms)
    lo, hi = sorted_ms[ranks[0] - 1], sorted_ms[ranks[1] - 1]
    return med - lo <= tolerance * med and hi - med <= tolerance * med


def drifted(times_ms: list[float], tolerance: float = WIDE_CI) -> bool:
    """Did the step change speed while timed? The first and last thirds' medians differ by more
    than ``tolerance`` of the whole median and their own 95% intervals do not overlap. A hand-written
    test because it is about order (a trend), which Mann-Whitney over the pooled sample ignores."""
    n = len(times_ms)
    if n < DRIFT_MIN_N:
        return False
    third = n // 3
    first, last = sorted(times_ms[:third]), sorted(times_ms[-third:])
    (f_lo, f_hi), (l_lo, l_hi) = median_ci95(first), median_ci95(last)
    apart = f_hi < l_lo or l_hi < f_lo
    return apart and abs(statistics.median(last) - statistics.median(first)) > tolerance * statistics.median(times_ms)


def _none_if_nan(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


@dataclass
class Latency:
    """One cell's timing, the latency tracker's result: the timed samples in order (warm-up
    excluded), the sizes of the blocks they were timed in, and how timing ended. Every statistic,
    flag and record field is computed from ``times_ms``; with several ranks the scenario replaces
    it by the per-iteration maximum over ranks (``over_ranks``), so all of them describe one series."""

    times_ms: list[float]
    warmup_iters: int
    warmup_ms: float
    stop_reason: str = "max-iters"   # "converged" | "budget" | "time-cap" | "max-iters"
    sample_rules_met: bool = True    # min_iters and min_time_s held (or max_iters ended them) at the stop
    warmup_steady: bool = True       # warm-up ended because two block medians agreed
    blocks: list[int] | None = None  # timed block sizes, in order (None: not known, one block)

    @property
    def iters(self) -> int:
        return len(self.times_ms)

    @property
    def total_s(self) -> float:
        """The summed time of the timed iterations: the denominator of the sustained throughput."""
        return math.fsum(self.times_ms) / 1e3

    @property
    def _sorted(self) -> list[float]:
        return sorted(self.times_ms)

    @property
    def median_ms(self) -> float:
        return median(self.times_ms)

    @property
    def p10_ms(self) -> float:
        return percentile(self._sorted, 0.10)

    @property
    def p90_ms(self) -> float:
        return percentile(self._sorted, 0.90)

    @property
    def p99_ms(self) -> float:
        """NaN below 100 samples, where the 99th percentile is an extrapolation of the maximum."""
        return percentile(self._sorted, 0.99) if self.iters >= 100 else math.nan

    @property
    def cv(self) -> float:
        if len(self.times_ms) < 2:
            return math.nan
        mean = statistics.fmean(self.times_ms)
        return statistics.stdev(self.times_ms) / mean if mean > 0 else 0.0

    @property
    def ci95_ms(self) -> list[float]:
        return list(median_ci95(self._sorted))

    @property
    def ci_coverage(self) -> float:
        ranks = median_ci95_ranks(self.iters)
        return ci_coverage(self.iters, ranks[0]) if ranks else math.nan

    @property
    def flags(self) -> list[str]:
        out = []
        if not ci_within(self._sorted, WIDE_CI):
            out.append("wide-ci")
        if drifted(self.times_ms):
            out.append("drift")
        if self.iters < FEW_SAMPLES:
            out.append("few-samples")
        if self.stop_reason == "time-cap":
            out.append("time-cap")
        if not self.warmup_steady:
            out.append("warmup-unsteady")
        return out

    @property
    def stable(self) -> bool:
        """No flag of doubt: enough samples, a narrow CI, no drift, not capped, warm-up steady."""
        return not self.flags

    @property
    def kept_samples_ms(self) -> list[float]:
        """The samples a record keeps (``MAX_KEPT_SAMPLES`` spread evenly: one JSON line)."""
        return thinned(self.times_ms)

    def over_ranks(self, slowest_ms: list[float]) -> "Latency":
        """The same timing with the per-iteration maximum over ranks as its samples."""
        return replace(self, times_ms=list(slowest_ms))

    def to_record(self) -> dict:
        """The record fields (``RECORD_KEYS``); undefined statistics (too few samples) are None."""
        kept = self.kept_samples_ms
        return {
            "iters": self.iters,
            "warmup_iters": self.warmup_iters,
            "latency_ms": _none_if_nan(self.median_ms),
            "latency_p10_ms": _none_if_nan(self.p10_ms),
            "latency_p90_ms": _none_if_nan(self.p90_ms),
            "latency_p99_ms": _none_if_nan(self.p99_ms),
            "latency_cv": _none_if_nan(self.cv),
            "latency_ci95_ms": None if median_ci95_ranks(self.iters) is None else self.ci95_ms,
            "latency_ci_coverage": _none_if_nan(self.ci_coverage),
            "latency_samples_ms": kept,
            "latency_blocks": list(self.blocks) if self.blocks is not None else [self.iters],
            "samples_thinned": len(kept) < self.iters,
            "timing_stable": self.stable,
            "timing_stop": self.stop_reason,
            "timing_flags": self.flags,
        }


@dataclass
class Throughput:
    """The sustained rate of one timed series: images over the summed time of the timed
    iterations (timm's benchmark.py, MLPerf Offline), so a stall every few steps counts; per rank
    and for the whole job, each rank's own median step kept beside it. ``bench run`` cells and
    fine-tunes alike (the series is the per-step maximum over ranks)."""

    per_rank_rate: float                # images/s of one rank
    world_size: int
    batch: int                          # per rank
    per_rank_step_ms: list[float]       # each rank's own median step

    @classmethod
    def sustained(cls, latency: Latency, batch: int, world_size: int, per_rank_step_ms: list[float]) -> "Throughput":
        return cls(batch * latency.iters / latency.total_s, world_size, batch, list(per_rank_step_ms))

    @property
    def images_per_s(self) -> float:
        """The whole job's rate."""
        return self.per_rank_rate * self.world_size

    def to_record(self) -> dict:
        return {"per_rank_step_ms": self.per_rank_step_ms, "global_batch": self.batch * self.world_size,
                "throughput": self.images_per_s, "throughput_per_rank": self.per_rank_rate}


# --------------------------------------------------------------------------- timed blocks
def time_block(step: Callable[[], object], device: torch.device | str, n: int,
               clock: Callable[[], int] = time.perf_counter_ns) -> list[float]:
    """Run ``step`` n times and return per-iteration milliseconds (host ``clock`` on CPU, CUDA
    events with one synchronize after the block on CUDA). Nothing but the step and the two clock
    reads / event records runs inside the loop."""
    if n <= 0:
        return []
    device = torch.device(device)
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            starts[i].record()
            step()
            ends[i].record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    t0 = [0] * n
    t1 = [0] * n
    for i in range(n):
        t0[i] = clock()
        step()
        t1[i] = clock()
    return [(b - a) / 1e6 for a, b in zip(t0, t1)]


# --------------------------------------------------------------------------- the protocol
def _fits(left_ns: float, est_ms: float, limit: int, rounding: Callable[[float], float]) -> int:
    """Iterations of ``est_ms`` that fit in ``left_ns`` (rounded down or up), within [0, limit]."""
    if left_ns <= 0:
        return 0
    if est_ms <= 0:
        return limit
    return int(min(limit, rounding(left_ns / (est_ms * 1e6))))


@dataclass(frozen=True)
class _Options:
    """The protocol's knobs (``measure``'s keywords), checked once."""

    min_iters: int = 10
    min_time_s: float = 1.0
    max_iters: int = 10_000
    block_s: float = 0.1
    ci_tolerance: float = 0.02
    warmup_block: int = 3
    warmup_block_s: float = 1.0
    min_warmup: int = 3
    warmup_tolerance: float = 0.05
    max_warmup_iters: int = 1000

    def check(self, budget_s: float, max_time_s: float | None) -> None:
        for name, v in (("budget_s", budget_s), ("min_time_s", self.min_time_s), ("block_s", self.block_s),
                        ("ci_tolerance", self.ci_tolerance), ("warmup_tolerance", self.warmup_tolerance),
                        ("warmup_block_s", self.warmup_block_s)):
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if max_time_s is not None and not (max_time_s >= 0):
            raise ValueError(f"max_time_s must be >= 0 or None, got {max_time_s!r}")
        if not 1 <= self.min_iters <= self.max_iters:
            raise ValueError(f"need 1 <= min_iters <= max_iters, got {self.min_iters}, {self.max_iters}")
        if self.warmup_block < 1 or self.min_warmup < 0 or self.max_warmup_iters < 1:
            raise ValueError("need warmup_block >= 1, min_warmup >= 0, max_warmup_iters >= 1")


def _stop_reason(need: bool, unconverged: bool, budget_room: int, at_max_iters: bool, cap_room: int) -> str | None:
    """Why timing stops at this block boundary (None: go on), in the docstring's precedence."""
    if not need and not unconverged:
        return "converged"
    if not need and budget_room <= 0:
        return "budget"
    if at_max_iters:
        return "max-iters"
    if cap_room < 1:
        return "time-cap"
    return None


class _Session:
    """One cell under the protocol: the step, the clock, the cap, and the agreement between ranks
    (every decision goes through ``agree``, in the same order on every rank)."""

    def __init__(self, step, device, budget_s: float, max_time_s: float | None, agree, clock, options: _Options):
        self.step, self.device, self.agree, self.clock, self.o = step, torch.device(device), agree, clock, options
        self.budget_ns = budget_s * 1e9
        self.t_start = clock()
        self.cap_ns = math.inf if max_time_s is None else max_time_s * 1e9

    def agree_max(self, v: float) -> float:
        return float(self.agree(float(v)))

    def agree_min(self, v: float) -> float:
        return -self.agree_max(-float(v))

    def cap_room(self, recent_ms: list[float]) -> int:
        """Iterations predicted to fit before the cap, agreed (min over ranks)."""
        left = self.cap_ns - (self.clock() - self.t_start)
        if math.isinf(left):
            room = self.o.max_iters
        elif not recent_ms:  # nothing to predict from: the cell's first iteration starts if the cap hasn't passed
            room = 1 if left > 0 else 0
        else:
            room = _fits(left, statistics.median(recent_ms[-3:]), self.o.max_iters, math.floor)
        return int(self.agree_min(room))

    def warmup_cut(self, recent_ms: list[float]) -> bool:
        """Warm-up may use at most WARMUP_CAP_SHARE of the cap (agreed), so that a slow cell still
        gets timed samples rather than none."""
        if math.isinf(self.cap_ns):
            return False
        next_end = self.clock() - self.t_start + statistics.median(recent_ms[-3:]) * 1e6
        return self.agree_max(1.0 if next_end > WARMUP_CAP_SHARE * self.cap_ns else 0.0) > 0

    # ---- warm-up: one iteration at a time, blocks of warmup_block for the steadiness test
    def warm_up(self) -> tuple[list[float], bool | None]:
        """(warm-up times, steady); steady is None when the cap left no room to finish warming up."""
        warm: list[float] = []
        block_medians: list[float] = []
        block_start, block_size = 0, 0  # size 0: the next iteration opens a block and sizes it
        while len(warm) < self.o.max_warmup_iters:
            if warm and self.warmup_cut(warm):
                return warm, False  # the cap's first half is spent: leave the rest for timed samples (flagged)
            if self.cap_room(warm) < 1:
                return warm, None
            warm += time_block(self.step, self.device, 1, self.clock)
            if not block_size:
                block_size = self._warmup_block_size(warm[-1])
            if len(warm) - block_start < block_size:
                continue
            if self._steady(warm[block_start:], block_medians, len(warm)):
                return warm, True
            block_start, block_size = len(warm), 0
        return warm, False

    def _warmup_block_size(self, last_ms: float) -> int:
        """``warmup_block`` iterations, fewer for a slow step (about ``warmup_block_s`` of work,
        at least 1), agreed over ranks so that every rank's blocks end together."""
        o = self.o
        size = o.warmup_block if last_ms <= 0 else min(o.warmup_block, max(1, int(o.warmup_block_s * 1e3 / last_ms)))
        return int(self.agree_min(size))

    def _steady(self, block: list[float], block_medians: list[float], n_warm: int) -> bool:
        """At a warm-up block's end: do the last two block medians agree on every rank?"""
        block_medians.append(statistics.median(block))
        if len(block_medians) < 2 or n_warm < self.o.min_warmup:
            return False
        m_prev, m_last = block_medians[-2], block_medians[-1]
        here = abs(m_last - m_prev) <= self.o.warmup_tolerance * min(m_prev, m_last)
        return self.agree_max(0.0 if here else 1.0) == 0.0

    # ---- timed blocks
    def sample(self, warm: list[float], steady: bool) -> Latency:
        times: list[float] = []
        blocks: list[int] = []
        t_timed = self.clock()
        while True:
            reason, size, need = self._decide(times, warm, t_timed)
            if reason is not None:
                return Latency(times_ms=times, warmup_iters=len(warm), warmup_ms=sum(warm), stop_reason=reason,
                               sample_rules_met=not need or reason == "max-iters", warmup_steady=steady,
                               blocks=blocks)
            times += time_block(self.step, self.device, size, self.clock)
            blocks.append(size)

    def _decide(self, times: list[float], warm: list[float], t_timed: int) -> tuple[str | None, int, bool]:
        """Between blocks: (stop reason or None, next block size, some rank still short of the
        sample rules). Every input is agreed, in the same order on every rank."""
        o = self.o
        n = len(times)
        recent = times[-3:] if n else warm[-3:]
        est_ms = statistics.median(recent)
        need_here = n < o.min_iters or sum(times) < o.min_time_s * 1e3
        need = self.agree_max(1.0 if need_here else 0.0) > 0
        unconverged = self.agree_max(0.0 if ci_within(sorted(times), o.ci_tolerance) else 1.0) > 0
        budget_left = self.budget_ns - (self.clock() - t_timed)
        budget_room = int(self.agree_min(_fits(budget_left, est_ms, o.max_iters, math.ceil)))
        room = self.cap_room(recent)
        block_ns = o.block_s * 1e9
        pref = int(self.agree_min(max(1, _fits(block_ns, est_ms, o.max_iters, math.floor)) if block_ns > 0 else 1))
        reason = _stop_reason(need, unconverged, budget_room, n >= o.max_iters, room)
        size = min(pref, o.max_iters - n, room)
        if not need:
            size = min(size, budget_room)
        return reason, max(1, size), need


def _run(step, device, budget_s, max_time_s, agree, *, clock: Callable[[], int] = time.perf_counter_ns,
         **options) -> Latency:
    opts = _Options(**options)
    opts.check(budget_s, max_time_s)
    session = _Session(step, device, budget_s, max_time_s, agree, clock, opts)
    warm, steady = session.warm_up()
    if steady is None:
        return Latency(times_ms=[], warmup_iters=len(warm), warmup_ms=sum(warm), stop_reason="time-cap",
                       sample_rules_met=False, warmup_steady=False, blocks=[])
    return session.sample(warm, steady)


def measure(step: Callable[[], object], device: torch.device | str, budget_s: float,
            max_time_s: float | None = None, **options) -> Latency:
    """Time ``step`` on ``device`` under the protocol of this module's docstring: warm-up until two
    consecutive block medians agree, then at least ``min_iters`` iterations and ``min_time_s`` of
    timed iterations, then blocks until the 95% CI of the median is within ±``ci_tolerance`` or
    ``budget_s`` seconds of timing are spent; ``max_time_s`` (warm-up included) is a hard cap.
    ``options`` are ``_run``'s keywords (``clock`` returns integer nanoseconds)."""
    return _run(step, device, budget_s, max_time_s, lambda v: v, **options)


def measure_lockstep(step: Callable[[], object], device: torch.device | str, budget_s: float,
                     agree: Callable[[float], float], max_time_s: float | None = None, **options) -> Latency:
    """``measure`` for several ranks whose step holds collectives. ``agree(value) -> float`` must
    be an all-reduce MAX across ranks, and every rank must pass the same options (``max_time_s``
    None on all ranks or on none). Every decision is agreed between blocks, so all ranks run
    exactly the same number of warm-up and timed iterations and no rank stops while another
    still waits in a collective. With one rank (``agree=lambda v: v``) it is ``measure``."""
    return _run(step, device, budget_s, max_time_s, agree, **options)
