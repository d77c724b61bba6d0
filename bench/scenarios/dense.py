"""``bench run --task det|seg``: the whole detector or segmentor as the PVT paper costs it.

The run scenario (bench.scenarios.classify) times these cells with the same protocol as a
classifier; this module supplies what differs: the model (RetinaNet with FPN + P6/P7 and its
head, or Semantic FPN, on any backbone: models.heads.build_dense), its FLOP count split into
backbone / neck / head, the step (inference = the detector's whole forward including NMS, batch
1 in the paper's Table 11 protocol; training = forward with loss + backward + optimizer step),
and the inference latency per part (backbone, neck, head, and postprocess for det), timed in a
pass of its own after the main timing so that no extra clock read sits inside the timed step.
"""
from __future__ import annotations

import statistics
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.plan import Cell
from models.heads.retinanet import FPN_LEVELS


def input_hw(cell: Cell) -> tuple[int, int]:
    """The size fed to the model: detectors pad each side to a multiple of 32 (mmdet's rule)."""
    from models.heads import pad_to_32

    return pad_to_32(cell.height, cell.width) if cell.task == "det" else (cell.height, cell.width)


def build(cell: Cell) -> nn.Module:
    from models.heads import build_dense

    return build_dense(cell.task, cell.model, input_hw(cell))


def count(cell: Cell):
    from bench.measure.flops import count_flops
    from models.heads import BACKBONE_ROOT, DENSE_PARTS, cost_view

    h, w = input_hw(cell)
    model = build(cell)
    report = count_flops(cost_view(cell.task, model), cell.model, h, w, cross_check=False,
                         parts=DENSE_PARTS[cell.task], task=cell.task, stage_root=BACKBONE_ROOT[cell.task])
    report.res = cell.res
    return report


def synthetic_targets(batch: int, height: int, width: int, device: torch.device) -> list[dict]:
    """Three boxes per image, fixed, so every step does the same matching work."""
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.6], [0.3, 0.6, 0.7, 0.95]], device=device)
    boxes = boxes * torch.tensor([width, height, width, height], device=device)
    return [{"boxes": boxes.clone(), "labels": torch.tensor([1, 2, 3], device=device)} for _ in range(batch)]


def make_infer_step(cell: Cell, model: nn.Module, x: torch.Tensor, amp):
    model.eval()
    images = list(x) if cell.task == "det" else x

    @torch.inference_mode()
    def step():
        if amp is None:
            return model(images)
        with amp:
            return model(images)

    return step


def train_loss(cell: Cell, forward: nn.Module, x: torch.Tensor, targets) -> torch.Tensor:
    if cell.task == "det":
        return sum(forward(list(x), targets).values())
    return F.cross_entropy(forward(x).float(), targets)


def train_targets(cell: Cell, x: torch.Tensor):
    if cell.task == "det":
        return synthetic_targets(x.shape[0], x.shape[-2], x.shape[-1], x.device)
    return torch.randint(0, 150, (x.shape[0], x.shape[-2], x.shape[-1]), device=x.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def part_latency_ms(cell: Cell, model: nn.Module, x: torch.Tensor, iters: int = 5) -> dict[str, float]:
    """Median milliseconds per part over ``iters`` passes (after one untimed pass), each part
    bracketed by a host clock (synchronised on GPU): backbone, neck, head (+ postprocess)."""
    model.eval()
    device = x.device
    clock = time.perf_counter
    samples: dict[str, list[float]] = {}

    def timed(name, fn, *args):
        _sync(device)
        t0 = clock()
        out = fn(*args)
        _sync(device)
        samples.setdefault(name, []).append((clock() - t0) * 1e3)
        return out

    for i in range(iters + 1):
        if cell.task == "det":
            images, _ = model.transform(list(x))
            maps = timed("backbone", model.backbone.body, images.tensors)
            pyramid = timed("neck", model.backbone.fpn,
                            OrderedDict((f"c{2 ** (j + 2)}", maps[j]) for j in FPN_LEVELS))
            features = list(pyramid.values())
            head_out = timed("head", model.head, features)
            timed("postprocess", _postprocess, model, images, features, head_out)
        else:
            maps = timed("backbone", model.backbone, (x - model.mean) / model.std)
            pyramid = timed("neck", model.fpn, OrderedDict((str(j), m) for j, m in enumerate(maps)))
            timed("head", _seg_head, model, list(pyramid.values()), x.shape[-2:])
        if i == 0:  # the first pass warms caches and allocators
            samples.clear()
    return {name: round(statistics.median(v), 3) for name, v in samples.items()}


def _postprocess(model, images, features, head_out):
    """torchvision RetinaNet's eval tail: anchors, per-level split, decoding, NMS."""
    anchors = model.anchor_generator(images, features)
    per_level = [f.size(2) * f.size(3) for f in features]
    a = head_out["cls_logits"].size(1) // sum(per_level)
    per_level = [n * a for n in per_level]
    split = {k: list(v.split(per_level, dim=1)) for k, v in head_out.items()}
    split_anchors = [list(anchor.split(per_level)) for anchor in anchors]
    return model.postprocess_detections(split, split_anchors, images.image_sizes)


def _seg_head(model, levels, size):
    fused = None
    for head, p in zip(model.scale_heads, levels):
        out = head(p)
        fused = out if fused is None else fused + out
    return model.resize(model.classifier(fused), size)
