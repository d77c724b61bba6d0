"""Data for the fine-tunes: a synthetic scene generator and loaders for COCO- and ADE20K-format
directories, all yielding the same sample so that one training loop serves every source.

A sample is a dict: ``image`` float (3, H, W) in [0, 1]; ``boxes`` float (N, 4) xyxy in pixels;
``labels`` int64 (N,) in 1..K; ``semantic`` int64 (H, W) with 0 = background, 1..K the classes
and 255 = ignore. Every image is resized to the run's (H, W) (aspect ratio not kept): the
fine-tunes are short comparisons between backbones at one resolution, not a reproduction of the
official multi-scale pipelines.

Accepted layouts (``--data``):

- ``synthetic``: generated in memory, deterministic by seed; nothing is read or downloaded.
- ``coco:DIR``: ``DIR/annotations/instances_{train,val}2017.json`` (or ``instances_{train,val}.json``)
  and images in the first of ``DIR/{split}2017/``, ``DIR/{split}/``, ``DIR/images/{split}2017/``,
  ``DIR/images/{split}/``, ``DIR/images/`` that exists. Category ids are mapped to labels 1..K in
  the order of the ``categories`` list. Boxes serve detection; instance masks, painted largest
  first, serve segmentation (unlabelled pixels are background). Crowd annotations are skipped.
- ``ade20k:DIR``: ``DIR/images/{training,validation}/NAME.jpg`` with
  ``DIR/annotations/{training,validation}/NAME.png`` (ADEChallengeData2016's layout). Labels follow
  ADE's ``reduce_zero_label`` convention: PNG value 0 ("other") is ignored, value v >= 1 becomes
  class v - 1. Class names come from ``DIR/objectInfo150.txt`` when present (the release's
  tab-separated file, names in the last column), otherwise ADE20K's 150 classes are assumed.
  Segmentation only: the format has no boxes.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch.utils.data import Dataset

from bench.errors import BadInput

IGNORE_INDEX = 255
SYNTHETIC_CLASSES = ("rectangle", "ellipse", "triangle", "cross")
ADE20K_NUM_CLASSES = 150

Sample = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Synthetic scenes


def render_scene(seed: int, index: int, height: int, width: int, num_classes: int = 3) -> dict:
    """Draw scene ``index`` of stream ``seed``: 1-4 shapes on a textured, coloured background.

    A class is a shape (rectangle, ellipse, triangle, cross) with its own band of hues; shapes
    are rotated, stretched, textured and overlap, and the background is textured in any colour
    (those of the objects included), so telling objects from background takes more than a
    colour lookup, and a fixed guess (all background) scores low. Returns numpy arrays:
    ``image`` uint8 (H, W, 3), ``masks`` bool (N, H, W) of the visible part of each object,
    ``labels`` (N,) in 1..K.
    """
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be 1..{len(SYNTHETIC_CLASSES)}")
    rng = np.random.default_rng([seed, index])
    image = _textured_background(rng, height, width)
    side = min(height, width)
    masks: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, 5))):
        label = int(rng.integers(1, num_classes + 1))
        size = rng.uniform(0.25, 0.6) * side
        drawn = _shape_mask(rng, SYNTHETIC_CLASSES[label - 1], size, height, width)
        if drawn.sum() < 16:
            continue
        colour = _class_colour(rng, label, num_classes)
        texture = rng.normal(0, rng.uniform(5, 30), (height, width, 1)) + rng.normal(0, 8, (height, width, 3))
        image = np.where(drawn[..., None], np.clip(colour + texture, 0, 255), image)
        for earlier in masks:
            earlier &= ~drawn
        masks.append(drawn)
        labels.append(label)
    # Keep objects of which enough stays visible to be recognisable.
    keep = [i for i, m in enumerate(masks) if m.sum() >= max(16, 0.02 * side * side)]
    return {
        "image": image.astype(np.uint8),
        "masks": np.stack([masks[i] for i in keep]) if keep else np.zeros((0, height, width), bool),
        "labels": np.array([labels[i] for i in keep], dtype=np.int64),
    }


def _class_colour(rng: np.random.Generator, label: int, num_classes: int) -> np.ndarray:
    """An RGB colour from the class's own band of hues (bands do not overlap), random saturation
    and brightness: colour hints at the class, but the background can take any colour."""
    band = 1.0 / num_classes
    hue = ((label - 1) + rng.uniform(0.2, 0.8)) * band
    saturation, value = rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)
    hsv = np.array([[[hue * 255, saturation * 255, value * 255]]], dtype=np.uint8)
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.float64)[0, 0]


def _textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random base colour + smooth blotches + stripes + pixel noise (float, H x W x 3)."""
    base = rng.uniform(40, 215, 3)
    coarse = rng.normal(0, 45, (max(2, height // 16), max(2, width // 16), 3))
    blotches = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC),
        dtype=np.float32,
    ) - 128
    yy, xx = np.mgrid[0:height, 0:width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
    stripes = 20 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(base + blotches + stripes * rng.uniform(0, 1) + noise, 0, 255)


def _shape_mask(rng: np.random.Generator, shape: str, size: float, height: int, width: int) -> np.ndarray:
    """A filled shape of about ``size`` pixels across, randomly placed, rotated and stretched."""
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    stretch = rng.uniform(0.6, 1.0)
    half_w, half_h = size / 2, size * stretch / 2
    if rng.random() < 0.5:
        half_w, half_h = half_h, half_w
    theta = rng.uniform(0, 2 * np.pi)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "ellipse":
        draw.ellipse([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=255)
        canvas = canvas.rotate(np.degrees(theta), center=(cx, cy))
    else:
        if shape == "rectangle":
            corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        elif shape == "triangle":
            corners = [(0, -1), (1, 1), (-1, 1)]
        else:  # cross: a plus sign, arms a third of the size wide
            t = 1 / 3
            corners = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t),
                       (-1, -t), (-t, -t)]
        cos, sin = np.cos(theta), np.sin(theta)
        points = [
            (cx + u * half_w * cos - v * half_h * sin, cy + u * half_w * sin + v * half_h * cos) for u, v in corners
        ]
        draw.polygon(points, fill=255)
    return np.asarray(canvas) > 127


class SyntheticScenes(Dataset):
    """``length`` scenes of stream ``seed``, rendered on demand (same index, same scene)."""

    def __init__(self, length: int, height: int, width: int, num_classes: int = 3, seed: int = 0):
        self.length, self.height, self.width = length, height, width
        self.num_classes, self.seed = num_classes, seed
        self.class_names = ["background", *SYNTHETIC_CLASSES[:num_classes]]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(index)  # ends plain iteration; the generator itself has no end
        scene = render_scene(self.seed, index, self.height, self.width, self.num_classes)
        return sample_from_arrays(scene["image"], scene["masks"], scene["labels"])


def sample_from_arrays(image: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> Sample:
    """Image + visible instance masks -> the common sample (boxes are the masks' extents)."""
    height, width = image.shape[:2]
    semantic = np.zeros((height, width), np.int64)
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, (mask, label) in enumerate(zip(masks, labels)):
        semantic[mask] = label
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255).contiguous(),
        "boxes": torch.from_numpy(boxes),
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "semantic": torch.from_numpy(semantic),
    }


# --------------------------------------------------------------------------------------------
# COCO-format directory


def _find_first(candidates: list[Path], what: str, root: Path) -> Path:
    for path in candidates:
        if path.exists():
            return path
    tried = ", ".join(str(p.relative_to(root)) for p in candidates)
    raise BadInput(f"{what} not found under {root} (looked for {tried})")


def load_coco_json(path: Path):
    """Read and check a COCO instances file; any fault is a one-line BadInput naming the file."""
    from pycocotools.coco import COCO

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"malformed COCO annotation file {path}: {str(exc).splitlines()[0]}") from None
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in lists):
        raise BadInput(f"malformed COCO annotation file {path}: needs lists 'images', 'annotations' and 'categories'")
    required = {
        "images": ("id", "file_name"), "categories": ("id",), "annotations": ("image_id", "category_id", "bbox"),
    }
    for key, fields in required.items():
        for item in data[key]:
            if not isinstance(item, dict) or any(f not in item for f in fields):
                raise BadInput(
                    f"malformed COCO annotation file {path}: an entry of '{key}' lacks one of {', '.join(fields)}"
                )
    image_ids = {img["id"] for img in data["images"]}
    category_ids = {cat["id"] for cat in data["categories"]}
    for ann in data["annotations"]:
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise BadInput(f"malformed COCO annotation file {path}: annotation {ann.get('id')} has bbox {bbox!r}")
        if ann["image_id"] not in image_ids or ann["category_id"] not in category_ids:
            raise BadInput(
                f"malformed COCO annotation file {path}: annotation {ann.get('id')} names an unknown image or category"
            )
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoDataset(Dataset):
    """A COCO-format split (see the module docstring for the layout), resized to (H, W)."""

    def __init__(self, root: str | os.PathLike, split: str, height: int, width: int):
        root = Path(root)
        if not root.is_dir():
            raise BadInput(f"COCO directory not found: {root}")
        ann_file = _find_first(
            [root / "annotations" / f"instances_{split}2017.json", root / "annotations" / f"instances_{split}.json"],
            f"COCO {split} annotations",
            root,
        )
        image_dir = _find_first(
            [root / f"{split}2017", root / split, root / "images" / f"{split}2017", root / "images" / split,
             root / "images"],
            f"COCO {split} image folder",
            root,
        )
        self.coco = load_coco_json(ann_file)
        self.height, self.width = height, width
        category_ids = [c["id"] for c in self.coco.dataset["categories"]]
        self.label_of_category = {cid: i + 1 for i, cid in enumerate(category_ids)}
        self.class_names = ["background", *(str(c.get("name", c["id"])) for c in self.coco.dataset["categories"])]
        self.num_classes = len(category_ids)
        self.image_ids = sorted(self.coco.imgs)
        self.paths = {}
        for image_id in self.image_ids:
            path = image_dir / self.coco.imgs[image_id]["file_name"]
            if not path.is_file():
                raise BadInput(f"image file not found: {path} (listed in {ann_file})")
            self.paths[image_id] = path

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self.image_ids[index]
        image = _open_image(self.paths[image_id], "RGB")
        src_w, src_h = image.size
        info = self.coco.imgs[image_id]
        info.setdefault("height", src_h)  # annToMask reads the size from here
        info.setdefault("width", src_w)
        sx, sy = self.width / src_w, self.height / src_h
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes, labels = [], []
        semantic = np.zeros((info["height"], info["width"]), np.uint8)
        for ann in sorted(anns, key=lambda a: -a.get("area", a["bbox"][2] * a["bbox"][3])):
            x, y, w, h = ann["bbox"]
            if w < 1 or h < 1:
                continue
            label = self.label_of_category[ann["category_id"]]
            boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
            labels.append(label)
            if ann.get("segmentation"):
                semantic[self.coco.annToMask(ann) > 0] = label
        semantic_img = Image.fromarray(semantic).resize((self.width, self.height), Image.NEAREST)
        return {
            "image": _to_tensor(image.resize((self.width, self.height), Image.BILINEAR)),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "semantic": torch.from_numpy(np.asarray(semantic_img, dtype=np.int64)),
        }


# --------------------------------------------------------------------------------------------
# ADE20K-format directory

ADE_SPLITS = {"train": "training", "val": "validation"}


class Ade20kDataset(Dataset):
    """An ADE20K-format split (see the module docstring), resized to (H, W); segmentation only."""

    def __init__(self, root: str | os.PathLike, split: str, height: int, width: int):
        root = Path(root)
        if not root.is_dir():
            raise BadInput(f"ADE20K directory not found: {root}")
        folder = ADE_SPLITS[split]
        image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
        for d in (image_dir, label_dir):
            if not d.is_dir():
                raise BadInput(f"ADE20K folder not found: {d}")
        self.height, self.width = height, width
        self.images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.images:
            raise BadInput(f"no images in {image_dir}")
        self.labels = [label_dir / (p.stem + ".png") for p in self.images]
        for image, label in zip(self.images, self.labels):
            if not label.is_file():
                raise BadInput(f"label map not found: {label} (for image {image})")
        self.class_names = read_ade_class_names(root)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        image = _open_image(self.images[index], "RGB").resize((self.width, self.height), Image.BILINEAR)
        label_img = _open_image(self.labels[index], None)
        if label_img.mode not in ("L", "P", "I", "I;16"):
            raise BadInput(
                f"malformed ADE20K label map {self.labels[index]}: mode {label_img.mode}, expected one channel"
            )
        raw = np.asarray(label_img.resize((self.width, self.height), Image.NEAREST), dtype=np.int64)
        if raw.max() > self.num_classes:
            raise BadInput(
                f"malformed ADE20K label map {self.labels[index]}: value {raw.max()} exceeds "
                f"the {self.num_classes} classes"
            )
        semantic = np.where(raw == 0, IGNORE_INDEX, raw - 1)  # reduce_zero_label
        return {
            "image": _to_tensor(image),
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "semantic": torch.from_numpy(semantic),
        }


def read_ade_class_names(root: Path) -> list[str]:
    info = root / "objectInfo150.txt"
    if not info.is_file():
        return [f"class{i}" for i in range(ADE20K_NUM_CLASSES)]
    lines = [ln for ln in info.read_text().splitlines() if ln.strip()]
    names = [ln.split("\t")[-1].strip() for ln in lines[1:]]
    if not names:
        raise BadInput(f"malformed {info}: no class rows after the header")
    return names


# --------------------------------------------------------------------------------------------
# Shared helpers


def _open_image(path: Path, mode: str | None) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise BadInput(f"cannot read image {path}: {str(exc).splitlines()[0]}") from None
    return image.convert(mode) if mode else image


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255).contiguous()


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    num_classes: int  # including background (label 0)
    class_names: list[str]
    source: str


def parse_data_spec(spec: str, task: str) -> tuple[str, str]:
    """``--data`` -> (kind, directory); checked before anything starts."""
    kind, _, where = spec.partition(":")
    if not ((kind == "synthetic" and not where) or (kind in ("coco", "ade20k") and where)):
        raise BadInput(f"bad --data '{spec}': give synthetic, coco:DIR or ade20k:DIR")
    if kind == "ade20k" and task == "det":
        raise BadInput("ade20k data has label maps but no boxes: use it with --task seg")
    return kind, where


def open_data(spec: str, task: str, height: int, width: int, *, seed: int = 0, synthetic_classes: int = 3,
              train_images: int = 256, val_images: int = 64) -> DataSplits:
    """Open the train and val splits of ``--data`` (synthetic | coco:DIR | ade20k:DIR)."""
    kind, where = parse_data_spec(spec, task)
    if kind == "synthetic":
        # Train and val are different streams of the same generator: no scene is in both.
        train = SyntheticScenes(train_images, height, width, synthetic_classes, seed=2 * seed)
        val = SyntheticScenes(val_images, height, width, synthetic_classes, seed=2 * seed + 1)
        return DataSplits(train, val, synthetic_classes + 1, train.class_names, "synthetic")
    if kind == "coco":
        train, val = CocoDataset(where, "train", height, width), CocoDataset(where, "val", height, width)
        if train.class_names != val.class_names:
            raise BadInput(f"COCO train and val annotations under {where} list different categories")
        return DataSplits(train, val, train.num_classes + 1, train.class_names, spec)
    train, val = Ade20kDataset(where, "train", height, width), Ade20kDataset(where, "val", height, width)
    # ADE's classes already include the "background-like" ones; 0 is ignored, not a class.
    return DataSplits(train, val, train.num_classes, train.class_names, spec)


def collate(samples: list[Sample]) -> dict[str, Any]:
    """Stack images and label maps (all one size); keep per-image boxes and labels as lists."""
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "semantic": torch.stack([s["semantic"] for s in samples]),
        "targets": [{"boxes": s["boxes"], "labels": s["labels"]} for s in samples],
    }


# --------------------------------------------------------------------------------------------
# Writers: COCO- and ADE20K-format directories from the generator (test fixtures, demos)


def write_coco_fixture(root: str | os.PathLike, *, train_images: int, val_images: int, height: int, width: int,
                       num_classes: int = 3, seed: int = 0) -> Path:
    """Write synthetic scenes as a COCO-format directory (JPEG images, RLE instance masks)."""
    from pycocotools import mask as mask_utils

    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": 10 * (k + 1), "name": SYNTHETIC_CLASSES[k]} for k in range(num_classes)]
    for split, count, stream in (("train", train_images, 2 * seed), ("val", val_images, 2 * seed + 1)):
        (root / f"{split}2017").mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            scene = render_scene(stream, index, height, width, num_classes)
            name = f"{index:06d}.jpg"
            Image.fromarray(scene["image"]).save(root / f"{split}2017" / name, quality=95)
            images.append({"id": index + 1, "file_name": name, "height": height, "width": width})
            for mask, label in zip(scene["masks"], scene["labels"]):
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotations.append({
                    "id": len(annotations) + 1, "image_id": index + 1, "category_id": categories[label - 1]["id"],
                    "bbox": [x, y, w, h], "area": float(mask.sum()), "iscrowd": 0,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                })
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
    return root


def write_ade20k_fixture(root: str | os.PathLike, *, train_images: int, val_images: int, height: int, width: int,
                         num_classes: int = 3, seed: int = 0) -> Path:
    """Write synthetic scenes as an ADE20K-format directory. The background is class 1 of the
    PNGs ("background" in objectInfo150.txt), the shapes 2..K+1, so that after ADE's
    reduce_zero_label they come back as 0..K like the synthetic source."""
    root = Path(root)
    names = ["background", *SYNTHETIC_CLASSES[:num_classes]]
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i + 1}\t0\t0\t0\t{n}" for i, n in enumerate(names)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    for split, count, stream in (("training", train_images, 2 * seed), ("validation", val_images, 2 * seed + 1)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            scene = render_scene(stream, index, height, width, num_classes)
            semantic = np.ones((height, width), np.uint8)
            for mask, label in zip(scene["masks"], scene["labels"]):
                semantic[mask] = label + 1
            name = f"ADE_{split}_{index:08d}"
            Image.fromarray(scene["image"]).save(root / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(semantic).save(root / "annotations" / split / f"{name}.png")
    return root
