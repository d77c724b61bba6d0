"""One-time set-up stays out of ``--max-time``, and a failure every rank agreed on ends its cell,
not the job (issue 18). The real command line in real processes; the slow set-up or the failure is
planted by a ``sitecustomize`` on PYTHONPATH that wraps the cell's first step, so the harness runs
unchanged around it (ranks inherit the environment, so every rank gets it).
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, run_bench

from bench.record import RunDir

# The first call of a matching cell's step sleeps (a slow compile / engine build) or raises.
_PLANT = '''
import os, time
import bench.scenarios.step as step_scenario
import torch

RES, ACTION, SECONDS, RANKS = {res!r}, {action!r}, {seconds!r}, {ranks!r}
_real = step_scenario._make_step


def _make_step(task, cell, batch, model, ctx, cfg):
    step, trainer = _real(task, cell, batch, model, ctx, cfg)
    if cell.height != RES or ctx.rank not in RANKS:
        return step, trainer
    first = [True]

    def planted():
        if first[0]:
            first[0] = False
            if ACTION == "sleep":
                time.sleep(SECONDS)
            else:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (planted)")
        return step()

    return planted, trainer


step_scenario._make_step = _make_step
'''


def plant(tmp_path: Path, res: int, action: str, seconds: float = 0.0, ranks: tuple[int, ...] = (0, 1)) -> dict:
    """An environment whose bench processes run the planted first step."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(_PLANT.format(res=res, action=action, seconds=seconds,
                                                                         ranks=list(ranks))))
    return {"PYTHONPATH": f"{site}:{REPO}"}


def records(out: Path) -> dict[int, dict]:
    return {int(r["res"]): r for r in RunDir(out).records()}


def test_a_set_up_longer_than_the_cap_still_gives_a_measured_cell(tmp_path):
    """A first step of 4 s against --max-time 2: the cap's clock starts after the set-up."""
    out = tmp_path / "run"
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "infer", "--budget", "0.5",
                     "--max-time", "2", "--threads", "1", "--out", str(out), "--no-report",
                     env=plant(tmp_path, 64, "sleep", 4.0))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = records(out)[64]
    assert rec["status"] == "ok", rec.get("error")
    assert rec["iters"] >= 10
    assert rec["first_step_s"] >= 4.0 and rec["setup_s"] >= rec["first_step_s"]
    assert rec["setup_timeout_s"] == 900 and "setup-timeout" not in rec["flags"]


def test_a_set_up_past_its_limit_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "run"
    proc = run_bench("run", "--models", "resnet18", "--res", "64,96", "--modes", "infer", "--budget", "0.2",
                     "--setup-timeout", "10", "--threads", "1", "--out", str(out), "--no-report",
                     env=plant(tmp_path, 64, "sleep", 60.0))
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_res = records(out)
    slow, fine = by_res[64], by_res[96]
    assert slow["status"] == "error" and "setup-timeout" in slow["flags"]
    assert slow["error"].startswith("SetupTimeout: set-up took longer than --setup-timeout 10 s")
    assert 10.0 <= slow["setup_s"] < 30.0  # the limit cut the 60 s sleep
    assert fine["status"] == "ok" and fine["iters"] >= 10


@pytest.mark.multiproc
@pytest.mark.parametrize("failure", [pytest.param("setup-timeout", marks=pytest.mark.extended), "oom"])
def test_an_agreed_failure_in_a_two_rank_job_ends_the_cell_not_the_job(tmp_path, failure):
    """Cell 1 (res 64) fails on both ranks by one decision; cell 2 (res 96) is still measured."""
    out = tmp_path / "run"
    env = plant(tmp_path, 64, "sleep", 60.0) if failure == "setup-timeout" else plant(tmp_path, 64, "oom")
    proc = run_bench("run", "--models", "resnet18", "--res", "64,96", "--modes", "train", "--engine", "ddp",
                     "--nproc", "2", "--budget", "0.3", "--setup-timeout", "20", "--timeout", "120",
                     "--out", str(out), "--no-report", env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    by_res = records(out)
    assert set(by_res) == {64, 96}, json.dumps(list(by_res))
    failed, measured = by_res[64], by_res[96]
    if failure == "oom":
        assert failed["status"] == "oom", failed.get("error")
    else:
        assert failed["status"] == "error" and "setup-timeout" in failed["flags"], failed.get("error")
    assert "failed on every rank" in " ".join((proc.stdout + proc.stderr).split())
    assert measured["status"] == "ok" and measured["world_size"] == 2 and measured["iters"] >= 10


@pytest.mark.multiproc
def test_a_failure_on_one_rank_only_still_ends_the_job(tmp_path):
    """OOM on rank 1 alone leaves rank 0 in the step's all-reduce: no agreement, the job ends."""
    out = tmp_path / "run"
    proc = run_bench("run", "--models", "resnet18", "--res", "64,96", "--modes", "train", "--engine", "ddp",
                     "--nproc", "2", "--budget", "0.3", "--timeout", "10", "--out", str(out), "--no-report",
                     env=plant(tmp_path, 64, "oom", ranks=(1,)), timeout=600)
    assert proc.returncode != 0
    assert 96 not in records(out)
    said = " ".join((proc.stdout + proc.stderr).split())  # rich wraps long lines
    assert "(outcomes per rank error, oom); ending the job" in said, said[-3000:]
