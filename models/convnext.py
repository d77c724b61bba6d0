"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) from timm: the all-conv answer to
the vision transformers, compared against PVT and Swin in the same dense-prediction tables.

A 4x4 stride-4 stem, then four stages of 7x7 depthwise-conv blocks with a LayerNorm + 2x2
stride-2 downsampling at the start of stages 2-4. Pure convolution: any H x W that is a multiple
of 32 runs (800x1280 included), nothing depends on the training size.

Features-only models return the four stage outputs as timm does. The official detection and
segmentation backbones add a LayerNorm on each output (``norm0``-``norm3``, not in the ImageNet
checkpoints); we do not, so that a classification checkpoint fills every parameter.
"""
from __future__ import annotations

import timm
import torch.nn as nn

from models.features import TimmStageFeatures, describe_stages, timm_stages
from models.registry import register_model

CONVNEXT_VARIANTS = {"convnext_t": "convnext_tiny"}
STEM = ["stem"]


def _convnext(name: str, num_classes: int, features_only: bool) -> nn.Module:
    trunk = timm.create_model(
        CONVNEXT_VARIANTS[name], pretrained=False, num_classes=0 if features_only else num_classes
    )
    if features_only:
        return TimmStageFeatures(trunk, stem=STEM)
    return describe_stages(trunk, timm_stages(trunk, STEM), head=["norm_pre", "head"])


@register_model("convnext")
def convnext_t(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _convnext("convnext_t", num_classes, features_only)
