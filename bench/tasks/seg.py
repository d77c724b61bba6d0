"""``seg``: Semantic FPN (FPN over strides 4-32, each level brought to stride 4, summed,
classified; 150 classes in ``bench run``) on the backbone."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.tasks.base import Tap
from bench.tasks.dense import DenseTask

NUM_CLASSES = 150  # ADE20K, as the paper's Semantic FPN


def _seg_head(model, levels, size):
    fused = None
    for head, p in zip(model.scale_heads, levels):
        out = head(p)
        fused = out if fused is None else fused + out
    return model.resize(model.classifier(fused), size)


def _sum_over_ranks(tensor: torch.Tensor, ctx) -> torch.Tensor:
    if ctx.distributed:
        import torch.distributed as dist

        on_device = tensor.to(ctx.device if ctx.backend == "nccl" else "cpu")
        dist.all_reduce(on_device)
        tensor = on_device.cpu()
    return tensor


class _SegScore:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def add(self, module: nn.Module, images: torch.Tensor, data: dict) -> None:
        from bench.measure.accuracy import confusion_matrix

        pred = module(images).argmax(1).cpu()
        self.confusion += confusion_matrix(pred, data["semantic"], self.num_classes)

    def result(self, ctx) -> dict:
        """Confusion matrices summed over ranks; mIoU, pixel accuracy and the majority-class floor."""
        from bench.measure.accuracy import majority_class_metrics, segmentation_metrics

        confusion = _sum_over_ranks(self.confusion, ctx)
        scores = segmentation_metrics(confusion)
        chance = majority_class_metrics(confusion)
        return {**scores, "majority_miou": chance["miou"], "majority_pixel_acc": chance["pixel_acc"]}


class Segment(DenseTask):
    name = "seg"
    recorded_head_norm = "gn"  # Semantic FPN's heads always use GroupNorm

    def train_targets(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, NUM_CLASSES, (x.shape[0], x.shape[-2], x.shape[-1]), device=x.device)

    def loss(self, forward: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(x).float(), targets)

    def _parts_pass(self, model, x, timed) -> None:
        maps = timed("backbone", model.backbone, (x - model.mean) / model.std)
        pyramid = timed("neck", model.fpn, OrderedDict((str(j), m) for j, m in enumerate(maps)))
        timed("head", _seg_head, model, list(pyramid.values()), x.shape[-2:])

    # ---- the numerics check
    def agreement_taps(self, model: nn.Module) -> list[Tap]:
        """The backbone's four levels; the logits are the model's output."""
        return [Tap("backbone", model.backbone)]

    def task_agreement(self, cell_output: torch.Tensor, reference_output: torch.Tensor) -> dict:
        """The cell's argmax map scored against the reference's argmax as ground truth: mIoU (the
        tolerance's ``score``) and the share of pixels with the same class."""
        from bench.measure.accuracy import confusion_matrix, segmentation_metrics

        own, ref = cell_output.argmax(1).cpu(), reference_output.argmax(1).cpu()
        scores = segmentation_metrics(confusion_matrix(own, ref, NUM_CLASSES))
        return {"score": round(scores["miou"], 4), "miou": round(scores["miou"], 4),
                "pixel_agreement": round(float((own == ref).double().mean()), 4),
                "basis": "reference argmax map as ground truth"}

    # ---- bench finetune
    def finetune_model(self, backbone, num_classes, image_size, fpn_channels, head_norm) -> nn.Module:
        from models.heads import SemanticFPN

        return SemanticFPN(backbone, num_classes, fpn_channels=fpn_channels, head_channels=fpn_channels // 2)

    def batch_loss(self, model, batch, device, input_dtype) -> torch.Tensor:
        from bench.data import IGNORE_INDEX

        images = batch["images"].to(device, input_dtype, non_blocking=True)
        logits = model(images)
        return F.cross_entropy(logits.float(), batch["semantic"].to(device), ignore_index=IGNORE_INDEX)

    def scorer(self, num_classes: int) -> _SegScore:
        return _SegScore(num_classes)

    def metric_fields(self, before: dict, after: dict) -> dict:
        return {"miou": after["miou"], "pixel_acc": after["pixel_acc"], "iou_per_class": after["iou_per_class"],
                "untrained_miou": before["miou"], "untrained_pixel_acc": before["pixel_acc"],
                "majority_miou": after["majority_miou"], "majority_pixel_acc": after["majority_pixel_acc"]}


SEG = Segment()
