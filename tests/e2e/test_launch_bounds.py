"""Issue 27 groups 4, 5 and 6 (run --out), as a user runs them: a --config file holds a scaling
study; --nproc beyond what the launch can place and an --out the file system cannot take are one
line, exit 2, nothing created; ranks die with their parent."""
from __future__ import annotations

import signal
import time

import psutil
import pytest
from conftest import run_bench

from bench.launch.local import allotted_cores
from bench.record import RunDir
from tests.e2e.test_reliability import one_line_error, start

TINY = ["--models", "resnet18", "--res", "32", "--modes", "infer", "--budget", "0.3", "--threads", "1"]


@pytest.mark.multiproc
@pytest.mark.extended  # config files: tests/unit/test_config*.py; a study: test_study
def test_a_config_file_holds_a_study(tmp_path):
    """``nproc: "1,2"`` in --config: the world-size-2 ranks re-read it and refused it as a study
    under srun (torchrun traceback, exit 1). The list form parses the same (unit/test_launch_bounds)."""
    config = tmp_path / "study.yaml"
    config.write_text('nproc: "1,2"\nno-report: true\n')
    out = tmp_path / "study"
    proc = run_bench("run", "--config", str(config), *TINY, "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    records = RunDir(out).records()
    assert sorted(r["world_size"] for r in records) == [1, 2] and all(r["status"] == "ok" for r in records)


def test_nproc_beyond_the_cores_is_one_line_and_creates_nothing(tmp_path):
    cores = allotted_cores()
    work = tmp_path / "cwd"
    work.mkdir()
    cases = [
        ["run", *TINY, "--nproc", str(cores + 1)],
        ["run", *TINY, "--nproc", f"1,{cores + 1}"],  # a study: refused before world size 1 runs
        ["run", *TINY, "--nproc", str(10**18 - 1)],  # the largest --nproc the parser takes
        ["finetune", "--task", "seg", "--models", "resnet18", "--res", "64", "--engine", "ddp",
         "--nproc", str(cores + 1)],
    ]
    for i, args in enumerate(cases):  # each refusal once, with and without --out in turn
        out = ["--out", str(tmp_path / "out")] if i % 2 else []
        proc = run_bench(*args, *out, cwd=work, timeout=300)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert f"allotted core(s); give at most --nproc {cores}" in one_line_error(proc), args
        assert not list(work.iterdir()) and not (tmp_path / "out").exists(), args


def test_an_out_the_file_system_cannot_take_is_one_line_and_creates_nothing(tmp_path):
    for out in (tmp_path / ("a" * 300), tmp_path.joinpath(*["b" * 200] * 22)):
        proc = run_bench("run", *TINY, "--out", str(out), timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "choose a shorter --out" in one_line_error(proc)
        assert not list(tmp_path.iterdir())


@pytest.mark.multiproc
def test_ranks_die_with_torchrun_and_the_parent(tmp_path):
    """SIGKILL cannot be forwarded. torchrun is SIGKILLed with its parent (PR_SET_PDEATHSIG in its
    preexec_fn), and each rank with torchrun (PR_SET_PDEATHSIG asked by the rank itself): here
    torchrun is killed first, as the OOM killer may do, then the parent; no rank may survive."""
    out = tmp_path / "run"
    proc = start("run", *TINY, "--res", "32,64,96,128,160", "--nproc", "2", "--out", str(out), "--no-report")
    deadline = time.time() + 600
    while not ((out / "claims").is_dir() and list((out / "claims").glob("*.claim"))):  # both ranks past start()
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    torchrun, *_ = psutil.Process(proc.pid).children()
    ranks = torchrun.children()
    assert len(ranks) == 2 and all(r.is_running() for r in ranks), ranks
    torchrun.kill()
    proc.kill()
    proc.communicate()
    deadline = time.time() + 15
    while time.time() < deadline and [r for r in ranks if r.is_running() and r.status() != psutil.STATUS_ZOMBIE]:
        time.sleep(0.2)
    alive = [r for r in ranks if r.is_running() and r.status() != psutil.STATUS_ZOMBIE]
    for rank in alive:  # don't leave them to the next test
        rank.send_signal(signal.SIGKILL)
    assert not alive, alive
