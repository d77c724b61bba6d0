"""FLOPs: the paper's table at 224, attention counted, two counters agree."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from conftest import run_bench

import models
from bench.measure.flops import count_flops

# PVT paper, Table 2 (params in M, "GFLOPs" = multiply-adds, i.e. our GMACs), rounded as printed.
PAPER_224 = {
    "pvt_tiny": (13.2, 1.9),
    "pvt_small": (24.5, 3.8),
    "pvt_medium": (44.2, 6.7),
    "pvt_large": (61.4, 9.8),
    "resnet50": (25.6, 4.1),
    "vit_s": (22.1, 4.6),
}


@pytest.mark.parametrize("name", list(PAPER_224))
def test_params_and_gmacs_agree_with_paper_at_224(name):
    params_m, gmacs = PAPER_224[name]
    report = count_flops(models.create_model(name), name, 224, 224)
    assert report.params / 1e6 == pytest.approx(params_m, abs=0.05)
    # The paper prints one decimal; 9.85 (pvt_large) is printed as 9.8, so allow the rounding.
    assert report.gmacs == pytest.approx(gmacs, abs=0.051)
    assert report.gflops == pytest.approx(2 * report.gmacs)


def test_sdpa_is_counted_exactly():
    """ViT-S/16 at 224: 12 blocks x 6 heads x 197 x 197 tokens x (64 + 64) MACs in attention."""
    report = count_flops(models.create_model("vit_s"), "vit_s", 224, 224)
    assert report.op_gmacs["scaled_dot_product_attention"] * 1e9 == 12 * 6 * 197 * 197 * 128
    assert "aten::scaled_dot_product_attention" not in report.skipped_ops


def test_fused_and_explicit_attention_count_the_same():
    """timm's explicit-matmul attention path gives the same total as the SDPA path."""
    fused = count_flops(models.create_model("vit_s"), "vit_s", 512, 512, cross_check=False).gmacs
    timm.layers.set_fused_attn(False)
    try:
        explicit = count_flops(models.create_model("vit_s"), "vit_s", 512, 512, cross_check=False).gmacs
    finally:
        timm.layers.set_fused_attn(True)
    assert fused == pytest.approx(explicit, rel=1e-6)


@pytest.mark.parametrize("name,size", [("pvt_small", (224, 224)), ("vit_s", (256, 320)), ("resnet18", (224, 224))])
def test_fvcore_and_torch_flop_counter_agree(name, size):
    report = count_flops(models.create_model(name), name, *size)
    assert report.crosscheck_rel_diff is not None and report.crosscheck_rel_diff < 0.01


@pytest.mark.parametrize("name", ["pvt_small", "resnet50", "vit_s"])
def test_per_stage_breakdown_adds_up(name):
    """Stages come from the model's own description and are counted each on its own, so their
    sum meeting the total is a check (at 224 no position embedding is interpolated outside them)."""
    report = count_flops(models.create_model(name), name, 224, 224, cross_check=False)
    assert set(report.stage_gmacs) == {"stage1", "stage2", "stage3", "stage4", "head"}
    assert sum(report.stage_gmacs.values()) == pytest.approx(report.gmacs, rel=1e-6)
    assert all(report.stage_gmacs[f"stage{i}"] > 0.3 for i in range(1, 5))


def test_spatial_reduction_cuts_stage1_attention_by_r1_squared():
    """R_1 = 8: keys and values shrink 64x in stage 1, so QK^T and AV do too."""
    with_sr = count_flops(models.create_model("pvt_small"), "pvt_small", 224, 224, cross_check=False)
    without = count_flops(models.create_model("pvt_small_nosr"), "pvt_small_nosr", 224, 224, cross_check=False)
    ratios = {s: without.attention_gmacs_per_stage[s] / with_sr.attention_gmacs_per_stage[s]
              for s in ("stage1", "stage2", "stage3", "stage4")}
    assert ratios["stage1"] == pytest.approx(64)
    assert ratios["stage2"] == pytest.approx(16) and ratios["stage3"] == pytest.approx(4)
    assert ratios["stage4"] == pytest.approx(1)
    # ViT-S: 12 blocks in four groups of three, each 3 x 6 heads x 197^2 x 128 MACs.
    vit = count_flops(models.create_model("vit_s"), "vit_s", 224, 224, cross_check=False)
    assert vit.attention_gmacs_per_stage["stage1"] * 1e9 == pytest.approx(3 * 6 * 197 * 197 * 128)


class _OpaqueAttention(torch.nn.Module):
    """SDPA with no ``fused_attn`` switch: the explicit-path counter cannot see its attention."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 64, kernel_size=4, stride=4)
        self.proj = torch.nn.Linear(64, 64)

    def forward(self, x):
        q = self.proj(self.embed(x).flatten(2).transpose(1, 2)).unsqueeze(1)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_cross_check_can_disagree():
    """The cross-check is independent of our SDPA formula: a model whose attention it cannot
    see as matmuls disagrees (about half the cost here), instead of agreeing by construction."""
    report = count_flops(_OpaqueAttention(), "opaque", 64, 64)
    assert report.crosscheck_rel_diff > 0.3


@pytest.mark.parametrize("task, size, parts", [("det", (256, 320), ("backbone", "neck", "head")),
                                               ("seg", (256, 256), ("backbone", "neck", "head"))])
def test_dense_parts_are_counted_each_and_sum_to_the_whole(task, size, parts):
    from bench.plan import Cell
    from bench.scenarios import dense

    report = dense.count(Cell("resnet18", *size, "infer", 1, task))
    assert tuple(report.part_gmacs) == parts and all(v > 0 for v in report.part_gmacs.values())
    assert sum(report.part_gmacs.values()) == pytest.approx(report.gmacs, rel=1e-9)
    assert sum(report.part_params.values()) == report.params


@pytest.mark.slow  # two RetinaNets traced at 800x1280: minutes on 2 cores, out of the fast tier
def test_dense_cost_reproduces_the_paper():
    """RetinaNet at 800x1280 (mmdet's 1280x800): ResNet50 239.3 and PVT-Small 285.8 G(MACs),
    RetinaNet params 37.7 / 34.2 M (ours has torchvision's head: 80 classes, 9 anchors)."""
    from bench.plan import Cell
    from bench.scenarios import dense

    r50 = dense.count(Cell("resnet50", 800, 1280, "infer", 1, "det"))
    pvt = dense.count(Cell("pvt_small", 800, 1280, "infer", 1, "det"))
    assert r50.gmacs == pytest.approx(239.3, rel=0.01) and pvt.gmacs == pytest.approx(285.8, rel=0.01)
    assert pvt.params / 1e6 == pytest.approx(34.2, abs=0.1)


@pytest.mark.e2e
def test_flops_command_json():
    proc = run_bench("flops", "--models", "pvt_tiny,resnet18", "--res", "224,256x320", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["model"], r["res"]) for r in rows] == [
        ("pvt_tiny", "224"), ("pvt_tiny", "256x320"), ("resnet18", "224"), ("resnet18", "256x320")
    ]
    for r in rows:
        assert {"model", "res", "params", "gmacs", "gflops", "stage_gmacs"} <= set(r)
        assert r["gflops"] == pytest.approx(2 * r["gmacs"])


@pytest.mark.e2e
def test_flops_command_dense_rows():
    proc = run_bench("flops", "--task", "det", "--models", "resnet18", "--res", "200x250", "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert (row["model"], row["task"], row["res"], row["input_hw"]) == ("resnet18", "det", "200x250", [224, 256])
    assert {"params", "gmacs", "part_gmacs", "part_params", "attention_gmacs_per_stage"} <= set(row)
    seg = run_bench("flops", "--task", "seg", "--models", "resnet18", "--res", "200")
    assert seg.returncode == 2 and "multiple of 32" in seg.stderr
