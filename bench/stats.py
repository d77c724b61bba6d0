"""Comparisons with confidence: one cell against another, with an interval, a p-value, a
correction for the many pairs of one comparison, and a verdict a reader can act on.

Two cells A and B are either two models at the same task, resolution, batch, mode and settings in
one run (``compare_models``), or the same cell identity in two runs (``compare_runs``).

- The ratio is B/A of the metric's estimate: the median step (latency; the mean of the repeat
  medians when there are several repeats) or the sustained throughput (images over summed time).
- Its 95% interval is a seeded bootstrap, reproducible for a seed. With one repeat per side it
  resamples the iterations (``scipy.stats.bootstrap``): a within-run interval, and ``basis``
  says so. With several it is hierarchical: resample the repeats, then the iterations within
  each (a short loop of our own: scipy's bootstrap resamples one level only).
- Two models of one run with several rounds are compared by their paired ratios within each
  round (they shared that round's machine state): a t interval and a one-sample t test on the
  log ratios. With a handful of rounds a percentile bootstrap of a mean undercovers badly (three
  rounds give 27 distinct resamples), the t interval does not.
- The p-value is Mann-Whitney U over the samples (one repeat) or over the repeat figures
  (several); q-values are Benjamini-Hochberg over every pair of one comparison
  (``scipy.stats.false_discovery_control``), so a large sweep does not guarantee false alarms.
- The verdict uses a threshold t: ``faster``/``slower`` when q < 0.05 and the interval lies wholly
  beyond +-t; ``same`` when the interval lies wholly inside +-t (equivalence, as in TOST: proven
  equal within t, which "not significant" is not); ``inconclusive`` otherwise, with an estimate of
  the samples or repeats that would settle it. Peak memory has no iterations: ``compare_values``
  says ``more``/``less``/``same`` within a tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np


def _sps():
    """scipy.stats, imported on first use: `bench --help`, `bench run` and `bench compare --help`
    import this module for its names, and scipy.stats costs more to import than the rest of it."""
    from scipy import stats

    return stats

DEFAULT_THRESHOLD = {"cpu": 0.03, "cuda": 0.02}
# Peak RSS of one cell moves between identical visits on CPU (allocator, page cache, what the
# previous cell left). Measured on the 2-core machine on 2026-11-28 over 4 runs of the same cells
# (results/20261128-main-cpu-{a,b}, results/20261128-repeats-cpu-{a,b}: 8 visits of each 224 cell,
# 2 of each 512/800 cell): the largest ratio between two visits of one cell was 1.213
# (pvt_small 512 infer, 240 vs 291 MB); training cells stayed within 9%.
CPU_RSS_TOLERANCE = 0.22
ALPHA = 0.05
RESAMPLES = 2000
# The bootstraps resample in chunks of at most this many drawn values (8 MiB of doubles; the indices,
# the drawn values and a median's partition copy are a few of those at once): peak memory is a few
# tens of MB whatever the number of samples, where drawing all RESAMPLES resamples at once took
# RESAMPLES x N values (5 GB for two records of 1e5 samples). Readers hold at most
# bench.record.MAX_KEPT_SAMPLES samples per record on top (docs/statistics-bounds.md).
CHUNK_VALUES = 1 << 20
METRICS = ("latency", "throughput", "peak_mem")
VERDICTS = ("faster", "slower", "same", "inconclusive", "no samples")
REGRESSIONS = ("slower", "more")  # the verdicts that fail a gate


def default_threshold(device: str | None) -> float:
    """2% on CUDA (events, a quiet device), 3% on CPU (a host clock on shared cores)."""
    return DEFAULT_THRESHOLD["cuda" if str(device or "").startswith("cuda") else "cpu"]


def records_threshold(records: list[dict]) -> float:
    """The default threshold for these records: the largest of their ok cells' devices' (bench
    compare's and history's without --threshold; bench run --repeats auto sizes for it)."""
    devices = {str(r.get("device") or "") for r in records if r.get("status") == "ok"}
    return max(default_threshold(d) for d in devices) if devices else default_threshold("cpu")


def lower_is_better(metric: str) -> bool:
    return metric != "throughput"


# --------------------------------------------------------------------------- one cell's samples
@dataclass(frozen=True)
class Timings:
    """One cell's timed samples in one run: per repeat (ordered by ``repeat``), the per-iteration ms."""

    repeats: tuple[tuple[float, ...], ...]
    images_per_step: int
    # the repeat index (round) of each entry; empty: 0, 1, ... A failed visit leaves a gap, and two
    # models of one run are paired by round, not by position
    rounds: tuple[int, ...] = ()

    @classmethod
    def from_records(cls, records: list[dict]) -> "Timings | None":
        """The ok records of one cell identity, the latest per repeat; None when there is no ok
        record or one lacks ``latency_samples_ms`` (records from before samples were kept)."""
        latest = _latest_per_repeat(r for r in records if r.get("status") == "ok")
        if not latest or any(not _numbers(latest[k].get("latency_samples_ms")) for k in latest):
            return None
        first = latest[min(latest)]
        images = first.get("global_batch")
        if not _numbers([images]):
            batch, world = first.get("batch"), first.get("world_size") or 1
            images = batch * world if _numbers([batch, world]) else 1
        return cls(tuple(tuple(float(x) for x in latest[k]["latency_samples_ms"]) for k in sorted(latest)),
                   int(images), tuple(sorted(latest)))

    @property
    def n_repeats(self) -> int:
        return len(self.repeats)

    def per_repeat(self, metric: str = "latency") -> np.ndarray:
        """Each repeat's figure: its median step (ms) or its sustained throughput (images/s)."""
        return np.array([_figure([np.asarray(x)], metric, self.images_per_step) for x in self.repeats])

    def estimate(self, metric: str = "latency") -> float:
        """The cell's figure: the median (one repeat) or the mean of the repeat medians; the
        sustained throughput over every timed iteration of every repeat."""
        return _figure([np.asarray(x) for x in self.repeats], metric, self.images_per_step)


def _figure(repeats: list[np.ndarray], metric: str, images: int) -> float:
    if metric == "throughput":
        return images * sum(len(x) for x in repeats) / (sum(float(np.sum(x)) for x in repeats) / 1e3)
    medians = [float(np.median(x)) for x in repeats]
    return medians[0] if len(medians) == 1 else float(np.mean(medians))


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Comparison:
    metric: str                 # "latency" | "throughput" | "peak_mem"
    ratio: float                # new/base (or b/a) of the metric's estimate
    ci: tuple[float, float]     # 95% CI of the ratio
    p: float | None
    q: float | None             # Benjamini-Hochberg across one comparison's pairs (None until adjusted)
    verdict: str
    basis: str                  # how the interval was obtained, in words
    needed: str | None = None   # inconclusive only: what would settle it

    @classmethod
    def no_samples(cls, metric: str) -> "Comparison":
        return cls(metric, math.nan, (math.nan, math.nan), None, None, "no samples",
                   "a record without latency_samples_ms (measured before samples were kept)")


def verdict(ratio_ci: tuple[float, float], q: float | None, threshold: float, lower_is_better: bool = True) -> str:
    """faster / slower (q < 0.05 and the CI wholly beyond +-threshold), same (the CI wholly
    inside +-threshold), else inconclusive."""
    lo, hi = ratio_ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if lo >= 1 - threshold and hi <= 1 + threshold:
        return "same"
    above, below = lo > 1 + threshold, hi < 1 - threshold
    if q is not None and q < ALPHA and (above or below):
        return "slower" if above == lower_is_better else "faster"
    return "inconclusive"


def _needed(ratio: float, ci: tuple[float, float], threshold: float, unit: str, have: int,
            p_floor: float | None = None) -> str | None:
    """Roughly how much more data would settle an inconclusive verdict: the interval's half-width
    shrinks as 1/sqrt(n), and it must shrink below the distance from the estimate to the threshold.
    A bootstrap interval need not be symmetric about the estimate: whether it clears the threshold
    is read from the interval itself, and its wider side stands for the half-width."""
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "an interval: at least 2 timed steps per side"
    if not (ratio > 0 and lo > 0 and hi > 0):
        return None
    if lo > 1 + threshold or hi < 1 - threshold:
        if p_floor is not None and p_floor >= ALPHA:
            return f"the interval clears the threshold, but {have} repeats per side cannot reach p < 0.05: at least 4"
        return "a p-value below 0.05 (more samples)"
    half = max(math.log(hi) - math.log(ratio), math.log(ratio) - math.log(lo))
    margin = abs(abs(math.log(ratio)) - math.log(1 + threshold))
    if margin < 1e-3 * max(threshold, 1e-9):
        return "the change sits at the threshold: no amount of data settles it"
    factor = (half / margin) ** 2
    if factor > 100:
        return "over 100x the data: the estimate sits too near the threshold to settle"
    if unit == "repeats":
        return f"about {max(have + 1, math.ceil(have * factor))} repeats per cell"
    # One run's samples leave out the run-to-run variance, which on a shared machine is the
    # larger part: more samples narrow the interval, repeats make it honest.
    return f"about {max(1.1, factor):.1f}x the samples per cell, and --repeats (one run leaves out run-to-run noise)"


# --------------------------------------------------------------------------- two runs of a cell
def compare_runs(base: Timings, new: Timings, metric: str = "latency", threshold: float = 0.03,
                 seed: int = 0) -> Comparison:
    """The same cell identity in two runs: new/base. One repeat per side: a bootstrap of the
    iterations (within-run only). Several: a hierarchical bootstrap and Mann-Whitney U over the
    repeat figures (3 against 3 cannot give p below 0.1)."""
    rng = np.random.default_rng(seed)
    ratio = new.estimate(metric) / base.estimate(metric)
    if base.n_repeats == 1 and new.n_repeats == 1:
        b, n = np.asarray(base.repeats[0]), np.asarray(new.repeats[0])
        ci = _two_sample_ci(b, n, metric, base.images_per_step, new.images_per_step, rng)
        p = float(_sps().mannwhitneyu(b, n, alternative="two-sided").pvalue)
        basis, unit, have, floor = "within-run samples only (1 repeat)", "samples", 1, None
    else:
        ci = _hierarchical_ci(base, new, metric, rng)
        b, n = base.per_repeat(metric), new.per_repeat(metric)
        p = float(_sps().mannwhitneyu(b, n, alternative="two-sided", method="exact").pvalue)
        basis = f"hierarchical bootstrap over {base.n_repeats} and {new.n_repeats} repeats"
        unit, have, floor = "repeats", min(base.n_repeats, new.n_repeats), _mwu_floor(len(b), len(n))
    return _provisional(metric, ratio, ci, p, threshold, basis, unit, have, floor)


def _two_sample_ci(b: np.ndarray, n: np.ndarray, metric: str, images_b: int, images_n: int,
                   rng: np.random.Generator) -> tuple[float, float]:
    if metric == "throughput":  # (images / mean step of new) / (images / mean step of base)
        stat, combine = np.mean, lambda x, y: (images_n / y) / (images_b / x)
    else:
        stat, combine = np.median, lambda x, y: y / x
    if min(len(b), len(n)) < 2:  # one timed step (a capped cell) says nothing of its spread
        return math.nan, math.nan
    if np.ptp(b) == 0 and np.ptp(n) == 0:  # constant samples: the ratio is exact
        r = float(combine(stat(b), stat(n)))
        return r, r
    return _percentile_ci(b, n, stat, combine, rng)


def _percentile_ci(x: np.ndarray, y: np.ndarray, stat: Callable, combine: Callable,
                   rng: np.random.Generator) -> tuple[float, float]:
    """The 95% percentile interval of ``combine(stat(x*), stat(y*))`` over RESAMPLES independent
    resamples x*, y*: what ``scipy.stats.bootstrap((x, y), ..., vectorized=True, paired=False,
    method="percentile")`` gives, bit for bit for a seed (tests/unit/test_stats.py), in chunks of
    CHUNK_VALUES drawn values. scipy's ``batch`` bounds memory too but interleaves the two samples'
    draws, which changes every seeded interval; a statistic of each sample apart (a median, a mean)
    lets each be resampled whole, in scipy's order: all of x's resamples, then all of y's."""
    theta = combine(_resampled_stat(x, stat, rng), _resampled_stat(y, stat, rng))
    alpha = np.asarray((1 - 0.95) / 2)  # scipy's own arithmetic (not 0.025): the same quantiles
    lo, hi = _sps().quantile(theta, np.stack([alpha, 1 - alpha], axis=-1))
    return float(lo), float(hi)


def _resampled_stat(x: np.ndarray, stat: Callable, rng: np.random.Generator) -> np.ndarray:
    """``stat`` of RESAMPLES resamples of ``x`` with replacement, CHUNK_VALUES values at a time
    (drawing a (rows, n) block of indices per chunk takes the generator's stream in the same order
    as one (RESAMPLES, n) draw)."""
    n = len(x)
    rows = max(1, CHUNK_VALUES // n)
    out = np.empty(RESAMPLES)
    for start in range(0, RESAMPLES, rows):
        k = min(rows, RESAMPLES - start)
        out[start:start + k] = stat(x[rng.integers(0, n, size=(k, n))], axis=-1)
    return out


def _resampled_figures(t: Timings, metric: str, rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES bootstrap figures of one run, two levels: draw repeats with replacement, then
    iterations with replacement within each drawn repeat (independently per draw)."""
    k = t.n_repeats
    picks = rng.integers(0, k, size=(RESAMPLES, k))
    medians = np.empty((RESAMPLES, k))
    sums = np.empty((RESAMPLES, k))
    counts = np.empty((RESAMPLES, k))
    for r, samples in enumerate(t.repeats):
        x = np.asarray(samples)
        where = np.nonzero(picks == r)
        rows = max(1, CHUNK_VALUES // max(1, len(x)))  # resample in chunks of CHUNK_VALUES values
        for start in range(0, len(where[0]), rows):
            sel = (where[0][start:start + rows], where[1][start:start + rows])
            drawn = x[rng.integers(0, len(x), size=(len(sel[0]), len(x)))]
            medians[sel] = np.median(drawn, axis=1)
            sums[sel] = drawn.sum(axis=1)
            counts[sel] = len(x)
    if metric == "throughput":
        return t.images_per_step * counts.sum(axis=1) / (sums.sum(axis=1) / 1e3)
    return medians.mean(axis=1) if k > 1 else medians[:, 0]


def _hierarchical_ci(base: Timings, new: Timings, metric: str, rng: np.random.Generator) -> tuple[float, float]:
    ratios = _resampled_figures(new, metric, rng) / _resampled_figures(base, metric, rng)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def estimate_ci(t: Timings, metric: str = "latency", seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of one cell's figure in one run (``Timings.estimate``), from the
    same two-level bootstrap as ``compare_runs`` (repeats, then iterations within each); a point
    of ``bench history``. (NaN, NaN) below 2 samples, where a spread means nothing."""
    if sum(len(r) for r in t.repeats) < 2:
        return math.nan, math.nan
    lo, hi = np.percentile(_resampled_figures(t, metric, np.random.default_rng(seed)), [2.5, 97.5])
    return float(lo), float(hi)


def _mwu_floor(n1: int, n2: int) -> float:
    """The smallest two-sided exact Mann-Whitney p-value two samples of these sizes can give."""
    return 2 / math.comb(n1 + n2, n1)


# --------------------------------------------------------------------------- two models of a run
def compare_models(a: Timings, b: Timings, metric: str = "latency", threshold: float = 0.03,
                   seed: int = 0) -> Comparison:
    """Two models in one run: b/a. With several rounds, paired by round (same repeat index):
    a t interval and t test on the log ratios. With one, as ``compare_runs``."""
    ia, ib = a.rounds or tuple(range(a.n_repeats)), b.rounds or tuple(range(b.n_repeats))
    common = sorted(set(ia) & set(ib))
    rounds = len(common)
    if rounds < 2:
        return compare_runs(a, b, metric, threshold, seed)
    fa = a.per_repeat(metric)[[ia.index(k) for k in common]]
    fb = b.per_repeat(metric)[[ib.index(k) for k in common]]
    logs = np.log(fb / fa)
    mean, sd = float(np.mean(logs)), float(np.std(logs, ddof=1))
    ratio = b.estimate(metric) / a.estimate(metric)
    if sd == 0:
        ci, p = (math.exp(mean), math.exp(mean)), (0.0 if mean != 0 else 1.0)
    else:
        half = float(_sps().t.ppf(0.975, rounds - 1)) * sd / math.sqrt(rounds)
        ci = (math.exp(mean - half), math.exp(mean + half))
        p = float(_sps().ttest_1samp(logs, 0.0).pvalue)
    basis = f"paired ratios over {rounds} rounds (t interval on log ratios)"
    return _provisional(metric, ratio, ci, p, threshold, basis, "repeats", rounds, None)


def _provisional(metric: str, ratio: float, ci: tuple[float, float], p: float, threshold: float, basis: str,
                 unit: str, have: int, p_floor: float | None) -> Comparison:
    """A comparison whose verdict uses the unadjusted p until ``adjust`` sets q."""
    v = verdict(ci, p, threshold, lower_is_better(metric))
    needed = _needed(ratio, ci, threshold, unit, have, p_floor) if v == "inconclusive" else None
    return Comparison(metric, ratio, ci, p, None, v, basis, needed)


# --------------------------------------------------------------------------- peak memory
def compare_values(base: list[float], new: list[float], tolerance: float, seed: int = 0) -> Comparison:
    """Peak memory per repeat (no iterations): new/base of the medians, a bootstrap interval over
    the repeats where both sides have several, and more / less / same within ``tolerance``
    (0 on a GPU allocator, whose peaks are exact)."""
    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    ratio = float(np.median(n) / np.median(b))
    ci: tuple[float, float] = (ratio, ratio)
    basis = "one value per run"
    if len(b) >= 2 and len(n) >= 2 and (np.ptp(b) > 0 or np.ptp(n) > 0):
        ci = _percentile_ci(b, n, np.median, lambda x, y: y / x, np.random.default_rng(seed))
        basis = f"bootstrap over {len(b)} and {len(n)} repeats"
    lo, hi = ci
    if lo >= 1 - tolerance and hi <= 1 + tolerance:
        v = "same"
    elif lo > 1 + tolerance:
        v = "more"
    elif hi < 1 - tolerance:
        v = "less"
    else:
        v = "inconclusive"
    return Comparison("peak_mem", ratio, ci, None, None, v, f"{basis}, tolerance +-{100 * tolerance:g}%")


# --------------------------------------------------------------------------- many pairs
def adjust(comparisons: list[Comparison], threshold: float) -> list[Comparison]:
    """Benjamini-Hochberg q-values over the pairs that have a p-value, then the final verdicts."""
    with_p = [i for i, c in enumerate(comparisons) if c.p is not None and math.isfinite(c.p)]
    out = list(comparisons)
    if not with_p:
        return out
    qs = _sps().false_discovery_control([comparisons[i].p for i in with_p], method="bh")
    for i, q in zip(with_p, qs):
        c = comparisons[i]
        v = verdict(c.ci, float(q), threshold, lower_is_better(c.metric))
        needed = c.needed if v == "inconclusive" else None
        if v == "inconclusive" and needed is None:
            needed = "a q-value below 0.05: more samples or repeats"
        out[i] = replace(c, q=float(q), verdict=v, needed=needed)
    return out


def ratio_text(c: Comparison, number: Callable[[float], str] = lambda x: f"{x:.3f}") -> str:
    """'1.104 [1.081, 1.127]' or 'no samples'."""
    if c.verdict == "no samples":
        return "no samples"
    return f"{number(c.ratio)} [{number(c.ci[0])}, {number(c.ci[1])}]"


# --------------------------------------------------------------------------- two runs, cell by cell
@dataclass(frozen=True)
class CellComparison:
    """One cell identity found in both runs."""

    cell_key: str
    settings_id: str | None
    base: float | None          # the metric's estimate in each run (None: no samples)
    new: float | None
    base_ms: float | None       # the latency estimates, whatever the metric
    new_ms: float | None
    comparison: Comparison


@dataclass(frozen=True)
class RunComparison:
    metric: str
    threshold: float
    cells: list[CellComparison]
    only_base: list[str]        # cell keys measured in one run only
    only_new: list[str]

    @property
    def regressions(self) -> list[CellComparison]:
        return [c for c in self.cells if c.comparison.verdict in REGRESSIONS]


def identity_key(record: dict) -> tuple[str, str | None] | None:
    """(cell_key, settings_id) of a record: the settings without the runtime, so the same cell on
    another machine matches (the device check is the caller's); the world size and node count,
    where above 1, are appended to the cell key; old records without settings_id
    fall back to config_id. None for a record whose identity is not made of strings (a damaged
    line is left out of every statistic rather than crash it)."""
    key = record.get("cell_key")
    if not isinstance(key, str) or not key:
        return None
    # The ranks are part of what was measured, not of the machine: a scaling study keeps the same
    # cell at several world sizes in one run, which must never pool as repeats of one cell.
    for field, tag in (("world_size", "w"), ("nodes", "n")):
        count = record.get(field)
        if isinstance(count, int) and not isinstance(count, bool) and count > 1:
            key += f"|{tag}{count}"
    sid = record.get("settings_id")
    if not isinstance(sid, str):
        sid = record.get("config_id")
    return key, sid if isinstance(sid, str) else None


def cell_groups(records: list[dict]) -> dict[tuple[str, str | None], list[dict]]:
    """Records by cell identity (``identity_key``)."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for r in records:
        ident = identity_key(r)
        if ident is not None:
            groups.setdefault(ident, []).append(r)
    return groups


def compare_records(base: list[dict], new: list[dict], metric: str = "latency", threshold: float = 0.03,
                    seed: int = 0, tolerance: float = 0.0, noise: RunNoise | None = None,
                    within_run: bool = False, change: float | None = None, apart: bool = False) -> RunComparison:
    """Every cell identity of both runs compared (``compare_between_runs`` with this device's
    run-to-run ``noise`` when calibrated; ``compare_runs``, the within-run interval, only when
    ``within_run`` asks for it; for peak memory ``compare_values`` within ``tolerance``), with
    q-values over all of them. ``change``: the change whose price inconclusive cells state;
    ``apart``: the runs share no session (``compare_between_runs``)."""
    gb, gn = cell_groups(base), cell_groups(new)
    matched = [k for k in gb if k in gn]
    rows: list[CellComparison] = []
    for key in matched:
        tb, tn = Timings.from_records(gb[key]), Timings.from_records(gn[key])
        b_ms = tb.estimate("latency") if tb else None
        n_ms = tn.estimate("latency") if tn else None
        if metric == "peak_mem":
            vb, vn = _peaks(gb[key]), _peaks(gn[key])
            c = compare_values(vb, vn, tolerance, seed) if vb and vn else Comparison.no_samples(metric)
            figures = (float(np.median(vb)) if vb else None, float(np.median(vn)) if vn else None)
        elif tb is None or tn is None:
            c, figures = Comparison.no_samples(metric), (None, None)
        elif within_run:
            c = compare_runs(tb, tn, metric, threshold, seed)
            figures = (tb.estimate(metric), tn.estimate(metric))
        else:
            c = compare_between_runs(tb, tn, metric, threshold, noise, repeat_processes(gb[key]),
                                     repeat_processes(gn[key]), seed, change, apart)
            figures = (tb.estimate(metric), tn.estimate(metric))
        rows.append(CellComparison(key[0], key[1], *figures, b_ms, n_ms, c))
    adjusted = adjust([r.comparison for r in rows], threshold)
    rows = [replace(r, comparison=c) for r, c in zip(rows, adjusted)]
    return RunComparison(metric, threshold, rows, sorted({k[0] for k in gb if k not in gn}),
                         sorted({k[0] for k in gn if k not in gb}))


def repeat_processes(records: list[dict]) -> tuple[str, ...]:
    """The process (invocation) of each repeat of one cell, in ``Timings.from_records``'s order:
    a run resumed with a larger --repeats measures its new repeats in a fresh process."""
    latest = _latest_per_repeat(r for r in records if r.get("status") == "ok")
    return tuple(str(latest[k].get("invocation")) for k in sorted(latest))


def _peaks(records: list[dict]) -> list[float]:
    """Peak memory of each repeat's latest ok record."""
    latest = _latest_per_repeat(r for r in records if r.get("status") == "ok" and _numbers([r.get("peak_mem_mb")]))
    return [float(latest[k]["peak_mem_mb"]) for k in sorted(latest)]


def _numbers(values) -> bool:
    """A non-empty list of real numbers (not bools): what a damaged record may lack."""
    return isinstance(values, list) and bool(values) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def repeat_index(record: dict) -> int | None:
    """A record's repeat index: absent means 0 (written before repeats); None when it is not an int."""
    k = record.get("repeat")
    k = 0 if k is None else k
    return k if isinstance(k, int) and not isinstance(k, bool) else None


def _latest_per_repeat(records) -> dict[int, dict]:
    """The latest record (by timestamp) per repeat index (``repeat_index``); a record whose repeat
    is not an int is left out."""
    latest: dict[int, dict] = {}
    for r in records:
        k = repeat_index(r)
        if k is None:
            continue
        if k not in latest or str(r.get("timestamp") or "") >= str(latest[k].get("timestamp") or ""):
            latest[k] = r
    return latest


# --------------------------------------------------------------------------- where the variance lives
@dataclass(frozen=True)
class VarianceComponents:
    """Kalibera & Jones's variance components of a nested A/A design, bottom level first
    (for example iteration, block, process, invocation), on whatever scale the values were given
    (log latency: a component of 0.01 is a relative spread of about 10% at that level)."""

    levels: tuple[str, ...]
    variances: tuple[float, ...]   # the component of each level, truncated at 0
    df: tuple[int, ...]            # degrees of freedom behind each level's estimate
    counts: tuple[float, ...]      # units per group at each level (harmonic mean: the design's n_i)

    def of(self, level: str) -> float:
        return self.variances[self.levels.index(level)]

    def to_dict(self) -> dict:
        return {"levels": list(self.levels), "variances": list(self.variances), "df": list(self.df),
                "counts": list(self.counts)}


def nested_variance_components(tree, levels: tuple[str, ...]) -> VarianceComponents:
    """Variance components of nested data by Kalibera & Jones's method of moments (ISMM 2013, sec. 4):
    S2_1 is the pooled variance within the bottom groups; S2_i the pooled variance of the level
    (i-1) means within each level-i group; then T_1 = S2_1 and T_i = S2_i - S2_(i-1) / n_(i-1).

    ``tree`` nests lists as deep as ``levels``: ``tree[invocation][process][block]`` is a list of
    iteration values for ``levels = ("iteration", "block", "process", "invocation")``. Written by
    hand: scipy and statsmodels have no nested random-effects ANOVA (statsmodels' MixedLM fits one
    grouping level, and REML on unbalanced data is slow and fragile for a handful of groups). An
    unbalanced design takes each group's own means and the harmonic mean of group sizes for n_i,
    the usual approximation; a group with one unit adds no degree of freedom at its level."""
    depth = len(levels)
    # the units of each level, bottom first: each unit is (mean, [child means]) under its group
    units = _leaves(tree, depth)  # list of bottom groups: arrays of values
    s2: list[float] = []
    df: list[int] = []
    counts: list[float] = []
    groups = units
    for level in range(depth):
        # groups: a list of lists of values (the units of this level inside each group)
        ss, d, sizes = 0.0, 0, []
        for g in groups:
            x = np.asarray(g, dtype=float)
            x = x[np.isfinite(x)]
            if len(x) >= 1:
                sizes.append(len(x))
            if len(x) >= 2:
                ss += float(np.sum((x - x.mean()) ** 2))
                d += len(x) - 1
        s2.append(ss / d if d else math.nan)
        df.append(d)
        counts.append(len(sizes) / sum(1 / s for s in sizes) if sizes else math.nan)
        if level + 1 < depth:
            groups = _regroup(tree, depth, level + 1)
    t = [s2[0]]
    for i in range(1, depth):
        # a level below with no degrees of freedom (one block per process) cannot be separated:
        # this level's component then holds the levels below it too
        below = s2[i - 1] / counts[i - 1] if math.isfinite(s2[i - 1]) else 0.0
        t.append(s2[i] - below if math.isfinite(s2[i]) else math.nan)
    return VarianceComponents(tuple(levels), tuple(max(0.0, v) if math.isfinite(v) else math.nan for v in t),
                              tuple(df), tuple(counts))


def _leaves(tree, depth: int) -> list[list[float]]:
    """The bottom groups of a tree nested ``depth`` deep (each a list of values)."""
    if depth == 1:
        return [list(tree)]
    return [leaf for child in tree for leaf in _leaves(child, depth - 1)]


def _mean_of(node, depth: int) -> float:
    """The mean of a unit: of its values (depth 1), else of its children's means."""
    if depth == 1:
        x = np.asarray(node, dtype=float)
        x = x[np.isfinite(x)]
        return float(x.mean()) if len(x) else math.nan
    means = [_mean_of(c, depth - 1) for c in node]
    means = [m for m in means if math.isfinite(m)]
    return float(np.mean(means)) if means else math.nan


def _regroup(tree, depth: int, level: int) -> list[list[float]]:
    """The groups at ``level`` (0 = the bottom groups of values): each a list of the means of the
    level-(level - 1) units it holds."""
    # a group at `level` is a node `level` steps above the values; its units are its children
    def nodes(node, d):  # every node of depth d (d = how many list levels it still holds)
        return [node] if d == level + 1 else [n for child in node for n in nodes(child, d - 1)]
    return [[_mean_of(c, level) for c in node] for node in nodes(tree, depth)]


def pooled_components(parts: list[VarianceComponents]) -> VarianceComponents:
    """Several cells' components in one: each level's variance averaged with its degrees of
    freedom as weights (a cell that could not estimate a level adds nothing to it)."""
    if not parts:
        raise ValueError("no components to pool")
    levels = parts[0].levels
    variances, dfs, counts = [], [], []
    for i in range(len(levels)):
        usable = [(p.variances[i], p.df[i], p.counts[i]) for p in parts
                  if p.df[i] > 0 and math.isfinite(p.variances[i])]
        d = sum(u[1] for u in usable)
        variances.append(sum(v * w for v, w, _ in usable) / d if d else math.nan)
        dfs.append(d)
        counts.append(float(np.mean([u[2] for u in usable])) if usable else math.nan)
    return VarianceComponents(levels, tuple(variances), tuple(dfs), tuple(counts))


# --------------------------------------------------------------------------- run against run, calibrated
@dataclass(frozen=True)
class RunNoise:
    """A device's between-run noise on the log scale of a cell's figure (a calibration's):
    ``process`` the variance between processes (fresh ``bench run`` invocations), which repeats
    inside one process do not average away; ``block`` the variance between repeats within one
    process (None: not separated, and then ``process`` holds the whole run-to-run variance).
    ``df_*``: the degrees of freedom behind each. ``source`` says where it comes from."""

    process: float
    df_process: int
    block: float | None = None
    df_block: int = 0
    source: str = "calibration"
    # Between sessions (days, machine instances): shared by every process of a session, so more
    # runs never average it away. None: not measured. Counted only when the two sides share no
    # session (``apart``); docs/comparisons.md, "A second day".
    session: float | None = None
    df_session: int = 0


@dataclass(frozen=True)
class Side:
    """One run's figures of one cell, grouped by process: ``figures[p]`` is the per-repeat
    figures of the p-th process (invocation) that measured it."""

    figures: tuple[tuple[float, ...], ...]

    @classmethod
    def of(cls, t: Timings, processes: tuple[str, ...] | None, metric: str) -> "Side":
        """``processes``: the invocation of each repeat of ``t`` (None: all in one process)."""
        per = t.per_repeat(metric)
        if not processes or len(processes) != len(per):
            return cls((tuple(float(x) for x in per),))
        groups: dict[str, list[float]] = {}
        for p, x in zip(processes, per):
            groups.setdefault(p, []).append(float(x))
        return cls(tuple(tuple(v) for v in groups.values()))

    @property
    def n_processes(self) -> int:
        return len(self.figures)

    @property
    def n_blocks(self) -> int:
        return sum(len(f) for f in self.figures)

    def log_mean(self) -> float:
        """The mean over processes of each process's mean log figure."""
        return float(np.mean([np.mean(np.log(f)) for f in self.figures]))


def _side_variance(s: Side, noise: RunNoise | None) -> tuple[float, float] | None:
    """(variance of the side's log_mean, its degrees of freedom), or None when the side's data
    cannot say it and no calibration does: one process, whose process-level noise is unknown.
    Calibrated: sigma2_process / P + sigma2_block / (P k), the block variance moderated with
    the side's own spread between repeats (a pooled prior: limma's moderated variance).
    Uncalibrated with several processes: the observed variance of the process means."""
    p = s.n_processes
    proc_means = np.array([np.mean(np.log(f)) for f in s.figures])
    if noise is None:
        if p < 2:
            return None
        return float(np.var(proc_means, ddof=1)) / p, float(p - 1)
    within = [np.log(f) for f in s.figures if len(f) >= 2]
    ss = float(sum(np.sum((w - w.mean()) ** 2) for w in within))
    d_obs = sum(len(w) - 1 for w in within)
    k = s.n_blocks / p  # repeats per process
    if noise.block is None:
        # the calibration did not separate blocks: the whole run-to-run variance sits at the
        # process level, and repeats within a process are taken to buy nothing (conservative)
        return noise.process / p, float(noise.df_process)
    d_block = noise.df_block + d_obs
    block = (noise.df_block * noise.block + ss) / d_block if d_block else noise.block
    parts = [(noise.process / p, noise.df_process), (block / (p * k), d_block)]
    return _satterthwaite(parts)


def _satterthwaite(parts: list[tuple[float, float]]) -> tuple[float, float]:
    """Sum of variance terms and its Welch-Satterthwaite degrees of freedom."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts if d > 0 and v > 0)
    return total, (total * total / denom if denom > 0 else math.inf)


def compare_between_runs(base: Timings, new: Timings, metric: str = "latency", threshold: float = 0.03,
                         noise: RunNoise | None = None, base_processes: tuple[str, ...] | None = None,
                         new_processes: tuple[str, ...] | None = None, seed: int = 0,
                         change: float | None = None, apart: bool = False) -> Comparison:
    """The same cell in two runs, with the noise between runs in the interval: a Welch t interval
    and test on the log figures (each repeat's median step, or throughput), each side's variance
    being the calibrated between-process variance (``noise``) plus its repeats' spread, or, with no
    calibration, the observed spread between its processes (invocations). A side measured in one
    process with no calibration cannot know its run-to-run noise: then the within-run interval is
    shown, p stays None and the verdict is ``inconclusive``, with what would settle it. Unlike
    Mann-Whitney's exact floor (3 against 3 never reaches p < 0.05), a t test's power grows with
    the effect, so a small N can decide a large change. ``change``: the change to price in
    ``needed`` (default: the threshold). ``apart``: the sides share no session (measured on
    different days or machine instances): each side's variance then also holds the calibrated
    between-session noise, which its processes share; a calibration without one says so."""
    sb, sn = Side.of(base, base_processes, metric), Side.of(new, new_processes, metric)
    vb, vn = _side_variance(sb, noise), _side_variance(sn, noise)
    session_note = ""
    if apart and noise is not None and vb is not None and vn is not None:
        if noise.session is not None:
            vb, vn = (_satterthwaite([v, (noise.session, noise.df_session)]) for v in (vb, vn))
            session_note = ", and the noise between sessions (the sides were measured in different sessions)"
        else:
            session_note = ("; the sides were measured in different sessions and the calibration holds no "
                            "noise between sessions: the interval leaves it out (docs/comparisons.md)")
    price = _price(noise, max(sb.n_blocks // sb.n_processes, 1), threshold, change, metric, apart)
    if vb is None or vn is None:
        within = compare_runs(base, new, metric, threshold, seed)
        return Comparison(metric, within.ratio, within.ci, None, None, "inconclusive",
                          f"within-run interval only ({sb.n_processes} and {sn.n_processes} processes, "
                          "no calibration of this device)", _uncalibrated_advice(price))
    d = sn.log_mean() - sb.log_mean()
    var, df = _satterthwaite([vb, vn])
    ratio = math.exp(d)
    if var <= 0:
        ci, p = (ratio, ratio), (0.0 if d != 0 else 1.0)
    else:
        se = math.sqrt(var)
        tq = float(_sps().t.ppf(1 - ALPHA / 2, df)) if math.isfinite(df) else float(_sps().norm.ppf(1 - ALPHA / 2))
        ci = (math.exp(d - tq * se), math.exp(d + tq * se))
        p = float(2 * (_sps().t.sf(abs(d) / se, df) if math.isfinite(df) else _sps().norm.sf(abs(d) / se)))
    how = noise.source if noise is not None else "the spread between each side's processes"
    basis = (f"Welch t on log figures over {sb.n_processes} and {sn.n_processes} processes "
             f"({sb.n_blocks} and {sn.n_blocks} repeats), run-to-run noise from {how}{session_note}")
    v = verdict(ci, p, threshold, lower_is_better(metric))
    needed = None
    if v == "inconclusive":
        needed = price or _needed(ratio, ci, threshold, "repeats", min(sb.n_processes, sn.n_processes))
    return Comparison(metric, ratio, ci, p, None, v, basis, needed)


def _uncalibrated_advice(price: str | None) -> str:
    return ("one process per side and no calibration of this device: calibrate it "
            "(bench calibrate --from RUN_DIR... or bench calibrate --models ...), or measure each side "
            "in 3 or more processes (bench run --repeats auto, or --repeats i --out DIR for i = 1, 2, 3)"
            + (f"; {price}" if price else ""))


def _price(noise: RunNoise | None, repeats: int, threshold: float, change: float | None, metric: str,
           apart: bool = False) -> str | None:
    """The price of an answer in words, from the calibration (None without one)."""
    if noise is None:
        return None
    x = threshold if change is None else change
    n = runs_needed(noise, x, threshold, repeats, apart=apart)
    what = f"a {100 * x:g}% change" if x > threshold else f"'same' within +-{100 * threshold:g}%"
    if n is None:
        return f"no number of runs tells {what} on this device"
    return f"{n} run{'s' if n > 1 else ''} per side to tell {what} (90% of the time, this device's calibration)"


POWER = 0.90


def runs_needed(noise: RunNoise, change: float, threshold: float, repeats: int = 1, power: float = POWER,
                alpha: float = ALPHA, most: int = 10_000, df: float | None = None, apart: bool = False) -> int | None:
    """Processes (fresh runs) per side for the verdict rule to settle ``power`` of the time:
    a true change above the threshold called ``slower`` (its interval wholly past +threshold),
    or, for a change at or inside the threshold, no change called ``same`` (its interval inside
    +-threshold). Each run holds ``repeats`` repeats. The normal approximation of the t interval,
    as Kalibera & Jones size their repetitions: n = 2 s^2 (z_a + z_b)^2 / margin^2, with
    s^2 = process + block / repeats.

    ``df``: ``noise`` is not a calibration but an estimate on ``df`` degrees of freedom (the
    first stage of ``bench run --repeats auto`` on an uncalibrated device). Then, as Stein's
    two-stage design does, Student's t quantiles replace the normal ones: n is the smallest
    count with n >= 2 s^2 (t_a + t_b)^2 / margin^2 at min(df, 2 (n - 1)) degrees of freedom,
    the fewer of the estimate's and those of the Welch test an uncalibrated comparison of n
    processes a side makes (each side's own spread); at least 2, the fewest that test takes.

    ``apart``: the sides in different sessions. The calibrated session variance S is shared by
    all of a side's runs, so it adds 2 S to the difference whatever n is: n = 2 s^2 z^2 /
    (margin^2 - 2 S z^2), and None (no number of runs) when 2 S z^2 fills the margin."""
    per_run = noise.process + (noise.block or 0.0) / max(repeats, 1)
    session = (noise.session or 0.0) if apart else 0.0
    a = 1 - alpha / 2
    if change > threshold:
        margin, b = math.log(1 + change) - math.log(1 + threshold), power
    else:
        margin, b = math.log(1 + threshold), 1 - (1 - power) / 2
    if margin <= 0 or (df is not None and not df >= 1):
        return None

    def enough(n: int, q: Callable[[float], float]) -> bool:
        return n >= 2 * per_run * (q(a) + q(b)) ** 2 / margin ** 2

    normal = _sps().norm.ppf
    z2 = (float(normal(a)) + float(normal(b))) ** 2
    room = margin ** 2 - 2 * session * z2
    if room <= 0:
        return None
    n = math.ceil(2 * per_run * z2 / room)
    if df is None:
        return max(1, n) if n <= most else None

    def t_at(count: int) -> Callable[[float], float]:
        return lambda p: float(_sps().t.ppf(p, min(df, 2 * (count - 1))))

    lo, hi = max(2, n), most  # t quantiles exceed the normal ones: never fewer than the normal n
    if lo > most or not enough(hi, t_at(hi)):
        return None
    while lo < hi:  # the smallest n that is enough: n grows and its bound shrinks, so bisect
        mid = (lo + hi) // 2
        if enough(mid, t_at(mid)):
            hi = mid
        else:
            lo = mid + 1
    return lo


# --------------------------------------------------------------------------- the verdict rules, simulated
@dataclass(frozen=True)
class Rates:
    """How often a verdict rule calls a cell ``slower``/``faster`` when nothing changed (false
    alarms) and ``slower`` when the new side is ``change`` slower (detections)."""

    rule: str
    runs: int            # processes (runs) per side
    false_alarm: float
    detection: float
    change: float
    trials: int


def simulate_rates(noise_truth: tuple[float, float, float], runs: int, change: float = 0.5, rule: str = "calibrated",
                   threshold: float = 0.03, iterations: int = 20, cells: int = 12, trials: int = 50,
                   calibration_df: int = 60, seed: int = 0, day_var: float = 0.0, day_known: bool = True) -> Rates:
    """Simulate two sides of ``cells`` cells, each side ``runs`` processes of one repeat of
    ``iterations`` timed steps, with log latency = process effect + block effect + iteration noise
    (``noise_truth`` = their variances); half the cells slowed by ``1 + change`` on the new side.
    ``day_var``: the two sides measured on different days, each side's cell shifted by one draw of
    this variance that all its processes share, and that no calibration holds (the invocation level
    of docs/comparisons.md: what a base from another day costs); ``day_known``: the calibration
    holds it (as its session variance) or, False, not.
    Each trial is one comparison (q over its cells), decided by ``rule``:
    ``calibrated`` (compare_between_runs with the true components as the calibration),
    ``uncalibrated`` (compare_between_runs without one), ``within-run`` (the old rule:
    compare_runs, a bootstrap of one run's iterations and Mann-Whitney U)."""
    proc_var, block_var, iter_var = noise_truth
    rng = np.random.default_rng(seed)
    session = day_var if day_var > 0 and day_known else None
    noise = RunNoise(proc_var, calibration_df, block_var, calibration_df, "the simulation's true components",
                     session, calibration_df) if rule == "calibrated" else None
    alarms = nulls = hits = slowed = 0
    for _ in range(trials):
        comps, truth = [], []
        for cell in range(cells):
            shift = math.log(1 + change) if cell % 2 else 0.0
            sides = []
            for extra in (0.0, shift):
                extra += rng.normal(0, math.sqrt(day_var)) if day_var > 0 else 0.0
                reps = [np.exp(3 + extra + rng.normal(0, math.sqrt(proc_var)) + rng.normal(0, math.sqrt(block_var))
                               + rng.normal(0, math.sqrt(iter_var), iterations)) for _ in range(runs)]
                sides.append(Timings(tuple(tuple(float(x) for x in r) for r in reps), 1))
            b, n = sides
            if rule == "within-run":
                pooled_b = Timings((tuple(x for r in b.repeats for x in r),), 1)
                pooled_n = Timings((tuple(x for r in n.repeats for x in r),), 1)
                comps.append(compare_runs(pooled_b, pooled_n, "latency", threshold, seed=int(rng.integers(1 << 30))))
            else:
                procs = tuple(str(i) for i in range(runs))
                comps.append(compare_between_runs(b, n, "latency", threshold, noise, procs, procs,
                                                  apart=day_var > 0))
            truth.append(shift > 0)
        for c, slow in zip(adjust(comps, threshold), truth):
            if slow:
                slowed += 1
                hits += c.verdict == "slower"
            else:
                nulls += 1
                alarms += c.verdict in ("slower", "faster")
    return Rates(rule, runs, alarms / max(nulls, 1), hits / max(slowed, 1), change, trials)
