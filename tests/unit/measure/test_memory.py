"""Memory figures: what each part of the breakdown holds, the peak window, the GPU NVML maps."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import models
from bench.engines import TrainSpec, build_trainer
from bench.launch.context import DistContext
from bench.measure.memory import memory_breakdown, resident_bytes

CPU = DistContext(0, 1, 0, 1, torch.device("cpu"), None)


def _breakdown(model_name: str, batch: int, dtype: str) -> dict:
    torch.manual_seed(0)
    model = models.create_model(model_name)
    trainer = build_trainer(model, CPU, TrainSpec(engine="none", dtype=dtype))
    x, y = torch.randn(batch, 3, 64, 64), torch.randint(0, 1000, (batch,))

    def step():
        with trainer.autocast():
            loss = nn.functional.cross_entropy(trainer.model(x), y)
        trainer.step(loss)

    step()  # AdamW creates its state on the first step
    return memory_breakdown(trainer, step)


def test_autocast_weight_copies_are_not_activations():
    """Under bf16 autocast every conv/linear weight is cast once (autocast's cache) and kept for
    backward: that copy is its own part, and activations grow with the batch alone."""
    model = models.create_model("resnet18")
    cast_bytes = sum(m.weight.numel() * 2 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    one, two = _breakdown("resnet18", 4, "bf16"), _breakdown("resnet18", 8, "bf16")
    assert one["autocast_weight_copies"] == pytest.approx(cast_bytes / 2**20, rel=0.01)
    assert two["autocast_weight_copies"] == one["autocast_weight_copies"]
    # With the casts inside (the old figure) doubling the batch would not double the activations.
    assert two["activations"] == pytest.approx(2 * one["activations"], rel=0.02), (one, two)
    fp32 = _breakdown("resnet18", 2, "fp32")
    assert fp32["autocast_weight_copies"] == 0


def test_resident_bytes_counts_each_byte_of_a_buffer_once():
    buf = torch.zeros(100)
    assert resident_bytes([buf, buf[:50], buf[10:20]]) == 400  # views of one buffer: once
    assert resident_bytes([buf[:30], buf[20:40]]) == 160  # overlapping views: their union
    assert resident_bytes([buf[:10], torch.zeros(5)]) == 60
    assert resident_bytes([buf.view(10, 10).t()]) == 400


def test_grads_are_those_held_after_backward_not_every_one_produced():
    """An engine that drops each gradient once it has used it (as ZeRO-2 does with each bucket)
    holds none at the end of backward: the figure is what is held, not what was produced."""
    model = nn.Linear(256, 256)
    trainer = build_trainer(model, CPU, TrainSpec(engine="none"))
    x = torch.randn(4, 256)

    def step():
        trainer.step(trainer.model(x).sum())

    step()
    full = memory_breakdown(trainer, step)["grads"]
    assert full == pytest.approx((256 * 256 + 256) * 4 / 2**20, rel=1e-3)
    hooks = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None)) for p in model.parameters()]
    try:
        assert memory_breakdown(trainer, step)["grads"] == 0
    finally:
        for h in hooks:
            h.remove()


def _cell_with_a_big_first_call(monkeypatch, compile: bool):
    """measure_cell on a step whose first call in the window (the compile, or an eager cell's
    first step) needs 400 MB and every later call 40 MB. Returns (calls, result)."""
    import types

    from bench.measure.timing import Latency
    from bench.scenarios import step as step_scenario

    calls = []

    def step():
        mb = 400 if calls == ["warm-up"] else 40  # the first call stands in for the compile / autotuning
        calls.append(mb)
        block = torch.ones(mb * 2**18)  # touched: resident
        del block

    def timed(step_fn, device, budget, agree, max_time_s):
        step_fn()
        step_fn()
        return Latency(times_ms=[1.0, 1.0], warmup_iters=0, warmup_ms=0.0)

    monkeypatch.setattr(step_scenario, "_make_step", lambda *a: (step, None))
    monkeypatch.setattr(step_scenario, "measure_lockstep", timed)
    cfg = types.SimpleNamespace(compile=compile, max_time=60.0, budget=0.1, dtype="fp32", channels_last=False,
                                setup_timeout=None, numerics=False, data="synthetic")
    warm = lambda m, x, amp: lambda: calls.append("warm-up")  # noqa: E731 - the CPU warm-up, before the window
    model = nn.Linear(4, 4)
    task = types.SimpleNamespace(input=lambda *a: torch.zeros(1, 4), infer_step=warm, build=lambda cell: model,
                                 part_latency_ms=lambda *a: None)
    monkeypatch.setattr(step_scenario, "task_for", lambda name: task)
    cell = types.SimpleNamespace(train=False, batch=1, task="cls", model="linear")
    result = step_scenario.measure_cell(cell, CPU, cfg)
    assert result.status == "ok", result.error
    return calls, result


def test_compile_is_outside_the_peak_window(monkeypatch):
    """--compile: the first call of the step (the compile) may need far more memory than a step;
    its peak is kept apart and the cell's peak is the steps'."""
    calls, result = _cell_with_a_big_first_call(monkeypatch, compile=True)
    assert calls == ["warm-up", 400, 40, 40] and result.compile is not None
    rec = result.memory.to_record()
    assert rec["compile_peak_mem_mb"] >= 380
    assert 35 <= rec["peak_mem_mb"] < 200, rec


def test_the_first_eager_step_is_outside_the_peak_window(monkeypatch):
    """Eager: the untimed first step (cuDNN's autotuning workspace on CUDA, first-use allocations)
    may need more than a step; its peak is kept apart, as a compile's is, so eager and compiled
    windows cover the same steps."""
    calls, result = _cell_with_a_big_first_call(monkeypatch, compile=False)
    assert calls == ["warm-up", 400, 40, 40] and result.compile is None and result.setup.first_step_s is not None
    rec = result.memory.to_record()
    assert rec["first_step_peak_mem_mb"] >= 380
    assert 35 <= rec["peak_mem_mb"] < 200, rec
    assert "compile_peak_mem_mb" not in rec


def _two_rank_deepspeed(tmp_path, zero: int) -> dict:
    from conftest import run_bench

    from bench.record import RunDir

    out = tmp_path / f"zero{zero}"
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "train", "--engine", "deepspeed",
                     "--zero", str(zero), "--nproc", "2", "--budget", "0.1", "--max-time", "60", "--no-report",
                     "--out", str(out), timeout=600, env={"DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = RunDir(out).records()
    assert rec["status"] == "ok" and rec["zero"] == zero and rec["world_size"] == 2, rec.get("error")
    return rec["mem_breakdown_mb"]


@pytest.mark.e2e
@pytest.mark.multiproc
@pytest.mark.extended  # ZeRO-1 halving stays in the default run (test_measurement)
def test_zero2_and_zero3_hold_one_rank_s_share(tmp_path):
    """ZeRO-2 keeps this rank's gradient partition once backward is done: 1/2 of the gradients
    with 2 ranks (the old figure summed every gradient produced: 2x the whole). ZeRO-3 holds its
    partition of the weights at rest, and the weights it gathers for backward are their own part,
    not activations."""
    params_mb = sum(p.numel() * 4 for p in models.create_model("resnet18").parameters()) / 2**20
    two = _two_rank_deepspeed(tmp_path, 2)
    assert two["grads"] == pytest.approx(params_mb / 2, rel=0.02), two
    three = _two_rank_deepspeed(tmp_path, 3)
    assert three["params"] == pytest.approx(params_mb / 2, rel=0.02), three
    assert three["gathered_params"] > 0.5 * params_mb, three
    assert three["activations"] == pytest.approx(two["activations"], rel=0.02), (two, three)


def test_nvml_reads_the_gpu_cuda_means_by_uuid(monkeypatch):
    """Under CUDA_VISIBLE_DEVICES=1 CUDA's device 0 is the machine's GPU 1: NVML's index 0 is
    another GPU, so the counters are found by the device's UUID."""
    import sys
    import types

    from bench.measure.memory import DeviceCounters

    gpus = {"handle-0": ("GPU-aaaa", 111 * 2**20), "handle-1": ("GPU-bbbb", 222 * 2**20)}
    energy = {"handle-0": [0, 0], "handle-1": [1000, 6000]}  # mJ at enter, at exit
    by_uuid = {uuid: h for h, (uuid, _) in gpus.items()}

    def get_by_uuid(uuid):
        if uuid not in by_uuid:
            raise RuntimeError("NVMLError_NotFound")
        return by_uuid[uuid]

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: f"handle-{i}",
        nvmlDeviceGetHandleByUUID=get_by_uuid,
        nvmlDeviceGetTotalEnergyConsumption=lambda h: energy[h].pop(0),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=gpus[h][1]),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    visible = {0: "bbbb"}  # torch's uuid has no "GPU-" prefix
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=visible[i]))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    with DeviceCounters(torch.device("cuda", 0)) as counters:
        pass
    assert counters.handle == "handle-1"
    assert counters.used_mb == 222 and counters.energy(5).joules == pytest.approx(5.0)
    visible[0] = "cccc"  # a GPU NVML does not know: no figures rather than another GPU's
    with DeviceCounters(torch.device("cuda", 0)) as counters:
        pass
    assert counters.handle is None and counters.used_mb is None


def test_each_record_says_its_place_in_the_process_visit_order(tmp_path):
    """What ran before a cell in the process can change its CPU memory: the order is recorded."""
    import io
    import types

    from rich.console import Console

    from bench.config import parse_command
    from bench.record import RunDir
    from bench.scenarios.step import StepScenario
    from bench.sweep import run_sweep

    _, cfg, _ = parse_command(["run", "--models", "resnet18,pvt_tiny", "--res", "64", "--modes", "infer",
                               "--out", str(tmp_path / "run"), "--no-report"])
    scenario = StepScenario(cfg)
    scenario.prepare = lambda *a: None
    scenario.summarize = lambda *a: None
    scenario.run = lambda cell, ctx, history: types.SimpleNamespace(
        to_record=lambda: scenario._base(cell, ctx) | {"status": "ok", "error": None})
    run_sweep(scenario, CPU, Console(file=io.StringIO()))
    records = RunDir(tmp_path / "run").records()
    assert [(r["model"], r["cell_index"]) for r in records] == [("resnet18", 0), ("pvt_tiny", 1)]


def test_warm_up_runs_the_step_and_leaves_the_model_as_it_was():
    """The CPU warm-up runs forward and backward once and an optimizer step on a throwaway layer,
    then drops the gradients and puts back BatchNorm's running statistics: the model's weights
    and buffers are as they were (the cell's figures must not see it)."""
    from bench.measure.memory import warm_up

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ran = []

    def run():
        ran.append(True)
        return model(torch.randn(2, 3, 8, 8) + 5)

    made = []

    def make_optimizer(layer):
        made.append(layer)
        return torch.optim.AdamW(layer.parameters(), foreach=True)

    warm_up(model, run, train=True, make_optimizer=make_optimizer)
    assert ran == [True]
    assert len(made) == 1 and made[0] is not model  # the optimizer's first step, on a throwaway layer
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
