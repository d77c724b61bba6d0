"""New families (PVT v2, Swin, ConvNeXt), the PVT no-SR ablation, stage descriptions, references."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import models
from models.references import REFERENCE_PARAMS_M
from models.swin import PadThenShiftBlock

CHANNELS = {
    "pvt_v2_b0": [32, 64, 160, 256],
    "pvt_v2_b1": [64, 128, 320, 512],
    "pvt_v2_b2": [64, 128, 320, 512],
    "pvt_v2_b2_li": [64, 128, 320, 512],
    "swin_t": [96, 192, 384, 768],
    "convnext_t": [96, 192, 384, 768],
    "pvt_tiny_nosr": [64, 128, 320, 512],
    "pvt_small_nosr": [64, 128, 320, 512],
}
FAMILY = {
    "pvt_v2_b0": "pvt_v2", "pvt_v2_b1": "pvt_v2", "pvt_v2_b2": "pvt_v2", "pvt_v2_b2_li": "pvt_v2",
    "swin_t": "swin", "convnext_t": "convnext", "pvt_tiny_nosr": "pvt", "pvt_small_nosr": "pvt",
}
# A spread, batch 1, to keep CPU time modest: every model at 224; at 512 the linear-SRA PVT v2
# and the no-SR ablation (whose full stage-1 attention is what grows fastest); at 800x1280
# (height first) one model per new family: Swin (every stage pads to whole windows there),
# ConvNeXt and PVT v2-B0. The no-SR ablation stops at 512: at 800x1280 its stage 1 attends over
# 64,000 tokens (about 1.6 TMACs in pvt_small's three blocks).
SIZES = [(name, (224, 224)) for name in CHANNELS] + [
    (name, (512, 512)) for name in ("pvt_v2_b2_li", "pvt_tiny_nosr")
] + [(name, (800, 1280)) for name in ("swin_t", "convnext_t", "pvt_v2_b0")]


@pytest.mark.parametrize(("name", "size"), SIZES, ids=[f"{n}-{h}x{w}" for n, (h, w) in SIZES])
def test_features_are_four_nchw_maps_at_strides_4_to_32(name, size):
    model = models.create_model(name, features_only=True).eval()
    h, w = size
    with torch.no_grad():
        maps = model(torch.randn(1, 3, h, w))
    assert model.feature_strides == [4, 8, 16, 32]
    assert model.feature_channels == CHANNELS[name]
    assert [tuple(m.shape) for m in maps] == [
        (1, ch, h // s, w // s) for ch, s in zip(CHANNELS[name], model.feature_strides)
    ]


@pytest.mark.parametrize("name", ["pvt_v2_b0", "swin_t"])
def test_classifier_runs_at_any_multiple_of_32(name):
    model = models.create_model(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 160)).shape == (1, 10)


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_names(name):
    assert models.model_family(name) == FAMILY[name]


def _on_meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):  # parameters without storage: builds in milliseconds
        return models.create_model(name, **kwargs)


ALL = [(name, fo) for name in models.list_models() for fo in (False, True)]


@pytest.mark.parametrize(("name", "features_only"), ALL, ids=[f"{n}-{'feat' if f else 'cls'}" for n, f in ALL])
def test_stage_prefixes_cover_every_parameter_exactly_once(name, features_only):
    model = _on_meta(name, features_only=features_only)
    stages = models.stage_prefixes(model)
    assert list(stages)[:4] == ["stage1", "stage2", "stage3", "stage4"] and list(stages)[-1] == "head"
    assert set(stages) <= {"stage1", "stage2", "stage3", "stage4", "neck", "head"}
    owners = {key: 0 for key in stages}
    for pname, _ in model.named_parameters():
        hits = [key for key, prefixes in stages.items() for p in prefixes if pname == p or pname.startswith(p + ".")]
        assert len(hits) == 1, f"{pname} is in {hits or 'no stage'}"
        owners[hits[0]] += 1
    for key in ("stage1", "stage2", "stage3", "stage4"):
        assert owners[key] > 0, f"{key} owns no parameter"
    assert (owners["head"] > 0) != features_only


def test_stage_prefixes_follow_each_family_layout():
    pvt = models.stage_prefixes(_on_meta("pvt_small"))
    assert pvt["stage2"] == ["patch_embed2", "pos_embed2", "block2"]
    assert pvt["head"] == ["cls_token", "norm", "head"]
    resnet = models.stage_prefixes(_on_meta("resnet50"))
    assert resnet["stage1"] == ["conv1", "bn1", "act1", "maxpool", "layer1"] and resnet["stage4"] == ["layer4"]
    assert resnet["head"] == ["global_pool", "fc"]
    vit = models.stage_prefixes(_on_meta("vit_s"))
    assert vit["stage1"][:3] == ["patch_embed", "cls_token", "pos_embed"]
    blocks_per_stage = [len([p for p in vit[f"stage{i}"] if p.startswith("blocks.")]) for i in range(1, 5)]
    assert blocks_per_stage == [3, 3, 3, 3]
    vit_feats = models.stage_prefixes(_on_meta("vit_s", features_only=True))
    assert vit_feats["stage2"] == ["trunk.blocks.3", "trunk.blocks.4", "trunk.blocks.5"]
    assert vit_feats["neck"] == ["up4", "up8", "down32"] and vit_feats["head"] == []
    swin = models.stage_prefixes(_on_meta("swin_t", features_only=True))
    assert swin["stage1"] == ["trunk.patch_embed", "trunk.layers.0"] and swin["stage4"] == ["trunk.layers.3"]


def test_stage_prefixes_refuse_models_without_or_with_a_stale_description():
    with pytest.raises(ValueError, match="no stage description"):
        models.stage_prefixes(torch.nn.Linear(2, 2))
    model = _on_meta("resnet18")
    model.stage_modules = {**model.stage_modules, "stage4": ["layer5"]}
    with pytest.raises(ValueError, match="layer5"):
        models.stage_prefixes(model)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_M))
def test_parameter_count_matches_reference(name):
    expected_m, source = REFERENCE_PARAMS_M[name]
    params = sum(p.numel() for p in _on_meta(name).parameters())
    assert abs(params / 1e6 - expected_m) <= 0.01 * expected_m, f"{params / 1e6:.2f}M vs {expected_m}M ({source})"


def test_every_new_family_has_a_reference():
    assert set(FAMILY) - {"pvt_tiny_nosr", "pvt_small_nosr"} <= set(REFERENCE_PARAMS_M)


SR_KEY = re.compile(r"block\d\.\d+\.attn\.(sr|norm)\.(weight|bias)")


@pytest.mark.parametrize("base", ["pvt_tiny", "pvt_small"])
def test_nosr_has_no_spatial_reduction(base, official_shapes):
    model = _on_meta(f"{base}_nosr")
    assert not [n for n, _ in model.named_modules() if n.endswith(("attn.sr", "attn.norm"))]
    assert all(blk.attn.sr_ratio == 1 for i in range(1, 5) for blk in getattr(model, f"block{i}"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = official_shapes[base]
    assert ours == {k: s for k, s in official.items() if not SR_KEY.fullmatch(k)}


def _fake_checkpoint(shapes: dict, path) -> dict:
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*s, generator=gen) for k, s in shapes.items()}
    torch.save({"model": state}, path)
    return state


def test_nosr_loads_parent_checkpoint_reporting_exactly_the_reduction_keys(official_shapes, tmp_path):
    path = tmp_path / "pvt_small.pth"
    state = _fake_checkpoint(official_shapes["pvt_small"], path)
    sr_keys = sorted(k for k in state if SR_KEY.fullmatch(k))
    assert len(sr_keys) == 4 * (3 + 4 + 6)  # sr.{weight,bias}, norm.{weight,bias} in stages 1-3

    nosr = models.create_model("pvt_small_nosr", checkpoint=str(path))
    assert nosr.checkpoint_unused_keys == sr_keys
    for k, v in nosr.state_dict().items():
        assert torch.equal(v, state[k]), k
    feats = models.create_model("pvt_small_nosr", features_only=True, checkpoint=str(path))
    assert sorted(feats.checkpoint_unused_keys) == sorted(
        sr_keys + ["cls_token", "head.bias", "head.weight", "norm.bias", "norm.weight"]
    )
    strict = models.create_model("pvt_small", checkpoint=str(path))  # the parent still loads strictly
    assert strict.checkpoint_unused_keys == []
    # Only the reduction keys may go unused: pvt_small's extra blocks do not fit pvt_tiny_nosr.
    with pytest.raises(models.CheckpointError, match=r"keys the model lacks, e\.g\. block1\.2\."):
        models.create_model("pvt_tiny_nosr", checkpoint=str(path))


@pytest.mark.parametrize(("name", "unused"), [
    ("pvt_v2_b0", ["head.bias", "head.weight"]),
    ("swin_t", ["head.fc.bias", "head.fc.weight", "norm.bias", "norm.weight"]),
])
def test_classification_checkpoint_fills_features_only_trunk(name, unused, tmp_path):
    src = models.create_model(name)
    path = tmp_path / f"{name}.pth"
    torch.save(src.state_dict(), path)
    feats = models.create_model(name, features_only=True, checkpoint=str(path))
    assert feats.checkpoint_unused_keys == unused
    reference = src.state_dict()
    for k, v in feats.checkpoint_target.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert all(k.startswith("trunk.") for k in feats.state_dict())  # each key once, no alias


def test_every_swin_block_pads_then_shifts():
    for features_only in (False, True):
        trunk = _on_meta("swin_t", features_only=features_only)
        trunk = trunk.trunk if features_only else trunk
        blocks = [b for stage in trunk.layers for b in stage.blocks]
        assert all(isinstance(b, PadThenShiftBlock) for b in blocks)
        # features-only shifts in every other block of every stage; classification not in stage 4
        assert blocks[-1].shift_size == ((3, 3) if features_only else (0, 0))


def _shifted_block(dim: int = 96) -> PadThenShiftBlock:
    return PadThenShiftBlock(
        dim, input_resolution=(7, 7), num_heads=3, window_size=7, shift_size=3, always_partition=True, dynamic_mask=True
    ).eval()


@pytest.mark.parametrize("size", [(25, 40), (28, 42)], ids=["pads", "whole-windows"])
def test_swin_shifted_windows_never_wrap_the_image_around(size):
    """Perturbing the top row (left column) changes only the rows (columns) its shifted window
    holds, as in the official pad-then-shift code; timm's shift-then-pad lets row 0 reach the
    bottom row when the map is not a whole number of 7x7 windows (every stage at 800x1280)."""
    block = _shifted_block()
    H, W = size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, H, W, 96, generator=gen)
    with torch.no_grad():
        base = block(x)
        rows = x.clone()
        rows[:, 0] += torch.randn(W, 96, generator=gen)
        cols = x.clone()
        cols[:, :, 0] += torch.randn(H, 96, generator=gen)
        row_change = (block(rows) - base).abs().amax(dim=(0, 2, 3))
        col_change = (block(cols) - base).abs().amax(dim=(0, 1, 3))
    assert torch.nonzero(row_change > 1e-5).flatten().tolist() == [0, 1, 2]
    assert torch.nonzero(col_change > 1e-5).flatten().tolist() == [0, 1, 2]


def test_swin_block_equals_timm_where_no_padding_is_needed():
    from timm.models.swin_transformer import SwinTransformerBlock

    block = _shifted_block()
    x = torch.randn(2, 28, 42, 96)  # 4x6 whole windows
    with torch.no_grad():
        padded_first = block(x)
        block.__class__ = SwinTransformerBlock
        assert torch.equal(padded_first, block(x))


def test_registry_imports_no_family():
    tree = ast.parse((Path(models.__file__).parent / "registry.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m and m.startswith("models")} == {"models.checkpoint"}
