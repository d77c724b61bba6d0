"""Direct unit tests of the task adapters (bench.tasks), the cell scenarios that call them
(bench.scenarios.step, bench.scenarios.dense, bench.scenarios.common), the typed tracker
results (Latency, Memory, Energy, Flops, Compile) and bench.measure.derived, each checked
against hand-computed figures."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

from bench.config import RunConfig
from bench.errors import BadInput
from bench.launch.context import DistContext
from bench.measure import derived
from bench.measure.compiling import Compile
from bench.measure.flops import Flops
from bench.measure.memory import Energy, Memory
from bench.measure.peak import Peak
from bench.measure.timing import RECORD_KEYS, Latency, median, percentile
from bench.plan import Cell
from bench.scenarios import dense
from bench.scenarios import step as step_scenario
from bench.scenarios.common import base_record, train_spec
from bench.scenarios.finetune import step_time_fields
from bench.tasks import TASKS, task_for
from bench.tasks.dense import PartsSetup

CPU = torch.device("cpu")
ONE = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU, backend=None)


# --------------------------------------------------------------------------- adapters
def test_task_for_names_every_task_and_refuses_others():
    assert sorted(TASKS) == ["cls", "det", "seg"]
    assert all(task_for(name).name == name for name in TASKS)
    with pytest.raises(BadInput, match="unknown task 'pose'"):
        task_for("pose")


def test_detector_input_is_padded_images_in_unit_range_others_normalised_noise():
    det, seg, cls = task_for("det"), task_for("seg"), task_for("cls")
    cell = Cell("resnet18", 100, 130, "infer", 2, "det")
    assert det.input_hw(cell) == (128, 160) == dense.input_hw(cell)
    x = det.input(cell, 2, CPU, torch.float32, channels_last=True)
    assert x.shape == (2, 3, 128, 160) and x.min() >= 0 and x.max() <= 1
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(det.feed(x), list) and len(det.feed(x)) == 2
    y = seg.input(Cell("resnet18", 96, 64, "infer", 3, "seg"), 3, CPU, torch.bfloat16, channels_last=False)
    assert y.shape == (3, 3, 96, 64) and y.dtype == torch.bfloat16 and y.min() < 0  # normal noise
    assert cls.input_hw(Cell("resnet18", 100, 130, "infer", 1)) == (100, 130)
    assert (cls.bn_mode, det.bn_mode, seg.bn_mode) == (None, "frozen", "frozen")


def test_train_targets_fit_each_task():
    x = torch.rand(2, 3, 64, 96)
    cls_t = task_for("cls").train_targets(x)
    assert cls_t.shape == (2,) and 0 <= cls_t.min() and cls_t.max() < 1000
    seg_t = task_for("seg").train_targets(x)
    assert seg_t.shape == (2, 64, 96) and seg_t.max() < 150
    boxes = task_for("det").train_targets(x)
    assert len(boxes) == 2 and boxes[0]["boxes"].shape == (3, 4)
    assert float(boxes[0]["boxes"][:, 2].max()) <= 96 and float(boxes[0]["boxes"][:, 3].max()) <= 64


@pytest.mark.parametrize("name", ["cls", "seg", "det"])
def test_each_task_builds_a_model_whose_loss_trains_and_whose_infer_step_runs(name):
    task = task_for(name)
    cell = Cell("resnet18", 64, 64, "train", 2, name)
    torch.manual_seed(0)
    model = task.build(cell)
    x = task.input(cell, 2, CPU, torch.float32, channels_last=False)
    model.train()
    loss = task.loss(model, x, task.train_targets(x))
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    out = task.infer_step(model, x, None)()
    assert out is not None and not model.training


@pytest.mark.parametrize("name, parts", [("seg", ["backbone", "neck", "head"]),
                                         ("det", ["backbone", "neck", "head", "postprocess"])])
def test_dense_part_latency_times_each_part(name, parts):
    task = task_for(name)
    cell = Cell("resnet18", 64, 64, "infer", 1, name)
    model = task.build(cell)
    setup = PartsSetup(budget_s=0.1, max_time_s=400.0)
    latency = task.part_latency_ms(model, task.input(cell, 1, CPU, torch.float32, False), setup).to_record()
    assert list(latency["part_latency_ms"]) == parts and all(v > 0 for v in latency["part_latency_ms"].values())
    assert task_for("cls").part_latency_ms(model, torch.zeros(1)) is None


def test_dense_count_is_the_task_adapters_count():
    cell = Cell("resnet18", 64, 64, "infer", 1, "seg")
    report = dense.count(cell)
    assert isinstance(report, Flops) and report.res == "64" and tuple(report.part_gmacs) == ("backbone", "neck", "head")
    assert report.to_record()["gmacs"] == report.gmacs == task_for("seg").count(cell).gmacs


# --------------------------------------------------------------------------- typed results
def test_latency_record_from_its_samples_by_hand():
    times = [12.0, 10.0, 11.0, 30.0, 10.5, 10.2, 10.8, 11.5, 10.1, 10.9]
    lat = Latency(times_ms=times, warmup_iters=6, warmup_ms=70.0, stop_reason="converged")
    rec = lat.to_record()
    assert tuple(rec) == RECORD_KEYS
    s = sorted(times)
    assert rec["latency_ms"] == (s[4] + s[5]) / 2 == median(times)
    assert rec["latency_p90_ms"] == pytest.approx(s[8] + 0.1 * (s[9] - s[8]))
    assert rec["latency_ci95_ms"] == [s[1], s[8]]  # n = 10: ranks 2 and 9 (coverage 97.9%)
    assert rec["latency_cv"] == pytest.approx(statistics.stdev(times) / statistics.fmean(times))
    assert rec["latency_samples_ms"] == times and rec["latency_blocks"] == [10]
    # CI [10.1, 11.5] around 10.85 is -6.9%/+6.0%: wide, though the CV (the 30 ms outlier) is not the reason
    assert rec["timing_flags"] == ["wide-ci"] and rec["timing_stable"] is False


def test_memory_energy_compile_flops_records():
    mem = Memory(peak_mb=123.456, method="rss_growth+weights")
    assert mem.to_record() == {"peak_mem_mb": 123.5, "peak_mem_method": "rss_growth+weights",
                               "mem_reserved_mb": None, "device_mem_used_mb": None}
    with_parts = Memory(10.0, "cuda.max_memory_allocated", 12.0, 500.0, {"params": 1.0})
    assert with_parts.to_record()["mem_breakdown_mb"] == {"params": 1.0}
    assert with_parts.to_record()["device_mem_used_mb"] == 500.0
    assert Energy(joules=None, images=8).to_record() == {}  # CPU: no counter, no field
    assert Energy(joules=12.0, images=8).to_record() == {"energy_j_per_image": 1.5}
    assert Compile(1.23456, 0, 0).to_record() == {"compile_s": 1.235, "compile_graph_breaks": 0,
                                                  "compile_recompiles": 0}
    assert Compile(1.0, 2, 0).flags == ["compile-fallback"] == Compile(1.0, 0, 1).flags
    assert Compile(1.0, 0, 0).flags == []
    flops = Flops("m", "224", 1, params=10, gmacs=2.0, gflops=4.0, stage_gmacs={"stage1": 2.0})
    rec = flops.to_record()
    assert rec["gflops"] == 4.0 and rec["attention_gmacs_per_stage"] is None and rec["part_gmacs"] is None


def test_finetune_step_statistics_agree_with_the_timing_protocol():
    samples = [40.0, 42.0, 39.0, 80.0, 41.0, 43.0, 38.5]
    fields = step_time_fields(samples, [1.0, 2.0, 3.0], batch=4, ctx=ONE)
    lat = Latency(times_ms=samples, warmup_iters=0, warmup_ms=0.0)
    assert fields["step_time_ms"] == lat.median_ms == 41.0
    assert fields["step_time_ms_p90"] == lat.p90_ms == pytest.approx(percentile(sorted(samples), 0.9))
    # statistics.quantiles' default ("exclusive") would have said otherwise on these samples
    assert statistics.quantiles(samples, n=10)[-1] != pytest.approx(lat.p90_ms)
    # sustained, as a run cell: 7 steps of 4 images over their summed 323.5 ms (not 4 / the median)
    assert fields["throughput"] == pytest.approx(4 * 7 / 0.3235) and fields["data_time_ms"] == 2.0


# --------------------------------------------------------------------------- scenarios
def test_one_base_record_and_one_train_spec_for_every_scenario():
    from bench.config import FinetuneConfig

    cell = Cell("resnet18", 64, 64, "train", 2)
    rec = base_record(cell, ONE, RunConfig(models=["resnet18"], dtype="bf16", engine="ddp", grad_clip=1.0),
                      kind="run", train=True)
    assert rec["precision"] == "amp-bf16" and rec["family"] and rec["device"] == "cpu" and rec["world_size"] == 1
    assert rec["threads"] == torch.get_num_threads() and rec["res"] == "64" and rec["kind"] == "run"
    run_spec = train_spec(RunConfig(models=["resnet18"], engine="ddp", grad_clip=0.5), micro_batch=4)
    assert (run_spec.engine, run_spec.grad_clip, run_spec.micro_batch, run_spec.lr) == ("ddp", 0.5, 4, 1e-4)
    ft = FinetuneConfig(models=["resnet18"], task="seg", lr=3e-3, weight_decay=0.05)
    ft_spec = train_spec(ft, micro_batch=8)
    assert (ft_spec.lr, ft_spec.weight_decay, ft_spec.micro_batch, ft_spec.ds_config) == (3e-3, 0.05, 8, None)


def test_step_scenario_record_is_assembled_from_the_trackers(monkeypatch):
    """The cell's record holds exactly each tracker's to_record, the throughput of its median and
    the derived MFU; a stubbed-out tracker would leave its fields out."""
    scripted = Latency(times_ms=[20.0, 21.0, 19.0, 22.0, 20.5, 20.2, 19.8, 20.1, 20.3, 20.4], warmup_iters=6,
                       warmup_ms=120.0, stop_reason="converged")
    monkeypatch.setattr(step_scenario, "measure_lockstep", lambda step, device, budget, agree, cap: scripted)
    monkeypatch.setattr(step_scenario, "remeasure", lambda peak, *a: peak)
    scenario = step_scenario.StepScenario(RunConfig(models=["resnet18"], res=[(64, 64)], budget=0.1, max_time=10))
    scenario.peak = Peak(tflops=1.0, ci95=None, size=512, iters=10)
    rec = scenario.run(Cell("resnet18", 64, 64, "infer", 2), ONE, history=[]).to_record()
    assert rec["status"] == "ok", rec["error"]
    assert {k: rec[k] for k in RECORD_KEYS} == scripted.to_record()
    # sustained: 10 steps of 2 images over the summed 203.3 ms, not 2 images over the median step
    assert rec["throughput"] == pytest.approx(2 * 10 / (sum(scripted.times_ms) / 1e3))
    assert rec["throughput"] == rec["throughput_per_rank"]
    assert rec["per_rank_step_ms"] == [scripted.median_ms] and rec["global_batch"] == 2
    assert rec["per_rank_peak_mem_mb"] == [rec["peak_mem_mb"]]
    expected_tflops = 2 * rec["gmacs"] * 1e9 * rec["throughput"] / 1e12
    assert rec["achieved_tflops"] == pytest.approx(expected_tflops) and rec["mfu"] == pytest.approx(expected_tflops)
    assert rec["peak_mem_mb"] > 0 and rec["peak_mem_method"].startswith("rss_growth")
    assert "energy_j_per_image" not in rec and "compile_s" not in rec and "part_latency_ms" not in rec
    assert rec["input_hw"] == [64, 64] and rec["bn_mode"] is None and rec["engine"] == "none"


def test_step_scenario_cell_without_a_timed_iteration_is_an_error_that_keeps_its_flags(monkeypatch):
    empty = Latency(times_ms=[], warmup_iters=2, warmup_ms=10.0, stop_reason="time-cap", sample_rules_met=False,
                    warmup_steady=False)
    monkeypatch.setattr(step_scenario, "measure_lockstep", lambda step, device, budget, agree, cap: empty)
    cfg = RunConfig(models=["resnet18"], res=[(64, 64)], budget=0.1, max_time=10)
    out = step_scenario.measure_cell(Cell("resnet18", 64, 64, "infer", 1), ONE, cfg).to_record()
    assert out["status"] == "error" and out["error"].startswith("TimeoutError: --max-time 10 s ran out")
    assert out["flags"] == ["wide-ci", "few-samples", "time-cap", "warmup-unsteady"] and out["latency_ms"] is None


# --------------------------------------------------------------------------- derived figures
def test_utilisation_by_hand():
    # 4 GMACs, training (3 x forward), 80 images/s over 2 ranks at 0.5 TFLOP/s peak each
    got = derived.utilisation(4.0, True, 80.0, 0.5, 2)
    achieved = 2 * 4e9 * 3 * 80 / 1e12  # 1.92 TFLOP/s
    assert got["achieved_tflops"] == pytest.approx(achieved) and got["peak_tflops"] == 1.0
    assert got["mfu"] == pytest.approx(1.92)
    assert derived.utilisation(4.0, False, 100.0, None, 1) == {"achieved_tflops": pytest.approx(0.8),
                                                                "peak_tflops": None, "mfu": None}


def test_mfu_flags_by_bounds():
    assert derived.mfu_flags(None) == [] and derived.mfu_flags(0.4) == [] and derived.mfu_flags(1.0) == []
    assert derived.mfu_flags(1.01) == ["mfu-over-1"] and derived.mfu_flags(0.0) == ["mfu-not-positive"]


def test_scaling_bases_by_hand():
    same = {"model": "m", "res": "224", "mode": "train", "batch": 4, "task": "cls", "precision": "fp32",
            "device_name": "cpu", "channels_last": False, "compile": False, "tf32": True, "status": "ok"}
    two = {**same, "world_size": 2, "threads": 1, "throughput": 30.0}
    per_rank = {**same, "world_size": 1, "threads": 1, "throughput": 20.0, "timestamp": "2026-01-01"}
    total = {**same, "world_size": 1, "threads": 2, "throughput": 25.0, "timestamp": "2026-01-02"}
    no_ci = {"scaling_efficiency_ci95": None}  # no latency samples: no interval (issue 17)
    assert derived.scaling([per_rank], two) == {"scaling_efficiency": 0.75, "scaling_basis": "same-threads-per-rank",
                                                **no_ci}
    assert derived.scaling([per_rank, total], two) == {"scaling_efficiency": 1.2, "scaling_basis": "same-total-threads",
                                                       **no_ci}
    other = {**total, "precision": "amp-bf16"}
    assert derived.scaling([other], two) == {"scaling_efficiency": None, "scaling_basis": None, **no_ci}
    assert derived.scaling([per_rank], {**two, "world_size": 1})["scaling_basis"] is None


def test_finetune_step_times_keep_samples_and_a_sustained_rate():
    from bench.scenarios.finetune import step_time_fields

    steps = [100.0, 100.0, 100.0, 100.0, 150.0] * 4  # every 5th step stalls by 50%
    got = step_time_fields(steps, [1.0] * 20, batch=2, ctx=ONE)
    assert got["step_time_ms"] == 100.0 and got["latency_samples_ms"] == steps
    # 40 images over 2.2 s: 18.2 img/s, 9% below the 20 img/s the median step would claim
    assert got["throughput"] == pytest.approx(40 / 2.2) and got["throughput"] < 0.92 * 2 / 0.1
