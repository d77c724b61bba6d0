"""The numerics check (bench.measure.agreement, bench.scenarios.numerics): the arithmetic by hand,
the tolerance table, and real cells on CPU -- bf16 within tolerance, a fast path that is wrong on
purpose flagged, the det/seg decisions scored, and an fp32 eager cell left unchecked."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.config import RunConfig
from bench.launch.context import DistContext
from bench.measure.agreement import (
    DRIFT_FLAG,
    TOLERANCES,
    Agreement,
    OutputAgreement,
    compare_tensors,
    math_mode,
    tolerance_for,
)
from bench.measure.timing import Latency
from bench.plan import Cell
from bench.scenarios import numerics
from bench.scenarios import step as step_scenario
from bench.tasks import task_for

CPU = torch.device("cpu")
ONE = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU, backend=None)
STAGE_STRIDES = {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}


# --------------------------------------------------------------------------- the arithmetic
def test_compare_tensors_by_hand():
    ref = torch.tensor([3.0, 4.0])
    same = compare_tensors("x", None, ref.clone(), ref)
    assert (same.cosine, same.rel_l2, same.max_abs) == (1.0, 0.0, 0.0)
    # cell (3, 5): diff (0, 1), |ref| = 5 -> rel 0.2; cos = (9 + 20) / (5 * sqrt(34))
    off = compare_tensors("x", 8, torch.tensor([3.0, 5.0]), ref)
    assert off.rel_l2 == pytest.approx(0.2) and off.max_abs == pytest.approx(1.0)
    assert off.cosine == pytest.approx(29 / (5 * 34 ** 0.5), abs=1e-7) and off.stride == 8
    assert compare_tensors("x", None, -ref, ref).cosine == -1.0
    with pytest.raises(ValueError, match="values"):
        compare_tensors("x", None, torch.zeros(3), ref)


def test_math_mode_names_what_differs_from_the_reference():
    assert math_mode("fp32", False, False, False) is None  # the reference itself: nothing to check
    assert math_mode("bf16", True, False, False) == "bf16+compile"
    assert math_mode("fp32", False, True, True) == "channels-last+tf32"


def test_a_combined_mode_is_held_to_its_loosest_part():
    tol = tolerance_for("bf16+compile")
    assert tol.min_cosine == TOLERANCES["bf16"].min_cosine < TOLERANCES["compile"].min_cosine
    assert tol.max_rel_l2 == TOLERANCES["bf16"].max_rel_l2


def test_judge_lists_each_missed_bound_and_flags_drift():
    ok = OutputAgreement("logits", None, 0.9999, 0.01, 0.1)
    bad = OutputAgreement("stage3", 16, 0.5, 0.9, 3.0)
    good = Agreement("bf16", 2, "random", [ok]).judge()
    assert good.failures == [] and good.flags == [] and good.to_record()["agreement"]["within_tolerance"]
    drifted = Agreement("bf16", 2, "random", [ok, bad], grad_cosine=0.5).judge()
    assert drifted.worst_cosine == 0.5 and drifted.worst_rel_l2 == 0.9 and drifted.flags == [DRIFT_FLAG]
    assert [f.split()[0] for f in drifted.failures] == ["worst_cosine", "worst_rel_l2", "grad_cosine"]


def test_task_agreement_is_judged_only_for_trained_weights():
    close = [OutputAgreement("logits", None, 0.99999, 0.004, 0.01)]
    task = {"score": 0.3}
    random_weights = Agreement("bf16", 1, "random", close, task_agreement=task).judge()
    trained = Agreement("bf16", 1, "checkpoint", close, task_agreement=task).judge()
    assert random_weights.failures == []
    assert random_weights.to_record()["agreement"]["task_agreement"]["judged"] is False
    assert trained.failures == ["task_agreement 0.3 < 0.9"] and trained.flags == [DRIFT_FLAG]


# --------------------------------------------------------------------------- real cells on CPU
@pytest.fixture(autouse=True)
def _one_timed_step(monkeypatch):
    """The timing is not under test here: one real step, recorded as a scripted series."""
    def timed(step, device, budget, agree, cap):
        step()
        return Latency(times_ms=[10.0] * 10, warmup_iters=1, warmup_ms=10.0, stop_reason="converged")

    monkeypatch.setattr(step_scenario, "measure_lockstep", timed)


def _cfg(**settings) -> RunConfig:
    return dataclasses.replace(RunConfig(models=["resnet18"], res=[(64, 64)], budget=0.1, max_time=20), **settings)


@pytest.mark.parametrize("model", ["resnet18", "pvt_tiny"])
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_bf16_cells_record_agreement_within_tolerance(model, mode):
    """A bf16 cell's record holds its agreement: the logits and the four stages, close to but not
    bit-equal to the reference (a check that compared the cell with itself would read exactly 1);
    a training cell adds the first step's loss and the whole gradient."""
    out = step_scenario.measure_cell(Cell(model, 64, 64, mode, 2), ONE, _cfg(dtype="bf16")).to_record()
    assert out["status"] == "ok", out["error"]
    agreement = out["agreement"]
    assert agreement["mode"] == "bf16" and agreement["reference"].startswith("fp32 eager")
    names = [o["name"] for o in agreement["per_output"]]
    assert names == ["logits", *STAGE_STRIDES]
    assert {o["name"]: o["stride"] for o in agreement["per_output"][1:]} == STAGE_STRIDES
    assert 0.99 < agreement["worst_cosine"] < 1.0 and agreement["worst_rel_l2"] > 0
    assert agreement["within_tolerance"] and DRIFT_FLAG not in out["flags"]
    if mode == "train":
        assert 0 < agreement["loss_rel_err"] < 0.05 and 0.9 < agreement["grad_cosine"] < 1.0
    else:
        assert agreement["loss_rel_err"] is None and agreement["grad_cosine"] is None
    assert out["agreement_s"] > 0


def test_fp32_eager_cell_records_no_agreement():
    """fp32 eager contiguous with TF32 off (CPU) *is* the reference: checking it would compare the
    cell with itself, so it records None rather than a trivial 1.0."""
    out = step_scenario.measure_cell(Cell("resnet18", 64, 64, "infer", 1), ONE, _cfg()).to_record()
    assert out["status"] == "ok" and out["agreement"] is None and "agreement_s" not in out


def _zero_stage3_under_autocast(model: torch.nn.Module) -> torch.nn.Module:
    """A fast path that is wrong on purpose: stage 3's output is zeroed whenever autocast is on."""
    def hook(_module, _inputs, output):
        return output * 0 if torch.is_autocast_enabled("cpu") else output

    model.layer3.register_forward_hook(hook)
    return model


def test_a_wrong_fast_path_is_flagged_numerics_drift(monkeypatch):
    task = task_for("cls")
    built = task.build
    monkeypatch.setattr(type(task), "build", lambda self, cell: _zero_stage3_under_autocast(built(cell)))
    out = step_scenario.measure_cell(Cell("resnet18", 64, 64, "infer", 2), ONE, _cfg(dtype="bf16")).to_record()
    assert out["status"] == "ok", out["error"]  # the timing stands; the answer is flagged
    assert DRIFT_FLAG in out["flags"] and not out["agreement"]["within_tolerance"]
    by_name = {o["name"]: o for o in out["agreement"]["per_output"]}
    assert by_name["stage3"]["rel_l2"] == 1.0 and by_name["stage1"]["cosine"] > 0.999


@pytest.mark.slow  # an inductor compile (C++ kernels): minutes on 2 cores, out of the fast tier
def test_compile_on_cpu_is_within_the_fp32_compile_tolerance():
    cell = Cell("pvt_tiny", 64, 64, "infer", 1)
    torch.manual_seed(0)
    model = task_for("cls").build(cell)
    agreement = numerics.check_agreement(task_for("cls"), cell, model, 1, CPU, _cfg(compile=True))
    assert agreement.mode == "compile" and agreement.failures == []
    assert agreement.worst_cosine >= TOLERANCES["compile"].min_cosine


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        if isinstance(module, torch.nn.Conv2d) and module.out_channels % 4 == 0 and module.bias is not None:
            module.bias.add_(1.0)  # RetinaNet's bbox_reg: +1 on every (dx, dy, dw, dh)
            return
        for p in module.parameters():
            p.add_(torch.randn_like(p) * p.std().clamp(min=1e-2))


@pytest.mark.parametrize("task_name", ["det", "seg"])
def test_dense_task_agreement_is_present_and_a_perturbed_head_lowers_it(task_name, monkeypatch):
    """The task's own decisions (boxes after NMS, the argmax map) against the reference's; the
    cell's head perturbed under autocast must score lower than the faithful one."""
    task = task_for(task_name)
    cell = Cell("resnet18", 64, 64, "infer", 1, task_name)
    torch.manual_seed(0)
    model = task.build(cell)
    faithful = numerics.check_agreement(task, cell, model, 1, CPU, _cfg(dtype="bf16", task=task_name))
    assert faithful.task_agreement is not None and faithful.task_agreement["score"] > 0
    assert not faithful.failures  # random weights: the task's near-ties are shown, not judged
    # det: the box regression shifted (every box grows by e^1 on each side's scale); seg: the classifier noised
    head = (lambda m: m.head.regression_head.bbox_reg) if task_name == "det" else (lambda m: m.classifier)
    copy_of = numerics._copy

    def perturbed_copy(pristine):
        clone = copy_of(pristine)
        if numerics_calls.append(1) or len(numerics_calls) == 2:  # the second copy is the cell's
            _perturb(head(clone))
        return clone

    numerics_calls: list[int] = []
    monkeypatch.setattr(numerics, "_copy", perturbed_copy)
    broken = numerics.check_agreement(task, cell, model, 1, CPU, _cfg(dtype="bf16", task=task_name))
    assert broken.task_agreement["score"] < faithful.task_agreement["score"]
