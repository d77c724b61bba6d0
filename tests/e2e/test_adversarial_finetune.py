"""bench finetune given bad data or a bad checkpoint (issue 18, items 9 and 15).

Every case is refused with one ``Error:`` line and exit 2 before anything is created: no run
directory (no claims/, env.json or invocations.jsonl), no results/<run id>, no progress line.
The old code found bad pixels and a checkpoint of another model only inside the first cell.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_bench
from PIL import Image

from bench.data import write_ade20k_fixture
from tests.e2e.test_reliability import FT, one_line_error


def _first(root: Path, split: str, folder: str) -> Path:
    return sorted((root / folder / split).iterdir())[0]


def _label(value: int, mode: str = "L", split: str = "validation"):
    """Label maps of ``split`` filled with ``value``: every validation map is read; in training,
    every map, since the sampler picks which ones the steps read."""
    def spoil(root: Path) -> None:
        paths = sorted((root / "annotations" / split).iterdir())
        for path in paths[:1] if split == "validation" else paths:
            size = Image.open(path).size
            array = np.full(size[::-1], value, dtype=np.uint16 if mode == "I;16" else np.uint8)
            Image.fromarray(array).save(path)  # uint16: mode I;16
    return spoil


def _truncated_jpeg(root: Path) -> None:
    path = _first(root, "validation", "images")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _text_as_label(root: Path) -> None:
    _first(root, "validation", "annotations").write_text("not an image\n")


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


SPOILERS = {
    "label 151": (_label(151), "pixel value 151"),
    "label 200 in training": (_label(200, split="training"), "pixel value 200"),
    "label 65535": (_label(65535, "I;16"), "pixel value 65535"),
    "all-zero labels": (_label(0), "every pixel is 0"),
    "truncated jpeg": (_truncated_jpeg, ""),
    "text file as a label map": (_text_as_label, ""),
}


@pytest.mark.parametrize("case", list(SPOILERS))
def test_bad_ade20k_data_is_refused_before_anything_is_created(tmp_path, case):
    spoil, words = SPOILERS[case]
    root = write_ade20k_fixture(tmp_path / "ade", train_images=8, val_images=2, height=64, width=64, seed=0)
    spoil(Path(root))
    work = tmp_path / "cwd"
    work.mkdir()
    out = tmp_path / "out"
    proc = run_bench(*FT, "--data", f"ade20k:{root}", "--out", str(out), cwd=work, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert words in one_line_error(proc), proc.stderr
    assert not out.exists() and not list(work.iterdir())
    assert proc.stdout.strip() == "", proc.stdout  # no progress line before the error


def test_checkpoint_of_another_model_is_refused_before_anything_is_created(tmp_path):
    from models import create_model

    other = tmp_path / "pvt_tiny.pth"
    torch.save(create_model("pvt_tiny").state_dict(), other)
    out = tmp_path / "out"
    proc = run_bench(*FT, "--checkpoint", f"resnet18={other}", "--out", str(out), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert str(other) in line and ("does not fit" in line or "lacks" in line), line
    assert not out.exists()
    assert proc.stdout.strip() == "", proc.stdout


def test_pickled_checkpoint_is_one_line_and_its_payload_never_runs(tmp_path):
    """The old code printed torch's UserWarning (with its source path) and its source line first: 3 lines."""
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": _Payload()}, protocol=4))
    out = tmp_path / "out"
    proc = run_bench(*FT, "--checkpoint", f"resnet18={evil}", "--out", str(out), timeout=300)
    assert proc.returncode == 2
    assert "refused checkpoint" in one_line_error(proc)
    assert "payload ran" not in proc.stdout + proc.stderr and not out.exists()
