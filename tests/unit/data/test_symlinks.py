"""A COCO image folder or annotation file, or an ADE20K split folder, that is a symlink leaving the
data set is refused; a data set that is itself a link, and links inside it, are fine (issue 18, the
COCO symlink borderline; moved from tests/e2e/test_adversarial_export.py: it needs no process)."""
from __future__ import annotations

import pytest

from bench.errors import BadInput


def test_coco_image_folder_symlinked_out_of_the_data_set_is_refused(tmp_path):
    from bench.data import write_coco_fixture
    from bench.data.coco import CocoDataset

    root = write_coco_fixture(tmp_path / "coco", train_images=1, val_images=1, height=32, width=48, seed=1)
    outside = tmp_path / "elsewhere"
    (root / "val2017").rename(outside)
    (root / "val2017").symlink_to(outside)
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(root, "val", 32, 48)
    assert "outside the data set folder" in str(exc_info.value.message)
    assert "COCO val image folder" in str(exc_info.value.message)


def test_coco_annotation_file_symlinked_out_of_the_data_set_is_refused(tmp_path):
    from bench.data import write_coco_fixture
    from bench.data.coco import CocoDataset

    root = write_coco_fixture(tmp_path / "coco", train_images=1, val_images=1, height=32, width=48, seed=1)
    ann = root / "annotations" / "instances_val2017.json"
    outside = tmp_path / "ann.json"
    ann.rename(outside)
    ann.symlink_to(outside)
    with pytest.raises(BadInput) as exc_info:
        CocoDataset(root, "val", 32, 48)
    assert "outside the data set folder" in str(exc_info.value.message)


def test_coco_data_set_that_is_itself_a_symlink_and_inner_links_are_fine(tmp_path):
    from bench.data import write_coco_fixture
    from bench.data.coco import CocoDataset

    real = write_coco_fixture(tmp_path / "store" / "coco", train_images=1, val_images=1, height=32, width=48, seed=1)
    (real / "val2017").rename(real / "images-v1")
    (real / "val2017").symlink_to(real / "images-v1")  # a link inside the data set stays allowed
    link = tmp_path / "coco"
    link.symlink_to(real)
    assert CocoDataset(link, "val", 32, 48)[0]["image"].shape == (3, 32, 48)


@pytest.mark.parametrize("part", ["images", "annotations"])
def test_ade20k_split_folder_symlinked_out_of_the_data_set_is_refused(tmp_path, part):
    """The COCO rule for ADE20K: images/validation or annotations/validation leaving the root."""
    from bench.data import write_ade20k_fixture
    from bench.data.ade20k import Ade20kDataset

    root = write_ade20k_fixture(tmp_path / "ade", train_images=1, val_images=1, height=32, width=48, seed=1)
    outside = tmp_path / "elsewhere"
    (root / part / "validation").rename(outside)
    (root / part / "validation").symlink_to(outside)
    with pytest.raises(BadInput) as exc_info:
        Ade20kDataset(root, "val", 32, 48)
    assert "outside the data set folder" in str(exc_info.value.message)
    Ade20kDataset(root, "train", 32, 48)  # the untouched split still loads
