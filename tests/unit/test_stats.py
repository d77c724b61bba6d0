"""bench.stats: intervals that contain the truth, verdicts that follow them, BH by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench import stats as S


def _timings(scale: float, n: int, seed: int, cv: float = 0.03, repeats: tuple[float, ...] = (1.0,)) -> S.Timings:
    rng = np.random.default_rng(seed)
    return S.Timings(tuple(tuple(float(x) for x in scale * m * rng.lognormal(0, cv, n)) for m in repeats), 1)


def _pooled(t: S.Timings) -> S.Timings:
    """Every repeat's samples as one repeat."""
    return S.Timings((tuple(x for r in t.repeats for x in r),), t.images_per_step)


def test_benjamini_hochberg_matches_a_hand_computation():
    # p sorted: 0.01, 0.02, 0.03, 0.5 (m = 4): p*m/rank = 0.04, 0.04, 0.04, 0.5; then the running
    # minimum from the top: q = 0.04, 0.04, 0.04, 0.5
    comps = [S.Comparison("latency", 1.1, (1.05, 1.15), p, None, "inconclusive", "x") for p in (0.03, 0.5, 0.01, 0.02)]
    qs = [c.q for c in S.adjust(comps, 0.03)]
    assert qs == pytest.approx([0.04, 0.5, 0.04, 0.04])
    assert [c.verdict for c in S.adjust(comps, 0.03)] == ["slower", "inconclusive", "slower", "slower"]


def test_a_ten_percent_slowdown_is_slower_with_the_truth_inside_the_interval():
    base, new = _timings(100, 60, 1), _timings(110, 60, 2)
    (c,) = S.adjust([S.compare_runs(base, new, threshold=0.03)], 0.03)
    assert c.verdict == "slower" and c.ci[0] <= 1.10 <= c.ci[1] and c.q < 0.05
    assert c.p < 1e-6  # Mann-Whitney over 60 against 60 samples 10% apart
    assert c.basis.startswith("within-run samples only")
    (t,) = S.adjust([S.compare_runs(base, new, "throughput", 0.03)], 0.03)
    assert t.verdict == "slower" and t.ci[0] <= 1 / 1.10 <= t.ci[1]  # throughput falls: a slowdown too
    (fast,) = S.adjust([S.compare_runs(new, base, threshold=0.03)], 0.03)
    assert fast.verdict == "faster"


def test_identical_distributions_are_same_with_enough_samples_and_inconclusive_with_few():
    many = S.compare_runs(_timings(100, 400, 3), _timings(100, 400, 4), threshold=0.03)
    assert many.verdict == "same" and 1 - 0.03 <= many.ci[0] <= 1 <= many.ci[1] <= 1.03
    assert many.p > 0.05  # and not significant (equivalence is what makes it "same")
    few = S.compare_runs(_timings(100, 6, 5, cv=0.08), _timings(100, 6, 6, cv=0.08), threshold=0.03)
    assert few.verdict == "inconclusive" and "samples" in few.needed


def test_same_seed_same_interval_and_another_seed_another():
    base, new = _timings(100, 50, 7), _timings(104, 50, 8)
    assert S.compare_runs(base, new, seed=3).ci == S.compare_runs(base, new, seed=3).ci
    assert S.compare_runs(base, new, seed=3).ci != S.compare_runs(base, new, seed=4).ci


def test_hierarchical_interval_widens_when_repeats_disagree():
    # the same 90 samples as three repeats whose medians differ by +-5%, or as three that agree
    spread = S.compare_runs(_timings(100, 30, 9, repeats=(0.95, 1.0, 1.05)),
                            _timings(100, 30, 10, repeats=(0.95, 1.0, 1.05)))
    agree = S.compare_runs(_timings(100, 30, 9, repeats=(1.0, 1.0, 1.0)),
                           _timings(100, 30, 10, repeats=(1.0, 1.0, 1.0)))
    width = lambda c: c.ci[1] - c.ci[0]  # noqa: E731
    assert width(spread) > 2 * width(agree)
    assert spread.basis.startswith("hierarchical bootstrap over 3 and 3")
    # against pooling: the same samples as one repeat per side give a within-run interval that
    # ignores the spread between repeats (about 3x narrower here); when repeats agree, both are alike
    pooled = S.compare_runs(_pooled(_timings(100, 30, 9, repeats=(0.95, 1.0, 1.05))),
                            _pooled(_timings(100, 30, 10, repeats=(0.95, 1.0, 1.05))))
    assert pooled.basis.startswith("within-run") and width(spread) > 2 * width(pooled)
    pooled_agree = S.compare_runs(_pooled(_timings(100, 30, 9, repeats=(1.0, 1.0, 1.0))),
                                  _pooled(_timings(100, 30, 10, repeats=(1.0, 1.0, 1.0))))
    assert width(agree) < 1.5 * width(pooled_agree)
    # 3 against 3 repeats: the exact Mann-Whitney p cannot go below 2/C(6,3) = 0.1
    assert spread.p >= 0.1 and spread.verdict in ("same", "inconclusive")


def test_three_repeats_cannot_call_a_regression_and_say_what_would():
    base = _timings(100, 30, 11, cv=0.01, repeats=(1.0, 1.0, 1.0))
    new = _timings(120, 30, 12, cv=0.01, repeats=(1.0, 1.0, 1.0))
    (c,) = S.adjust([S.compare_runs(base, new)], 0.03)
    assert c.ci[0] > 1.03 and c.p == pytest.approx(0.1) and c.verdict == "inconclusive"
    assert "at least 4" in c.needed
    base5 = _timings(100, 30, 11, cv=0.01, repeats=(1.0,) * 5)
    new5 = _timings(120, 30, 12, cv=0.01, repeats=(1.0,) * 5)
    assert S.adjust([S.compare_runs(base5, new5)], 0.03)[0].verdict == "slower"


@pytest.mark.parametrize("ci,q,lower,expected", [
    ((1.05, 1.10), 0.01, True, "slower"), ((1.05, 1.10), 0.01, False, "faster"),
    ((0.90, 0.95), 0.01, True, "faster"), ((0.90, 0.95), 0.01, False, "slower"),
    ((1.05, 1.10), 0.20, True, "inconclusive"),  # beyond the threshold, not significant
    ((0.98, 1.02), 0.01, True, "same"), ((0.98, 1.02), 0.90, True, "same"),  # equivalence needs no p
    ((1.01, 1.05), 0.01, True, "inconclusive"),  # significant, but straddles +3%
    ((0.96, 1.04), 0.50, True, "inconclusive"),
])
def test_verdict_truth_table(ci, q, lower, expected):
    assert S.verdict(ci, q, 0.03, lower) == expected


def test_models_in_one_run_are_paired_by_round():
    # the machine drifts +-10% between rounds; within a round b is 5% slower than a
    rng = np.random.default_rng(13)
    drift = (0.9, 1.0, 1.1, 0.95, 1.05)
    a = S.Timings(tuple(tuple(100 * d * rng.lognormal(0, 0.005, 20)) for d in drift), 1)
    b = S.Timings(tuple(tuple(105 * d * rng.lognormal(0, 0.005, 20)) for d in drift), 1)
    paired = S.compare_models(a, b)
    assert paired.basis.startswith("paired ratios over 5 rounds")
    assert paired.ci[0] <= 1.05 <= paired.ci[1] and paired.ci[1] - paired.ci[0] < 0.02
    unpaired = S.compare_runs(a, b)  # the same data as two runs: the drift swamps the 5%
    assert unpaired.ci[1] - unpaired.ci[0] > 5 * (paired.ci[1] - paired.ci[0])
    assert S.adjust([paired], 0.03)[0].verdict == "slower"


def test_records_without_samples_give_none_and_the_latest_record_per_repeat_wins():
    old = {"status": "ok", "latency_ms": 10.0, "cell_key": "k"}
    assert S.Timings.from_records([old]) is None
    recs = [{"status": "ok", "repeat": 0, "latency_samples_ms": [1.0, 2.0], "global_batch": 4, "timestamp": "a"},
            {"status": "ok", "repeat": 0, "latency_samples_ms": [3.0, 4.0], "global_batch": 4, "timestamp": "b"},
            {"status": "error", "repeat": 1, "timestamp": "c"},
            {"status": "ok", "repeat": 1, "latency_samples_ms": [5.0], "global_batch": 4, "timestamp": "c"}]
    t = S.Timings.from_records(recs)
    assert t.repeats == ((3.0, 4.0), (5.0,)) and t.images_per_step == 4
    assert t.estimate("latency") == pytest.approx((3.5 + 5.0) / 2)
    assert t.estimate("throughput") == pytest.approx(4 * 3 / (12.0 / 1e3))
    assert S.Comparison.no_samples("latency").verdict == "no samples"


def test_peak_memory_within_a_tolerance():
    assert S.compare_values([100.0], [104.0], 0.05).verdict == "same"
    assert S.compare_values([100.0], [110.0], 0.05).verdict == "more"
    assert S.compare_values([100.0], [90.0], 0.05).verdict == "less"
    assert S.compare_values([100.0], [100.5], 0.0).verdict == "more"  # a GPU allocator's peak is exact
    c = S.compare_values([100.0, 104.0, 98.0], [101.0, 99.0, 103.0], 0.05)
    assert c.ci[0] < c.ratio < c.ci[1] and "3 and 3 repeats" in c.basis


def test_needed_grows_as_the_estimate_nears_the_threshold():
    far = S._needed(1.0, (0.96, 1.04), 0.03, "samples", 1)
    near = S._needed(1.02, (0.98, 1.06), 0.03, "samples", 1)
    factor = lambda s: float(s.split("about ")[1].split("x")[0])  # noqa: E731
    assert factor(near) > factor(far) > 1
    assert math.isclose(S.default_threshold("cuda"), 0.02) and math.isclose(S.default_threshold("cpu"), 0.03)


def test_throughput_is_sustained_so_a_stall_counts():
    # a stall every fifth step: the median step does not move, the sustained rate does
    steady = S.Timings(((10.0,) * 20,), 8)
    stalled = S.Timings(((10.0, 10.0, 10.0, 10.0, 50.0) * 4,), 8)
    assert stalled.estimate("throughput") == pytest.approx(8 * 20 / (360.0 / 1e3))
    assert S.compare_runs(steady, stalled).ratio == pytest.approx(1.0)  # latency: the median step
    tput = S.compare_runs(steady, stalled, "throughput")
    assert tput.ratio == pytest.approx(200 / 360)


def test_needed_never_calls_a_straddling_interval_clear():
    # a lopsided interval from a contended run: the estimate 0.18 is far from +-3%, but the
    # interval [0.068, 1.135] straddles it, so more repeats are what would settle it
    said = S._needed(0.18, (0.068, 1.135), 0.03, "repeats", 3, p_floor=0.1)
    assert "clears" not in said and said.startswith("about ") and "repeats" in said
    assert "clears" in S._needed(1.2, (1.1, 1.3), 0.03, "repeats", 3, p_floor=0.1)


def test_one_timed_step_gives_no_interval_and_no_verdict():
    # a capped cell may keep a single timed step: one value says nothing of its spread, so neither
    # "same" (a zero-width interval) nor a crash in the bootstrap
    one, two = S.Timings(((10.0,),), 1), S.Timings(((10.05,),), 1)
    (c,) = S.adjust([S.compare_runs(one, two)], 0.03)
    assert c.verdict == "inconclusive" and not any(math.isfinite(x) for x in c.ci) and "2 timed steps" in c.needed
    (d,) = S.adjust([S.compare_runs(one, _timings(10, 20, 14))], 0.03)
    assert d.verdict == "inconclusive" and d.ratio == pytest.approx(1.0, abs=0.05)


def test_models_are_paired_by_round_index_when_a_visit_failed():
    # round 1 of model a failed: its rounds are 0 and 2, and pairing by position would set a's
    # round 2 (slow machine) against b's round 1 (fast machine)
    rng = np.random.default_rng(15)
    drift = {0: 1.0, 1: 0.8, 2: 1.25}
    series = lambda scale, rounds: tuple(tuple(scale * drift[k] * rng.lognormal(0, 0.002, 20)) for k in rounds)  # noqa: E731
    a = S.Timings(series(100, (0, 2)), 1, (0, 2))
    b = S.Timings(series(105, (0, 1, 2)), 1, (0, 1, 2))
    c = S.compare_models(a, b)
    assert c.basis.startswith("paired ratios over 2 rounds") and c.ci[0] <= 1.05 <= c.ci[1] < 1.10
    recs = [{"status": "ok", "repeat": k, "latency_samples_ms": [1.0, 2.0], "global_batch": 1, "timestamp": "t"}
            for k in (0, 2)]
    assert S.Timings.from_records(recs).rounds == (0, 2)


# --------------------------------------------------------------------------- issue 27 group 2: bounded bootstrap
def _scipy_interval(b, n, stat) -> tuple[float, float]:
    """The interval as scipy's bootstrap draws it all at once (what bench used before chunking)."""
    from scipy import stats as sps

    res = sps.bootstrap((b, n), stat, n_resamples=S.RESAMPLES, vectorized=True, paired=False,
                        method="percentile", rng=np.random.default_rng(7))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _median_ratio(x, y, axis=-1):
    return np.median(y, axis=axis) / np.median(x, axis=axis)


@pytest.mark.parametrize("sizes", [(2, 3), (37, 1201), (4999, 5000)])
@pytest.mark.parametrize("metric", ["latency", "throughput"])
def test_chunked_bootstrap_gives_scipys_interval_bit_for_bit(sizes, metric, monkeypatch):
    """Chunking the resamples keeps every seeded interval as it was, whatever the chunk size."""
    rng = np.random.default_rng(sum(sizes))
    b, n = rng.lognormal(2, 0.2, sizes[0]), rng.lognormal(2.05, 0.2, sizes[1])
    if metric == "throughput":
        expected = _scipy_interval(b, n, lambda x, y, axis=-1: (2 / np.mean(y, axis=axis)) / (3 / np.mean(x, axis)))
    else:
        expected = _scipy_interval(b, n, _median_ratio)
    for chunk in (S.CHUNK_VALUES, 9973):  # 9973: one row per chunk at n = 5000
        monkeypatch.setattr(S, "CHUNK_VALUES", chunk)
        assert S._two_sample_ci(b, n, metric, 3, 2, np.random.default_rng(7)) == expected
    peaks = S.compare_values(list(b[:6]), list(n[:6]), 0.1, seed=7).ci
    assert peaks == _scipy_interval(b[:6], n[:6], _median_ratio)


def test_bootstrap_draws_no_more_than_a_chunk_at_once(monkeypatch):
    """The largest array of drawn values is CHUNK_VALUES, not RESAMPLES x N (5 GB at N = 1e5); a
    small chunk stands for the real one (1 << 20) so the test stays quick."""
    monkeypatch.setattr(S, "CHUNK_VALUES", 10_000)
    drawn: list[int] = []
    real = np.random.Generator.integers

    class Spy:
        def __init__(self, rng):
            self.rng = rng

        def integers(self, *args, size=None, **kw):
            out = real(self.rng, *args, size=size, **kw)
            drawn.append(int(np.size(out)))
            return out

    n = 3000
    x = np.random.default_rng(0).lognormal(2, 0.1, n)
    S._two_sample_ci(x, x * 1.01, "latency", 1, 1, Spy(np.random.default_rng(0)))
    assert max(drawn) <= 10_000 and sum(drawn) == 2 * S.RESAMPLES * n
