"""``bench slurm submit --nodes 1,2`` without a cluster (moved from tests/e2e/test_slurm_nodes.py,
which keeps the real processes and the two-node study): the --nodes list, the scripts a dry run
prints, the plan file with several node counts (and an older plan with ``"nodes": 1``), cell
states per node count, resubmission of the count left."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.commands.slurm import PLAN, cell_states, load_plan, parse_node_counts, slurm_group
from bench.errors import BadInput
from bench.record import RunDir

RUN = ["run", "--models", "resnet18", "--res", "64", "--modes", "train", "--batch", "2", "--budget", "0.2",
       "--no-report"]


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(slurm_group, list(args), env=env)


def status(run_dir: Path, env: dict | None = None) -> dict[tuple[int, str], str]:
    result = cli("status", "--json", str(run_dir), env=env)
    assert result.exit_code == 0, result.output
    return {(r["nodes"], f"{r['model']}@{r['res']}"): r["state"] for r in json.loads(result.output)["cells"]}


def test_node_list_parsing():
    assert parse_node_counts("2") == [2]
    assert parse_node_counts("1,2,4") == [1, 2, 4]
    assert parse_node_counts(" 4, 1 ") == [4, 1]  # the order given is the order submitted
    for bad, words in [("0,2", "bad node count '0'"), ("2,2", "lists 2 twice"), ("1,,2", "bad --nodes"),
                       ("", "bad --nodes"), ("x", "bad node count 'x'"), ("-1", "bad node count '-1'")]:
        with pytest.raises(BadInput, match=re.escape(words)):
            parse_node_counts(bad)


def test_dry_run_prints_one_script_per_node_count(tmp_path):
    result = cli("submit", "--dry-run", "--nodes", "1,2", "--", *RUN, "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    scripts = result.output.split("#!/bin/bash")[1:]
    assert len(scripts) == 2
    assert "#SBATCH --nodes=1" in scripts[0] and "LAUNCH=single" in scripts[0]
    assert "#SBATCH --nodes=2" in scripts[1] and "torch.distributed.run" in scripts[1]
    assert "--engine ddp" in scripts[0]  # the same bench command (ddp injected) for every node count
    assert not any(tmp_path.iterdir())


def _plan(run_dir: Path, nodes, jobs: list[dict]) -> Path:
    cells = [{"model": "resnet18", "res": "64"}]
    plan = {"bench_args": ["run", "--out", str(run_dir)], "cells": cells,
            "cell_keys": {"resnet18@64": ["cls|resnet18|64|train|2"]}, "settings_ids": {"train": "T", "infer": "I"},
            "run_dir": str(run_dir), "python": "python", "workdir": str(run_dir), "source_root": str(run_dir),
            "options": {"partition": None, "nodes": nodes, "gpus_per_node": 0, "tasks_per_node": 1,
                        "cpus_per_task": None, "time": None, "account": None, "job_name": None,
                        "signal_before": 120, "sbatch_opts": [], "array_per_cell": False},
            "jobs": [{"array": False, "cells": cells, **j} for j in jobs]}
    run_dir.mkdir(exist_ok=True)
    (run_dir / PLAN).write_text(json.dumps(plan))
    return run_dir


def _rec(nodes: int | None, status: str = "ok") -> dict:
    rec = {"model": "resnet18", "res": "64", "mode": "train", "status": status, "settings_id": "T",
           "cell_key": "cls|resnet18|64|train|2", "world_size": nodes or 2}
    return rec if nodes is None else {**rec, "nodes": nodes}


def test_plan_with_several_node_counts_has_states_per_count(tmp_path):
    run = _plan(tmp_path / "r", [1, 2], [{"job_id": "10", "nodes": 1}, {"job_id": "11", "nodes": 2}])
    plan = load_plan(run)
    assert plan["options"]["nodes"] == [1, 2]
    # The 1-node record does not make the 2-node cell done (same settings_id: only `nodes` tells them apart).
    rows = cell_states(plan, [_rec(1)], {("10", None): "COMPLETED", ("11", None): "RUNNING"})
    assert [(r["nodes"], r["state"], r["job"]) for r in rows] == [(1, "done", "10"), (2, "running", "11")]
    rows = cell_states(plan, [_rec(1), _rec(2, "error")], {("11", None): "FAILED"})
    assert [(r["nodes"], r["state"]) for r in rows] == [(1, "done"), (2, "failed")]
    rows = cell_states(plan, [_rec(1), _rec(2)], {})
    assert [r["state"] for r in rows] == ["done", "done"]


def test_old_plan_with_a_single_count_still_loads(tmp_path):
    run = _plan(tmp_path / "r", 2, [{"job_id": "10"}])  # written before --nodes lists: an int, jobs without nodes
    plan = load_plan(run)
    assert plan["options"]["nodes"] == [2]
    # Its multi-rank records have no `nodes` (unknown): with one node count they still count, as before.
    (row,) = cell_states(plan, [_rec(None)], {("10", None): "COMPLETED"})
    assert (row["nodes"], row["state"], row["job"]) == (2, "done", "10")
    assert status(run) == {(2, "resnet18@64"): "missing"}  # status reads the old plan (no records here)


def test_resubmit_sends_only_the_node_count_left(tmp_path):
    run = _plan(tmp_path / "r", [1, 2], [{"job_id": "10", "nodes": 1}, {"job_id": "11", "nodes": 2}])
    RunDir(run).append(_rec(1))  # the 1-node cell is measured; the 2-node job ended without a record
    result = cli("resubmit", "--dry-run", str(run), env={"PATH": "/nonexistent"})  # no squeue: records only
    assert result.exit_code == 0, result.output
    assert result.output.count("#!/bin/bash") == 1 and "#SBATCH --nodes=2" in result.output


def test_a_refused_later_node_count_says_what_was_submitted(tmp_path, monkeypatch):
    import bench.commands.slurm as slurm

    def fake_sbatch(script: Path, cwd: Path) -> str:
        if "#SBATCH --nodes=2" in script.read_text():
            raise BadInput("sbatch: error: Node count specification invalid")
        return "101"

    monkeypatch.setattr(slurm, "sbatch", fake_sbatch)
    out = tmp_path / "r"
    result = cli("submit", "--nodes", "1,2", "--", *RUN, "--out", str(out))
    assert result.exit_code == 2
    assert "Node count specification invalid (for --nodes 2; already submitted: batch job 101" in result.output
    plan = json.loads((out / PLAN).read_text())
    assert [(j["job_id"], j["nodes"]) for j in plan["jobs"]] == [("101", 1)]  # kept: resubmit sends the rest
    assert not (out / "slurm_job.nodes-2.sbatch").exists()


@pytest.mark.parametrize("nodes, jobs, words", [
    ([1, 2], [{"job_id": "10"}], "jobs[0].nodes is missing"),
    ([1, 2], [{"job_id": "10", "nodes": 4}], "jobs[0].nodes is 4"),
    ([2, 2], [{"job_id": "10", "nodes": 2}], "options.nodes is [2, 2]"),
    ([], [], "options.nodes is []"),
    ([0], [], "options.nodes is [0]"),
])
def test_malformed_node_counts_in_a_plan_are_one_line(tmp_path, nodes, jobs, words):
    run = _plan(tmp_path / "r", nodes, jobs)
    with pytest.raises(BadInput, match=re.escape(words)):
        load_plan(run)
