"""Backbones: official-key compatibility, features contract, SRA equivalence, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models
from models.pvt import PVT_CONFIGS, SpatialReductionAttention

PVT = ["pvt_tiny", "pvt_small", "pvt_medium", "pvt_large"]


@pytest.mark.parametrize("name", PVT)
def test_pvt_state_dict_matches_official_release(name, official_shapes):
    model = models.create_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_shapes[name]


def _fake_official_checkpoint(shapes: dict, path, wrap: bool = True) -> dict:
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*s, generator=gen) for k, s in shapes.items()}
    torch.save({"model": state} if wrap else state, path)
    return state


def test_official_checkpoint_loads_strict_and_features_only_reports_leftovers(official_shapes, tmp_path):
    path = tmp_path / "pvt_tiny.pth"
    state = _fake_official_checkpoint(official_shapes["pvt_tiny"], path)
    cls = models.create_model("pvt_tiny", checkpoint=str(path))
    for k, v in cls.state_dict().items():
        assert torch.equal(v, state[k]), k
    feats = models.create_model("pvt_tiny", features_only=True, checkpoint=str(path))
    assert sorted(feats.checkpoint_unused_keys) == ["cls_token", "head.bias", "head.weight", "norm.bias", "norm.weight"]
    for k, v in feats.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_features_only_pvt_shares_classification_trunk(official_shapes, tmp_path):
    """Same weights -> the features model's stage maps equal the classifier's intermediate maps."""
    path = tmp_path / "w.pth"
    _fake_official_checkpoint(official_shapes["pvt_tiny"], path, wrap=False)
    cls = models.create_model("pvt_tiny", checkpoint=str(path)).eval()
    feats = models.create_model("pvt_tiny", features_only=True, checkpoint=str(path)).eval()
    x = torch.randn(1, 3, 128, 160)
    captured = []
    hook = cls.block3[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        cls(x)
        maps = feats(x)
    hook.remove()
    stage3_tokens = maps[2].flatten(2).transpose(1, 2)
    torch.testing.assert_close(stage3_tokens, captured[0])


@pytest.mark.parametrize("name", ["pvt_tiny", "pvt_small", "vit_t", "vit_s", "resnet18", "resnet50"])
@pytest.mark.parametrize("size", [(224, 224), (256, 320)])
def test_features_are_four_maps_at_strides_4_to_32(name, size):
    model = models.create_model(name, features_only=True).eval()
    h, w = size
    with torch.no_grad():
        maps = model(torch.randn(2, 3, h, w))
    assert model.feature_strides == [4, 8, 16, 32]
    assert len(maps) == 4
    for fmap, stride, ch in zip(maps, model.feature_strides, model.feature_channels):
        assert fmap.shape == (2, ch, h // stride, w // stride)


@pytest.mark.parametrize("name", ["pvt_small", "vit_s", "resnet50"])
def test_classifier_runs_at_any_multiple_of_32(name):
    model = models.create_model(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 160)).shape == (1, 10)


def _explicit_sra(attn: SpatialReductionAttention, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Spatial-reduction attention as the paper writes it: softmax(Q K^T / sqrt(d)) V with K, V
    from the R-times reduced map, every step an explicit op (no SDPA, no views)."""
    B, N, C = x.shape
    h, d = attn.num_heads, attn.head_dim
    q = attn.q(x).reshape(B, N, h, d).permute(0, 2, 1, 3)
    src = x
    if attn.sr_ratio > 1:
        img = x.permute(0, 2, 1).reshape(B, C, H, W).contiguous()
        src = attn.norm(attn.sr(img).reshape(B, C, -1).permute(0, 2, 1))
    kv = attn.kv(src).reshape(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    weights = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_sdpa_attention_equals_explicit_formula(stage):
    model = models.create_model("pvt_tiny").eval()
    attn = getattr(model, f"block{stage + 1}")[0].attn
    assert attn.sr_ratio == PVT_CONFIGS["pvt_tiny"].sr_ratios[stage]
    H, W = 8 * (4 - stage), 8 * (5 - stage)
    x = torch.randn(2, H * W, model.feature_channels[stage])
    with torch.no_grad():
        torch.testing.assert_close(attn(x, H, W), _explicit_sra(attn, x, H, W), rtol=1e-4, atol=1e-5)


def test_pvt_layer_norm_eps_as_released():
    model = models.create_model("pvt_tiny")
    assert model.block1[0].norm1.eps == 1e-6 and model.block1[0].norm2.eps == 1e-6 and model.norm.eps == 1e-6
    assert model.patch_embed1.norm.eps == 1e-5 and model.block1[0].attn.norm.eps == 1e-5


def test_position_embedding_resized_bilinearly_from_224_grid():
    model = models.create_model("pvt_tiny")
    assert model._pos_embed(0, 56, 56) is model.pos_embed1
    resized = model._pos_embed(1, 16, 20)
    grid = model.pos_embed2.reshape(1, 28, 28, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 20), mode="bilinear").flatten(2).transpose(1, 2)
    torch.testing.assert_close(resized, expected)
    stage4 = model._pos_embed(3, 4, 5)  # class-token slot excluded
    assert stage4.shape == (1, 20, 512)


def test_checkpoint_errors_are_one_line(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(models.CheckpointError, match="not found"):
        models.create_model("resnet18", checkpoint=str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(models.CheckpointError) as info:
        models.create_model("resnet18", checkpoint=str(corrupt))
    assert "\n" not in str(info.value)
    other = tmp_path / "other.pth"
    torch.save(models.create_model("resnet18").state_dict(), other)
    with pytest.raises(models.CheckpointError, match="does not fit|lacks"):
        models.create_model("pvt_tiny", checkpoint=str(other))


def test_timm_checkpoint_fills_features_only_backbones(tmp_path):
    for name in ("resnet18", "vit_t"):
        src = models.create_model(name)
        path = tmp_path / f"{name}.pth"
        torch.save(src.state_dict(), path)
        feats = models.create_model(name, features_only=True, checkpoint=str(path))
        target = feats.checkpoint_target.state_dict()
        for k, v in target.items():
            assert torch.equal(v, src.state_dict()[k]), (name, k)


def test_unknown_model_lists_known_ones():
    with pytest.raises(models.UnknownModelError) as info:
        models.create_model("pvt_huge")
    for known in ("pvt_small", "vit_s", "resnet50"):
        assert known in str(info.value)


class _RunsCode:
    """Unpickling this would call os.system: a malicious checkpoint."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused_without_the_unsafe_hint(tmp_path):
    from models import CheckpointError, read_state_dict

    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _RunsCode()}, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(str(path))
    message = str(info.value)
    assert "refused" in message and "weights_only" not in message and "\n" not in message


def test_complex_tensors_are_refused(tmp_path):
    from models import CheckpointError, read_state_dict

    path = tmp_path / "complex.pth"
    torch.save({"w": torch.zeros(2, dtype=torch.complex64)}, path)
    with pytest.raises(CheckpointError, match="complex"):
        read_state_dict(str(path))
