"""Dense-prediction metrics: COCO box mAP / AP50 / AP75 through pycocotools, and mIoU / pixel
accuracy from a confusion matrix (mmsegmentation's definitions)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.data import IGNORE_INDEX


def coco_box_metrics(targets: list[dict], predictions: list[dict], num_classes: int) -> dict[str, float]:
    """COCO box AP over IoU 0.50:0.95 (``map``), at 0.50 (``ap50``) and 0.75 (``ap75``).

    ``targets``: per image ``boxes`` (N, 4) xyxy and ``labels``; ``predictions``: per image
    ``boxes``, ``scores``, ``labels`` (torchvision's detector output), in the same pixel frame.
    The ground truth is built in memory, so any data source is scored the same way. No detection
    at all scores 0.
    """
    images, gt_anns, dets = [], [], []
    for image_id, (target, pred) in enumerate(zip(targets, predictions), start=1):
        images.append({"id": image_id})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            gt_anns.append({
                "id": len(gt_anns) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
        for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
            x1, y1, x2, y2 = box
            dets.append({"image_id": image_id, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": float(score)})
    if not dets or not gt_anns:
        return {"map": 0.0, "ap50": 0.0, "ap75": 0.0}
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": images,
        "annotations": gt_anns,
        "categories": [{"id": k} for k in range(1, num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(dets), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # stats[0..2] are AP@[.5:.95], AP@.5, AP@.75; -1 means "no ground truth", reported as 0.
    return {name: max(0.0, float(evaluator.stats[i])) for i, name in enumerate(("map", "ap50", "ap75"))}


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = ground truth, columns = prediction; pixels
    labelled IGNORE_INDEX are left out."""
    keep = target != IGNORE_INDEX
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, float | list[float | None]]:
    """mIoU: mean over classes of intersection / union, over the classes that occur in the
    ground truth or the prediction (mmsegmentation's nan-mean); pixel accuracy: correct / all."""
    confusion = confusion.double()
    intersection = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    iou = intersection / union  # nan where a class is in neither
    total = confusion.sum()
    return {
        "miou": float(np.nanmean(iou.numpy())) if bool((union > 0).any()) else 0.0,
        "pixel_acc": float(intersection.sum() / total) if total > 0 else 0.0,
        "iou_per_class": [None if np.isnan(v) else round(float(v), 6) for v in iou.tolist()],
    }


def majority_class_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """What predicting the most frequent ground-truth class everywhere would score: the chance
    level a segmentation model has to beat."""
    gt_per_class = confusion.sum(1)
    majority = int(gt_per_class.argmax())
    constant = torch.zeros_like(confusion)
    constant[:, majority] = gt_per_class
    scores = segmentation_metrics(constant)
    return {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"]}
