"""``det``: RetinaNet (FPN P3-P5 + P6/P7 from C5, torchvision's head and NMS) on the backbone; the
step is the detector's whole forward including NMS (inference), or forward with loss + backward
+ optimizer step (training)."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from bench.plan import Cell
from bench.tasks.base import Tap
from bench.tasks.dense import DenseTask
from models.heads.retinanet import FPN_LEVELS

SCORES = ("map", "ap50", "ap75")


def synthetic_targets(batch: int, height: int, width: int, device: torch.device) -> list[dict]:
    """Three boxes per image, fixed, so every step does the same matching work."""
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.6], [0.3, 0.6, 0.7, 0.95]], device=device)
    boxes = boxes * torch.tensor([width, height, width, height], device=device)
    return [{"boxes": boxes.clone(), "labels": torch.tensor([1, 2, 3], device=device)} for _ in range(batch)]


def _postprocess(model, images, features, head_out):
    """torchvision RetinaNet's eval tail: anchors, per-level split, decoding, NMS."""
    anchors = model.anchor_generator(images, features)
    per_level = [f.size(2) * f.size(3) for f in features]
    a = head_out["cls_logits"].size(1) // sum(per_level)
    per_level = [n * a for n in per_level]
    split = {k: list(v.split(per_level, dim=1)) for k, v in head_out.items()}
    split_anchors = [list(anchor.split(per_level)) for anchor in anchors]
    return model.postprocess_detections(split, split_anchors, images.image_sizes)


class _DetScore:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.targets: list[dict] = []
        self.predictions: list[dict] = []

    def add(self, module: nn.Module, images: torch.Tensor, data: dict) -> None:
        self.predictions += [{k: v.float().cpu() for k, v in p.items()} for p in module(list(images))]
        self.targets += data["targets"]

    def result(self, ctx) -> dict:
        """Detections gathered from every rank for one COCO evaluation."""
        from bench.measure.accuracy import coco_box_metrics

        targets, predictions = self.targets, self.predictions
        if ctx.distributed:
            import torch.distributed as dist

            gathered = [None] * ctx.world_size
            dist.all_gather_object(gathered, (targets, predictions))
            targets = [t for rank_targets, _ in gathered for t in rank_targets]
            predictions = [p for _, rank_predictions in gathered for p in rank_predictions]
        return coco_box_metrics(targets, predictions, self.num_classes)


MATCH_IOU = 0.5
COCO_MAX_DETS = 100


def detection_agreement(cell: list[dict], reference: list[dict]) -> dict | None:
    """The cell's detections scored against the reference's, taken as ground truth: pycocotools
    mAP@[.5:.95] and AP50, and ``matched``, the share of reference boxes that a cell box of the same
    class overlaps at IoU >= 0.5 (the tolerance's ``score``). None when the reference found nothing."""
    from torchvision.ops import box_iou

    from bench.measure.accuracy import coco_box_metrics

    top = [{k: v[:COCO_MAX_DETS] for k, v in _by_score(r).items()} for r in reference]
    if not sum(len(r["boxes"]) for r in top):
        return None
    matched = 0
    for ref, own in zip(top, cell):
        same_class = ref["labels"][:, None] == own["labels"].cpu()[None, :]
        iou = box_iou(ref["boxes"].float(), own["boxes"].float().cpu())
        matched += int(((iou >= MATCH_IOU) & same_class).any(1).sum())
    shift = lambda d: {**d, "labels": d["labels"] + 1}  # noqa: E731 - COCO ids start at 1
    classes = 1 + max(int(d["labels"].max()) for d in top + cell if len(d["labels"]))
    scores = coco_box_metrics([shift(r) for r in top], [shift(c) for c in cell], classes + 1)
    reference_boxes = sum(len(r["boxes"]) for r in top)
    return {"score": round(matched / reference_boxes, 4), "matched": round(matched / reference_boxes, 4),
            "map": round(scores["map"], 4), "ap50": round(scores["ap50"], 4), "reference_boxes": reference_boxes,
            "basis": "reference detections after NMS as ground truth (top 100 per image)"}


def _by_score(detections: dict) -> dict:
    order = detections["scores"].argsort(descending=True)
    return {k: v[order].detach().float().cpu() if k != "labels" else v[order].cpu() for k, v in detections.items()}


class Detect(DenseTask):
    name = "det"

    def input_hw(self, cell: Cell) -> tuple[int, int]:
        """Detectors pad each side to a multiple of 32 (mmdet's rule)."""
        from models.heads import pad_to_32

        return pad_to_32(cell.height, cell.width)

    def _noise(self, *shape: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Images in [0, 1]: the detector's transform normalises them itself."""
        return torch.rand(*shape, device=device, dtype=dtype)

    def feed(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(x)

    def train_targets(self, x: torch.Tensor) -> list[dict]:
        return synthetic_targets(x.shape[0], x.shape[-2], x.shape[-1], x.device)

    def loss(self, forward: nn.Module, x: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        return sum(forward(list(x), targets).values())

    def _parts_pass(self, model, x, timed) -> None:
        images, _ = model.transform(list(x))
        maps = timed("backbone", model.backbone.body, images.tensors)
        pyramid = timed("neck", model.backbone.fpn, OrderedDict((f"c{2 ** (j + 2)}", maps[j]) for j in FPN_LEVELS))
        features = list(pyramid.values())
        head_out = timed("head", model.head, features)
        timed("postprocess", _postprocess, model, images, features, head_out)

    # ---- the numerics check
    def agreement_taps(self, model: nn.Module) -> list[Tap]:
        """The backbone's four levels and the head's class logits and box regressions."""
        return [Tap("backbone", model.backbone.body), Tap("head", model.head)]

    def logits(self, output) -> None:
        return None  # the head's cls_logits tap stands for them

    def task_agreement(self, cell_output: list[dict], reference_output: list[dict]) -> dict | None:
        """The reference's detections after NMS as the ground truth (its COCO top 100 per image)."""
        return detection_agreement(cell_output, reference_output)

    # ---- bench finetune
    def finetune_model(self, backbone, num_classes, image_size, fpn_channels, head_norm) -> nn.Module:
        from models.heads import build_retinanet

        return build_retinanet(backbone, num_classes, image_size, fpn_channels=fpn_channels, head_norm=head_norm)

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return model.backbone.body

    def batch_loss(self, model, batch, device, input_dtype) -> torch.Tensor:
        images = batch["images"].to(device, input_dtype, non_blocking=True)
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
        return sum(model(list(images), targets).values())

    def scorer(self, num_classes: int) -> _DetScore:
        return _DetScore(num_classes)

    def metric_fields(self, before: dict, after: dict) -> dict:
        return {**{k: after[k] for k in SCORES}, **{f"untrained_{k}": before[k] for k in SCORES}}


DET = Detect()
