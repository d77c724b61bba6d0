"""Swin Transformer (Liu et al., ICCV 2021) from timm: the shifted-window backbone that the
dense-prediction papers compare with PVT.

Input sizes. ``swin_t`` runs at any H x W that is a multiple of 32, 800x1280 included (height
first: token maps of 200x320, 100x160, 50x80, 25x40), through timm 1.0.31's own options:

- Position: Swin v1 has no absolute position embedding (timm's default, the paper's
  ``ape=False``). Position enters only through each window's relative position bias table,
  (2*7-1)^2 entries per head, which depends on the window size and not on the input size, so
  nothing is resized or interpolated.
- ``strict_img_size=False``: the patch embedding takes any size, and the shifted-window masks are
  built on every forward for the map at hand (timm's ``dynamic_mask``) instead of once for 224.
- Windows stay 7x7. A map that is not a whole number of windows (every stage at 800x1280) is
  zero-padded at the bottom and right to one, attended, and cropped back.
- Classification keeps timm's 224 layout: a stage whose 224 map fits in one window (stage 4,
  7x7) attends in one unshifted window at every size. Features-only sets
  ``always_partition=True``: 7x7 windows shifted by 3 in every other block of every stage, at
  every size, as the official detection and segmentation backbone does.

One repair. timm shifts the map and then pads it, so where the map is not a whole number of
windows the masks (drawn for the padded map) no longer match the wrap-around of the shift, and
the top rows attend to the bottom ones (and the left columns to the right ones). The official
code pads first and shifts the padded map; ``PadThenShiftBlock`` does that, and is identical to
timm's block when no padding is needed (224, 448, ...). Parameters are untouched.

Features-only models return the four stage outputs as NCHW (timm works in NHWC;
``forward_intermediates`` permutes). The official dense-prediction backbone adds a LayerNorm on
each output (``norm0``-``norm3``, not in the ImageNet checkpoints); we do not, so that a
classification checkpoint fills every parameter.
"""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse

from models.features import TimmStageFeatures, describe_stages, timm_stages
from models.registry import register_model

SWIN_VARIANTS = {"swin_t": "swin_tiny_patch4_window7_224"}
STEM = ["patch_embed"]  # stage i > 1 starts with its patch merging (timm's layers.i.downsample)


class PadThenShiftBlock(SwinTransformerBlock):
    """timm's Swin block with the official order: pad to whole windows, then shift."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))
        _, Hp, Wp, _ = x.shape
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        mask = self.get_attn_mask(x) if self.dynamic_mask else self.attn_mask
        windows = window_partition(x, self.window_size).view(-1, self.window_area, C)
        windows = self.attn(windows, mask=mask).view(-1, wh, ww, C)
        x = window_reverse(windows, self.window_size, Hp, Wp)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :H, :W, :].contiguous()


def _swin(name: str, num_classes: int, features_only: bool) -> nn.Module:
    trunk = timm.create_model(
        SWIN_VARIANTS[name],
        pretrained=False,
        num_classes=0 if features_only else num_classes,
        strict_img_size=False,
        always_partition=features_only,
    )
    for stage in trunk.layers:
        for block in stage.blocks:
            block.__class__ = PadThenShiftBlock  # same parameters and state; only _attn differs
    if features_only:
        return TimmStageFeatures(trunk, stem=STEM)
    return describe_stages(trunk, timm_stages(trunk, STEM), head=["norm", "head"])


@register_model("swin")
def swin_t(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _swin("swin_t", num_classes, features_only)
