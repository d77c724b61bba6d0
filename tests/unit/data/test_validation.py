"""Untrusted COCO / ADE20K directories: every fault is refused with one line naming the file and
the field, when the data set is opened where it can be checked up front, and nothing outside the
data set's folders is opened. Property-based tests check that the validators raise nothing but
BadInput on arbitrary JSON values, and pass every valid record."""
from __future__ import annotations

import builtins
import json
import math
import pathlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench.data import (
    MAX_IMAGE_PIXELS,
    Ade20kDataset,
    CocoDataset,
    check_bbox,
    check_coco_annotation,
    check_coco_category,
    check_coco_image,
    check_segmentation,
    open_data,
    read_ade_class_names,
    resolve_inside,
    validate_coco,
    write_ade20k_fixture,
    write_coco_fixture,
)
from bench.data.coco import _rle_string_total, segmentation_mask
from bench.errors import BadInput

H, W = 32, 48
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Helpers


def _message(exc_info) -> str:
    message = str(exc_info.value.message)
    assert "\n" not in message and "\r" not in message, message
    return message


def _assert_names(exc_info, *fragments: str) -> str:
    message = _message(exc_info)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture
def coco(tmp_path):
    return write_coco_fixture(tmp_path / "coco", train_images=2, val_images=2, height=H, width=W, seed=1)


@pytest.fixture
def ade(tmp_path):
    return write_ade20k_fixture(tmp_path / "ade", train_images=2, val_images=2, height=H, width=W, seed=1)


def _ann_file(root: Path, split: str = "val") -> Path:
    return root / "annotations" / f"instances_{split}2017.json"


def _edit(root: Path, edit, split: str = "val") -> Path:
    """Apply ``edit(doc)`` to a split's instances JSON; return the file."""
    path = _ann_file(root, split)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))  # NaN / Infinity written as JSON's common extension
    return path


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (8-bit grey) with almost no pixel data: what a
    decompression bomb looks like before decoding."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


class _Opened:
    """Records every path opened or probed (open, Path.open/is_file/exists, PIL's Image.open)."""

    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        real_open, real_path_open = builtins.open, pathlib.Path.open
        real_is_file, real_exists, real_image_open = pathlib.Path.is_file, pathlib.Path.exists, Image.open

        def record(target):
            if isinstance(target, (str, Path)):
                self.paths.append(Path(target))

        def spy_open(file, *args, **kwargs):
            record(file)
            return real_open(file, *args, **kwargs)

        def spy_path_open(self_, *args, **kwargs):
            record(self_)
            return real_path_open(self_, *args, **kwargs)

        def spy_is_file(self_):
            record(self_)
            return real_is_file(self_)

        def spy_exists(self_, *args, **kwargs):
            record(self_)
            return real_exists(self_, *args, **kwargs)

        def spy_image_open(fp, *args, **kwargs):
            record(fp)
            return real_image_open(fp, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", spy_open)
        monkeypatch.setattr(pathlib.Path, "open", spy_path_open)
        monkeypatch.setattr(pathlib.Path, "is_file", spy_is_file)
        monkeypatch.setattr(pathlib.Path, "exists", spy_exists)
        monkeypatch.setattr(Image, "open", spy_image_open)

    def assert_nothing_outside(self, root: Path, *forbidden: Path) -> None:
        base = root.resolve()
        for path in self.paths:
            resolved = path.resolve()
            assert resolved.is_relative_to(base), f"{path} (-> {resolved}) was opened, outside {base}"
            for target in forbidden:
                assert resolved != target.resolve(), f"{target} was opened"


# --------------------------------------------------------------------------------------------
# COCO: paths


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/hostname", "../../coco_outside.jpg", "..", "."])
def test_coco_file_name_outside_the_image_folder_is_refused_unopened(coco, monkeypatch, name):
    outside = coco.parent / "coco_outside.jpg"  # a valid image right next to the data set
    Image.new("RGB", (W, H)).save(outside)
    ann = _edit(coco, lambda d: d["images"][1].update(file_name=name))
    opened = _Opened(monkeypatch)
    with pytest.raises(BadInput) as exc_info:
        open_data(f"coco:{coco}", "det", H, W)
    _assert_names(exc_info, str(ann), "images[1] (id 2).file_name", "outside")
    opened.assert_nothing_outside(coco, Path("/etc/passwd"), Path("/etc/hostname"), outside)


def test_coco_symlink_out_of_the_image_folder_is_refused(coco, monkeypatch):
    secret = coco.parent / "secret.jpg"
    Image.new("RGB", (W, H)).save(secret)
    (coco / "val2017" / "link.jpg").symlink_to(secret)
    ann = _edit(coco, lambda d: d["images"][0].update(file_name="link.jpg"))
    opened = _Opened(monkeypatch)
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann), "images[0] (id 1).file_name", "'link.jpg'", "outside")
    opened.assert_nothing_outside(coco, secret)


def test_coco_symlink_inside_the_image_folder_is_fine(coco):
    folder = coco / "val2017"
    (folder / "sub").mkdir()
    (folder / "000000.jpg").rename(folder / "sub" / "real.jpg")
    (folder / "000000.jpg").symlink_to(folder / "sub" / "real.jpg")
    data = CocoDataset(coco, "val", H, W)
    assert data[0]["image"].shape == (3, H, W)


def test_coco_file_name_with_a_nul_byte_is_refused(coco):
    ann = _edit(coco, lambda d: d["images"][0].update(file_name="a\0b.jpg"))
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann), "images[0] (id 1).file_name")


# --------------------------------------------------------------------------------------------
# COCO: image sizes


def test_coco_huge_size_in_the_json_is_refused_before_any_allocation(coco):
    ann = _edit(coco, lambda d: d["images"][0].update(height=200000, width=200000))
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann), "images[0] (id 1).height/width", str(MAX_IMAGE_PIXELS))


@pytest.mark.parametrize("field, value", [("height", -32), ("width", 0), ("height", 32.0), ("width", "48"),
                                          ("height", True), ("width", None)])
def test_coco_image_size_must_be_a_positive_int(coco, field, value):
    ann = _edit(coco, lambda d: d["images"][1].update({field: value}))
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann), f"images[1] (id 2).{field}")


def test_coco_only_one_of_height_and_width_is_refused(coco):
    ann = _edit(coco, lambda d: d["images"][0].pop("width"))
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann), "images[0] (id 1).width", "missing")


def test_coco_size_disagreeing_with_the_decoded_image_is_refused_when_read(coco):
    def edit(doc):
        doc["images"][0]["height"] = H + 1
        for a in doc["annotations"]:
            if a["image_id"] == 1:  # its RLE masks would give the lie away up front
                del a["segmentation"]
    ann = _edit(coco, edit)
    data = CocoDataset(coco, "val", H, W)  # needs decoding: checked per sample
    with pytest.raises(BadInput) as exc_info:
        data[0]
    _assert_names(exc_info, str(coco / "val2017" / "000000.jpg"), str(ann), "images[0] (id 1).width/height",
                  f"{W}x{H}", f"{W}x{H + 1}")
    assert data[1]["image"].shape == (3, H, W)


def test_coco_without_sizes_in_the_json_uses_the_decoded_image(coco):
    def drop_sizes(doc):
        for image in doc["images"]:
            del image["height"], image["width"]
    _edit(coco, drop_sizes)
    reference = CocoDataset(write_coco_fixture(coco.parent / "again", train_images=2, val_images=2, height=H,
                                               width=W, seed=1), "val", H, W)
    data = CocoDataset(coco, "val", H, W)
    for i in range(2):
        assert np.array_equal(data[i]["semantic"].numpy(), reference[i]["semantic"].numpy())
        assert np.allclose(data[i]["boxes"].numpy(), reference[i]["boxes"].numpy())


@pytest.mark.parametrize("size", [(10000, 9000), (200000, 200000)])  # over PIL's warning / error thresholds
def test_coco_decompression_bomb_is_one_line(coco, size):
    _png_header(coco / "val2017" / "000000.jpg", *size)  # PIL reads the format from the bytes

    def drop_sizes(doc):
        del doc["images"][0]["height"], doc["images"][0]["width"]
    _edit(coco, drop_sizes)
    data = CocoDataset(coco, "val", H, W)
    with pytest.raises(BadInput) as exc_info:
        data[0]
    _assert_names(exc_info, str(coco / "val2017" / "000000.jpg"), str(MAX_IMAGE_PIXELS))


def test_coco_bomb_behind_a_matching_json_size_is_refused_up_front(coco):
    _png_header(coco / "val2017" / "000000.jpg", 10000, 9000)
    ann = _edit(coco, lambda d: d["images"][0].update(height=9000, width=10000))
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann), "height/width", "over the limit")


# --------------------------------------------------------------------------------------------
# COCO: field types and values


def _set(key, index, field, value):
    return lambda d: d[key][index].update({field: value})


BAD_FIELDS = [
    # (edit, field named in the message)
    (_set("images", 0, "id", "1"), "images[0].id"),
    (_set("images", 0, "id", [1]), "images[0].id"),
    (_set("images", 1, "id", 1), "images[1] (id 1).id"),  # duplicate
    (_set("images", 0, "file_name", 7), "images[0] (id 1).file_name"),
    (_set("images", 0, "file_name", ""), "images[0] (id 1).file_name"),
    (_set("annotations", 0, "id", "x"), "annotations[0].id"),
    (_set("annotations", 0, "image_id", [1]), "annotations[0] (id 1).image_id"),
    (_set("annotations", 0, "image_id", "1"), "annotations[0] (id 1).image_id"),
    (_set("annotations", 0, "image_id", 99), "annotations[0] (id 1).image_id"),
    (_set("annotations", 0, "category_id", 1.5), "annotations[0] (id 1).category_id"),
    (_set("annotations", 0, "category_id", 99), "annotations[0] (id 1).category_id"),
    (_set("categories", 0, "id", [10]), "categories[0].id"),
    (_set("categories", 0, "id", "10"), "categories[0].id"),
    (_set("categories", 1, "id", 10), "categories[1] (id 10).id"),  # duplicate
    (_set("categories", 0, "name", 3), "categories[0] (id 10).name"),
    (_set("annotations", 0, "segmentation", "abc"), "annotations[0] (id 1).segmentation"),
    (_set("annotations", 0, "segmentation", [[1, 2, "3", 4, 5, 6]]), "annotations[0] (id 1).segmentation[0]"),
    (_set("annotations", 0, "segmentation", [[1, 2, 3, 4, 5, float("nan")]]), "annotations[0] (id 1).segmentation[0]"),
    (_set("annotations", 0, "segmentation", [[0, 0, 1e9, 0, 0, 1e9]]), "annotations[0] (id 1).segmentation[0]"),
    (_set("annotations", 0, "segmentation", {"size": [200000, 200000], "counts": "0"}),
     "annotations[0] (id 1).segmentation.size"),
    (_set("annotations", 0, "segmentation", {"size": [H, W + 1], "counts": [H * (W + 1)]}),
     "annotations[0] (id 1).segmentation.size"),
    (_set("annotations", 0, "segmentation", {"size": [H, W], "counts": [H * W + 1]}),
     "annotations[0] (id 1).segmentation.counts"),
    (_set("annotations", 0, "segmentation", {"size": [H, W], "counts": "\x7f\x7f"}),
     "annotations[0] (id 1).segmentation.counts"),
    (_set("annotations", 0, "segmentation", {"size": [H, W], "counts": "o"}),  # ends inside a run length
     "annotations[0] (id 1).segmentation.counts"),
    (_set("annotations", 0, "bbox", [1, 2, -3, 4]), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "bbox", [float("nan"), 2, 3, 4]), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "bbox", [1, float("inf"), 3, 4]), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "bbox", [True, 2, 3, 4]), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "bbox", [1, 2, 3]), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "bbox", [1, 2, 3, 4, 5]), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "bbox", "1,2,3,4"), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "bbox", [W + 5, 2, 3, 4]), "annotations[0] (id 1).bbox"),  # wholly outside
    (_set("annotations", 0, "bbox", [-50, -50, 10, 10]), "annotations[0] (id 1).bbox"),
    (_set("annotations", 0, "iscrowd", "no"), "annotations[0] (id 1).iscrowd"),
    (_set("annotations", 0, "area", float("nan")), "annotations[0] (id 1).area"),
    (lambda d: d["annotations"][0].pop("bbox"), "annotations[0] (id 1).bbox"),
    (lambda d: d.pop("categories"), "'categories'"),
    (lambda d: d.update(categories=[]), "'categories'"),
    (lambda d: d.update(categories={"id": 1}), "'categories'"),
    (lambda d: d.update(images=[]), "'images'"),  # empty split: never scored as mAP 0
    (lambda d: d.update(annotations=[]), "'annotations'"),
    (lambda d: [a.update(iscrowd=1) for a in d["annotations"]], "'annotations'"),  # every annotation dropped
    (lambda d: [a.update(bbox=[0, 0, 0.5, 0.5]) for a in d["annotations"]], "'annotations'"),
    (lambda d: d["images"].append(["not", "an", "object"]), "images[2]"),
]


@pytest.mark.parametrize("edit, field", BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_coco_bad_field_is_refused_when_opened(coco, edit, field):
    ann = _edit(coco, edit)
    with pytest.raises(BadInput) as exc_info:
        open_data(f"coco:{coco}", "seg", H, W)  # the train split is fine: val is checked all the same
    _assert_names(exc_info, str(ann), field)


def test_coco_non_utf8_or_deeply_nested_json_is_one_line(coco):
    ann = _ann_file(coco)
    ann.write_bytes(b'{"images": "\xff"}')
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann))
    ann.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(coco, "val", H, W)
    _assert_names(exc_info, str(ann))


def test_coco_degenerate_parts_are_skipped_not_refused(coco):
    """What real COCO holds and detectron2 / mmdet skip: polygons of under 3 points, boxes under a
    pixel, crowd regions, boxes partly outside the image (clipped)."""
    def edit(doc):
        doc["annotations"][0]["segmentation"] = [[1, 2, 3, 4], *[[1, 1, 5, 1, 5, 5]]]
        doc["annotations"].append({"id": 900, "image_id": 1, "category_id": 10, "bbox": [3, 3, 0.5, 9], "iscrowd": 0})
        doc["annotations"].append({"id": 901, "image_id": 1, "category_id": 10, "bbox": [3, 3, 9, 9], "iscrowd": 1,
                                   "segmentation": {"size": [H, W], "counts": [H * W]}})
        doc["annotations"].append({"id": 902, "image_id": 1, "category_id": 20, "bbox": [W - 4, -3, 10, 10]})
    _edit(coco, edit)
    data = CocoDataset(coco, "val", H, W)
    sample = data[0]
    boxes = sample["boxes"].numpy()
    assert boxes.min() >= 0 and boxes[:, 2].max() <= W and boxes[:, 3].max() <= H
    assert [W - 4, 0, W, 7] in boxes.tolist()


# --------------------------------------------------------------------------------------------
# ADE20K


def test_ade_label_map_of_another_size_is_refused_when_opened(ade):
    label = ade / "annotations" / "validation" / "ADE_validation_00000001.png"
    Image.fromarray(np.ones((H, W + 1), np.uint8)).save(label)
    with pytest.raises(BadInput) as exc_info:
        open_data(f"ade20k:{ade}", "seg", H, W)
    _assert_names(exc_info, str(label), "size", f"{W + 1}x{H}", f"{W}x{H}")


def test_ade_label_map_of_several_channels_is_refused_when_opened(ade):
    label = ade / "annotations" / "training" / "ADE_training_00000000.png"
    Image.new("RGB", (W, H)).save(label)
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(ade, "train", H, W)
    _assert_names(exc_info, str(label), "mode RGB")


def test_ade_non_utf8_class_list_is_refused(ade):
    info = ade / "objectInfo150.txt"
    info.write_bytes(info.read_bytes().replace(b"rectangle", b"rect\xe4ngle"))
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(ade, "val", H, W)
    _assert_names(exc_info, str(info), "class names", "UTF-8")


def test_ade_class_list_with_an_empty_name_is_refused(ade):
    info = ade / "objectInfo150.txt"
    info.write_text(info.read_text().replace("ellipse", ""))
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(ade, "val", H, W)
    _assert_names(exc_info, str(info), "class names", "class row 3")


def test_ade_all_ignored_label_map_is_refused(ade):
    label = ade / "annotations" / "validation" / "ADE_validation_00000000.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(label)
    data = Ade20kDataset(ade, "val", H, W)  # needs decoding: checked per sample
    with pytest.raises(BadInput) as exc_info:
        data[0]
    _assert_names(exc_info, str(label), "every pixel is 0")
    assert data[1]["semantic"].shape == (H, W)


def test_ade_label_value_beyond_the_classes_is_refused_even_if_resizing_would_hide_it(ade):
    label = ade / "annotations" / "validation" / "ADE_validation_00000000.png"
    values = np.ones((H, W), np.uint8)
    values[1, 1] = 200  # one pixel: NEAREST resizing to a quarter would likely drop it
    Image.fromarray(values).save(label)
    data = Ade20kDataset(ade, "val", H // 4, W // 4)
    with pytest.raises(BadInput) as exc_info:
        data[0]
    _assert_names(exc_info, str(label), "pixel value 200")


def test_ade_empty_validation_split_is_refused(ade):
    for path in (ade / "images" / "validation").iterdir():
        path.unlink()
    with pytest.raises(BadInput) as exc_info:
        open_data(f"ade20k:{ade}", "seg", H, W)
    _assert_names(exc_info, str(ade / "images" / "validation"), "empty split")


@pytest.mark.parametrize("which", ["images", "annotations"])
def test_ade_bomb_header_is_refused_when_opened(ade, which):
    name = "ADE_training_00000000"
    path = ade / which / "training" / (f"{name}.jpg" if which == "images" else f"{name}.png")
    _png_header(path, 200000, 200000)
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(ade, "train", H, W)
    _assert_names(exc_info, str(path), str(MAX_IMAGE_PIXELS))


def test_ade_symlink_out_of_the_folder_is_refused_unopened(ade, monkeypatch):
    secret = ade.parent / "secret.jpg"
    Image.new("RGB", (W, H)).save(secret)
    image = ade / "images" / "training" / "ADE_training_00000000.jpg"
    image.unlink()
    image.symlink_to(secret)
    opened = _Opened(monkeypatch)
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(ade, "train", H, W)
    _assert_names(exc_info, str(image), "outside")
    opened.assert_nothing_outside(ade, secret)


def test_ade_truncated_image_is_one_line(ade):
    image = ade / "images" / "validation" / "ADE_validation_00000000.jpg"
    image.write_bytes(image.read_bytes()[:1000])  # the header survives, most pixels do not
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(ade, "val", H, W)[0]
    _assert_names(exc_info, str(image))


# --------------------------------------------------------------------------------------------
# Property-based: the validators raise BadInput or pass, never anything else

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=2**64, max_value=2**2000) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=16,
)
rle_alphabet = st.text(alphabet=st.characters(min_codepoint=40, max_codepoint=120), max_size=12)
segmentations = st.one_of(
    json_values,
    st.lists(st.lists(st.one_of(st.floats(), st.integers(-100, 200), st.booleans(), st.text(max_size=2)), max_size=10),
             max_size=3),
    st.fixed_dictionaries({"size": st.one_of(json_values, st.lists(st.integers(-2, 70), min_size=2, max_size=2)),
                           "counts": st.one_of(json_values, rle_alphabet,
                                               st.lists(st.integers(-5, 3000), max_size=6))}),
)
sizes = st.one_of(st.none(), st.tuples(st.integers(1, 64), st.integers(1, 64)))


def _only_bad_input(call):
    """Run ``call``; a BadInput must be one line. Returns the result, or None when refused."""
    try:
        return call()
    except BadInput as exc:
        assert "\n" not in exc.message
        return None


@FAST
@given(bbox=st.one_of(json_values, st.lists(st.one_of(st.floats(), st.integers(), st.booleans()), max_size=5)),
       size=sizes)
def test_check_bbox_raises_only_bad_input(bbox, size):
    result = _only_bad_input(lambda: check_bbox(bbox, "f.json: annotations[0]", size))
    if result is not None:
        x, y, w, h = result
        assert all(math.isfinite(v) for v in result) and w >= 0 and h >= 0
        assert isinstance(bbox, list) and not any(isinstance(v, bool) for v in bbox)


@FAST
@given(segm=segmentations, size=sizes)
def test_check_segmentation_raises_only_bad_input_and_passes_what_draws(segm, size):
    try:
        check_segmentation(segm, "f.json: annotations[0]", size)
    except BadInput as exc:
        assert "\n" not in exc.message
        return
    if size is not None and segm:  # accepted: it must draw at the image's size without error
        mask = segmentation_mask(segm, size[1], size[0])
        assert mask is None or mask.shape == (size[1], size[0])


@FAST
@given(record=st.one_of(json_values, st.dictionaries(
    st.sampled_from(["id", "file_name", "height", "width", "extra"]),
    st.one_of(json_values, st.integers(-3, 5000), st.text(min_size=1, max_size=5)), max_size=5)))
def test_check_coco_image_and_category_raise_only_bad_input(record):
    size = _only_bad_input(lambda: check_coco_image(record, "f.json: images[0]"))
    if size is not None:
        assert isinstance(size, tuple) and size[0] > 0 and size[1] > 0 and size[0] * size[1] <= MAX_IMAGE_PIXELS
    _only_bad_input(lambda: check_coco_category(record, "f.json: categories[0]"))


@FAST
@given(ann=st.dictionaries(
    st.sampled_from(["id", "image_id", "category_id", "bbox", "segmentation", "iscrowd", "area"]),
    st.one_of(json_values, st.integers(0, 3), st.lists(st.floats(-10, 80), min_size=4, max_size=4), segmentations),
    max_size=7))
def test_check_coco_annotation_raises_only_bad_input(ann):
    _only_bad_input(lambda: check_coco_annotation(ann, "f.json: annotations[0]", {1: (48, 32), 2: None}, {1, 2}))


def _valid_doc(n_images: int = 2) -> dict:
    from pycocotools import mask as mask_utils

    mask = np.zeros((H, W), np.uint8)
    mask[4:20, 6:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {
        "images": [{"id": i + 1, "file_name": f"{i}.jpg", "height": H, "width": W} for i in range(n_images)],
        "categories": [{"id": 5, "name": "a"}, {"id": 7}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [6, 4, 24, 16], "area": 384.0, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 1, 10, 10], "iscrowd": 0,
             "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]]},
        ],
    }


@FAST
@given(key=st.sampled_from(["images", "annotations", "categories"]), index=st.integers(0, 1),
       field=st.sampled_from(["id", "file_name", "height", "width", "image_id", "category_id", "bbox",
                              "segmentation", "iscrowd", "area", "name"]),
       value=st.one_of(json_values, segmentations))
def test_validate_coco_with_any_field_replaced_raises_only_bad_input(key, index, field, value):
    doc = _valid_doc()
    doc[key][index][field] = value
    try:
        validate_coco(doc, "some/instances_val.json")
    except BadInput as exc:
        assert "\n" not in exc.message and "some/instances_val.json" in exc.message


@FAST
@given(top=st.dictionaries(st.sampled_from(["images", "annotations", "categories"]), json_values, max_size=3))
def test_validate_coco_on_any_document_raises_only_bad_input(top):
    _only_bad_input(lambda: validate_coco(top, "x.json"))


@st.composite
def valid_documents(draw):
    from pycocotools import mask as mask_utils

    n_images = draw(st.integers(1, 4))
    cat_ids = draw(st.lists(st.integers(-5, 10**12), min_size=1, max_size=5, unique=True))
    images, annotations = [], []
    for i in range(n_images):
        w, h = draw(st.integers(2, 40)), draw(st.integers(2, 40))
        images.append({"id": i * 3 + 1, "file_name": draw(st.text(min_size=1, max_size=8)), "height": h, "width": w})
        for _ in range(draw(st.integers(0, 3))):
            x, y = draw(st.floats(-w + 0.5, w - 0.5)), draw(st.floats(-h + 0.5, h - 0.5))
            bw, bh = draw(st.floats(1, 2 * w)) + max(0.0, -x), draw(st.floats(1, 2 * h)) + max(0.0, -y)
            kind = draw(st.sampled_from(["none", "poly", "rle", "ucrle"]))
            ann = {"id": len(annotations) + 1, "image_id": i * 3 + 1, "category_id": draw(st.sampled_from(cat_ids)),
                   "bbox": [x, y, bw, bh], "iscrowd": draw(st.sampled_from([0, 1]))}
            mask = np.zeros((h, w), np.uint8)
            mask[: h // 2, : w // 2] = 1
            if kind == "poly":
                ann["segmentation"] = [[float(draw(st.floats(-w, 2 * w))) if j % 2 == 0 else draw(st.floats(-h, 2 * h))
                                        for j in range(2 * draw(st.integers(3, 6)))]]
            elif kind == "rle":
                ann["segmentation"] = {"size": [h, w],
                                       "counts": mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")}
            elif kind == "ucrle":
                ann["segmentation"] = {"size": [h, w], "counts": [0, h * w]}
            annotations.append(ann)
    annotations.append({"id": 999, "image_id": 1, "category_id": cat_ids[0], "bbox": [0, 0, 2, 2]})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in cat_ids]}


@FAST
@given(doc=valid_documents())
def test_valid_documents_always_pass_and_draw(doc):
    sizes = validate_coco(doc, "ok.json")
    assert sizes == {img["id"]: (img["width"], img["height"]) for img in doc["images"]}
    for ann in doc["annotations"]:
        w, h = sizes[ann["image_id"]]
        if ann.get("segmentation"):
            mask = segmentation_mask(ann["segmentation"], h, w)
            assert mask is None or mask.shape == (h, w)


@FAST
@given(mask=st.integers(1, 30).flatmap(lambda h: st.integers(1, 30).flatmap(
    lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
        lambda v: np.array(v, np.uint8).reshape(h, w)))))
def test_rle_strings_from_pycocotools_decode_to_the_full_image(mask):
    from pycocotools import mask as mask_utils

    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode("ascii")
    assert _rle_string_total(counts) == mask.size
    h, w = mask.shape
    check_segmentation({"size": [h, w], "counts": counts}, "f.json: annotations[0]", (w, h))
    assert np.array_equal(segmentation_mask({"size": [h, w], "counts": counts}, h, w), mask)


@FAST
@given(text=st.text(max_size=20))
def test_rle_string_decoder_raises_only_value_error(text):
    try:
        assert _rle_string_total(text) >= 0
    except ValueError:
        pass


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    (root / "images").mkdir()
    (root / "images" / "a.jpg").write_bytes(b"")
    (root / "images" / "out").symlink_to(root)
    return root


@FAST
@given(name=st.one_of(
    st.text(max_size=20),
    st.lists(st.sampled_from(["..", ".", "a.jpg", "out", "images", "/", "etc", "passwd", "\0", "b"]), max_size=6)
    .map("/".join),
    json_values))
def test_resolve_inside_never_leaves_the_folder(sandbox, name):
    folder = sandbox / "images"
    path = _only_bad_input(lambda: resolve_inside(folder, name, "f.json", "images[0].file_name"))
    if path is not None:
        resolved = path.resolve()
        assert resolved.is_relative_to(folder.resolve()) and resolved != folder.resolve()


@FAST
@given(content=st.one_of(st.binary(max_size=80), st.text(max_size=80).map(lambda t: t.encode("utf-8"))))
def test_read_ade_class_names_raises_only_bad_input(sandbox, content):
    (sandbox / "objectInfo150.txt").write_bytes(content)
    names = _only_bad_input(lambda: read_ade_class_names(sandbox))
    if names is not None:
        assert names and all(n.strip() == n and n for n in names)
