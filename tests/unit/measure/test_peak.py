"""Issue 17, MFU: the peak is a sweep of GEMM sizes with the latency statistic (median + CI),
re-measured after each cell; the datasheet peak beside it; frozen weights leave the 3x rule."""
from __future__ import annotations

import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.launch.context import DistContext
from bench.measure import derived, peak
from bench.measure.timing import Latency

CPU = torch.device("cpu")
ONE = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU, backend=None)


def _fake(per_size_ms, n, seen):
    """What _gemm computes from a Latency of the scripted times (the real statistic code)."""
    seen.append(n)
    lat = Latency(times_ms=list(per_size_ms[n]), warmup_iters=6, warmup_ms=1.0, stop_reason="converged")
    work = 2 * n**3 / 1e12
    ci = lat.to_record()["latency_ci95_ms"]
    return work / (lat.median_ms / 1e3), ([work / (ci[1] / 1e3), work / (ci[0] / 1e3)] if ci else None), lat.iters


def test_sweep_takes_the_best_sizes_median_not_the_luckiest_iteration(monkeypatch):
    """Size 1024 has one lucky 1 ms iteration but a 10 ms median; 2048 a steady 40 ms. The old
    best-of-N read 1024 at 2.1 TFLOP/s; the median sweep picks 2048 at 0.43."""
    times = {512: [1.0] * 10, 1024: [10.0] * 9 + [1.0], 2048: [40.0] * 10}
    seen: list[int] = []
    monkeypatch.setattr(peak, "_gemm", lambda d, t, n, b: _fake(times, n, seen))
    got = peak.measure_peak(CPU, torch.float32, budget_s=3.0)
    assert seen == [512, 1024, 2048]
    assert got.size == 2048 and got.tflops == pytest.approx(2 * 2048**3 / 0.040 / 1e12)
    assert got.ci95 == [pytest.approx(got.tflops), pytest.approx(got.tflops)]
    assert set(got.sizes) == {512, 1024, 2048} and got.when == "sweep"
    assert "2048^3 median of 10" in got.method and "512,1024,2048" in got.method and "skipped" not in got.method


def test_a_size_whose_iterations_overrun_its_share_of_the_budget_is_skipped_and_said(monkeypatch):
    """0.3 s over three sizes is 0.1 s each; 1024's 10 ms median puts six 2048 GEMMs at 0.48 s,
    so 2048 is never run (on the 2-core CPU it cost seconds per cell for no higher a peak)."""
    times = {512: [2.0] * 10, 1024: [10.0] * 10, 2048: [40.0] * 10}
    seen: list[int] = []
    monkeypatch.setattr(peak, "_gemm", lambda d, t, n, b: _fake(times, n, seen))
    got = peak.measure_peak(CPU, torch.float32, budget_s=0.3)
    assert seen == [512, 1024] and got.size == 1024 and got.skipped == (2048,)
    assert set(got.sizes) == {512, 1024} and "2048 skipped (over the budget)" in got.method
    assert "2048 skipped" in peak.remeasure(got, CPU, torch.float32, 0.1).method  # each cell's record says it too
    # the smallest size is measured whatever the budget, and a remeasure is of one size
    seen.clear()
    assert peak.measure_peak(CPU, torch.float32, budget_s=1e-6).size == 512 and seen == [512]


def test_ci_is_the_inverted_ci_of_the_median():
    times = [10.0, 10.2, 9.8, 10.1, 9.9, 10.3, 9.7, 10.0, 10.4, 9.6]
    lat = Latency(times_ms=times, warmup_iters=6, warmup_ms=1.0)
    lo_ms, hi_ms = lat.ci95_ms
    got = _fake({1024: times}, 1024, [])
    work = 2 * 1024**3 / 1e12
    assert got[0] == pytest.approx(work / (statistics.median(times) / 1e3))
    assert got[1] == [pytest.approx(work / (hi_ms / 1e3)), pytest.approx(work / (lo_ms / 1e3))]
    assert got[1][0] < got[0] < got[1][1]


def test_real_sweep_on_cpu_gives_a_median_and_a_ci():
    got = peak.measure_peak(CPU, torch.float32, budget_s=0.2, sizes=(128, 256))
    assert got is not None and got.tflops > 0 and got.iters >= peak.MIN_ITERS
    assert got.ci95 is not None and got.ci95[0] <= got.tflops <= got.ci95[1]
    assert peak.sizes_for("cpu") == (512, 1024, 2048) and peak.sizes_for(torch.device("cuda", 0)) == (4096, 8192)


def test_remeasure_measures_the_best_size_only(monkeypatch):
    times = {512: [1.0] * 10, 1024: [10.0] * 10, 2048: [40.0] * 10}
    seen: list[int] = []
    monkeypatch.setattr(peak, "_gemm", lambda d, t, n, b: _fake(times, n, seen))
    first = peak.measure_peak(CPU, torch.float32, budget_s=3.0)
    seen.clear()
    times[2048] = [50.0] * 10
    again = peak.remeasure(first, CPU, torch.float32, 0.1)
    assert seen == [2048] and again.when == "after-cell"
    assert again.tflops == pytest.approx(2 * 2048**3 / 0.050 / 1e12) and set(again.sizes) == {512, 1024, 2048}


def test_scenario_uses_the_peak_measured_after_each_cell(monkeypatch):
    """Two cells, the machine slows between them: each cell's MFU uses the peak measured right
    after it, and records that peak's CI and method (the old code used one figure for the run)."""
    from bench.config import RunConfig
    from bench.measure.flops import Flops
    from bench.measure.timing import Throughput
    from bench.plan import Cell
    from bench.scenarios import step as step_scenario
    from bench.scenarios.result import CellResult

    times = {512: [0.1] * 10, 1024: [1.0] * 10, 2048: [4.0] * 10}
    monkeypatch.setattr(peak, "_gemm", lambda d, t, n, b: _fake(times, n, []))
    scenario = step_scenario.StepScenario(RunConfig(models=["resnet18"], res=[(64, 64)], budget=1.0, max_time=10))
    scenario.prepare(ONE, SimpleNamespace(path=Path("/nonexistent")), [])
    counted = Flops(model="m", res="64", batch=1, params=1, gmacs=1.0, gflops=2.0)
    cell = Cell("resnet18", 64, 64, "infer", 1)
    rates = []
    for ms in (4.0, 8.0):
        times[2048] = [ms] * 10
        result = CellResult({"device_name": "cpu"}, throughput=Throughput(100.0, 1, 1, [10.0]))
        scenario._derive(result, counted, cell, ONE, [])
        rec = result.derived
        rates.append(rec["peak_tflops"])
        assert rec["mfu"] == pytest.approx(rec["achieved_tflops"] / rec["peak_tflops"])
        assert rec["peak_tflops_ci95"] == [pytest.approx(rec["peak_tflops"])] * 2
        assert "after-cell" in rec["peak_method"]
        assert rec["mfu_datasheet"] is None and rec["peak_tflops_datasheet"] is None  # a CPU: no datasheet
    assert rates[0] == pytest.approx(2 * rates[1])


@pytest.mark.parametrize("name, dtype, tf32, want", [
    ("NVIDIA H100 80GB HBM3", "bf16", True, 989.5), ("NVIDIA H100 80GB HBM3", "fp32", True, 494.5),
    ("NVIDIA H100 80GB HBM3", "fp32", False, 67.0), ("NVIDIA H100 PCIe", "fp16", True, 756.5),
    ("NVIDIA H100 NVL", "bf16", True, 835.5), ("NVIDIA H200", "bf16-weights", True, 989.5),
    ("NVIDIA A100-SXM4-80GB", "fp32", True, 156.0), ("NVIDIA A100 80GB PCIe", "bf16", True, 312.0),
    ("Tesla V100-SXM2-32GB", "fp16", True, 125.0), ("Tesla V100-PCIE-16GB", "fp32", True, 14.0),
    ("Tesla V100-SXM2-32GB", "bf16", True, None), ("Intel Xeon", "fp32", True, None), (None, "fp32", True, None),
])
def test_datasheet_table(name, dtype, tf32, want):
    assert peak.datasheet_tflops(name, dtype, tf32) == want


def test_datasheet_mfu_beside_the_measured_one():
    got = derived.datasheet_utilisation(98.95, 989.5, 2)
    assert got == {"peak_tflops_datasheet": 1979.0, "mfu_datasheet": pytest.approx(0.05)}
    assert derived.datasheet_utilisation(1.0, None, 1) == {"peak_tflops_datasheet": None, "mfu_datasheet": None}


def test_frozen_backbone_leaves_its_weight_gradients_out_of_training_flops():
    """A frozen half: forward + activation gradients + half the weight gradients = 2.5x, not 3x."""
    from bench.measure.flops import count_flops

    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 16))
    model[0].requires_grad_(False)  # the "backbone"
    counted = count_flops(_Flat(model), "m", 1, 16, cross_check=False)
    assert counted.trainable_fraction == pytest.approx(0.5)
    got = derived.utilisation(counted.gmacs, True, 10.0, 1.0, 1, counted.trainable_fraction)
    assert got["achieved_tflops"] == pytest.approx(2 * counted.gmacs * 1e9 * 2.5 * 10.0 / 1e12)
    full = derived.utilisation(counted.gmacs, True, 10.0, 1.0, 1)
    assert full["achieved_tflops"] == pytest.approx(got["achieved_tflops"] * 3 / 2.5)
    with pytest.raises(ValueError):
        derived.train_factor(1.5)


class _Flat(torch.nn.Module):
    """Feeds an image batch to a stack of linears: (B, 3, 1, 16) -> (B, 3, 16)."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x.flatten(2))
