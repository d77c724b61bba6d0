"""issue 19 A, a scaling study in one command, as a user runs it: ``bench run --nproc 1,2`` on CPU
gloo writes one run directory with the cells at both world sizes and a report whose scaling-study
section has an efficiency and its CI; ``--global-batch`` splits the batch over the ranks; what
cannot be done is one line, exit 2, nothing created."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_bench

from bench.record import RunDir
from tests.e2e.test_reliability import one_line_error

TRAIN = ["--res", "64", "--modes", "train", "--engine", "ddp", "--budget", "0.3", "--max-time", "60"]


def _by_world(out: Path) -> dict[int, list[dict]]:
    got: dict[int, list[dict]] = {}
    for r in RunDir(out).records():
        got.setdefault(r["world_size"], []).append(r)
    return got


@pytest.mark.multiproc
def test_weak_study_of_two_models_in_one_run_dir(tmp_path):
    out = tmp_path / "study"
    # bench's default threads are under test, not the one thread of an xdist worker (tests/conftest.py)
    proc = run_bench("run", "--models", "resnet18,pvt_tiny", *TRAIN, "--nproc", "1,2", "--out", str(out),
                     timeout=900, env={"OMP_NUM_THREADS": None})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # one run directory
    by_world = _by_world(out)
    assert sorted(by_world) == [1, 2]
    for records in by_world.values():
        assert sorted(r["model"] for r in records) == ["pvt_tiny", "resnet18"]
        assert all(r["status"] == "ok" and r["scaling_mode"] == "weak" and r["batch"] == 1 for r in records)
    # the default threads keep the total fixed: 2 ranks x (cores / 2) = the cores of world size 1
    assert all(r["threads"] * 2 == by_world[1][0]["threads"] for r in by_world[2]) or by_world[1][0]["threads"] == 1
    assert all(r["scaling_efficiency"] is not None for r in by_world[2])
    html = (out / "report.html").read_text()
    assert 'id="study"' in html and "Scaling study" in html
    md = tmp_path / "report.md"
    assert run_bench("report", str(out), "--out", str(md), "--format", "md").returncode == 0
    section = md.read_text().split("## Scaling study", 1)[1].split("\n## ", 1)[0].split("### Provenance", 1)[0]
    for model in ("resnet18", "pvt_tiny"):
        line = next(s for s in section.splitlines() if s.startswith(f"- {model}@64 train: 2 ranks"))
        assert "CI " in line and "%" in line, line
    rows = [s for s in section.splitlines() if s.startswith("| resnet18") or s.startswith("| pvt_tiny")]
    assert len(rows) == 4 and all("–" in r.split("|")[-4] for r in rows if "| 2 " in r), rows


@pytest.mark.multiproc
@pytest.mark.extended  # the split itself: tests/unit/test_study.py; the study: the weak test
def test_strong_study_splits_the_global_batch(tmp_path):
    out = tmp_path / "strong"
    proc = run_bench("run", "--models", "resnet18", *TRAIN, "--nproc", "1,2", "--global-batch", "2",
                     "--out", str(out), "--no-report", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_world = _by_world(out)
    assert [(w, r["batch"], r["global_batch"], r["scaling_mode"]) for w in (1, 2) for r in by_world[w]] == \
        [(1, 2, 2, "strong"), (2, 1, 2, "strong")]
    assert by_world[2][0]["scaling_efficiency"] is not None  # matched on the global batch
    assert not (out / "report.html").exists()


def test_refusals_are_one_line_and_create_nothing(tmp_path):
    out = tmp_path / "nothing"
    cases = [
        (["--nproc", "1,2", "--global-batch", "3"], {}, "does not divide over 2 ranks"),
        (["--nproc", "1,2", "--global-batch", "2", "--batch", "1"], {}, "drop --batch"),
        (["--nproc", "1,2", "--global-batch", "2", "--batch", "auto"], {}, "drop --batch"),
        (["--nproc", "1,2,2"], {}, "names a world size twice"),
        (["--nproc", "1,2"], {"RANK": "0", "WORLD_SIZE": "1"}, "local study; under srun use bench slurm submit"),
    ]
    for extra, env, message in cases:
        proc = run_bench("run", "--models", "resnet18", *TRAIN, *extra, "--out", str(out), env=env)
        assert proc.returncode == 2, (extra, proc.stderr[-2000:])
        assert message in one_line_error(proc), extra
        assert not out.exists(), extra


def test_records_say_weak_for_a_plain_run(tmp_path):
    """scaling_mode is a common field: a plain --nproc 1 run says weak."""
    out = tmp_path / "plain"
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "infer", "--budget", "0.1",
                     "--out", str(out), "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert rec["scaling_mode"] == "weak" and rec["world_size"] == 1
