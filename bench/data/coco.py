"""COCO-format directories (instances JSON + images).

The JSON is untrusted: :func:`validate_coco` checks every record's types and values when the
split is opened (cheap, per-record Python checks, nothing decoded), so that a faulty data set is
a one-line BadInput naming the file and the field before any training starts. What needs the
decoded image (its real size against the JSON's ``height``/``width``) is checked when a sample is
read, before any pixel is decoded. No buffer is ever sized from the JSON: masks are drawn at the
decoded image's size.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bench.data.common import (
    IGNORE_INDEX,
    MAX_IMAGE_PIXELS,
    Sample,
    _open_image,
    _to_tensor,
    data_error,
    first_line,
    is_finite_number,
    is_int,
    part_inside,
    resolve_inside,
    show,
)
from bench.errors import BadInput

# Labels 1..K live in a uint8 label map next to background (0) and IGNORE_INDEX (255).
MAX_COCO_CATEGORIES = IGNORE_INDEX - 1

_MALFORMED = "malformed COCO annotation file"


def _find_first(candidates: list[Path], what: str, root: Path) -> Path:
    for path in candidates:
        if path.exists():
            return path
    tried = ", ".join(str(p.relative_to(root)) for p in candidates)
    raise data_error(f"{what} not found under {root} (looked for {tried})")


def _at(key: str, index: int, record: Any) -> str:
    """``images[3] (id 7)``: where a record sits in the JSON, with its id when it has a valid one."""
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{key}[{index}] (id {rid})" if is_int(rid) else f"{key}[{index}]"


def _refuse(where: str, field: str, value: Any, problem: str) -> BadInput:
    return data_error(f"{where}.{field} {show(value)}: {problem}")


# --------------------------------------------------------------------------------------------
# Per-record validators. ``where`` is the message's prefix naming the file and the record, e.g.
# "malformed COCO annotation file X.json: annotations[5] (id 17)"; each raises a one-line
# BadInput "<where>.<field> <value>: <problem>" and never anything else.


def check_coco_image(record: Any, where: str) -> tuple[int, int] | None:
    """Check one ``images`` entry; return its (width, height) from the JSON, or None when absent.

    ``id`` must be an int, ``file_name`` a non-empty string, ``height`` and ``width`` (optional,
    as a pair) positive ints whose product is at most MAX_IMAGE_PIXELS.
    """
    if not isinstance(record, dict):
        raise data_error(f"{where} {show(record)}: expected an object")
    if "id" not in record or not is_int(record["id"]):
        raise _refuse(where, "id", record.get("id"), "expected an integer")
    name = record.get("file_name")
    if not isinstance(name, str) or not name:
        raise _refuse(where, "file_name", name, "expected a non-empty string")
    has_h, has_w = "height" in record, "width" in record
    for field in ("height", "width"):
        if field in record and not (is_int(record[field]) and record[field] > 0):
            raise _refuse(where, field, record[field], "expected a positive integer")
    if has_h != has_w:
        missing = "width" if has_h else "height"
        raise data_error(f"{where}.{missing}: missing (give both height and width, or neither)")
    if not has_h:
        return None
    width, height = record["width"], record["height"]
    if width * height > MAX_IMAGE_PIXELS:
        raise data_error(
            f"{where}.height/width {height}x{width}: {width * height} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS} (PIL's decompression-bomb limit)"
        )
    return width, height


def check_coco_category(record: Any, where: str) -> int:
    """Check one ``categories`` entry (int ``id``, optional string ``name``); return its id."""
    if not isinstance(record, dict):
        raise data_error(f"{where} {show(record)}: expected an object")
    if "id" not in record or not is_int(record["id"]):
        raise _refuse(where, "id", record.get("id"), "expected an integer")
    if "name" in record and not isinstance(record["name"], str):
        raise _refuse(where, "name", record["name"], "expected a string")
    return record["id"]


def _finite_numbers(values: list) -> bool:
    """All of ``values`` are finite numbers (no bools); a C-speed path for plain float/int lists,
    as real COCO holds tens of millions of polygon coordinates."""
    if set(map(type, values)) <= {int, float}:
        try:
            if math.isfinite(math.fsum(values)):  # NaN or an infinity anywhere makes the sum non-finite
                return True
        except OverflowError:  # huge but possibly finite values: decide one by one
            pass
    return all(is_finite_number(v) for v in values)


def check_bbox(bbox: Any, where: str, size: tuple[int, int] | None = None) -> tuple[float, float, float, float]:
    """Check an annotation's ``bbox`` [x, y, w, h]: 4 finite numbers (no bools), w and h >= 0,
    and, given the image's (width, height), not wholly outside the image. Returns it as floats."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and _finite_numbers(bbox)):
        raise _refuse(where, "bbox", bbox, "expected [x, y, width, height], 4 finite numbers")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise _refuse(where, "bbox", bbox, "negative width or height")
    if size is not None:
        img_w, img_h = size
        if x > img_w or y > img_h or x + w < 0 or y + h < 0:
            raise _refuse(where, "bbox", bbox, f"wholly outside the {img_w}x{img_h} image")
    return x, y, w, h


def _rle_string_total(counts: str) -> int:
    """Sum of the run lengths of a compressed RLE string (pycocotools' rleFrString format),
    raising ValueError where its C decoder would read past the string or overflow."""
    total, runs, p, n = 0, [], 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("ends inside a run length")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} is not in the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if k > 6:
                raise ValueError("a run length is too long")
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError("a negative run length")
        runs.append(x)
        total += x
    return total


def check_segmentation(segm: Any, where: str, size: tuple[int, int] | None = None) -> None:
    """Check an annotation's ``segmentation``: a list of polygons (lists of finite numbers) or
    an RLE object {"size": [h, w], "counts": list of ints | RLE string} whose runs cover
    exactly h * w pixels. Given the image's (width, height), an RLE must have that size and no
    polygon point may lie far outside the image (more than one image size away). ``None`` and
    ``[]`` mean "no mask"; polygons of fewer than 3 points are accepted and skipped when drawn."""
    if segm is None:
        return
    if isinstance(segm, list):
        _check_polygons(segm, where, size)
    elif isinstance(segm, dict):
        _check_rle(segm, where, size)
    else:
        raise _refuse(where, "segmentation", segm, "expected a list of polygons or an RLE object")


def _check_polygons(segm: list, where: str, size: tuple[int, int] | None) -> None:
    for i, poly in enumerate(segm):
        if not isinstance(poly, list):
            raise _refuse(where, f"segmentation[{i}]", poly, "expected a polygon, a list of numbers")
        if not _finite_numbers(poly):
            raise _refuse(where, f"segmentation[{i}]", poly, "expected finite numbers")
        if size is not None and len(poly) >= 2:
            img_w, img_h = size
            xs, ys = poly[0::2], poly[1::2]
            if min(xs) < -img_w or max(xs) > 2 * img_w or min(ys) < -img_h or max(ys) > 2 * img_h:
                raise _refuse(where, f"segmentation[{i}]", poly, f"points far outside the {img_w}x{img_h} image")


def _check_rle(segm: dict, where: str, size: tuple[int, int] | None) -> None:
    rle_size, counts = segm.get("size"), segm.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(is_int(v) and v > 0 for v in rle_size)):
        raise _refuse(where, "segmentation.size", rle_size, "expected [height, width], two positive integers")
    h, w = rle_size
    if h * w > MAX_IMAGE_PIXELS:
        raise _refuse(where, "segmentation.size", rle_size, f"over the limit of {MAX_IMAGE_PIXELS} pixels")
    if size is not None and (w, h) != tuple(size):
        raise _refuse(where, "segmentation.size", rle_size, f"differs from the image's [{size[1]}, {size[0]}]")
    if isinstance(counts, list):
        if not all(is_int(v) and v >= 0 for v in counts):
            raise _refuse(where, "segmentation.counts", counts, "expected non-negative integers")
        total = sum(counts)
    elif isinstance(counts, str):
        try:
            total = _rle_string_total(counts)
        except ValueError as exc:
            raise _refuse(where, "segmentation.counts", counts, f"not an RLE string: {exc}") from None
    else:
        raise _refuse(where, "segmentation.counts", counts, "expected a list of run lengths or an RLE string")
    if total != h * w:
        raise _refuse(where, "segmentation.counts", counts, f"runs cover {total} pixels, not {h}x{w} = {h * w}")


def check_coco_annotation(ann: Any, where: str, image_sizes: dict[int, tuple[int, int] | None],
                          category_ids: set[int] | dict[int, Any]) -> bool:
    """Check one ``annotations`` entry against the images (id -> (width, height) or None) and
    category ids. Returns whether it is usable for training: not a crowd region, and its box
    (clipped to the image when the size is known) at least 1 pixel wide and high."""
    if not isinstance(ann, dict):
        raise data_error(f"{where} {show(ann)}: expected an object")
    for field in ("id", "image_id", "category_id"):
        if field not in ann or not is_int(ann[field]):
            raise _refuse(where, field, ann.get(field), "expected an integer")
    if ann["image_id"] not in image_sizes:
        raise _refuse(where, "image_id", ann["image_id"], "no image has this id")
    if ann["category_id"] not in category_ids:
        raise _refuse(where, "category_id", ann["category_id"], "no category has this id")
    if "bbox" not in ann:
        raise data_error(f"{where}.bbox: missing")
    size = image_sizes[ann["image_id"]]
    x, y, w, h = check_bbox(ann["bbox"], where, size)
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        raise _refuse(where, "iscrowd", crowd, "expected 0 or 1")
    if "area" in ann and not (is_finite_number(ann["area"]) and ann["area"] >= 0):
        raise _refuse(where, "area", ann["area"], "expected a finite number >= 0")
    check_segmentation(ann.get("segmentation"), where, size)
    if size is not None:
        x, y, w, h = _clip_box(x, y, w, h, *size)
    return not crowd and w >= 1 and h >= 1


def _clip_box(x: float, y: float, w: float, h: float, img_w: int, img_h: int) -> tuple[float, float, float, float]:
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(img_w)), min(y + h, float(img_h))
    return x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)


def validate_coco(data: Any, path: str | os.PathLike) -> dict[int, tuple[int, int] | None]:
    """Check a parsed COCO instances document; any fault is a one-line BadInput naming ``path``
    and the field. Refused, besides wrong types on any record: a missing or empty
    ``images`` or ``categories`` list (an empty split must not be scored as mAP 0), duplicate
    image or category ids, more than MAX_COCO_CATEGORIES categories, and a split without a
    single usable annotation. Returns each image's (width, height) from the JSON (None where
    absent). Cost: one pass of Python checks over the records; nothing is read from disk."""
    if not isinstance(data, dict):
        raise data_error(f"{_MALFORMED} {path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise data_error(f"{_MALFORMED} {path}: '{key}': missing")
        if not isinstance(data[key], list):
            raise data_error(f"{_MALFORMED} {path}: '{key}' {show(data[key])}: expected a list")
    if not data["categories"]:
        raise data_error(f"{_MALFORMED} {path}: 'categories': empty list, no class to learn")
    if len(data["categories"]) > MAX_COCO_CATEGORIES:
        raise data_error(
            f"{_MALFORMED} {path}: 'categories': {len(data['categories'])} entries, "
            f"at most {MAX_COCO_CATEGORIES} supported"
        )
    if not data["images"]:
        raise data_error(f"{_MALFORMED} {path}: 'images': empty list, an empty split cannot be trained or scored")
    category_ids: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        where = f"{_MALFORMED} {path}: {_at('categories', i, cat)}"
        cid = check_coco_category(cat, where)
        if cid in category_ids:
            raise _refuse(where, "id", cid, "duplicates an earlier category's id")
        category_ids.add(cid)
    image_sizes: dict[int, tuple[int, int] | None] = {}
    for i, img in enumerate(data["images"]):
        where = f"{_MALFORMED} {path}: {_at('images', i, img)}"
        size = check_coco_image(img, where)
        if img["id"] in image_sizes:
            raise _refuse(where, "id", img["id"], "duplicates an earlier image's id")
        image_sizes[img["id"]] = size
    usable = 0
    for i, ann in enumerate(data["annotations"]):
        usable += check_coco_annotation(ann, f"{_MALFORMED} {path}: {_at('annotations', i, ann)}", image_sizes,
                                        category_ids)
    if not usable:
        what = "empty list" if not data["annotations"] else f"none of the {len(data['annotations'])} entries is usable"
        raise data_error(
            f"{_MALFORMED} {path}: 'annotations': {what} (crowd regions and boxes under 1 pixel are skipped), "
            f"nothing to train on or score"
        )
    return image_sizes


def load_coco_json(path: Path):
    """Read and check a COCO instances file (see :func:`validate_coco`); any fault is a one-line
    BadInput naming the file and the field. Returns a pycocotools COCO index."""
    from pycocotools.coco import COCO

    try:
        data = json.loads(Path(path).read_bytes())  # UTF-8/16/32 as RFC 8259 allows
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise data_error(f"{_MALFORMED} {path}: {first_line(exc)}") from None
    validate_coco(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def segmentation_mask(segm: Any, height: int, width: int) -> np.ndarray | None:
    """Draw a checked ``segmentation`` (see :func:`check_segmentation`) at (height, width): a
    uint8 mask, or None when it has nothing to draw (no polygon of 3 points or more)."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polygons = [[float(v) for v in p] for p in segm if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segm, dict):
        if isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects({"size": [height, width], "counts": segm["counts"]}, height, width)
        else:
            rle = {"size": [height, width], "counts": segm["counts"].encode("ascii")}
    else:
        return None
    return mask_utils.decode(rle)


class CocoDataset(Dataset):
    """A COCO-format split (see the module docstring for the layout), resized to (H, W).

    Opening it checks the whole annotation file (:func:`validate_coco`) and that every
    ``file_name`` resolves, symlinks followed, to a file inside the split's image folder.
    """

    def __init__(self, root: str | os.PathLike, split: str, height: int, width: int):
        root = Path(root)
        if not root.is_dir():
            raise data_error(f"COCO directory not found: {root}")
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
        # Both resolved against the data set's root (common.part_inside): a symlinked train2017/
        # or annotation file that leaves the data set is refused, as a symlinked file_name is.
        part_inside(root, ann_file, f"COCO {split} annotations")
        resolved_dir = part_inside(root, image_dir, f"COCO {split} image folder")
        self.ann_file = ann_file
        self.coco = load_coco_json(ann_file)
        self.height, self.width = height, width
        categories = self.coco.dataset["categories"]
        category_ids = [c["id"] for c in categories]
        self.label_of_category = {cid: i + 1 for i, cid in enumerate(category_ids)}
        self.class_names = ["background", *(str(c.get("name", c["id"])) for c in categories)]
        self.num_classes = len(category_ids)
        self.image_ids = sorted(self.coco.imgs)
        self.paths: dict[int, Path] = {}
        self._where: dict[int, str] = {}  # image id -> "images[i] (id N)"
        for i, info in enumerate(self.coco.dataset["images"]):
            where = _at("images", i, info)
            path = resolve_inside(image_dir, info["file_name"], f"{_MALFORMED} {ann_file}", f"{where}.file_name",
                                  resolved_folder=resolved_dir)
            if not path.is_file():
                raise data_error(f"image file not found: {path} (listed in {ann_file}, {where}.file_name)")
            self.paths[info["id"]] = path
            self._where[info["id"]] = where

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        claimed = (info["width"], info["height"]) if "width" in info else None
        image = _open_image(self.paths[image_id], "RGB", expect_size=claimed,
                            expected_by=f"{self.ann_file} {self._where[image_id]}.width/height")
        src_w, src_h = image.size  # the decoded size sizes every buffer, never the JSON
        sx, sy = self.width / src_w, self.height / src_h
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes, labels = [], []
        semantic = np.zeros((src_h, src_w), np.uint8)
        for ann in sorted(anns, key=lambda a: -a.get("area", a["bbox"][2] * a["bbox"][3])):
            where = f"{_MALFORMED} {self.ann_file}: annotation with id {ann['id']}"
            # Checked when opened against the JSON's size; again here for images without one.
            x, y, w, h = _clip_box(*check_bbox(ann["bbox"], where, (src_w, src_h)), src_w, src_h)
            if w < 1 or h < 1:
                continue
            label = self.label_of_category[ann["category_id"]]
            boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
            labels.append(label)
            segm = ann.get("segmentation")
            if segm:
                check_segmentation(segm, where, (src_w, src_h))
                mask = segmentation_mask(segm, src_h, src_w)
                if mask is not None:
                    semantic[mask > 0] = label
        semantic_img = Image.fromarray(semantic).resize((self.width, self.height), Image.NEAREST)
        return {
            "image": _to_tensor(image.resize((self.width, self.height), Image.BILINEAR)),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "semantic": torch.from_numpy(np.asarray(semantic_img, dtype=np.int64)),
        }
