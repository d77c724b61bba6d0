"""bench slurm submit / status / resubmit, against a real Slurm cluster (tests/slurm_cluster.py).
What needs no cluster (dry-run scripts, quoting, validation, cell states) is in
tests/unit/test_slurm_submit.py.

The cluster tests run tiny real sweeps (resnet18 at 64x64, inference, 0.2 s per cell) so the
whole module stays within a few minutes on two cores.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.commands.slurm import PLAN, SCRIPT, slurm_group
from bench.record import RunDir

pytest_plugins = ["slurm_cluster"]  # its fixtures slurm_one, slurm_two (not imported: no name to shadow)

pytestmark = pytest.mark.slurm  # every test here submits to the private cluster

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
# On a real one-node cluster
# ------------------------------------------------------------------------------------------------
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


@pytest.mark.multiproc
@pytest.mark.extended  # srun tasks as ranks: test_finetune two_srun_tasks
def test_two_tasks_run_a_two_rank_gloo_ddp_measurement(slurm_one, tmp_path):
    out = tmp_path / "ddp"
    job = submitted_job(cli("submit", "--tasks-per-node", "2", "--", "run", "--models", "resnet18", "--res", "64",
                            "--modes", "train", "--batch", "2", "--budget", "0.2", "--no-report", "--out", str(out),
                            env=slurm_one.env))
    log = out / f"slurm-{job}.out"
    assert slurm_one.wait_job(job, timeout=180) == ["COMPLETED"], log.read_text()
    (rec,) = RunDir(out).records()
    assert (rec["status"], rec["world_size"], rec["engine"], rec["mode"]) == ("ok", 2, "ddp", "train")


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


@pytest.mark.multiproc
# ------------------------------------------------------------------------------------------------
# On two emulated nodes
# ------------------------------------------------------------------------------------------------
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
