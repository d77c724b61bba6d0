"""bench slurm submit / status / resubmit, against a real Slurm cluster (tests/slurm_cluster.py).

The cluster tests run tiny real sweeps (resnet18 at 64x64, inference, 0.2 s per cell) so the
whole module stays within a few minutes on two cores.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import slurm_group
from bench.commands.slurm import PLAN, SCRIPT, cell_states
from bench.record import RunDir

pytest_plugins = ["slurm_cluster"]  # its fixtures slurm_one, slurm_two (not imported: no name to shadow)

TINY = ["--modes", "infer", "--budget", "0.2", "--no-report"]
HOSTILE = "it's a \"run\" $(touch PWNED) `touch PWNED` %j #x"


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(slurm_group, list(args), env=env)


def submitted_job(result) -> str:
    assert result.exit_code == 0, result.output
    m = re.search(r"Submitted batch job (\d+)", result.output)
    assert m, result.output
    return m.group(1)


def cells_of(run_dir: Path) -> list[tuple[str, str, str, str]]:
    return sorted((r["model"], r["res"], r["mode"], r["status"]) for r in RunDir(run_dir).records())


def status_rows(run_dir: Path, env: dict) -> dict[str, str]:
    result = cli("status", "--json", str(run_dir), env=env)
    assert result.exit_code == 0, result.output
    return {f"{r['model']}@{r['res']}": r["state"] for r in json.loads(result.output)["cells"]}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)
    return value


# ------------------------------------------------------------------------------------------------
# Without a cluster: rendering, validation, state merging
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, expect",
    [
        ([], ['run_forwarding "$PY" -m bench.cli', "export DS_ACCELERATOR=cpu"]),
        (["--array-per-cell"],
         ["#SBATCH --array=0-3", 'CELL_RES=(64 96 64 96)', "CELL_MODELS=(resnet18 resnet18 vit_t vit_t)"]),
        (["--tasks-per-node", "2", "-c", "2"],
         ["srun --ntasks-per-node=2", "#SBATCH --ntasks-per-node=2", "--engine ddp"]),
        (["--nodes", "2", "--gpus-per-node", "4", "-c", "8", "-p", "gpu", "-t", "1:00:00", "-A", "proj"],
         ["torch.distributed.run", "NPROC=4", "#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2",
          "#SBATCH --partition=gpu", "#SBATCH --time=1:00:00", "#SBATCH --account=proj", "#SBATCH --cpus-per-task=8"]),
    ],
    ids=["single", "array", "tasks", "torchrun"],
)
def test_dry_run_prints_a_valid_script_and_writes_nothing(tmp_path, options, expect):
    out = tmp_path / "run"
    result = cli("submit", "--dry-run", *options, "--", "run", "--models", "resnet18,vit_t", "--res", "64,96",
                 *TINY, "--out", str(out))
    assert result.exit_code == 0, result.output
    script = result.output
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    for piece in expect:
        assert piece in script
    assert "#SBATCH --signal=B:USR1@" in script and "#SBATCH --requeue" in script
    if "--array-per-cell" in options:
        bench_args = next(line for line in script.splitlines() if line.startswith("BENCH_ARGS=("))
        assert "--models" not in bench_args and "--res" not in bench_args
    if "--gpus-per-node" in options:
        assert "DS_ACCELERATOR" not in script
    assert not out.exists()


def test_user_values_reach_the_script_quoted(tmp_path):
    """Bash itself reads back every value exactly: the script body, run with a stub python."""
    out = tmp_path / HOSTILE
    result = cli("submit", "--dry-run", "-J", HOSTILE, "--", "run", "--models", "resnet18", "--res", "64", *TINY,
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    script = result.output
    # Replace the interpreter with one that prints its arguments, then run the body.
    stub = tmp_path / "stub.sh"
    stub.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n'
                    'echo "$OMP_NUM_THREADS $DS_ACCELERATOR" > "$ARGS_OUT.env"\n')
    stub.chmod(0o755)
    body = re.sub(r"^PY=.*$", f"PY={stub}", script, flags=re.M)
    env = {"PATH": "/usr/bin:/bin", "ARGS_OUT": str(tmp_path / "args"), "SLURM_JOB_ID": "1", "SLURM_CPUS_PER_TASK": "3"}
    proc = subprocess.run(["bash", "-c", body], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "args").read_text().splitlines()
    assert argv[:3] == ["-m", "bench.cli", "run"]
    assert argv[argv.index("--out") + 1] == str(out)
    assert (tmp_path / "args.env").read_text().split() == ["3", "cpu"]  # threads from the allocation
    assert not list(tmp_path.rglob("PWNED"))


def test_bad_input_exits_2_before_sbatch(tmp_path):
    base = ["submit", "--"]
    bad_model = cli(*base, "run", "--models", "no_such_model", "--res", "64", "--out", str(tmp_path / "a"))
    assert bad_model.exit_code == 2 and "unknown model 'no_such_model'" in bad_model.output
    bad_res = cli(*base, "run", "--models", "resnet18", "--res", "65", "--out", str(tmp_path / "b"))
    assert bad_res.exit_code == 2 and "bad resolution '65'" in bad_res.output
    no_engine = cli("submit", "--nodes", "2", "--", "run", "--models", "resnet18", "--engine", "none",
                    "--out", str(tmp_path / "c"))
    assert no_engine.exit_code == 2 and "distributed engine" in no_engine.output
    newline = cli("submit", "--dry-run", "-p", "a\nb", "--", "run", "--models", "resnet18")
    assert newline.exit_code == 2 and "line break" in newline.output
    assert not any(tmp_path.iterdir())


def test_missing_sbatch_exits_2(tmp_path):
    result = cli("submit", "--", "run", "--models", "resnet18", "--res", "64", "--out", str(tmp_path / "r"),
                 env={"PATH": str(tmp_path)})
    assert result.exit_code == 2
    assert "sbatch not found" in result.output and "--dry-run" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("wrapped, fragment", [
    (["run", "--models", "resnet18", "--batch", "0"], "bad batch size '0'"),
    (["run", "--models", "resnet18", "--batch", "abc"], "bad batch size 'abc'"),
    (["run", "--models", "resnet18", "--budget", "-1"], "bad --budget '-1'"),
    (["run", "--models", "resnet18", "--engine", "deepspeed", "--ds-config", "/nonexistent.json"], "not found"),
    (["finetune", "--task", "seg", "--models", "resnet18", "--checkpoint", "resnet18=/nonexistent.pth"], "not found"),
    (["finetune", "--task", "seg", "--models", "resnet18", "--data", "ade20k:/nonexistent"], "not a directory"),
    (["flops", "--models", "resnet18"], "wraps one of"),
])
def test_submit_validates_the_wrapped_command_before_sbatch(wrapped, fragment, tmp_path):
    """A job that could only fail in the queue is never submitted (and nothing is written)."""
    result = cli("submit", "--", *wrapped, "--out", str(tmp_path / "r"), env={"PATH": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "sbatch not found" not in result.output
    assert not (tmp_path / "r").exists()


def test_status_of_a_plan_missing_keys_is_one_line(tmp_path):
    (tmp_path / PLAN).write_text('{"cells": []}')
    result = cli("status", str(tmp_path))
    assert result.exit_code == 2 and "missing 'bench_args'" in result.output
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) == 1


def test_cell_states_merge_queue_and_records():
    cells = [{"model": "resnet18", "res": r} for r in ("64", "96", "128", "160", "192")]
    keys = {f"resnet18@{c['res']}": [f"cls|resnet18|{c['res']}|{m}|1" for m in ("infer", "train")] for c in cells}
    plan = {
        "cells": cells, "cell_keys": keys, "settings_ids": {"train": "T", "infer": "I"},
        "jobs": [
            {"job_id": "10", "array": True, "cells": cells[:4]},
            {"job_id": "11", "array": False, "cells": cells[4:]},
        ],
    }
    def rec(res, mode, status, settings=None):
        return {"model": "resnet18", "res": res, "mode": mode, "status": status,
                "cell_key": f"cls|resnet18|{res}|{mode}|1",
                "settings_id": settings or ("T" if mode == "train" else "I")}

    records = [
        rec("64", "infer", "ok"), rec("64", "train", "oom"),
        rec("96", "infer", "ok"), rec("96", "train", "ok", settings="OTHER"),  # another configuration
        rec("128", "infer", "error"),
        rec("192", "infer", "ok"),  # train still missing
    ]
    queue = {("10", "0"): "COMPLETED", ("10", "1"): "RUNNING", ("10", "2"): "PENDING", ("10", "3"): "FAILED"}
    states = [r["state"] for r in cell_states(plan, records, queue)]
    assert states == ["done", "running", "pending", "failed", "missing"]
    rows = cell_states(plan, records, {**queue, ("11", None): "COMPLETED"})
    assert rows[4]["state"] == "failed" and rows[4]["job"] == "11"
    assert rows[1]["job"] == "10_1"


# ------------------------------------------------------------------------------------------------
# On a real one-node cluster
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_submit_runs_a_real_sweep_with_hostile_names(slurm_one, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the job runs from the submit directory: stray files would land here
    out = tmp_path / HOSTILE
    job = submitted_job(cli("submit", "-J", HOSTILE, "-c", "1", "--", "run", "--models", "resnet18", "--res", "64",
                            *TINY, "--out", str(out), env=slurm_one.env))
    assert slurm_one.wait_job(job) == ["COMPLETED"], (out / f"slurm-{job}.out").read_text()
    assert cells_of(out) == [("resnet18", "64", "infer", "ok")]
    assert (out / f"slurm-{job}.out").exists() and (out / SCRIPT).exists()
    plan = json.loads((out / PLAN).read_text())
    assert [j["job_id"] for j in plan["jobs"]] == [job]
    assert plan["bench_args"][plan["bench_args"].index("--out") + 1] == str(out)
    name = slurm_one.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%j").stdout.strip()
    assert name == HOSTILE
    assert not list(tmp_path.rglob("PWNED"))
    assert status_rows(out, slurm_one.env) == {"resnet18@64": "done"}


@pytest.mark.slow
def test_options_slurm_rejects_come_back_with_exit_2(slurm_one, tmp_path):
    before = slurm_one.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split()
    bad_partition = cli("submit", "-p", HOSTILE, "--", "run", "--models", "resnet18", "--res", "64",
                        "--out", str(tmp_path / "a"), env=slurm_one.env)
    assert bad_partition.exit_code == 2
    assert "sbatch: error:" in bad_partition.output and "nvalid partition" in bad_partition.output
    bad_time = cli("submit", "-t", "soon", "--", "run", "--models", "resnet18", "--res", "64",
                   "--out", str(tmp_path / "b"), env=slurm_one.env)
    assert bad_time.exit_code == 2 and "sbatch: error: Invalid --time specification" in bad_time.output
    assert slurm_one.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split() == before
    assert not any(tmp_path.iterdir())  # no run directory, script or plan left behind


@pytest.mark.slow
def test_array_sweep_fills_one_run_dir_and_resubmit_sends_only_missing_cells(slurm_one, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = submitted_job(cli("submit", "--array-per-cell", "--", "run", "--models", "resnet18", "--res", "64,96",
                            *TINY, env=slurm_one.env))
    (out,) = (tmp_path / "results").iterdir()  # no --out: results/<run id> under the submit directory
    assert slurm_one.wait_job(job) == ["COMPLETED", "COMPLETED"]
    assert cells_of(out) == [("resnet18", "64", "infer", "ok"), ("resnet18", "96", "infer", "ok")]
    assert sorted(p.name for p in out.glob("slurm-*.out")) == [f"slurm-{job}_0.out", f"slurm-{job}_1.out"]
    assert status_rows(out, slurm_one.env) == {"resnet18@64": "done", "resnet18@96": "done"}
    nothing = cli("resubmit", str(out), env=slurm_one.env)
    assert nothing.exit_code == 0 and "Nothing to resubmit" in nothing.output

    # Lose the 96 cell: its task completed without a record, so it counts as failed.
    for records in RunDir(out).record_files():  # each array task wrote its own shard
        if records.exists():
            records.write_text("".join(ln for ln in records.read_text().splitlines(True) if '"res": "96"' not in ln))
    assert status_rows(out, slurm_one.env) == {"resnet18@64": "done", "resnet18@96": "failed"}
    again = submitted_job(cli("resubmit", str(out), env=slurm_one.env))
    assert slurm_one.wait_job(again) == ["COMPLETED"]
    plan = json.loads((out / PLAN).read_text())
    assert plan["jobs"][-1]["cells"] == [{"model": "resnet18", "res": "96"}]
    assert cells_of(out) == [("resnet18", "64", "infer", "ok"), ("resnet18", "96", "infer", "ok")]
    assert status_rows(out, slurm_one.env) == {"resnet18@64": "done", "resnet18@96": "done"}


@pytest.mark.slow
def test_two_tasks_run_a_two_rank_gloo_ddp_measurement(slurm_one, tmp_path):
    out = tmp_path / "ddp"
    job = submitted_job(cli("submit", "--tasks-per-node", "2", "--", "run", "--models", "resnet18", "--res", "64",
                            "--modes", "train", "--batch", "2", "--budget", "0.2", "--no-report", "--out", str(out),
                            env=slurm_one.env))
    log = out / f"slurm-{job}.out"
    assert slurm_one.wait_job(job, timeout=180) == ["COMPLETED"], log.read_text()
    (rec,) = RunDir(out).records()
    assert (rec["status"], rec["world_size"], rec["engine"], rec["mode"]) == ("ok", 2, "ddp", "train")


@pytest.mark.slow
def test_preempted_job_stops_at_a_cell_boundary_requeues_and_resumes(slurm_one, tmp_path):
    out = tmp_path / "preempt"
    res = ["64", "96", "128", "160"]
    job = submitted_job(cli("submit", "--", "run", "--models", "resnet18", "--res", ",".join(res), *TINY,
                            "--out", str(out), env=slurm_one.env))
    records = out / f"records.slurm-{job}-0.jsonl"  # a job's own shard (bench.record.writer_name)
    wait_for(lambda: records.exists() and records.read_text(), 120, "no first record")
    states = status_rows(out, slurm_one.env)
    assert states["resnet18@64"] == "done" and states["resnet18@160"] == "running"

    slurm_one.run("scancel", "--batch", "--signal=USR1", job)
    show = lambda: slurm_one.run("scontrol", "-o", "show", "job", job).stdout  # noqa: E731
    wait_for(lambda: "Restarts=1" in show() and "JobState=PENDING" in show(), 120, "job was not requeued")
    kept = records.read_text()
    stopped_after = len(kept.splitlines())
    assert 1 <= stopped_after < len(res), "the signal should stop the sweep at the next cell boundary"
    assert set(status_rows(out, slurm_one.env).values()) <= {"done", "pending"}

    # Slurm holds a requeued job back for two minutes (BeginTime); let it start now. Not within
    # the second its last run ended, though: slurmd refuses a credential issued in the same second
    # as the revocation of the old one ("Job credential revoked").
    time.sleep(1.5)
    slurm_one.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    log = out / f"slurm-{job}.out"
    assert slurm_one.wait_job(job, timeout=180) == ["COMPLETED"], log.read_text() + slurm_one.logs(30)
    final = records.read_text()
    assert final.startswith(kept)  # nothing finished was lost or rewritten
    assert cells_of(out) == sorted(("resnet18", r, "infer", "ok") for r in res)  # each cell once
    assert "preempted (exit 99); requeueing" in log.read_text() and "restart 1" in log.read_text()


# ------------------------------------------------------------------------------------------------
# On two emulated nodes
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_node_job_meets_at_a_torchrun_rendezvous(slurm_two, tmp_path):
    out = tmp_path / "multinode"
    job = submitted_job(cli("submit", "--nodes", "2", "--", "run", "--models", "resnet18", "--res", "64",
                            "--modes", "train", "--batch", "2", "--budget", "0.2", "--no-report", "--out", str(out),
                            env=slurm_two.env))
    log = out / f"slurm-{job}.out"
    assert slurm_two.wait_job(job, timeout=180) == ["COMPLETED"], log.read_text()
    # One torchrun per node with one process each: a world of 2 means both nodes joined.
    assert "NPROC=1" in (out / SCRIPT).read_text()
    assert "n[1-2]" in log.read_text()
    (rec,) = RunDir(out).records()
    assert (rec["status"], rec["world_size"], rec["engine"]) == ("ok", 2, "ddp")
