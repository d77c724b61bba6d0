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

COCO and ADE20K directories are untrusted input. Opening a split (``open_data``, the dataset
constructors) checks it up front and refuses any fault with a one-line BadInput naming the file
and the field: wrong types or values in any JSON record (``validate_coco`` and the ``check_*``
validators), file names that resolve outside their folder (symlinks included), empty splits, a
split without a usable annotation, images or label maps over MAX_IMAGE_PIXELS (PIL's ~89.5 Mpx
decompression-bomb limit), label maps of another size than their image (ADE20K: read from the
file headers, nothing decoded). Checks that need the pixels (an image whose decoded size
differs from the JSON's ``height``/``width``, label values beyond the classes, a label map with
every pixel ignored) run when a sample is read, before any pixel buffer is sized from metadata.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bench.data.spec import parse_data_spec
from bench.errors import BadInput

if TYPE_CHECKING:
    from bench.data.ade20k import Ade20kDataset
    from bench.data.coco import CocoDataset
    from bench.data.common import DataSplits

# The loaders need torch, numpy and PIL; they load on first use of a name (PEP 562), so that
# parsing ``--data`` (bench.data.spec) costs a command nothing before it has to read data.
_EXPORTS = {
    **dict.fromkeys(("ADE20K_NUM_CLASSES", "Ade20kDataset", "read_ade_class_names"), "bench.data.ade20k"),
    **dict.fromkeys(("CocoDataset", "check_bbox", "check_coco_annotation", "check_coco_category", "check_coco_image",
                     "check_segmentation", "load_coco_json", "validate_coco"), "bench.data.coco"),
    **dict.fromkeys(("IGNORE_INDEX", "MAX_IMAGE_PIXELS", "DataSplits", "Sample", "collate", "data_error",
                     "image_header", "resolve_inside"), "bench.data.common"),
    **dict.fromkeys(("write_ade20k_fixture", "write_coco_fixture"), "bench.data.fixtures"),
    **dict.fromkeys(("SYNTHETIC_CLASSES", "SyntheticScenes", "render_scene", "sample_from_arrays"),
                    "bench.data.synthetic"),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bench.data' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def open_data(spec: str, task: str, height: int, width: int, *, seed: int = 0, synthetic_classes: int = 3,
              train_images: int = 256, val_images: int = 64) -> DataSplits:
    """Open the train and val splits of ``--data`` (synthetic | coco:DIR | ade20k:DIR)."""
    from bench.data.ade20k import Ade20kDataset
    from bench.data.coco import CocoDataset
    from bench.data.common import DataSplits
    from bench.data.synthetic import SyntheticScenes

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


def open_validation(spec: str, task: str, height: int, width: int) -> CocoDataset | Ade20kDataset:
    """The validation split alone of coco:DIR or ade20k:DIR (``bench run --accuracy-data``)."""
    from bench.data.ade20k import Ade20kDataset
    from bench.data.coco import CocoDataset

    kind, where = parse_data_spec(spec, task)
    if kind == "synthetic":
        raise BadInput(f"--accuracy-data scores real labels: give coco:DIR or ade20k:DIR, not '{spec}'")
    return CocoDataset(where, "val", height, width) if kind == "coco" else Ade20kDataset(where, "val", height, width)



__all__ = [
    "ADE20K_NUM_CLASSES", "IGNORE_INDEX", "MAX_IMAGE_PIXELS", "SYNTHETIC_CLASSES", "Ade20kDataset", "CocoDataset",
    "DataSplits", "Sample", "SyntheticScenes", "check_bbox", "check_coco_annotation", "check_coco_category",
    "check_coco_image", "check_segmentation", "collate", "data_error", "image_header", "load_coco_json", "open_data",
    "open_validation",
    "parse_data_spec", "read_ade_class_names", "render_scene", "resolve_inside", "sample_from_arrays",
    "validate_coco", "write_ade20k_fixture", "write_coco_fixture",
]
