"""Semantic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019) on any backbone.

The PVT paper's ADE20K set-up. torchvision has no implementation, so the semantic head is written
here; the FPN itself is torchvision's ``FeaturePyramidNetwork``. Per FPN level (strides 4-32):
3x3 conv-GroupNorm-ReLU stages, each followed by a 2x bilinear upsample, until the level is at
stride 4 (one stage for strides 4 and 8, two for 16, three for 32); the four results are summed,
classified by a 1x1 conv (after dropout 0.1, as in mmsegmentation's FPNHead) and upsampled x4.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import FeaturePyramidNetwork

from models.heads.retinanet import IMAGENET_MEAN, IMAGENET_STD


def conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    groups = math.gcd(32, out_channels)  # 32 groups as in Panoptic FPN, fewer for narrow heads
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


class ScaleHead(nn.Module):
    """Brings one FPN level to stride 4: ``upsamplings`` conv + 2x-upsample stages (at least one
    conv)."""

    def __init__(self, in_channels: int, channels: int, upsamplings: int):
        super().__init__()
        self.upsamplings = upsamplings
        self.convs = nn.ModuleList(
            conv_gn_relu(in_channels if k == 0 else channels, channels) for k in range(max(1, upsamplings))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
            if self.upsamplings:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x


class ResizeTo(nn.Module):
    """Bilinear resize of logits to the input size; a module of its own so that its cost belongs
    to the head in a per-module FLOP count."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SemanticFPN(nn.Module):
    """Backbone -> FPN (strides 4-32) -> Panoptic-FPN semantic head -> per-pixel logits at the
    input size. Takes images in [0, 1] and normalises them with ImageNet statistics, as the
    detector's transform does."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        fpn_channels: int = 256,
        head_channels: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(list(backbone.feature_channels), fpn_channels)
        strides = list(backbone.feature_strides)
        self.scale_heads = nn.ModuleList(
            ScaleHead(fpn_channels, head_channels, int(math.log2(s // strides[0]))) for s in strides
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)
        self.resize = ResizeTo()
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.backbone((images - self.mean) / self.std)
        pyramid = self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
        levels = [head(p) for head, p in zip(self.scale_heads, pyramid.values())]
        fused = levels[0]
        for level in levels[1:]:
            fused = fused + level
        logits = self.classifier(self.dropout(fused))
        return self.resize(logits, images.shape[-2:])
