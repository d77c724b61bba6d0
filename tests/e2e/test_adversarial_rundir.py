"""Issue 18 items 10-12 (the run directory's claims), through the real command line: claims/ as a
file or a symlink is refused up front; the cells left to another writer are said. The stale-claim
rules need no process: tests/unit/test_claims.py."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from conftest import run_bench

from bench.claims import Claims
from bench.record import RunDir
from tests.e2e.test_reliability import copy_run, one_line_error, run_small


def test_claims_as_a_file_is_refused_up_front(measured, tmp_path):
    """Item 11: exit 1 after invocations.jsonl was appended."""
    out = copy_run(measured, tmp_path)
    shutil.rmtree(out / "claims", ignore_errors=True)
    (out / "claims").write_text("x")
    before = (out / "invocations.jsonl").read_bytes()
    proc = run_small(out)
    assert proc.returncode == 2 and "claims" in one_line_error(proc)
    assert (out / "invocations.jsonl").read_bytes() == before


def test_claims_as_a_symlink_is_refused(measured, tmp_path):
    """Item 12: files were created and deleted in the symlink's target."""
    out = copy_run(measured, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    shutil.rmtree(out / "claims", ignore_errors=True)
    (out / "claims").symlink_to(outside)
    proc = run_small(out, "64,96")
    assert proc.returncode == 2 and "symlink" in one_line_error(proc)
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]


# --------------------------------------------------------------------------------------------
# Items 7, 8, 14, 16b: --out under slurm submit, the plan file, traces/ as a file


def _plan(run_dir: Path) -> dict:
    return {"bench_args": ["run", "--models", "resnet18", "--res", "64", "--out", str(run_dir)],
            "cells": [{"model": "resnet18", "res": "64"}], "cell_keys": {}, "settings_ids": {},
            "run_dir": str(run_dir), "python": sys.executable, "workdir": str(run_dir), "source_root": str(run_dir),
            "options": {"partition": None, "nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1,
                        "cpus_per_task": None, "time": None, "account": None, "job_name": None,
                        "signal_before": 120, "sbatch_opts": [], "array_per_cell": False},
            "jobs": [{"job_id": "1", "array": False, "cells": [{"model": "resnet18", "res": "64"}]}]}


@pytest.mark.parametrize("edit", [
    lambda p: p["options"].update(nodes="2"), lambda p: p["options"].update(gpus_per_node=2.5),
    lambda p: p["jobs"][0].update(cells="abc"), lambda p: p["jobs"][0].update(job_id=123),
    lambda p: p.update(bench_args=["run", 5]), lambda p: p.update(run_dir="/proc/x")])
@pytest.mark.parametrize("command", ["status", "resubmit"])
def test_plan_field_of_the_wrong_type_is_one_line(tmp_path, edit, command):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plan = _plan(run_dir)
    edit(plan)
    (run_dir / "slurm_plan.json").write_text(json.dumps(plan))
    extra = ["--dry-run"] if command == "resubmit" else []
    proc = run_bench("slurm", command, str(run_dir), *extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    one_line_error(proc)


@pytest.mark.parametrize("out", ["FILE", "/proc/x"])
def test_slurm_submit_checks_out_like_run(tmp_path, out):
    if out == "FILE":
        out = str(tmp_path / "file")
        Path(out).write_text("x")
    proc = run_bench("slurm", "submit", "--dry-run", "--", "run", "--models", "resnet18", "--res", "64",
                     "--out", out)
    assert proc.returncode == 2 and "--out" in one_line_error(proc)


def test_slurm_submit_line_break_in_out_names_out(tmp_path):
    proc = run_bench("slurm", "submit", "--dry-run", "--", "run", "--models", "resnet18", "--res", "64",
                     "--out", str(tmp_path / "a\nb"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "--out" in line and "--job-name" not in line


def test_profile_traces_as_a_file_is_refused_up_front(measured, tmp_path):
    out = copy_run(measured, tmp_path)
    (out / "traces").write_text("x")
    before = (out / "records.jsonl").read_bytes()
    proc = run_bench("profile", "--models", "resnet18", "--res", "96", "--budget", "0.1", "--no-report",
                     "--out", str(out))
    assert proc.returncode == 2 and "traces" in one_line_error(proc)
    assert (out / "records.jsonl").read_bytes() == before


# --------------------------------------------------------------------------------------------
# Item 10: the cells left unmeasured are said, by the run and by `bench slurm status`


def _foreign_claim(out: Path, cell_key: str, config_id: str) -> None:
    """A fresh claim of another host on ``cell_key``, as a live writer elsewhere leaves it."""
    path = Claims(RunDir(out))._path(cell_key, config_id)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 7, "cell": cell_key, "start_time": time.time(),
                                "boot_id": "elsewhere-boot"}))


def test_a_run_lists_the_cells_it_left_to_another_writer(measured, tmp_path):
    out = copy_run(measured, tmp_path)
    (rec,) = RunDir(out).records()
    (out / "records.jsonl").write_text("")  # the cell is to be measured again, but another host holds it
    _foreign_claim(out, rec["cell_key"], rec["config_id"])
    proc = run_small(out, "64,96")
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "left unmeasured by this run (1):" in said and rec["cell_key"] in said, said[-2000:]
    assert "pid 7 on node-elsewhere" in said


def test_slurm_status_lists_unmeasured_cells_and_claims(measured, tmp_path):
    out = copy_run(measured, tmp_path)
    (rec,) = RunDir(out).records()
    key = rec["cell_key"]
    plan = _plan(out)
    plan["cells"].append({"model": "resnet18", "res": "96"})
    plan["jobs"][0]["cells"] = list(plan["cells"])
    plan["cell_keys"] = {"resnet18@64": [key], "resnet18@96": [key.replace("|64|", "|96|")]}
    (out / "slurm_plan.json").write_text(json.dumps(plan))
    _foreign_claim(out, key, rec["config_id"])
    proc = run_bench("slurm", "status", str(out), timeout=180)
    said = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "left unmeasured: resnet18@96" in said and "resnet18@64 (" not in said
    assert f"claim: {key} held by pid 7 on node-elsewhere, live" in said
