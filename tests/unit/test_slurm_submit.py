"""bench slurm submit / status / resubmit without a cluster (moved from tests/e2e/test_slurm.py,
which keeps the real cluster's jobs): the script a dry run renders (checked by ``bash -n``), user
values quoted, validation before sbatch, the merge of queue and records into cell states."""
from __future__ import annotations

import re
import subprocess

import pytest
from click.testing import CliRunner

from bench.commands.slurm import PLAN, cell_states, slurm_group

TINY = ["--modes", "infer", "--budget", "0.2", "--no-report"]
HOSTILE = "it's a \"run\" $(touch PWNED) `touch PWNED` %j #x"


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(slurm_group, list(args), env=env)


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
