"""Issue 17, FLOPs: what the counter skips is recorded and judged, the cross-check runs once per
model and size in a run, frozen parameters leave the weight-gradient share of training FLOPs."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.launch.context import DistContext
from bench.measure import flops as flops_mod
from bench.measure.flops import count_flops, is_trivial_op
from bench.plan import Cell

ONE = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend=None)


class _Cheap(nn.Module):
    """A conv then element-wise ops fvcore does not count (trivial by convention)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        return torch.nn.functional.gelu(y + y) * 2


class _Hidden(_Cheap):
    """Adds torch.cdist: a contraction fvcore has no handle for, so its MACs go uncounted."""

    def forward(self, x):
        y = super().forward(x).flatten(2)
        return torch.cdist(y, y)


def test_trivial_ops_are_named_in_one_place():
    assert is_trivial_op("aten::add") and is_trivial_op("aten::add_") and is_trivial_op("aten::gelu")
    assert is_trivial_op("aten::max_pool2d") and is_trivial_op("aten::_upsample_bicubic2d_aa")
    assert not is_trivial_op("aten::cdist") and not is_trivial_op("aten::_convolution_mode")
    assert not is_trivial_op("aten::linalg_solve") and not is_trivial_op("myops::fused_gemm")


def test_skipped_ops_keep_their_counts_and_a_hidden_contraction_flags_the_cell():
    cheap = count_flops(_Cheap(), "cheap", 16, 16, cross_check=False)
    assert cheap.skipped_ops == {"aten::add": 1, "aten::gelu": 1, "aten::mul": 1}
    assert cheap.nontrivial_skipped == {} and cheap.flags == []
    assert cheap.to_record()["flops_skipped_ops"] == {"aten::add": 1, "aten::gelu": 1, "aten::mul": 1}
    hidden = count_flops(_Hidden(), "hidden", 16, 16, cross_check=False)
    assert hidden.nontrivial_skipped == {"aten::cdist": 1}
    assert hidden.flags == ["flops-incomplete"]


def test_cross_check_disagreement_is_a_flag_and_recorded():
    report = count_flops(_Cheap(), "cheap", 16, 16)
    assert report.to_record()["flops_crosscheck_rel_diff"] == pytest.approx(0.0, abs=1e-9)
    assert report.to_record()["flops_crosscheck_gmacs"] == pytest.approx(report.op_gmacs["conv"])
    report.crosscheck_rel_diff = flops_mod.CROSS_CHECK_TOLERANCE * 2
    assert report.flags == ["flops-crosscheck-disagree"]


def test_run_counts_with_the_cross_check_once_per_model_and_size(monkeypatch):
    """bench run's count (cls and dense) asks for the cross-check; the scenario caches per
    (model, size), so infer and train cells of one size share one count."""
    from bench.config import RunConfig
    from bench.scenarios import step as step_scenario
    from bench.tasks import cls, dense, task_for

    calls = []
    real = flops_mod.count_flops

    def spy(*args, **kwargs):
        calls.append(kwargs.get("cross_check"))
        return real(_Cheap(), "cheap", 16, 16, cross_check=kwargs.get("cross_check", True))

    monkeypatch.setattr(cls, "count_flops", spy)
    monkeypatch.setattr(dense, "count_flops", spy)
    monkeypatch.setattr(cls.Classify, "build", lambda self, cell: _Cheap())
    scenario = step_scenario.StepScenario(RunConfig(models=["resnet18"], res=[(64, 64)], budget=0.1, max_time=10))
    first = scenario._count(Cell("resnet18", 64, 64, "infer", 1), ONE)
    again = scenario._count(Cell("resnet18", 64, 64, "train", 1), ONE)
    assert calls == [True] and first is again and first.crosscheck_rel_diff is not None
    calls.clear()
    monkeypatch.setattr(dense.DenseTask, "build", lambda self, cell: _Cheap())
    monkeypatch.setattr("models.heads.cost_view", lambda task, model: model)
    task_for("det").count(Cell("resnet18", 64, 64, "infer", 1, "det"))
    assert calls == [True]


def test_scenario_flags_an_incomplete_count_even_without_a_time():
    """A cell that never got a time (oom) still carries its FLOP count's flags: the record's
    flags are the union of the typed parts' (CellResult), the count one of them."""
    from bench.scenarios.result import CellResult

    hidden = count_flops(_Hidden(), "hidden", 16, 16, cross_check=False)
    failed = CellResult({"model": "resnet18"}, flops=hidden)
    failed.failed("oom", "out of memory")
    assert failed.to_record()["flags"] == ["flops-incomplete"]
    cheap = count_flops(_Cheap(), "cheap", 16, 16, cross_check=False)
    failed = CellResult({"model": "resnet18"}, flops=cheap)
    failed.failed("oom", "out of memory")
    assert failed.to_record()["flags"] == []


def test_trainable_fraction_counts_only_modules_whose_weights_train():
    """Two linears of equal MACs, one frozen: half the parametrised MACs train."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.Linear(16, 16))
    model[0].requires_grad_(False)
    report = count_flops(model, "m", 8, 8, cross_check=False)
    macs = {"0": 3 * 4 * 64, "2": 256 * 16, "3": 16 * 16}
    assert report.trainable_fraction == pytest.approx((macs["2"] + macs["3"]) / sum(macs.values()))
    model.requires_grad_(True)
    assert count_flops(model, "m", 8, 8, cross_check=False).trainable_fraction == 1.0
