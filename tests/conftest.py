"""Shared test helpers: run the real CLI in a subprocess, find the reference files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data"  # vendored from ../shared/reference: never skips
SHAPES_FILE = REFERENCE / "pvt_v1_state_dict_shapes.json"


def run_bench(*args: str, timeout: float = 600, env: dict | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it (``python -m bench.cli`` == the ``bench`` script)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or REPO,
    )


@pytest.fixture(scope="session")
def official_shapes() -> dict:
    """Every key and shape of the official PVT v1 classification state dicts (1000 classes)."""
    return json.loads(SHAPES_FILE.read_text())


@pytest.fixture(autouse=True)
def _denormals_back_on():
    """An in-process CLI call (CliRunner) flushes denormals for the whole pytest process, as the
    real command does for its own; put IEEE behaviour back after each test, so later tests (and
    hypothesis, which refuses to run with subnormals flushed) see a normal process."""
    yield
    import torch

    torch.set_flush_denormal(False)
