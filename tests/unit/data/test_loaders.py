"""The synthetic scenes and the COCO / ADE20K loaders: same samples through every route, and
one-line errors that name the faulty file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import (
    IGNORE_INDEX,
    Ade20kDataset,
    CocoDataset,
    SyntheticScenes,
    open_data,
    render_scene,
    write_ade20k_fixture,
    write_coco_fixture,
)
from bench.errors import BadInput
from bench.measure.accuracy import confusion_matrix, majority_class_metrics

H, W = 64, 96  # non-square on purpose: catches swapped height and width


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return write_coco_fixture(tmp_path_factory.mktemp("coco"), train_images=6, val_images=4, height=H, width=W, seed=3)


@pytest.fixture(scope="module")
def ade_dir(tmp_path_factory):
    return write_ade20k_fixture(tmp_path_factory.mktemp("ade"), train_images=6, val_images=4, height=H, width=W, seed=3)


def _assert_one_line_naming(exc_info, name: str) -> None:
    message = str(exc_info.value.message)
    assert "\n" not in message
    assert name in message, message


def test_synthetic_scenes_are_deterministic_by_seed():
    a, b = render_scene(7, 5, H, W), render_scene(7, 5, H, W)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["masks"], b["masks"])
    other = render_scene(8, 5, H, W)
    assert not np.array_equal(a["image"], other["image"])


def test_synthetic_sample_is_consistent():
    scenes = SyntheticScenes(40, H, W, num_classes=3, seed=0)
    seen = set()
    for i in range(len(scenes)):
        s = scenes[i]
        assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        assert s["semantic"].shape == (H, W)
        assert len(s["boxes"]) == len(s["labels"])
        for box, label in zip(s["boxes"], s["labels"]):
            x1, y1, x2, y2 = box.tolist()
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            assert 1 <= int(label) <= 3
            # The box is the extent of the object's visible pixels.
            inside = s["semantic"][int(y1):int(y2), int(x1):int(x2)] == label
            assert inside.any(dim=1).all() and inside.any(dim=0).all()
        seen.update(s["labels"].tolist())
    assert seen == {1, 2, 3}


def test_synthetic_scenes_are_not_solved_by_a_constant_guess():
    scenes = SyntheticScenes(64, H, W, num_classes=3, seed=1)
    confusion = sum(confusion_matrix(s["semantic"], s["semantic"], 4) for s in scenes)
    pixels_per_class = confusion.diag()
    assert (pixels_per_class > 0).all()
    chance = majority_class_metrics(confusion)
    assert chance["miou"] < 0.3  # predicting "background" everywhere
    assert 0.5 < chance["pixel_acc"] < 0.9  # objects cover a fair share, not all, of the image


def test_coco_loader_reads_back_the_generated_scenes(coco_dir):
    data = CocoDataset(coco_dir, "val", H, W)
    reference = SyntheticScenes(4, H, W, num_classes=3, seed=2 * 3 + 1)  # the val stream of seed 3
    assert len(data) == 4 and data.class_names == ["background", "rectangle", "ellipse", "triangle"]
    for i in range(len(data)):
        got, want = data[i], reference[i]
        order_got, order_want = torch.argsort(got["boxes"][:, 0]), torch.argsort(want["boxes"][:, 0])
        assert torch.equal(got["labels"][order_got], want["labels"][order_want])
        assert torch.allclose(got["boxes"][order_got], want["boxes"][order_want])
        # Masks painted largest first agree with the generator's occlusion order (visible parts).
        assert torch.equal(got["semantic"], want["semantic"])
        # The same picture up to JPEG's loss on the noise textures.
        assert (got["image"] - want["image"]).abs().mean() < 0.06


def test_coco_loader_resizes_boxes_with_the_image(coco_dir):
    small, large = CocoDataset(coco_dir, "train", H, W), CocoDataset(coco_dir, "train", 2 * H, 3 * W)
    s, l = small[0], large[0]
    assert l["image"].shape == (3, 2 * H, 3 * W) and l["semantic"].shape == (2 * H, 3 * W)
    assert torch.allclose(l["boxes"], s["boxes"] * torch.tensor([3.0, 2.0, 3.0, 2.0]))


def test_ade_loader_reads_back_the_generated_scenes(ade_dir):
    data = Ade20kDataset(ade_dir, "val", H, W)
    reference = SyntheticScenes(4, H, W, num_classes=3, seed=2 * 3 + 1)
    assert data.num_classes == 4 and data.class_names[0] == "background"
    for i in range(len(data)):
        assert torch.equal(data[i]["semantic"], reference[i]["semantic"])


def test_ade_label_zero_is_ignored(tmp_path):
    for split in ("training", "validation"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "annotations" / split).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "images" / split / "a.jpg")
        labels = np.zeros((32, 32), np.uint8)
        labels[:, 16:] = 5
        Image.fromarray(labels).save(tmp_path / "annotations" / split / "a.png")
    sample = Ade20kDataset(tmp_path, "train", 32, 32)[0]
    assert (sample["semantic"][:, :16] == IGNORE_INDEX).all()
    assert (sample["semantic"][:, 16:] == 4).all()  # reduce_zero_label: v -> v - 1
    assert Ade20kDataset(tmp_path, "val", 32, 32).num_classes == 150  # no objectInfo150.txt: ADE20K's


def test_malformed_coco_json_names_the_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    bad = tmp_path / "annotations" / "instances_train.json"
    bad.write_text('{"images": [')
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(tmp_path, "train", H, W)
    _assert_one_line_naming(exc_info, str(bad))


def test_coco_annotation_without_bbox_names_the_file(tmp_path, coco_dir):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    doc = json.loads((coco_dir / "annotations" / "instances_val2017.json").read_text())
    del doc["annotations"][0]["bbox"]
    bad = tmp_path / "annotations" / "instances_val2017.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(tmp_path, "val", H, W)
    _assert_one_line_naming(exc_info, str(bad))


def test_missing_coco_image_names_the_file(tmp_path):
    root = write_coco_fixture(tmp_path, train_images=2, val_images=2, height=H, width=W)
    missing = root / "val2017" / "000001.jpg"
    missing.unlink()
    with pytest.raises(BadInput) as exc_info:
        open_data(f"coco:{root}", "det", H, W)
    _assert_one_line_naming(exc_info, str(missing))


def test_missing_or_broken_ade_files_name_the_file(tmp_path):
    root = write_ade20k_fixture(tmp_path, train_images=2, val_images=2, height=H, width=W)
    label = root / "annotations" / "training" / "ADE_training_00000001.png"
    label.unlink()
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(root, "train", H, W)
    _assert_one_line_naming(exc_info, str(label))
    broken = root / "annotations" / "validation" / "ADE_validation_00000000.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(root, "val", H, W)[0]
    _assert_one_line_naming(exc_info, str(broken))


@pytest.mark.parametrize(
    "spec, task, fragment",
    [("imagenet", "seg", "bad --data"), ("coco:", "det", "bad --data"), ("coco:/nonexistent", "det", "/nonexistent"),
     ("ade20k:/tmp", "det", "--task seg")],
)
def test_bad_data_spec_is_one_line(spec, task, fragment):
    with pytest.raises(BadInput) as exc_info:
        open_data(spec, task, H, W)
    _assert_one_line_naming(exc_info, fragment)
