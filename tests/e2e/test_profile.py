"""Profiler traces: op-category breakdown in the records, and TensorBoard's torch-tb-profiler
plugin, started for real on 127.0.0.1, lists our runs and workers."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_bench

from bench.measure.profile import CATEGORIES
from bench.record import read_records_counted


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "r"
    proc = run_bench("profile", "--models", "pvt_tiny,resnet18", "--res", "64", "--budget", "0.2", "--out", str(out),
                     "--no-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_records_carry_op_breakdown(profiled_run):
    records = read_records_counted(profiled_run / "records.jsonl")[0]
    assert [r["model"] for r in records] == ["pvt_tiny", "resnet18"]
    for r in records:
        assert set(r["op_breakdown"]) == set(CATEGORIES)
        assert sum(r["op_breakdown"].values()) == pytest.approx(1.0)
        assert Path(r["trace_file"]).is_file()
    pvt, resnet = records
    assert pvt["op_breakdown"]["attention"] > 0 and resnet["op_breakdown"]["attention"] == 0
    assert resnet["op_breakdown"]["conv"] > resnet["op_breakdown"]["matmul"]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_tensorboard_plugin_reads_our_traces(profiled_run, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tb = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(profiled_run / "traces"),
                           "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler"
    try:
        runs = None
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                runs = _get(f"{base}/runs")
                if not runs["loading"] and runs["runs"]:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert runs and not runs["loading"], runs
        assert sorted(runs["runs"]) == ["pvt_tiny_64_infer_b1_none_w1", "resnet18_64_infer_b1_none_w1"]
        for run in runs["runs"]:
            assert "Overview" in _get(f"{base}/views?run={run}")
            assert _get(f"{base}/workers?run={run}&view=Overview") == ["rank0"]
    finally:
        tb.terminate()
        tb.wait(timeout=30)
