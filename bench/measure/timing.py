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
    samples, only to decide) and are grouped into consecutive, non-overlapping blocks
    of ``warmup_block`` (3) iterations. Warm-up ends at the end of a block once at least
    ``min_warmup`` (3) iterations have run and the medians m_prev, m_last of the last two blocks
    agree: ``|m_last - m_prev| <= warmup_tolerance * min(m_prev, m_last)`` (tolerance 5%); so with
    the defaults it lasts at least 6 iterations. The soft budget never shortens it. Only the hard
    cap may cut it (the cell then has no samples, stop "time-cap"); ``max_warmup_iters`` is a
    safety valve against a step that never settles (only reachable when no cap bounds the cell):
    timing then goes on, flagged "warmup-unsteady" and not stable.

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
    * percentiles p10 / p90: linear interpolation between order statistics, i.e. numpy's default
      ("linear", Hyndman-Fan type 7) and ``statistics.quantiles(method="inclusive")``: with
      h = (n - 1) * p (0-based), j = floor(h): x[j] + (h - j) * (x[j+1] - x[j]);
    * cv: sample standard deviation (n - 1) / mean; 0 when every time is 0; NaN for n < 2;
    * ci95 of the median: a distribution-free order-statistic (binomial) interval,
      ``[x_(l), x_(u)]`` with ``l = floor(n/2 - 1.96*sqrt(n)/2)`` and
      ``u = ceil(1 + n/2 + 1.96*sqrt(n)/2)``, both clipped to [1, n]. (For n = 10: ranks 1 and 10,
      the min and the max; for n = 100: ranks 40 and 61.)

Result flags: "unstable-timing" (cv > 5%), "time-cap" (the cap ended the cell), "few-samples"
(fewer than 10 timed iterations), "warmup-unsteady" (warm-up ended by ``max_warmup_iters`` or by
the cap before it was steady). ``stable`` is False when the cap ended the cell before the sample
rules held, when cv > 5% (or is undefined) or when the warm-up never became steady.

Several ranks (``measure_lockstep``): every continue / stop / block-size decision goes through
``agree`` (an all-reduce MAX; a minimum is agreed as ``-agree(-x)``), between blocks, so every
rank runs exactly the same number of warm-up and timed iterations under the same rules: warm-up
ends when every rank is steady, timing converges when every rank's CI has converged, the budget
and the cap end it when any rank's has run out. ``measure`` is the same loop with ``agree`` the
identity.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

CV_LIMIT = 0.05          # cv above this: "unstable-timing", not stable
FEW_SAMPLES = 10         # fewer timed iterations than this: "few-samples"
WARMUP_CAP_SHARE = 0.5   # warm-up stops (unsteady, flagged) before it would pass half the hard cap
RECORD_KEYS = ("iters", "warmup_iters", "latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_cv",
               "latency_ci95_ms", "timing_stable", "timing_stop", "timing_flags")


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


def median_ci95_ranks(n: int) -> tuple[int, int]:
    """1-based order-statistic ranks (l, u) of the distribution-free 95% CI of the median:
    l = floor(n/2 - 1.96*sqrt(n)/2), u = ceil(1 + n/2 + 1.96*sqrt(n)/2), clipped to [1, n].

    Written by hand: torch.utils.benchmark gives no confidence interval of the median (its
    Measurement only reports median / IQR), and scipy is not a dependency."""
    half = 1.96 * math.sqrt(n) / 2
    lo = math.floor(n / 2 - half)
    hi = math.ceil(1 + n / 2 + half)
    return min(max(lo, 1), n), min(max(hi, 1), n)


def median_ci95(sorted_ms: list[float]) -> tuple[float, float]:
    """[x_(l), x_(u)] with the ranks of ``median_ci95_ranks``; (NaN, NaN) if empty."""
    if not sorted_ms:
        return math.nan, math.nan
    lo, hi = median_ci95_ranks(len(sorted_ms))
    return sorted_ms[lo - 1], sorted_ms[hi - 1]


def _ci_converged(sorted_ms: list[float], tolerance: float) -> bool:
    if not sorted_ms:
        return False
    med = statistics.median(sorted_ms)
    lo, hi = median_ci95(sorted_ms)
    return med - lo <= tolerance * med and hi - med <= tolerance * med


def _none_if_nan(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


@dataclass
class Latency:
    """One cell's timing, the latency tracker's result: the timed samples (warm-up excluded, kept
    in memory) and what the statistics, flags and record fields are computed from."""

    times_ms: list[float]
    warmup_iters: int
    warmup_ms: float
    stop_reason: str = "max-iters"   # "converged" | "budget" | "time-cap" | "max-iters"
    sample_rules_met: bool = True    # min_iters and min_time_s held (or max_iters ended them) at the stop
    warmup_steady: bool = True       # warm-up ended because two block medians agreed

    @property
    def iters(self) -> int:
        return len(self.times_ms)

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
    def cv(self) -> float:
        if len(self.times_ms) < 2:
            return math.nan
        mean = statistics.fmean(self.times_ms)
        return statistics.stdev(self.times_ms) / mean if mean > 0 else 0.0

    @property
    def ci95_ms(self) -> list[float]:
        return list(median_ci95(self._sorted))

    @property
    def stable(self) -> bool:
        capped_short = self.stop_reason == "time-cap" and not self.sample_rules_met
        return not capped_short and self.warmup_steady and self.cv <= CV_LIMIT  # NaN cv: not stable

    @property
    def flags(self) -> list[str]:
        out = []
        if self.cv > CV_LIMIT:
            out.append("unstable-timing")
        if self.stop_reason == "time-cap":
            out.append("time-cap")
        if self.iters < FEW_SAMPLES:
            out.append("few-samples")
        if not self.warmup_steady:
            out.append("warmup-unsteady")
        return out

    def to_record(self) -> dict:
        """The record fields (``RECORD_KEYS``); undefined statistics (no or one sample) are None."""
        return {
            "iters": self.iters,
            "warmup_iters": self.warmup_iters,
            "latency_ms": _none_if_nan(self.median_ms),
            "latency_p10_ms": _none_if_nan(self.p10_ms),
            "latency_p90_ms": _none_if_nan(self.p90_ms),
            "latency_cv": _none_if_nan(self.cv),
            "latency_ci95_ms": None if not self.times_ms else self.ci95_ms,
            "timing_stable": self.stable,
            "timing_stop": self.stop_reason,
            "timing_flags": self.flags,
        }


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
    min_warmup: int = 3
    warmup_tolerance: float = 0.05
    max_warmup_iters: int = 1000

    def check(self, budget_s: float, max_time_s: float | None) -> None:
        for name, v in (("budget_s", budget_s), ("min_time_s", self.min_time_s), ("block_s", self.block_s),
                        ("ci_tolerance", self.ci_tolerance), ("warmup_tolerance", self.warmup_tolerance)):
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
        while len(warm) < self.o.max_warmup_iters:
            if warm and self.warmup_cut(warm):
                return warm, False  # the cap's first half is spent: leave the rest for timed samples (flagged)
            if self.cap_room(warm) < 1:
                return warm, None
            warm += time_block(self.step, self.device, 1, self.clock)
            if self._steady(warm, block_medians):
                return warm, True
        return warm, False

    def _steady(self, warm: list[float], block_medians: list[float]) -> bool:
        """At a warm-up block's end: do the last two block medians agree on every rank?"""
        o = self.o
        if len(warm) % o.warmup_block:
            return False
        block_medians.append(statistics.median(warm[-o.warmup_block:]))
        if len(block_medians) < 2 or len(warm) < o.min_warmup:
            return False
        m_prev, m_last = block_medians[-2], block_medians[-1]
        here = abs(m_last - m_prev) <= o.warmup_tolerance * min(m_prev, m_last)
        return self.agree_max(0.0 if here else 1.0) == 0.0

    # ---- timed blocks
    def sample(self, warm: list[float], steady: bool) -> Latency:
        times: list[float] = []
        t_timed = self.clock()
        while True:
            reason, size, need = self._decide(times, warm, t_timed)
            if reason is not None:
                return Latency(times_ms=times, warmup_iters=len(warm), warmup_ms=sum(warm), stop_reason=reason,
                               sample_rules_met=not need or reason == "max-iters", warmup_steady=steady)
            times += time_block(self.step, self.device, size, self.clock)

    def _decide(self, times: list[float], warm: list[float], t_timed: int) -> tuple[str | None, int, bool]:
        """Between blocks: (stop reason or None, next block size, some rank still short of the
        sample rules). Every input is agreed, in the same order on every rank."""
        o = self.o
        n = len(times)
        recent = times[-3:] if n else warm[-3:]
        est_ms = statistics.median(recent)
        need_here = n < o.min_iters or sum(times) < o.min_time_s * 1e3
        need = self.agree_max(1.0 if need_here else 0.0) > 0
        unconverged = self.agree_max(0.0 if _ci_converged(sorted(times), o.ci_tolerance) else 1.0) > 0
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
                       sample_rules_met=False, warmup_steady=False)
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


def peak_matmul_tflops(device: torch.device | str, dtype: torch.dtype, budget_s: float = 1.0) -> float:
    """Peak achievable TFLOP/s measured by a large square matmul in ``dtype`` on ``device``:
    the denominator of MFU, measured in the same run rather than read off a datasheet. Takes the
    best (minimum) time of a short run (a peak, not a typical figure); NaN if the cap left no
    timed iteration."""
    device = torch.device(device)
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = measure(lambda: torch.mm(a, b), device, budget_s=budget_s, max_time_s=10 * budget_s + 10,
                     min_iters=3, min_time_s=0.0, max_iters=50)
    if not timing.times_ms:
        return math.nan
    return 2 * n**3 / (min(timing.times_ms) / 1e3) / 1e12
