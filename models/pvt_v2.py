"""PVT v2 (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", CVMJ 2022)
from timm, the successor every PVT v1 comparison meets.

What changed from v1: overlapping patch embeddings (7x7 stride 4, then 3x3 stride 2), a 3x3
depthwise conv inside each MLP instead of position embeddings, and a LayerNorm closing each
stage. Having no position embedding, it runs at any H x W that is a multiple of 32 (800x1280
included) with nothing to resize. ``pvt_v2_b2_li`` is the linear-SRA variant: keys and values
come from a 7x7 average pool (+1x1 conv, LayerNorm, GELU) of the stage map, so attention costs
grow linearly with the number of tokens.

Features-only models return the four stage outputs, each after its stage norm, as the official
detection backbone does; parameter names are timm's classification names (timm converts the
official checkpoints to them), so an ImageNet checkpoint fills the trunk and only ``head.*`` is
reported unused.
"""
from __future__ import annotations

import timm
import torch.nn as nn

from models.features import TimmStageFeatures, describe_stages, timm_stages
from models.registry import register_model

PVT_V2_VARIANTS = {
    "pvt_v2_b0": "pvt_v2_b0",
    "pvt_v2_b1": "pvt_v2_b1",
    "pvt_v2_b2": "pvt_v2_b2",
    "pvt_v2_b2_li": "pvt_v2_b2_li",
}
STEM = ["patch_embed"]  # stage i > 1 starts with its own strided patch embedding (downsample)


def _pvt_v2(name: str, num_classes: int, features_only: bool) -> nn.Module:
    trunk = timm.create_model(
        PVT_V2_VARIANTS[name], pretrained=False, num_classes=0 if features_only else num_classes
    )
    if features_only:
        return TimmStageFeatures(trunk, stem=STEM)
    return describe_stages(trunk, timm_stages(trunk, STEM), head=["head"])


@register_model("pvt_v2")
def pvt_v2_b0(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _pvt_v2("pvt_v2_b0", num_classes, features_only)


@register_model("pvt_v2")
def pvt_v2_b1(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _pvt_v2("pvt_v2_b1", num_classes, features_only)


@register_model("pvt_v2")
def pvt_v2_b2(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _pvt_v2("pvt_v2_b2", num_classes, features_only)


@register_model("pvt_v2")
def pvt_v2_b2_li(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _pvt_v2("pvt_v2_b2_li", num_classes, features_only)
