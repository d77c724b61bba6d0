"""RetinaNet and Semantic FPN over every backbone family: the PVT paper's set-ups (checked by
parameter count against its tables), shapes, losses, and gradients reaching every weight."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from models import create_model
from models.heads import SemanticFPN, build_retinanet

FAMILIES = ["pvt_tiny", "vit_t", "resnet18"]


def _params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


# PVT paper, Table 3 (RetinaNet, COCO: 80 classes) and Table 5 (Semantic FPN, ADE20K: 150).
@pytest.mark.parametrize("name, retinanet_m, semantic_fpn_m", [("pvt_tiny", 23.0, 17.0), ("resnet18", 21.3, 15.5)])
def test_parameter_counts_match_the_paper(name, retinanet_m, semantic_fpn_m):
    detector = build_retinanet(create_model(name, features_only=True), num_classes=81, image_size=(512, 512))
    segmenter = SemanticFPN(create_model(name, features_only=True), num_classes=150)
    # torchvision scores 81 classes (0 = background, never predicted) where mmdet scores 80:
    # one class more is 256*9*9 weights, far inside the tolerance.
    assert _params_m(detector) == pytest.approx(retinanet_m, rel=0.02)
    assert _params_m(segmenter) == pytest.approx(semantic_fpn_m, rel=0.02)


def test_retinanet_pyramid_is_p3_to_p7_with_p6_from_c5():
    backbone = create_model("pvt_tiny", features_only=True)
    detector = build_retinanet(backbone, num_classes=4, image_size=(128, 192))
    neck = detector.backbone
    extra = neck.fpn.extra_blocks
    assert isinstance(extra, LastLevelP6P7) and not extra.use_P5
    assert extra.p6.in_channels == backbone.feature_channels[3]  # "on input": from C5
    assert [blk[0].in_channels for blk in neck.fpn.inner_blocks] == [128, 320, 512]  # strides 8-32
    maps = list(neck(torch.rand(1, 3, 128, 192)).values())
    assert len(maps) == 5 and all(m.shape[1] == 256 for m in maps)
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # strides 8-128


@pytest.mark.parametrize("name", FAMILIES)
def test_retinanet_trains_and_detects_on_every_family(name):
    torch.manual_seed(0)
    detector = build_retinanet(create_model(name, features_only=True), num_classes=4, image_size=(64, 96))
    images = [torch.rand(3, 64, 96) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image with no object
    ]
    losses = detector(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in detector.named_parameters() if p.requires_grad]
    assert all(p.grad is not None for _, p in trainable), [n for n, p in trainable if p.grad is None][:3]
    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}


def test_only_unread_backbone_branches_are_frozen():
    # ViT's simple pyramid makes a stride-4 map that RetinaNet (from stride 8) never reads.
    vit = build_retinanet(create_model("vit_t", features_only=True), num_classes=4, image_size=(64, 64))
    assert vit.unreached_parameters and all(n.startswith("body.up4.") for n in vit.unreached_parameters)
    assert not any(p.requires_grad for n, p in vit.backbone.named_parameters() if n.startswith("body.up4."))
    # ResNet's and PVT's stride-4 stages feed the later stages: nothing is frozen.
    for name in ("resnet18", "pvt_tiny"):
        detector = build_retinanet(create_model(name, features_only=True), num_classes=4, image_size=(64, 64))
        assert detector.unreached_parameters == []


@pytest.mark.parametrize("name", FAMILIES)
def test_semantic_fpn_gives_per_pixel_logits_and_trains_every_weight(name):
    torch.manual_seed(0)
    model = SemanticFPN(create_model(name, features_only=True), num_classes=5, fpn_channels=64, head_channels=32)
    images = torch.rand(2, 3, 64, 96)
    logits = model(images)
    assert logits.shape == (2, 5, 64, 96)
    F.cross_entropy(logits, torch.randint(0, 5, (2, 64, 96))).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_semantic_fpn_head_brings_every_level_to_stride_4():
    model = SemanticFPN(create_model("resnet18", features_only=True), num_classes=3)
    # Panoptic FPN: one conv for strides 4 and 8, two for 16, three for 32; 2x upsampling after
    # each conv except at stride 4.
    assert [len(h.convs) for h in model.scale_heads] == [1, 1, 2, 3]
    assert [h.upsamplings for h in model.scale_heads] == [0, 1, 2, 3]
    pyramid = model.fpn({str(i): m for i, m in enumerate(model.backbone(torch.rand(1, 3, 64, 64)))})
    assert [tuple(h(p).shape[-2:]) for h, p in zip(model.scale_heads, pyramid.values())] == [(16, 16)] * 4


def test_resnet_batchnorm_is_frozen_by_default_in_dense_models():
    from torchvision.ops.misc import FrozenBatchNorm2d

    from bench.scenarios.finetune import build_task_model

    model = build_task_model("seg", "resnet18", 3, (64, 64), None, fpn_channels=16)
    norms = [m for m in model.backbone.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    trainable = build_task_model("seg", "resnet18", 3, (64, 64), None, fpn_channels=16, bn_mode="train")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trainable.backbone.modules())


def test_vit_detection_does_not_compute_the_unread_stride4_level():
    from bench.scenarios.finetune import build_task_model

    model = build_task_model("det", "vit_t", 3, (64, 64), None, fpn_channels=16).eval()
    calls = []
    model.backbone.body.up4.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model([torch.rand(3, 64, 64)])
    assert calls == []
    assert all(name.startswith("body.up4") for name in model.unreached_parameters)
