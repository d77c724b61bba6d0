"""RetinaNet on any backbone of ``models``, set up as in the PVT paper's detection experiments.

torchvision supplies every part: ``RetinaNet`` (anchors, focal loss, box coder, post-processing),
``FeaturePyramidNetwork`` and ``LastLevelP6P7``. What is ours is the thin adapter that turns a
features-only backbone (a list of maps at strides 4/8/16/32) into the named maps torchvision
expects: an FPN over the stride-8/16/32 maps with 256 channels, plus P6/P7 computed from C5 (the
official config's ``add_extra_convs="on_input"``), five outputs in all.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

FPN_LEVELS = (1, 2, 3)  # indices into the backbone's maps: strides 8, 16, 32 (RetinaNet starts at P3)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneFPN(nn.Module):
    """Backbone maps C3-C5 -> FPN P3-P5, plus P6/P7 from C5 -> OrderedDict of five maps."""

    def __init__(self, backbone: nn.Module, out_channels: int = 256):
        super().__init__()
        self.body = backbone
        if hasattr(backbone, "compute_levels") or type(backbone).__name__ == "SimpleFeaturePyramid":
            backbone.compute_levels = FPN_LEVELS  # don't compute maps the FPN never reads
        in_channels = [backbone.feature_channels[i] for i in FPN_LEVELS]
        extra = LastLevelP6P7(in_channels[-1], out_channels)
        extra.use_P5 = False  # "on input": P6 from C5 even where C5 happens to have out_channels
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels  # read by torchvision's RetinaNet

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.body(x)
        return self.fpn(OrderedDict((f"c{2 ** (i + 2)}", maps[i]) for i in FPN_LEVELS))


HEAD_NORMS = ("none", "gn")


def build_retinanet(
    backbone: nn.Module,
    num_classes: int,
    image_size: tuple[int, int],
    fpn_channels: int = 256,
    head_norm: str = "none",
    **retinanet_kwargs,
) -> RetinaNet:
    """torchvision RetinaNet over ``backbone``.

    ``num_classes`` counts label 0 as background, as torchvision's COCO models do (labels in
    targets run 1..num_classes-1). Images are resized so that they stay ``image_size`` (H, W):
    the data pipeline already delivers that size and the transform only normalises and pads to a
    multiple of 32. Anchors are torchvision's defaults, which are the paper's (sizes 32-512 on
    P3-P7, three scales per octave, ratios 0.5/1/2).

    ``head_norm="none"`` is the paper's head (plain convs); ``"gn"`` puts GroupNorm after each
    head conv (torchvision's RetinaNet v2 head), which trains far more steadily from scratch.
    """
    if head_norm not in HEAD_NORMS:
        raise ValueError(f"head_norm must be one of {HEAD_NORMS}")
    height, width = image_size
    model = RetinaNet(
        BackboneFPN(backbone, fpn_channels),
        num_classes=num_classes,
        min_size=min(height, width),
        max_size=max(height, width),
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        **retinanet_kwargs,
    )
    if head_norm == "gn":
        groups = math.gcd(32, fpn_channels)
        model.head = RetinaNetHead(
            fpn_channels,
            model.anchor_generator.num_anchors_per_location()[0],
            num_classes,
            norm_layer=partial(nn.GroupNorm, groups),
        )
    # ViT's simple pyramid computes a stride-4 map RetinaNet never reads; its parameters would
    # get no gradient (and make DDP fail), so they are frozen and left out of the count.
    model.unreached_parameters = freeze_unreached_parameters(model.backbone, image_size)
    return model


def freeze_unreached_parameters(module: nn.Module, image_size: tuple[int, int]) -> list[str]:
    """Run one small forward/backward and set ``requires_grad=False`` on every parameter that got
    no gradient (a backbone branch whose map the head does not read). Returns their names.

    Runs in eval mode so that no BatchNorm statistics change.
    """
    was_training = module.training
    module.eval()
    height, width = (min(side, 64) for side in image_size)
    try:
        maps = module(torch.zeros(1, 3, height, width)).values()
        sum(m.float().sum() for m in maps).backward()
    finally:
        module.train(was_training)
    unreached = []
    for name, param in module.named_parameters():
        if param.requires_grad and param.grad is None:
            param.requires_grad_(False)
            unreached.append(name)
        param.grad = None
    return unreached
