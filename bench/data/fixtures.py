"""Writers: COCO- and ADE20K-format directories from the generator (test fixtures, demos)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.synthetic import SYNTHETIC_CLASSES, render_scene


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
