"""bench finetune in process (moved from tests/e2e/test_finetune.py, which keeps the runs): the
metrics by hand, the command's input errors, checkpoint loading into the detector and segmenter."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.measure.accuracy import coco_box_metrics, confusion_matrix, majority_class_metrics, segmentation_metrics
from bench.scenarios.finetune import build_task_model


def _boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_coco_metrics_score_perfect_shifted_and_missing_detections():
    targets = [{"boxes": _boxes([0, 0, 20, 20], [30, 30, 60, 50]), "labels": torch.tensor([1, 2])}]
    perfect = [{"boxes": targets[0]["boxes"], "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}]
    assert coco_box_metrics(targets, perfect, num_classes=3) == pytest.approx({"map": 1.0, "ap50": 1.0, "ap75": 1.0})
    # Shifted by a quarter of the size: IoU 0.6, a hit at 0.5 and a miss at 0.75.
    shifted = [{"boxes": _boxes([5, 0, 25, 20], [37.5, 30, 67.5, 50]), "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.tensor([1, 2])}]
    scores = coco_box_metrics(targets, shifted, num_classes=3)
    assert scores["ap50"] == pytest.approx(1.0) and scores["ap75"] == 0.0 and 0.0 < scores["map"] < 0.5
    wrong_class = [{**perfect[0], "labels": torch.tensor([2, 1])}]
    assert coco_box_metrics(targets, wrong_class, num_classes=3)["ap50"] == 0.0
    nothing = [{"boxes": _boxes(), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert coco_box_metrics(targets, nothing, num_classes=3) == {"map": 0.0, "ap50": 0.0, "ap75": 0.0}


def test_segmentation_metrics_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 2]])
    confusion = confusion_matrix(pred, target, num_classes=3)
    assert confusion.sum() == 7  # the ignored pixel is left out
    scores = segmentation_metrics(confusion)
    # IoU: class 0: 3 / (4 + 4 - 3) = 0.6; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 0 / (1 + 0) = 0.
    assert scores["iou_per_class"] == pytest.approx([0.6, 2 / 3, 0.0])
    assert scores["miou"] == pytest.approx((0.6 + 2 / 3) / 3)
    assert scores["pixel_acc"] == pytest.approx(5 / 7)
    chance = majority_class_metrics(confusion)  # "all class 0": IoU 4/7 for class 0, 0 for the others
    assert chance["miou"] == pytest.approx((4 / 7) / 3) and chance["pixel_acc"] == pytest.approx(4 / 7)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--task", "seg", "--models", "pvt_nano"], "unknown model 'pvt_nano'"),
        (["--task", "seg", "--res", "100"], "bad resolution '100'"),
        (["--task", "seg", "--data", "imagenet:/x"], "bad --data 'imagenet:/x'"),
        (["--task", "det", "--data", "ade20k:/x"], "--task seg"),
        (["--task", "seg", "--models", "resnet18", "--checkpoint", "resnet18"], "give MODEL=PATH"),
        (["--task", "seg", "--models", "resnet18", "--checkpoint", "vit_t=/x.pth"], "not in --models"),
        (["--task", "seg", "--models", "resnet18", "--checkpoint", "resnet18=/nonexistent/r18.pth"],
         "/nonexistent/r18.pth"),
        (["--task", "seg", "--engine", "none", "--nproc", "2"], "--engine ddp"),
        (["--task", "seg", "--lr", "nan"], "bad --lr 'nan'"),
        (["--task", "seg", "--weight-decay", "nan"], "bad --weight-decay 'nan'"),
        (["--task", "seg", "--seed", "-1"], "bad --seed '-1'"),
        (["--task", "seg", "--steps", "٣"], "bad --steps"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment, tmp_path):
    result = CliRunner().invoke(main, ["finetune", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.output


def test_official_pvt_checkpoint_loads_into_the_detector(tmp_path):
    from models import create_model

    official = create_model("pvt_tiny")  # the classification model, as the official .pth holds it
    path = tmp_path / "pvt_tiny.pth"
    torch.save({"model": official.state_dict()}, path)
    detector = build_task_model("det", "pvt_tiny", 4, (64, 64), str(path))
    body = detector.backbone.body
    assert torch.equal(body.patch_embed1.proj.weight, official.patch_embed1.proj.weight)
    assert torch.equal(body.block4[1].mlp.fc2.weight, official.block4[1].mlp.fc2.weight)
    assert {"head.weight", "head.bias", "cls_token", "norm.weight", "norm.bias"} <= set(body.checkpoint_unused_keys)


@pytest.mark.parametrize("name, timm_name, suffix", [("vit_t", "vit_tiny_patch16_224", ".safetensors"),
                                                      ("resnet18", "resnet18", ".pth")])
def test_timm_checkpoint_loads_into_the_segmenter(tmp_path, name, timm_name, suffix):
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model(timm_name, pretrained=False)  # the classification model
    path = tmp_path / f"{name}{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    backbone = build_task_model("seg", name, 4, (64, 64), str(path)).backbone
    loaded = backbone.checkpoint_target.state_dict()
    assert loaded and all(torch.equal(v, state[k]) for k, v in loaded.items())
    head = ["head.bias", "head.weight"] if name == "vit_t" else ["fc.bias", "fc.weight"]
    assert backbone.checkpoint_unused_keys == head
