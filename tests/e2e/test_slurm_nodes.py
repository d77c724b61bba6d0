"""``bench slurm submit --nodes 1,2``: one job per node count into ONE run directory (issue 19, part D).

Its refusals through the real command line, and on the two emulated nodes of tests/slurm_cluster.py
a real 1-node and 2-node DDP (gloo) study. What needs no process (the --nodes list, dry-run
scripts, plans, states per node count) is in tests/unit/test_slurm_nodes.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run_bench

from bench.commands.slurm import PLAN, slurm_group
from bench.record import RunDir

pytest_plugins = ["slurm_cluster"]  # its fixtures slurm_one, slurm_two

RUN = ["run", "--models", "resnet18", "--res", "64", "--modes", "train", "--batch", "2", "--budget", "0.2",
       "--no-report"]


def one_line_error(proc) -> str:
    """stderr is one line starting with 'Error:' (copied from test_reliability: tests/e2e is not on sys.path)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), proc.stderr[-3000:]
    return lines[0]


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(slurm_group, list(args), env=env)


def submitted_jobs(result) -> dict[int, str]:
    """{node count: job id} from submit's lines ("Submitted batch job 7 (1 cells, 2 nodes) into ...")."""
    assert result.exit_code == 0, result.output
    found = re.findall(r"Submitted batch job (\d+) \(.*?, (\d+) nodes?\)", result.output)
    return {int(n): job for job, n in found}


def status(run_dir: Path, env: dict | None = None) -> dict[tuple[int, str], str]:
    result = cli("status", "--json", str(run_dir), env=env)
    assert result.exit_code == 0, result.output
    return {(r["nodes"], f"{r['model']}@{r['res']}"): r["state"] for r in json.loads(result.output)["cells"]}




def test_refusals_are_one_line_and_create_nothing(tmp_path):
    zero = run_bench("slurm", "submit", "--nodes", "0,2", "--", *RUN, "--out", str(tmp_path / "a"))
    assert zero.returncode == 2 and "bad node count '0'" in one_line_error(zero)
    twice = cli("submit", "--nodes", "2,2", "--", *RUN, "--out", str(tmp_path / "b"))
    assert twice.exit_code == 2 and "lists 2 twice" in twice.output
    # A list with a multi-node count needs a distributed engine: the message a single --nodes 2 gives.
    no_engine = cli("submit", "--nodes", "1,2", "--", *RUN, "--engine", "none", "--out", str(tmp_path / "c"))
    assert no_engine.exit_code == 2 and "several nodes, tasks or GPUs need a distributed engine" in no_engine.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slurm
@pytest.mark.multiproc
# ------------------------------------------------------------------------------------------------
# On two emulated nodes
# ------------------------------------------------------------------------------------------------
@pytest.mark.extended  # two nodes: test_slurm two-node rendezvous; a study: test_study
def test_nodes_1_2_study_fills_one_run_directory(slurm_two, tmp_path):
    out = tmp_path / "study"
    jobs = submitted_jobs(cli("submit", "--nodes", "1,2", "--", *RUN, "--engine", "ddp", "--out", str(out),
                              env=slurm_two.env))
    assert sorted(jobs) == [1, 2]
    for job in jobs.values():
        log = out / f"slurm-{job}.out"
        assert slurm_two.wait_job(job, timeout=240) == ["COMPLETED"], log.read_text() + slurm_two.logs(30)
    records = RunDir(out).records()
    cells = sorted((r["world_size"], r["nodes"], r["engine"], r["status"]) for r in records)
    assert cells == [(1, 1, "ddp", "ok"), (2, 2, "ddp", "ok")]
    assert len({r["config_id"] for r in records}) == 2  # two cell identities, one per node count
    plan = json.loads((out / PLAN).read_text())
    assert plan["options"]["nodes"] == [1, 2]
    assert [(j["nodes"], j["job_id"]) for j in plan["jobs"]] == [(1, jobs[1]), (2, jobs[2])]
    assert status(out, slurm_two.env) == {(1, "resnet18@64"): "done", (2, "resnet18@64"): "done"}
    shown = cli("status", str(out), env=slurm_two.env)
    assert shown.exit_code == 0 and "2 done" in shown.output, shown.output
    nothing = cli("resubmit", str(out), env=slurm_two.env)
    assert nothing.exit_code == 0 and "Nothing to resubmit" in nothing.output
    page_path = tmp_path / "study.html"
    report = run_bench("report", str(out), "--out", str(page_path))
    assert report.returncode == 0, report.stderr[-3000:]
    page = page_path.read_text()
    assert "resnet18" in page and "Scaling study" in page
    md_path = tmp_path / "study.md"
    md = run_bench("report", str(out), "--out", str(md_path))
    assert md.returncode == 0, md.stderr[-3000:]
    text = " ".join(md_path.read_text().split())
    # the 2-node cell's efficiency against the 1-node cell, with its interval
    assert "resnet18@64 train: 2 ranks on 2 nodes" in text and ("of ideal" in text or "ideally" in text), text[-3000:]
