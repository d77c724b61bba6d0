"""Whole dense-prediction models for cost measurement: RetinaNet or Semantic FPN on a backbone,
as the PVT paper's tables count them, with the names of their parts.

``build_dense(task, backbone_name, (H, W))`` returns the torchvision RetinaNet (det, 80 COCO
classes as mmdet counts them: 9 anchors x 80 sigmoid logits per location) or our Semantic FPN
(seg, ADE20K's 150 classes). ``DENSE_PARTS[task]`` names the module prefixes of backbone, neck
(the FPN, with RetinaNet's P6/P7) and head. ``DetectorCostView`` runs backbone + neck + head only
(no resize, no anchors, no NMS): what the paper's FLOP tables count and fvcore can trace.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.heads.retinanet import build_retinanet
from models.heads.semantic_fpn import SemanticFPN
from models.registry import create_model

DENSE_TASKS = ("det", "seg")
DENSE_CLASSES = {"det": 80, "seg": 150}
DENSE_PARTS = {
    "det": {"backbone": ["backbone.body"], "neck": ["backbone.fpn"], "head": ["head"]},
    "seg": {"backbone": ["backbone"], "neck": ["fpn"], "head": ["scale_heads", "classifier", "resize"]},
}
BACKBONE_ROOT = {"det": "backbone.body", "seg": "backbone"}


def pad_to_32(height: int, width: int) -> tuple[int, int]:
    """mmdet's pad: each side up to a multiple of 32 (the stride of the last stage)."""
    return -(-height // 32) * 32, -(-width // 32) * 32


BN_MODES = ("frozen", "train", "sync")


def freeze_batchnorm(module: nn.Module) -> int:
    """Replace every BatchNorm2d under ``module`` by torchvision's FrozenBatchNorm2d (statistics
    and affine parameters fixed, as mmdet/mmseg baselines train ResNet at 2 images per GPU).
    Returns how many were replaced. Parameter names are unchanged."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
            replaced += 1
        else:
            replaced += freeze_batchnorm(child)
    return replaced


def apply_bn_mode(backbone: nn.Module, bn_mode: str) -> nn.Module:
    """``frozen`` (default): FrozenBatchNorm2d; ``sync``: SyncBatchNorm (under DDP); ``train``:
    plain BatchNorm in train mode, which 2 images per rank handicap."""
    if bn_mode == "frozen":
        freeze_batchnorm(backbone)
    elif bn_mode == "sync":
        backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    elif bn_mode != "train":
        raise ValueError(f"bn_mode must be one of {BN_MODES}")
    return backbone


def build_dense(task: str, backbone_name: str, image_size: tuple[int, int], fpn_channels: int = 256,
                bn_mode: str = "frozen", score_thresh: float | None = None) -> nn.Module:
    """``score_thresh`` (det only): RetinaNet's score threshold before NMS; None keeps torchvision's 0.05."""
    backbone = apply_bn_mode(create_model(backbone_name, features_only=True), bn_mode)
    if task == "det":
        # RetinaNet's own transform neither resizes nor pads further: images arrive at image_size.
        thresh = {} if score_thresh is None else {"score_thresh": score_thresh}
        return build_retinanet(backbone, DENSE_CLASSES["det"], image_size, fpn_channels=fpn_channels, **thresh)
    if task == "seg":
        return SemanticFPN(backbone, DENSE_CLASSES["seg"], fpn_channels=fpn_channels,
                           head_channels=fpn_channels // 2)
    raise ValueError(f"task must be one of {DENSE_TASKS}")


class DetectorCostView(nn.Module):
    """backbone -> FPN -> head of a torchvision RetinaNet, on an already normalised batch."""

    def __init__(self, retinanet: nn.Module):
        super().__init__()
        self.backbone = retinanet.backbone
        self.head = retinanet.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(list(self.backbone(x).values()))
        return out["cls_logits"], out["bbox_regression"]


def cost_view(task: str, model: nn.Module) -> nn.Module:
    """The module whose forward a FLOP counter traces for ``task`` (same parameters, same names)."""
    return DetectorCostView(model) if task == "det" else model
