"""The timing protocol (bench.measure.timing): a real sleep, and a fake clock whose step "takes"
scripted durations so warm-up exclusion, statistics, the adaptive stop and the hard cap can be
checked against hand computation."""
from __future__ import annotations

import math
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from bench.measure.peak import peak_matmul_tflops  # moved out of timing (issue 17)
from bench.measure.timing import (
    RECORD_KEYS,
    measure,
    measure_lockstep,
    median_ci95_ranks,
    time_block,
)

CPU = torch.device("cpu")
MS = 1_000_000  # ns


class Script:
    """A fake clock and a step: each call of the step advances the clock by the next scripted
    duration (ms); the clock stands still otherwise, so elapsed time is exactly the sum of the
    steps run. After the script runs out, ``then`` (a function of the call index) continues it."""

    def __init__(self, durations_ms, then=None):
        self.durations = list(durations_ms)
        self.then = then
        self.now = 10**12  # arbitrary origin
        self.calls = 0

    def clock(self) -> int:
        return self.now

    def step(self) -> None:
        i = self.calls
        d = self.durations[i] if i < len(self.durations) else self.then(i)
        self.calls += 1
        self.now += round(d * MS)


def run(script: Script, budget_s=100.0, max_time_s=None, **kw):
    return measure(script.step, CPU, budget_s, max_time_s, clock=script.clock, **kw)


# --------------------------------------------------------------------------- hand formulas
def h_percentile(xs, p):
    s = sorted(xs)
    h = (len(s) - 1) * p
    j = math.floor(h)
    return s[j] if j + 1 >= len(s) else s[j] + (h - j) * (s[j + 1] - s[j])


def h_coverage(n, lo):
    """1 - 2 P(Bin(n, 1/2) <= lo - 1), by exact integer sums."""
    return 1 - 2 * sum(math.comb(n, k) for k in range(lo)) / 2**n


def h_ci(xs):
    s, n = sorted(xs), len(xs)
    lo = max(k for k in range(1, n // 2 + 2) if h_coverage(n, k) >= 0.95)
    return s[lo - 1], s[n - lo]


def h_median(xs):
    s, n = sorted(xs), len(xs)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def h_converged(xs, tol=0.02):
    m = h_median(xs)
    lo, hi = h_ci(xs)
    return m - lo <= tol * m and hi - m <= tol * m


def noisy(seed, n, base=10.0, spread=0.1):
    """n durations, base ms ± spread (uniform), rounded to whole microseconds."""
    rng = random.Random(seed)
    return [round(base * (1 + rng.uniform(-spread, spread)), 3) for _ in range(n)]


# --------------------------------------------------------------------------- real clock
def test_sleep_step_measures_20ms():
    t = measure(lambda: time.sleep(0.02), CPU, budget_s=1.0, max_time_s=30.0)
    assert t.iters >= 10
    assert abs(t.median_ms - 20.0) <= 2.0, t.median_ms
    assert t.warmup_iters >= 6
    assert min(t.times_ms) >= 19.9  # sleep never returns early; a constant stub would not read 20 ms
    assert sum(t.times_ms) >= 1000.0  # min_time_s: at least 1 s of timed iterations


def test_time_block_and_peak_matmul_still_work():
    ms = time_block(lambda: time.sleep(0.005), CPU, 4)
    assert len(ms) == 4 and all(m >= 4.9 for m in ms)
    tflops = peak_matmul_tflops(CPU, torch.float32, budget_s=0.2)
    assert math.isfinite(tflops) and tflops > 0


# --------------------------------------------------------------------------- fake clock
def test_warmup_is_excluded():
    # blocks of 3: medians 100, 10 (differ), 10 (agree) -> 9 warm-up iterations, 3*100 + 6*10 ms
    s = Script([100, 100, 100], then=lambda i: 10)
    t = run(s, min_time_s=0.0)
    assert t.warmup_iters == 9
    assert t.warmup_ms == pytest.approx(360.0)
    assert t.times_ms and all(x == pytest.approx(10.0) for x in t.times_ms)
    assert t.median_ms == pytest.approx(10.0)
    assert t.iters == 10 and t.stop_reason == "converged"  # constant: converged as soon as the rules hold
    assert s.calls == t.warmup_iters + t.iters


def test_warmup_not_cut_by_soft_budget():
    # block medians 50, 40, 30, 20, 20: steady after 15 iterations although the budget is 1 ms
    script = [50] * 3 + [40] * 3 + [30] * 3 + [20] * 3
    t = run(Script(script, then=lambda i: 20), budget_s=0.001, min_time_s=0.0)
    assert t.warmup_iters == 15 and t.warmup_ms == pytest.approx(150 + 120 + 90 + 60 + 60)
    assert t.iters >= 10  # nor are the minimum samples


def test_warmup_tolerance_is_relative_5_percent():
    # medians 10.6 then 10.0: |0.6| > 0.05 * 10 -> not steady; then 10.0, 10.0 -> steady at 9
    t = run(Script([10.6] * 3, then=lambda i: 10.0), min_time_s=0.0)
    assert t.warmup_iters == 9
    # medians 10.4 then 10.0: |0.4| <= 0.5 -> steady at 6
    t = run(Script([10.4] * 3, then=lambda i: 10.0), min_time_s=0.0)
    assert t.warmup_iters == 6


def test_statistics_equal_hand_computation():
    samples = [12.0, 7.5, 9.0, 30.0, 10.5, 8.25, 11.0, 9.5, 14.0, 10.0,
               6.0, 13.0, 9.75, 10.25, 8.0, 20.0, 11.5, 10.75, 9.25, 12.5]
    t = run(Script([10] * 6 + samples), min_iters=20, max_iters=20, min_time_s=0.0)
    assert t.warmup_iters == 6
    assert t.times_ms == pytest.approx(samples)
    assert t.stop_reason == "max-iters"
    assert t.median_ms == pytest.approx((10.25 + 10.5) / 2)
    assert t.median_ms == pytest.approx(h_median(samples))
    assert t.p10_ms == pytest.approx(h_percentile(samples, 0.1))
    assert t.p90_ms == pytest.approx(h_percentile(samples, 0.9))
    assert t.p10_ms == pytest.approx(statistics.quantiles(samples, n=10, method="inclusive")[0])
    assert t.p90_ms == pytest.approx(statistics.quantiles(samples, n=10, method="inclusive")[8])
    mean = sum(samples) / 20
    sd = math.sqrt(sum((x - mean) ** 2 for x in samples) / 19)
    assert t.cv == pytest.approx(sd / mean)
    # n = 20: P(Bin(20, 1/2) <= 5) = 0.0207 and P(<= 6) = 0.0577, so ranks 6 and 15 (coverage 95.9%)
    s = sorted(samples)
    assert t.ci95_ms == pytest.approx([s[5], s[14]])
    assert t.ci95_ms == pytest.approx(list(h_ci(samples)))
    assert t.ci_coverage == pytest.approx(h_coverage(20, 6)) and 0.95 <= t.ci_coverage < 0.96
    assert t.cv > 0.05 and "wide-ci" in t.flags and not t.stable  # wide CI, not a high CV, is the doubt
    rec = t.to_record()
    assert tuple(rec) == RECORD_KEYS
    assert rec == {
        "iters": 20, "warmup_iters": 6, "latency_ms": t.median_ms, "latency_p10_ms": t.p10_ms,
        "latency_p90_ms": t.p90_ms, "latency_p99_ms": None, "latency_cv": t.cv, "latency_ci95_ms": t.ci95_ms,
        "latency_ci_coverage": t.ci_coverage, "latency_samples_ms": samples, "latency_blocks": t.blocks,
        "samples_thinned": False, "timing_stable": False, "timing_stop": "max-iters", "timing_flags": ["wide-ci"],
    }
    assert sum(t.blocks) == 20


def test_ci_ranks_exact_coverage_small_cases():
    # n = 10: ranks 2 and 9 (97.9%); n = 100: ranks 40 and 61; below n = 6 no 95% interval exists
    xs = [float(i) for i in range(1, 11)]
    t = run(Script([5] * 6 + xs), min_iters=10, max_iters=10, min_time_s=0.0)
    assert t.ci95_ms == [2.0, 9.0] and t.ci_coverage == pytest.approx(1 - 2 * 11 / 1024)
    xs = [float(i) for i in range(1, 101)]
    t = run(Script([5] * 6 + xs), min_iters=100, max_iters=100, min_time_s=0.0)
    assert t.ci95_ms == [40.0, 61.0]
    assert t.p99_ms == pytest.approx(h_percentile(xs, 0.99))
    for n, ranks in ((5, None), (6, (1, 6)), (9, (2, 8)), (10, (2, 9)), (20, (6, 15))):
        assert median_ci95_ranks(n) == ranks
    t = run(Script([5] * 6 + [1.0, 2.0, 3.0, 4.0, 5.0]), min_iters=5, max_iters=5, min_time_s=0.0)
    rec = t.to_record()
    assert rec["latency_ci95_ms"] is None and rec["latency_ci_coverage"] is None
    assert {"few-samples", "wide-ci"} <= set(rec["timing_flags"])


def test_drift_flag_on_a_step_that_slows_down():
    steady = noisy(seed=3, n=60)
    t = run(Script([10] * 6 + steady), min_iters=60, max_iters=60, min_time_s=0.0)
    assert "drift" not in t.flags
    slowing = [x * (1 + 0.2 * i / 60) for i, x in enumerate(steady)]  # 20% slower by the end
    t = run(Script([10] * 6 + slowing), min_iters=60, max_iters=60, min_time_s=0.0)
    assert "drift" in t.flags and not t.stable


def test_samples_kept_in_order_and_thinned_above_the_limit():
    t = run(Script([], then=lambda i: 1.0 + (i % 7) * 0.001), min_iters=6000, max_iters=6000, min_time_s=0.0)
    rec = t.to_record()
    assert t.iters == 6000 and rec["samples_thinned"] is True and len(rec["latency_samples_ms"]) == 5000
    assert rec["latency_samples_ms"][0] == t.times_ms[0] and rec["latency_samples_ms"][-1] == t.times_ms[-1]
    assert rec["latency_ms"] == pytest.approx(statistics.median(t.times_ms))  # statistics used every sample
    assert sum(rec["latency_blocks"]) == 6000


def test_slow_step_warms_up_in_fewer_iterations():
    # a cold first iteration, then 1.5 s steps: blocks of one iteration, so warm-up is 3 iterations
    # (cold, then two that agree) rather than the 6 a fast step needs
    t = run(Script([3000.0], then=lambda i: 1500.0), min_time_s=0.0)
    assert t.warmup_iters == 3 and t.iters == 10
    t = run(Script([30.0], then=lambda i: 15.0), min_time_s=0.0)
    assert t.warmup_iters == 6


def test_adaptive_stop_exactly_when_ci_criterion_met():
    samples = noisy(seed=1, n=2000)
    # hand: the first n >= 10 whose 95% CI of the median is within ±2% of it
    expected = next(n for n in range(10, 2001) if h_converged(samples[:n]))
    assert 30 < expected < 1000  # the criterion is not met trivially at the minimum
    # block_s=0: one-iteration blocks, a decision after every iteration
    t = run(Script([10] * 6 + samples), min_time_s=0.0, block_s=0.0)
    assert t.stop_reason == "converged"
    assert t.iters == expected
    assert t.times_ms == pytest.approx(samples[:expected])
    lo, hi = t.ci95_ms
    assert t.median_ms - lo <= 0.02 * t.median_ms and hi - t.median_ms <= 0.02 * t.median_ms
    # default blocks: decisions only between blocks, so it stops at the first block boundary at
    # or after the hand stop where the criterion holds
    t = run(Script([10] * 6 + samples), min_time_s=0.0)
    assert t.stop_reason == "converged" and t.iters >= expected and h_converged(samples[:t.iters])


def test_min_time_rule_then_budget_stop():
    # alternating 10 / 12 ms never converges (median 11, CI [10, 12]): the budget ends it at the
    # first decision where at least 0.5 s of timing has elapsed; min_time_s 0.2 s holds before.
    alt = lambda i: 10.0 if i % 2 == 0 else 12.0  # noqa: E731
    t = run(Script([11] * 6, then=alt), budget_s=0.5, min_time_s=0.2, block_s=0.0)
    assert t.warmup_iters == 6
    sums, total = [], 0.0
    for i in range(6, 200):
        total += alt(i)
        sums.append(total)
    expected = next(n for n, s in enumerate(sums, 1) if s >= 500.0)
    assert t.stop_reason == "budget" and t.iters == expected
    assert t.cv == pytest.approx(statistics.stdev(t.times_ms) / statistics.fmean(t.times_ms))
    assert t.cv > 0.05 and not t.stable and t.flags == ["wide-ci"]  # CI [10, 12] is +-9% of 11


def test_min_time_keeps_timing_past_min_iters():
    # a constant step converges at once, but 1 s of timed iterations of 20 ms is 50 iterations
    t = run(Script([], then=lambda i: 20.0), budget_s=0.01)
    assert t.iters == 50 and t.stop_reason == "converged"


def test_hard_cap_ends_cell_early():
    # 6 warm-up iterations (0.6 s), then 9 more fit before 1.55 s; the 10th would end at 1.6 s
    t = run(Script([], then=lambda i: 100.0), budget_s=10.0, max_time_s=1.55)
    assert t.warmup_iters == 6
    assert t.iters == 9 < 10
    assert t.stop_reason == "time-cap"
    assert "time-cap" in t.flags and "few-samples" in t.flags
    rec = t.to_record()
    assert rec["timing_stable"] is False and rec["timing_stop"] == "time-cap"
    assert rec["latency_ms"] == pytest.approx(100.0)


def test_hard_cap_during_warmup_and_zero_cap():
    # 1 s steps, cap 2.5 s: warm-up may not pass half the cap (1.25 s), so it stops after one
    # iteration (a second would end at 2 s), unsteady; one timed iteration fits before 2.5 s.
    s = Script([], then=lambda i: 1000.0)
    t = run(s, max_time_s=2.5)
    assert (t.warmup_iters, t.iters, s.calls) == (1, 1, 2)
    rec = t.to_record()
    assert rec["latency_ms"] == pytest.approx(1000.0) and rec["timing_stable"] is False
    assert set(rec["timing_flags"]) >= {"time-cap", "few-samples", "warmup-unsteady"}
    # 1 s steps, cap 0.9 s: the first warm-up iteration already passes the cap, nothing timed
    s = Script([], then=lambda i: 1000.0)
    t = run(s, max_time_s=0.9)
    assert (t.warmup_iters, t.iters) == (1, 0) and t.to_record()["latency_ms"] is None
    s = Script([], then=lambda i: 1.0)
    t = run(s, max_time_s=0.0)
    assert (t.warmup_iters, t.iters, s.calls, t.stop_reason) == (0, 0, 0, "time-cap")


def test_cap_after_sample_rules_is_not_unstable():
    # constant 10 ms converges only once min_time_s (1 s = 100 iters) holds; a 0.5 s cap ends it first
    t = run(Script([], then=lambda i: 10.0), max_time_s=0.5)
    assert t.stop_reason == "time-cap" and not t.stable and t.iters < 100
    # with min_time_s=0 the rules hold at 10 iterations, well within the cap
    t = run(Script([], then=lambda i: 10.0), max_time_s=0.5, min_time_s=0.0)
    assert t.stop_reason == "converged" and t.stable


def test_max_iters_and_unsteady_warmup():
    t = run(Script([], then=lambda i: 1.0), min_iters=5, max_iters=7, min_time_s=10.0)
    assert t.stop_reason == "max-iters" and t.iters == 7  # max_iters may cut min_time_s
    assert t.flags == ["few-samples"] and not t.stable  # fewer than 10 samples: a doubt, whatever stopped it
    # block medians alternate 10 / 12 forever: warm-up ends at max_warmup_iters, flagged
    alt = lambda i: 10.0 if i % 2 == 0 else 12.0  # noqa: E731
    t = run(Script([], then=alt), min_time_s=0.0, max_warmup_iters=30, max_iters=20)
    assert t.warmup_iters == 30 and "warmup-unsteady" in t.flags and not t.stable


def test_constant_step_cv_zero_and_stable():
    t = run(Script([], then=lambda i: 5.0), budget_s=2.0)
    assert t.cv == 0.0 and t.stable and t.flags == []
    assert t.ci95_ms == [5.0, 5.0] and t.p10_ms == t.p90_ms == t.median_ms == 5.0
    assert t.stop_reason == "converged" and t.iters == 200  # 1 s of 5 ms iterations


def test_ci_shrinks_with_more_samples():
    rng = random.Random(7)
    dist = [round(10 * rng.lognormvariate(0, 0.2), 3) for _ in range(200)]
    w = {}
    for n in (20, 200):
        t = run(Script([10] * 6 + dist), min_iters=n, max_iters=n, min_time_s=0.0, ci_tolerance=0.0)
        assert t.iters == n
        lo, hi = t.ci95_ms
        assert lo <= t.median_ms <= hi
        w[n] = hi - lo
    assert 0 < w[200] < 0.6 * w[20]


# --------------------------------------------------------------------------- lock-step
SCENARIOS = {
    "warmup+converge": dict(script=([100] * 3, lambda i: 10.0), kw=dict(min_time_s=0.0)),
    "noisy": dict(script=([10] * 6 + noisy(3, 3000), None), kw=dict(min_time_s=0.5)),
    "noisy-b1": dict(script=([10] * 6 + noisy(4, 3000), None), kw=dict(min_time_s=0.0, block_s=0.0)),
    "budget": dict(script=([11] * 6, lambda i: 10.0 if i % 2 else 12.0), kw=dict(budget_s=0.7, min_time_s=0.1)),
    "cap": dict(script=([], lambda i: 100.0), kw=dict(max_time_s=1.55)),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_lockstep_one_rank_matches_measure(name):
    (durations, then), kw = SCENARIOS[name]["script"], dict(SCENARIOS[name]["kw"])
    budget = kw.pop("budget_s", 100.0)
    a = Script(durations, then)
    ta = measure(a.step, CPU, budget, clock=a.clock, **kw)
    b = Script(durations, then)
    calls = []
    tb = measure_lockstep(b.step, CPU, budget, lambda v: calls.append(v) or v, clock=b.clock, **kw)
    assert (tb.warmup_iters, tb.iters, tb.stop_reason) == (ta.warmup_iters, ta.iters, ta.stop_reason)
    assert tb.times_ms == ta.times_ms and tb.to_record() == ta.to_record()
    assert calls  # the decisions did go through agree


class AllReduceMax:
    """An all-reduce MAX between threads (one per fake rank)."""

    def __init__(self, world: int):
        self.barrier = threading.Barrier(world, timeout=20)
        self.values = [0.0] * world
        self.calls = [0] * world

    def agree(self, rank: int):
        def f(v: float) -> float:
            self.calls[rank] += 1
            self.values[rank] = v
            self.barrier.wait()
            out = max(self.values)
            self.barrier.wait()
            return out
        return f


def _two_ranks(scripts, **kw):
    red = AllReduceMax(2)
    budget = kw.pop("budget_s", 100.0)
    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(measure_lockstep, s.step, CPU, budget, red.agree(r), clock=s.clock, **kw)
                for r, s in enumerate(scripts)]
        out = [f.result(timeout=60) for f in futs]
    assert red.calls[0] == red.calls[1]
    return out


def test_lockstep_two_ranks_run_the_same_iterations():
    fast = lambda: Script([], then=lambda i: 10.0)  # noqa: E731 - steady at once, converged at once
    slow_script = [30] * 3 + [20] * 3 + [12] * 3 + [10] * 3 + noisy(5, 3000)
    slow = lambda: Script(slow_script)  # noqa: E731 - needs longer warm-up and more samples
    kw = dict(min_time_s=0.0, block_s=0.0)
    s_fast = fast()
    t_fast = measure(s_fast.step, CPU, 100.0, clock=s_fast.clock, **kw)
    s_slow = slow()
    t_slow = measure(s_slow.step, CPU, 100.0, clock=s_slow.clock, **kw)
    assert (t_fast.warmup_iters, t_fast.iters) == (6, 10)
    assert t_slow.warmup_iters > 6 and t_slow.iters > 10
    r0, r1 = _two_ranks([fast(), slow()], **kw)
    # the fast rank is steady and converged at every decision, so the slow rank decides
    assert (r0.warmup_iters, r0.iters) == (r1.warmup_iters, r1.iters) == (t_slow.warmup_iters, t_slow.iters)
    assert r1.times_ms == t_slow.times_ms
    assert r0.stop_reason == r1.stop_reason == "converged"


def test_lockstep_two_ranks_agree_with_default_blocks_and_cap():
    # different speeds: block sizes, budget and cap are agreed, counts still equal
    kw = dict(min_time_s=0.3, budget_s=0.6)
    r0, r1 = _two_ranks([Script(noisy(8, 5000, base=3.5, spread=0.15)), Script(noisy(6, 5000, base=7.0))], **kw)
    assert (r0.warmup_iters, r0.iters) == (r1.warmup_iters, r1.iters)
    assert r0.iters >= 10 and r0.stop_reason == r1.stop_reason
    r0, r1 = _two_ranks([Script([], then=lambda i: 10.0), Script([], then=lambda i: 100.0)], max_time_s=1.55)
    assert (r0.warmup_iters, r0.iters) == (r1.warmup_iters, r1.iters) == (6, 9)
    assert r0.stop_reason == r1.stop_reason == "time-cap"
