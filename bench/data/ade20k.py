"""ADE20K-format directories (ADEChallengeData2016: images + PNG label maps).

Opening a split reads every image's and label map's header (PIL's lazy open: no pixel decoded)
and refuses, with a one-line BadInput naming the file, unreadable files, files over
MAX_IMAGE_PIXELS, label maps that are not one channel or whose size differs from their image's,
and files that resolve (symlinks followed) outside their folder. What needs the pixels (values
beyond the classes, a label map with every pixel ignored) is checked when a sample is read.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bench.data.common import (
    IGNORE_INDEX,
    Sample,
    _open_image,
    _to_tensor,
    data_error,
    first_line,
    image_header,
    part_inside,
    resolve_inside,
)

ADE20K_NUM_CLASSES = 150
ADE_SPLITS = {"train": "training", "val": "validation"}
LABEL_MODES = ("L", "P", "I", "I;16")
# PNG value v becomes class v - 1, which must stay below IGNORE_INDEX.
MAX_ADE_CLASSES = IGNORE_INDEX


class Ade20kDataset(Dataset):
    """An ADE20K-format split (see the module docstring), resized to (H, W); segmentation only."""

    def __init__(self, root: str | os.PathLike, split: str, height: int, width: int):
        root = Path(root)
        if not root.is_dir():
            raise data_error(f"ADE20K directory not found: {root}")
        folder = ADE_SPLITS[split]
        image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
        for d in (image_dir, label_dir):
            if not d.is_dir():
                raise data_error(f"ADE20K folder not found: {d}")
        self.height, self.width = height, width
        self.class_names = read_ade_class_names(root)
        self.num_classes = len(self.class_names)
        self.images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.images:
            raise data_error(f"no images in {image_dir}: an empty split cannot be trained or scored")
        self.labels = [label_dir / (p.stem + ".png") for p in self.images]
        self.sizes: list[tuple[int, int]] = []  # (width, height) of each image, from its header
        # Resolved against the data set's root, as COCO's (common.part_inside): an images/training that
        # is itself a symlink leaving the root would otherwise widen what the data set may read.
        resolved_images = part_inside(root, image_dir, f"ADE20K {split} image folder")
        resolved_labels = part_inside(root, label_dir, f"ADE20K {split} label folder")
        for image, label in zip(self.images, self.labels):
            resolve_inside(image_dir, image.name, f"ADE20K image {image}", "file", resolved_folder=resolved_images)
            if not label.is_file():
                raise data_error(f"label map not found: {label} (for image {image})")
            resolve_inside(label_dir, label.name, f"ADE20K label map {label}", "file", resolved_folder=resolved_labels)
            size, _ = image_header(image, "ADE20K image")
            label_size, mode = image_header(label, "ADE20K label map")
            if mode not in LABEL_MODES:
                raise data_error(f"malformed ADE20K label map {label}: mode {mode}, expected one channel")
            if label_size != size:
                raise data_error(
                    f"malformed ADE20K label map {label}: size {label_size[0]}x{label_size[1]} differs from "
                    f"its image {image} ({size[0]}x{size[1]}, width x height)"
                )
            self.sizes.append(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        size, label_path = self.sizes[index], self.labels[index]
        image = _open_image(self.images[index], "RGB", expect_size=size, what="ADE20K image",
                            expected_by="its header when the split was opened")
        image = image.resize((self.width, self.height), Image.BILINEAR)
        label_img = _open_image(label_path, None, expect_size=size, what="ADE20K label map",
                                expected_by=f"its image {self.images[index]}")
        if label_img.mode not in LABEL_MODES:
            raise data_error(f"malformed ADE20K label map {label_path}: mode {label_img.mode}, expected one channel")
        full = np.asarray(label_img)
        low, high = int(full.min()), int(full.max())
        if low < 0 or high > self.num_classes:
            value = low if low < 0 else high
            raise data_error(
                f"malformed ADE20K label map {label_path}: pixel value {value} outside 0..{self.num_classes} "
                f"(0 = ignored, v = class v - 1 of the {self.num_classes} classes)"
            )
        if high == 0:
            raise data_error(
                f"malformed ADE20K label map {label_path}: every pixel is 0 (ignored), nothing to train on or score"
            )
        raw = np.asarray(label_img.resize((self.width, self.height), Image.NEAREST), dtype=np.int64)
        semantic = np.where(raw == 0, IGNORE_INDEX, raw - 1)  # reduce_zero_label
        return {
            "image": _to_tensor(image),
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "semantic": torch.from_numpy(semantic),
        }


def read_ade_class_names(root: Path) -> list[str]:
    """Class names from ``root/objectInfo150.txt`` (UTF-8, a header row, then one tab-separated
    row per class with the name last); ADE20K's 150 placeholders when the file is absent."""
    info = Path(root) / "objectInfo150.txt"
    if not info.is_file():
        return [f"class{i}" for i in range(ADE20K_NUM_CLASSES)]
    try:
        text = info.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise data_error(
            f"malformed {info}: class names: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise data_error(f"cannot read {info}: {first_line(exc)}") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    names = [ln.split("\t")[-1].strip() for ln in lines[1:]]
    if not names:
        raise data_error(f"malformed {info}: class names: no class rows after the header")
    for row, name in enumerate(names, start=1):
        if not name:
            raise data_error(f"malformed {info}: class names: class row {row} has an empty name")
    if len(names) > MAX_ADE_CLASSES:
        raise data_error(f"malformed {info}: class names: {len(names)} rows, at most {MAX_ADE_CLASSES} supported")
    return names
