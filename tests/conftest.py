"""Shared test helpers: run the real CLI in a subprocess, find the reference files; the tiers.

The tiers (docs/testing.md): every test under tests/unit is ``unit`` and every one under
tests/e2e ``e2e``, set here by directory; tests/gpu/conftest.py marks its own ``gpu``. A module
(or one test) that needs more says so with ``pytestmark``: ``multiproc``, ``slurm``, ``browser``.
A test under tests/unit that starts a process after all carries ``e2e`` (or ``multiproc``) itself
and then counts as ``e2e``, not ``unit``: ``-m unit`` is the in-process tier, whatever the folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
REFERENCE = Path(__file__).resolve().parent / "data"  # vendored from ../shared/reference: never skips
SHAPES_FILE = REFERENCE / "pvt_v1_state_dict_shapes.json"


# `bench run` in the tests skips the GEMM peak (MFU) unless a test names --mfu: the peak costs 1-3 s
# per run and up to a second per cell on 2 cores, and only the tests of MFU read it.
NO_MFU = ("--mfu", "off")


def run_bench(*args: str, timeout: float = 600, env: dict[str, str | None] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it (``python -m bench.cli`` == the ``bench`` script);
    ``bench run`` without --mfu gets ``NO_MFU``. ``env`` adds to this process's environment; a name
    given as None is left out."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    if args[:1] == ("run",) and "--mfu" not in args:
        args = (*args, *NO_MFU)
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or REPO,
    )


@pytest.fixture(scope="session")
def official_shapes() -> dict:
    """Every key and shape of the official PVT v1 classification state dicts (1000 classes)."""
    return json.loads(SHAPES_FILE.read_text())


@pytest.fixture(scope="session")
def measured(tmp_path_factory) -> Path:
    """A run directory holding one finished cell (resnet18 64 infer), made once per session (per
    xdist worker) and read by many modules' tests: they copy it (tests.e2e.test_reliability.copy_run)
    before they change anything."""
    from bench.record import read_records_counted

    out = tmp_path_factory.mktemp("measured") / "run"
    proc = run_bench("run", "--models", "resnet18", "--modes", "infer", "--budget", "0.1", "--max-time", "10",
                     "--res", "64", "--out", str(out), "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = read_records_counted(out / "records.jsonl")[0]
    assert rec["status"] == "ok", rec
    return out


@pytest.fixture(autouse=True)
def _denormals_back_on():
    """An in-process CLI call (CliRunner) flushes denormals for the whole pytest process, as the
    real command does for its own; put IEEE behaviour back after each test, so later tests (and
    hypothesis, which refuses to run with subnormals flushed) see a normal process."""
    yield
    import torch

    torch.set_flush_denormal(False)


@pytest.fixture(autouse=True)
def _ctrl_c_back():
    """An in-process cli.entry() leaves through bench.console.leave, which ignores SIGINT from
    then on (the exit code is decided); give the pytest process its Ctrl-C back after each test."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


# Markers that put a test outside the in-process tier, wherever its file lies.
_NOT_UNIT = ("e2e", "multiproc", "slurm", "browser", "gpu")


def _tier(path: Path) -> str | None:
    """The first folder under tests/ (unit, e2e, gpu), or None for a file elsewhere."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else None


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker (``-n 2``): one intra-op thread for this process and for the bench
    processes it starts (bench's default is every allotted core), unless the caller set
    OMP_NUM_THREADS. Two workers that each ran 2 OpenMP threads on 2 cores would make a step
    wait at the OpenMP barrier for a descheduled thread (steps 30x their length). Set before
    torch is imported (collection imports it)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def _xdist_group(item: pytest.Item) -> str | None:
    """Which tests one xdist worker must run alone, in turn (``--dist loadgroup``): every test on
    the private Slurm clusters (one pair of clusters per session), every job of several ranks (two
    at once on two cores would starve each other's collectives past their timeouts), and each
    e2e module's tests together (so its module-scoped run is made once, not once per worker)."""
    if item.get_closest_marker("slurm"):
        return "slurm"
    if item.get_closest_marker("multiproc"):
        return "ranks"
    if item.get_closest_marker("e2e"):
        return item.module.__name__ if item.module is not None else None
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups set here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder: ``unit`` (unless it carries a marker of a heavier tier),
    ``e2e``, ``gpu``; and give the heavy ones their xdist group. Runs first: pytest-xdist's worker
    turns the groups into node ids in the same hook, and a group set after it is never seen (each
    e2e module's run was made on both workers)."""
    for item in items:
        tier = _tier(Path(str(item.path)))
        if tier == "unit":
            if not any(item.get_closest_marker(name) for name in _NOT_UNIT):
                item.add_marker(pytest.mark.unit)
            elif not item.get_closest_marker("e2e"):
                item.add_marker(pytest.mark.e2e)  # it starts processes, whatever the folder
        elif tier in ("e2e", "gpu"):
            item.add_marker(getattr(pytest.mark, tier))
        group = _xdist_group(item)
        if group is not None and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
