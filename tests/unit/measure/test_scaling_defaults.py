"""Issue 17, defaults: scaling efficiency only against a baseline of the same run, with a CI;
--cudnn-benchmark auto is recorded resolved (on for CUDA, as timm's benchmark)."""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.config import RunConfig
from bench.launch.context import DistContext
from bench.measure import derived
from bench.measure.timing import Latency, Throughput
from bench.plan import Cell
from bench.scenarios.result import CellResult
from bench.stats import Timings, compare_runs

CPU = torch.device("cpu")
ONE = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU, backend=None)
SAME = {"model": "r", "res": "64", "mode": "train", "batch": 2, "task": "cls", "precision": "fp32",
        "device_name": "cpu", "channels_last": False, "compile": False, "tf32": True, "status": "ok"}


def _samples(ms: float, n: int = 40, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [ms * (1 + 0.05 * rng.uniform(-1, 1)) for _ in range(n)]


def _rec(world: int, threads: int, samples: list[float], **extra) -> dict:
    global_batch = SAME["batch"] * world
    return {**SAME, "world_size": world, "threads": threads, "latency_samples_ms": samples,
            "global_batch": global_batch, "throughput": global_batch * len(samples) / (sum(samples) / 1e3), **extra}


def test_a_baseline_from_another_run_is_not_compared():
    old = _rec(1, 2, _samples(10.0), run_id="20260101-old", timestamp="2026-01-01")
    two = _rec(2, 1, _samples(12.0, seed=1))
    assert derived.scaling([old], two, run_id="20260202-new")["scaling_efficiency"] is None
    ours = {**old, "run_id": "20260202-new", "throughput": old["throughput"] * 2, "timestamp": "2025-01-01"}
    got = derived.scaling([old, ours], two, run_id="20260202-new")  # the older-timestamped one, but of this run
    assert got["scaling_efficiency"] == pytest.approx(two["throughput"] / ours["throughput"])


def test_scaling_efficiency_has_the_bootstrap_interval_of_the_throughput_ratio():
    one = _rec(1, 2, _samples(10.0), run_id="r", timestamp="t")
    two = _rec(2, 1, _samples(12.0, seed=1))
    got = derived.scaling([one], two, run_id="r")
    assert got["scaling_basis"] == "same-total-threads"
    lo, hi = got["scaling_efficiency_ci95"]
    assert lo < got["scaling_efficiency"] < hi and hi - lo > 0.005
    ref = compare_runs(Timings.from_records([one]), Timings.from_records([two]), metric="throughput")
    assert [lo, hi] == [pytest.approx(ref.ci[0]), pytest.approx(ref.ci[1])]
    per_rank = _rec(1, 1, _samples(10.0), run_id="r", timestamp="t")  # same threads per rank: / N
    got = derived.scaling([per_rank], two, run_id="r")
    assert got["scaling_basis"] == "same-threads-per-rank"
    assert got["scaling_efficiency_ci95"] == [pytest.approx(ref.ci[0] / 2), pytest.approx(ref.ci[1] / 2)]


def test_scenario_compares_within_its_own_run(monkeypatch):
    from bench.measure import peak
    from bench.measure.flops import Flops
    from bench.scenarios import step as step_scenario

    monkeypatch.setattr(peak, "measure_peak", lambda *a, **k: None)
    monkeypatch.setattr(step_scenario, "measure_peak", lambda *a, **k: None)
    scenario = step_scenario.StepScenario(RunConfig(models=["resnet18"], res=[(64, 64)], budget=0.1, max_time=10))
    scenario.prepare(ONE, SimpleNamespace(path=Path("/somewhere/20260202-new")), [])
    counted = Flops(model="r", res="64", batch=1, params=1, gmacs=1.0, gflops=2.0)
    two = _rec(2, 1, _samples(12.0, seed=1))
    latency = Latency(times_ms=two.pop("latency_samples_ms"), warmup_iters=0, warmup_ms=0.0)
    two.pop("throughput"), two.pop("global_batch")
    result = CellResult(two, world_size=2, latency=latency,
                        throughput=Throughput.sustained(latency, two["batch"], 2, [latency.median_ms] * 2))
    history = [_rec(1, 2, _samples(10.0), run_id="20260101-old", timestamp="2026-01-01")]
    scenario._derive(result, counted, Cell("r", 64, 64, "train", 2), ONE, history)
    assert result.derived["scaling_efficiency"] is None and result.derived["scaling_efficiency_ci95"] is None
    history.append({**history[0], "run_id": "20260202-new"})
    scenario._derive(result, counted, Cell("r", 64, 64, "train", 2), ONE, history)
    assert result.derived["scaling_efficiency"] is not None and result.derived["scaling_efficiency_ci95"] is not None


def test_cudnn_benchmark_auto_is_recorded_resolved_and_applied(monkeypatch):
    from bench.scenarios import step as step_scenario

    before = torch.backends.cudnn.benchmark
    try:
        monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # --device auto would pick CUDA
        scenario = step_scenario.StepScenario(RunConfig(models=["resnet18"]))
        assert torch.backends.cudnn.benchmark is True
        assert scenario._base(Cell("resnet18", 64, 64, "infer", 1), ONE)["cudnn_benchmark"] is True
        off = step_scenario.StepScenario(RunConfig(models=["resnet18"], cudnn_benchmark=False))
        assert torch.backends.cudnn.benchmark is False
        assert off._base(Cell("resnet18", 64, 64, "infer", 1), ONE)["cudnn_benchmark"] is False
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        cpu = step_scenario.StepScenario(RunConfig(models=["resnet18"]))
        assert cpu._base(Cell("resnet18", 64, 64, "infer", 1), ONE)["cudnn_benchmark"] is False
    finally:
        torch.backends.cudnn.benchmark = before
