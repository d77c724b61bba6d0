"""Measurements that a stub would fake: memory (peak and breakdown), MFU bounds, the profile's op
breakdown, scaling efficiency, DeepSpeed's effective config, the compile path."""
from __future__ import annotations

import types

import pytest
import torch
from conftest import run_bench

import models
from bench.engines import TrainSpec, build_trainer
from bench.engines.deepspeed import deep_merge, deepspeed_config, effective_zero_stage
from bench.launch.context import DistContext
from bench.measure import derived
from bench.measure.memory import PeakMemory, memory_breakdown
from bench.measure.profile import op_breakdown
from bench.record import RunDir

CPU = DistContext(0, 1, 0, 1, torch.device("cpu"), None)


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_cpu_peak_memory_sees_an_allocation():
    model = torch.nn.Linear(8, 8)
    with PeakMemory(torch.device("cpu"), model) as mem:
        block = torch.ones(50 * 2**20)  # 200 MB, touched
        del block
    assert mem.peak_mb >= 190


def test_memory_breakdown_of_adamw_fp32_from_real_tensors():
    model = models.create_model("resnet18")
    trainer = build_trainer(model, CPU, TrainSpec(engine="none"))
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 1000, (2,))

    def step():
        loss = torch.nn.functional.cross_entropy(trainer.model(x), y)
        trainer.step(loss)

    step()  # AdamW creates its state on the first step
    parts = memory_breakdown(trainer, step)
    params_mb = _param_bytes(model) / 2**20
    assert parts["optimizer"] == pytest.approx(2 * params_mb, rel=0.01)  # exp_avg + exp_avg_sq
    assert parts["grads"] == pytest.approx(params_mb, rel=0.01)
    assert parts["master_weights"] == 0
    assert 0 < parts["activations"]
    assert parts["params"] >= params_mb


@pytest.mark.e2e
@pytest.mark.multiproc
def test_zero1_two_ranks_hold_half_the_optimizer_state(tmp_path):
    out = tmp_path / "zero"
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "train", "--engine", "deepspeed",
                     "--zero", "1", "--nproc", "2", "--budget", "0.1", "--max-time", "10", "--no-report",
                     "--out", str(out), timeout=600, env={"DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = RunDir(out).records()
    assert rec["status"] == "ok" and rec["zero"] == 1 and rec["world_size"] == 2
    params_mb = _param_bytes(models.create_model("resnet18")) / 2**20
    assert rec["mem_breakdown_mb"]["optimizer"] == pytest.approx(2 * params_mb / 2, rel=0.02)


def test_mfu_bounds_are_flagged():
    assert derived.mfu_flags(1.3) == ["mfu-over-1"]
    assert derived.mfu_flags(0.0) == ["mfu-not-positive"]
    assert derived.mfu_flags(0.4) == [] and derived.mfu_flags(None) == []
    u = derived.utilisation(gmacs=2.0, train=True, throughput=4 / 0.12, peak_tflops_per_rank=1.0, world_size=2)
    # 2 FLOPs/MAC x 2 GMACs x 3 (fwd+bwd) x 4 images per 0.12 s
    assert u["achieved_tflops"] == pytest.approx(2 * 2e9 * 3 * 4 / 0.12 / 1e12)
    assert u["mfu"] == pytest.approx(u["achieved_tflops"] / 2.0)


def _event(name, cpu_us=0.0, kernels=()):
    return types.SimpleNamespace(name=name, self_cpu_time_total=cpu_us,
                                 kernels=[types.SimpleNamespace(duration=d) for d in kernels])


def test_gpu_op_breakdown_counts_each_kernel_once_under_its_launching_op():
    events = [
        _event("ProfilerStep#1", 1000, (999,)),
        _event("aten::conv2d", 50),                       # a parent: launches nothing itself
        _event("aten::cudnn_convolution", 10, (30, 30)),  # sm80_xmma_fprop... kernels: conv
        _event("aten::_flash_attention_forward", 5, (20,)),
        _event("aten::mm", 5, (15,)),
        _event("aten::add_", 5, (5,)),
    ]
    shares = op_breakdown(events, on_device=True)
    assert shares["conv"] == pytest.approx(0.6) and shares["attention"] == pytest.approx(0.2)
    assert shares["matmul"] == pytest.approx(0.15) and shares["elementwise"] == pytest.approx(0.05)
    cpu = op_breakdown(events, on_device=False)
    assert cpu["conv"] == pytest.approx(60 / 75)


def test_scaling_uses_a_comparable_latest_baseline():
    base = {"model": "r", "res": "64", "mode": "train", "batch": 2, "task": "cls", "precision": "fp32",
            "device_name": "cpu", "status": "ok", "world_size": 1}
    history = [
        {**base, "threads": 2, "throughput": 10.0, "timestamp": "2026-01-01T10:00:00.1"},
        {**base, "threads": 2, "throughput": 12.0, "timestamp": "2026-01-01T10:00:00.2"},  # a retry: latest
        {**base, "threads": 1, "throughput": 7.0, "timestamp": "2026-01-01T10:00:00.3"},
        {**base, "batch": 4, "threads": 2, "throughput": 99.0, "timestamp": "2026-01-01T10:00:00.4"},
    ]
    two = {**base, "world_size": 2, "threads": 1, "throughput": 15.0}
    out = derived.scaling(history, two)
    assert out == {"scaling_efficiency": pytest.approx(15.0 / 12.0), "scaling_basis": "same-total-threads",
                   "scaling_efficiency_ci95": None}  # no latency samples: no interval (issue 17)
    out = derived.scaling(history[2:3], two)
    assert out == {"scaling_efficiency": pytest.approx(15.0 / (2 * 7.0)), "scaling_basis": "same-threads-per-rank",
                   "scaling_efficiency_ci95": None}
    assert derived.scaling([], two)["scaling_efficiency"] is None


def test_deepspeed_config_means_autocast_and_merges_deeply():
    amp = deepspeed_config(TrainSpec(engine="deepspeed", zero=2, dtype="bf16"), world_size=2)
    # no module's gradients reduced in bf16: fp32, as DDP and FSDP2 reduce them (issue 26, item 10)
    assert amp["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    assert not amp["bf16"]["enabled"]
    assert amp["zero_optimization"]["overlap_comm"] is True
    weights = deepspeed_config(TrainSpec(engine="deepspeed", dtype="bf16-weights"), world_size=1)
    assert weights["bf16"]["enabled"] and not weights["torch_autocast"]["enabled"]
    user = {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}
    merged = deepspeed_config(TrainSpec(engine="deepspeed", zero=2), world_size=1, user=user)
    assert merged["zero_optimization"]["stage"] == 2 and merged["zero_optimization"]["offload_optimizer"]
    assert effective_zero_stage(deepspeed_config(TrainSpec(zero=1), 1, {"zero_optimization": {"stage": 3}})) == 3
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


@pytest.mark.e2e
def test_cpu_run_records_mfu_in_range_and_compile_apart(tmp_path):
    out = tmp_path / "c"
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "infer", "--compile",
                     "--budget", "0.2", "--max-time", "120", "--no-report", "--mfu", "on", "--out", str(out),
                     timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = RunDir(out).records()
    assert rec["status"] == "ok" and rec["compile"] is True
    assert rec["compile_s"] > 0 and rec["iters"] >= 10
    assert rec["compile_graph_breaks"] is not None and rec["compile_recompiles"] is not None
    assert 0 < rec["mfu"] <= 1 and "mfu-over-1" not in rec["flags"]
    assert rec["precision"] == "fp32" and rec["tf32"] is True
