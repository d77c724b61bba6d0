"""bench run's numerics check through the real command line: agreement in the records of a bf16
run, the dense tasks' decisions, and --accuracy-data against real-format labels the test writes."""
from __future__ import annotations

import json

import pytest
from conftest import run_bench

from bench.data import write_ade20k_fixture, write_coco_fixture


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task,fixture,metric", [("seg", "ade20k", "miou"), ("det", "coco", "map")])
def test_dense_bf16_cell_scores_its_decisions_and_real_labels(task, fixture, metric, tmp_path):
    writer = write_ade20k_fixture if fixture == "ade20k" else write_coco_fixture
    data = writer(tmp_path / fixture, train_images=1, val_images=3, height=64, width=64, seed=3)
    out = tmp_path / "run"
    proc = run_bench("run", "--task", task, "--models", "resnet18", "--res", "64", "--modes", "infer",
                     "--dtype", "bf16", "--budget", "0.2", "--max-time", "60", "--no-report",
                     "--accuracy-data", f"{fixture}:{data}", "--accuracy-images", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = _records(out)
    assert rec["status"] == "ok" and rec["agreement"]["mode"] == "bf16"
    assert {o["stride"] for o in rec["agreement"]["per_output"]} >= {4, 8, 16, 32}
    assert rec["agreement"]["task_agreement"]["score"] > 0
    labels = rec["accuracy_vs_labels"]
    assert labels["images"] == 2 and labels["metric"] == metric and labels["gate"] == 0.99
    assert labels["reference"] >= 0 and labels["cell"] >= 0 and labels["data"].startswith(fixture)


@pytest.mark.parametrize("args,needle", [
    (["--task", "det", "--accuracy-data", "coco:/nonexistent"], "COCO directory not found"),
    (["--task", "cls", "--accuracy-data", "coco:/tmp"], "use it with --task det or --task seg"),
    (["--task", "det", "--accuracy-data", "ade20k:/tmp"], "no boxes"),
    (["--task", "seg", "--accuracy-data", "synthetic"], "give coco:DIR or ade20k:DIR"),
])
def test_bad_accuracy_data_is_one_line_exit_2(args, needle, tmp_path):
    proc = run_bench("run", "--models", "resnet18", *args, "--out", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()
