"""``det``: RetinaNet (FPN P3-P5 + P6/P7 from C5, torchvision's head and NMS) on the backbone; the
step is the detector's whole forward including NMS (inference), or forward with loss + backward
+ optimizer step (training).

The NMS load. An untrained torchvision head scores every anchor about 0.01 (prior bias 0.01,
convs of std 0.01), under the trained head's score threshold of 0.05: no box would reach NMS and
the timed post-processing would be a sigmoid, a threshold and a top-k. ``bench run`` loads no
weights at all (it has no ``--checkpoint``), so its det cells are built with ``score_thresh=0``:
every level's ``topk_candidates`` (1000) best boxes enter NMS, the worst case. A trained head keeps
its own 0.05 (``det_load(head_trained=True)``; the fine-tune builds its detector apart and keeps
torchvision's thresholds, as its mAP needs). The record says which (``det_load``) and how many
boxes entered NMS per image (``nms_candidates``)."""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from unittest import mock

import torch
import torch.nn as nn

from bench.plan import Cell
from bench.tasks.base import Tap, sync
from bench.tasks.dense import DenseTask
from models.heads.retinanet import FPN_LEVELS

SCORES = ("map", "ap50", "ap75")
TRAINED_SCORE_THRESH = 0.05  # torchvision's (and mmdet's) RetinaNet test threshold


@dataclass(frozen=True)
class DetLoad:
    """The score threshold a timed detector runs with, and why, in the record's words."""

    score_thresh: float
    label: str


def det_load(head_trained: bool) -> DetLoad:
    """A trained head keeps its threshold; a random one gets 0 so that NMS sees its full load."""
    if head_trained:
        return DetLoad(TRAINED_SCORE_THRESH, f"trained head, score_thresh={TRAINED_SCORE_THRESH:g}")
    return DetLoad(0.0, "score_thresh=0 (random head, worst case)")


def count_nms_candidates(model: nn.Module, images: list[torch.Tensor], amp: torch.dtype | None = None) -> list[int]:
    """Boxes that entered NMS, per image, in one inference of ``model`` (a torchvision RetinaNet)
    on ``images``: counted by wrapping ``torchvision.ops.boxes.batched_nms``, which torchvision's
    ``postprocess_detections`` calls once per image on every candidate that passed the model's own
    ``score_thresh`` and ``topk_candidates``; so the count is what NMS received, not a re-derivation."""
    import torchvision.ops.boxes as box_ops

    counts: list[int] = []
    real_nms = box_ops.batched_nms

    def counting_nms(boxes, scores, idxs, iou_threshold):
        counts.append(int(boxes.shape[0]))
        return real_nms(boxes, scores, idxs, iou_threshold)

    model.eval()
    with (torch.inference_mode(), mock.patch.object(box_ops, "batched_nms", counting_nms),
          torch.autocast(images[0].device.type, dtype=amp, enabled=amp is not None)):
        model(images)
    return counts


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


# ---- the mmdet / PVT-paper FPS protocol (bench run --task det --data coco:DIR)
MMDET_TEST_SCALE = (1333, 800)  # mmdet's test img_scale (long, short): the PVT paper's detection set-up
FPS_WARMUP_IMAGES = 5  # mmdet's benchmark.py: num_warmup
FPS_MAX_IMAGES = 2000  # mmdet's benchmark.py: max_iter


def keep_ratio_size(height: int, width: int, short: int, long_cap: int) -> tuple[int, int]:
    """mmdet's test ``Resize(keep_ratio=True)`` (and torchvision's detection transform): one scale
    for both sides, the short side brought to ``short`` unless the long side would pass ``long_cap``."""
    scale = min(short / min(height, width), long_cap / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


@dataclass
class RealImageFps:
    """The FPS protocol's result: images timed, their summed inference time, and how."""

    images: int
    total_s: float
    protocol: str
    data: str

    def to_record(self) -> dict:
        fps = self.images / self.total_s if self.total_s > 0 else None
        return {"fps_real_images": None if fps is None else round(fps, 4), "fps_images": self.images,
                "fps_protocol": self.protocol, "data": self.data}


def _keep_ratio_val(root: str, short: int, long_cap: int):
    """The COCO val split read by the loader (bench.data.coco: its checks, its decoding, its
    bilinear resize), each image at its own aspect ratio by ``keep_ratio_size``."""
    from bench.data import CocoDataset, image_header

    class KeepRatio(CocoDataset):
        def __getitem__(self, index):
            image_id = self.image_ids[index]
            info = self.coco.imgs[image_id]
            h, w = (info["height"], info["width"]) if "width" in info else image_header(self.paths[image_id])[0][::-1]
            self.height, self.width = keep_ratio_size(h, w, short, long_cap)  # what the base resizes to
            return super().__getitem__(index)

    return KeepRatio(root, "val", short, short)


def real_image_fps(model: nn.Module, data: str, short: int, device: torch.device, dtype: torch.dtype,
                   amp: torch.dtype | None, budget_s: float) -> RealImageFps:
    """mmdet's ``tools/analysis_tools/benchmark.py`` protocol, as the PVT paper's FPS: batch 1, val
    images in order at their own aspect ratio (short side ``short``, long side at most
    ``short * 1333 / 800``), padded to 32 by the detector's transform; loading and resizing happen
    outside the clock, the whole forward (NMS included) inside, one synchronised host-clock
    bracket per image. The first ``FPS_WARMUP_IMAGES`` images are run once untimed, then every
    image is timed once until ``FPS_MAX_IMAGES`` or ``budget_s`` of timed inference (at least one).
    FPS = images / summed time. ``short`` is the detector's own short side (the cell's, padded to 32)."""
    long_cap = int(short * MMDET_TEST_SCALE[0] / MMDET_TEST_SCALE[1] + 0.5)
    val = _keep_ratio_val(data.partition(":")[2], short, long_cap)
    transform = model.transform
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (short,), long_cap  # the transform pads; its resize is ~identity

    def infer(index: int) -> float:
        image = val[index]["image"].to(device, dtype)
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            model([image])
        sync(device)
        return time.perf_counter() - t0

    try:
        model.eval()
        with torch.inference_mode():
            for index in range(min(FPS_WARMUP_IMAGES, len(val))):
                infer(index)
            total, images = 0.0, 0
            while images < min(len(val), FPS_MAX_IMAGES) and (images == 0 or total < budget_s):
                total += infer(images)
                images += 1
    finally:
        transform.min_size, transform.max_size = saved
    protocol = (f"mmdet benchmark: batch 1, COCO val at own aspect ratio (short side {short}, long <= {long_cap}), "
                f"padded to 32, {FPS_WARMUP_IMAGES} warm-up images untimed, FPS = images / summed inference time "
                "(loading and resizing excluded)")
    return RealImageFps(images, total, protocol, data)


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

    def build(self, cell: Cell) -> nn.Module:
        """The detector with the NMS load of ``det_load``: ``bench run`` gives no head weights,
        so the head is random and the threshold 0 (the worst case); the load rides on the model."""
        from models.heads import build_dense

        load = det_load(head_trained=False)
        model = build_dense(self.name, cell.model, self.input_hw(cell), score_thresh=load.score_thresh)
        model.det_load = load
        return model

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

    def _pass_facts(self, model, x, setup) -> dict:
        """The NMS load of the timed inference: which threshold, and the boxes NMS got per image
        (the mean over the batch) in one untimed forward of the same model, input and autocast;
        with ``--data coco:DIR``, the FPS of the mmdet protocol on its val images too."""
        counts = count_nms_candidates(model, self.feed(x), setup.amp)
        load = getattr(model, "det_load", None)
        matches = load is not None and load.score_thresh == model.score_thresh
        label = load.label if matches else f"score_thresh={model.score_thresh:g}"  # never a stale label
        out = {"det_load": label, "nms_candidates": sum(counts) / len(counts) if counts else 0}
        if setup.data.startswith("coco:"):
            short = min(model.transform.min_size[-1], model.transform.max_size)
            fps = real_image_fps(model, setup.data, short, x.device, x.dtype, setup.amp, setup.budget_s).to_record()
            out |= fps | {"fps_protocol": f"{fps['fps_protocol']}; {label}"}  # the paper's is a trained head
        return out

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
