"""Issue 19 comms: the profiled steps after the timing of multi-rank train cells, through the real
command line on CPU gloo (resnet18 at 64 px, --budget 0.2).

The traced bytes per step are checked against the prediction from the parameter count within
bench.measure.comms.BYTES_TOLERANCE (1%): on these runs they agree to the byte for DDP (gradients +
BatchNorm buffers) and to 4 bytes for ZeRO-2 (the overflow-check scalar); padding of the ZeRO
partition is in the prediction. A missing or doubled collective would be off by >= 30%.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_bench

from bench.measure.comms import BYTES_TOLERANCE, MISMATCH_FLAG
from bench.record import read_records_counted
from tests.e2e.test_reliability import one_line_error

pytestmark = pytest.mark.multiproc  # 2-rank gloo jobs

TRAIN = ["--models", "resnet18", "--res", "64", "--budget", "0.2", "--no-report"]


def _records(out: Path) -> list[dict]:
    return read_records_counted(out / "records.jsonl")[0]


def _check_comm_record(rec: dict, out: Path) -> dict:
    """The comm fields of a multi-rank train record; returns its collectives by kind."""
    assert rec["status"] == "ok", rec.get("error")
    assert rec["comm_steps"] == 3 and rec["comm_ms"] > 0 and rec["comm_step_ms"] >= rec["comm_ms"]
    assert 0 <= rec["comm_exposed_share"] <= 1
    assert 0 <= rec["comm_exposed_ms"] <= rec["comm_ms"] + 1e-9
    assert rec["comm_busbw_gbps"] > 0
    assert abs(rec["comm_bytes"] - rec["comm_bytes_predicted"]) <= BYTES_TOLERANCE * rec["comm_bytes_predicted"]
    assert MISMATCH_FLAG not in rec["flags"]
    assert "rank 0" in rec["comm_method"]
    trace_dir = Path(rec["comm_trace_dir"])
    assert trace_dir.parent == out / "traces" / "comm"
    assert sorted(p.name for p in trace_dir.iterdir()) == ["rank0.json.gz", "rank1.json.gz"]
    return {k["kind"]: k for k in rec["comm_collectives"]}


# DDP's traced bytes: tests/e2e/test_distributed.py::test_ddp_two_ranks_and_scaling_efficiency
# (its DDP run, with _check_comm_record).


def test_zero2_two_ranks_config_and_traced_bytes(tmp_path):
    """DeepSpeed ZeRO-2 on two ranks: the generated config, and its traced bytes against the prediction."""
    out = tmp_path / "z2"
    proc = run_bench("run", *TRAIN, "--modes", "train", "--engine", "deepspeed", "--zero", "2", "--nproc", "2",
                     "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = _records(out)
    assert (rec["engine"], rec["zero"], rec["world_size"]) == ("deepspeed", 2, 2)
    assert rec["ds_config"]["zero_optimization"]["stage"] == 2
    assert rec["ds_config"]["gradient_clipping"] == 0.0  # set explicitly, as for DDP
    assert rec["ds_config"]["train_batch_size"] == 2
    kinds = _check_comm_record(rec, out)
    # gradients reduced (DeepSpeed 0.19 on gloo: one all-reduce) + updated parameters all-gathered
    assert kinds["all_gather"]["bytes"] >= 4 * rec["params"] and kinds["all_reduce"]["bytes"] >= 4 * rec["params"]
    assert "ZeRO-2" in rec["comm_prediction"]


def test_a_one_rank_train_cell_gets_no_comm_steps(tmp_path):
    out = tmp_path / "one"
    proc = run_bench("run", *TRAIN, "--modes", "train", "--engine", "ddp", "--nproc", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = _records(out)
    assert rec["status"] == "ok" and rec["world_size"] == 1
    assert not any(k.startswith("comm_") for k in rec)
    assert not (out / "traces").exists()


def test_a_bad_comm_steps_is_one_line_and_creates_nothing(tmp_path):
    out = tmp_path / "bad"
    proc = run_bench("run", *TRAIN, "--modes", "train", "--comm-steps", "-1", "--out", str(out))
    assert proc.returncode == 2
    assert "--comm-steps" in one_line_error(proc)
    assert not out.exists()


@pytest.mark.extended  # the comm steps themselves: the zero2 test here and test_distributed's DDP test
def test_comm_traces_that_cannot_be_written_lose_no_timing(tmp_path):
    """RUN_DIR/traces is a file: the comm steps are said to be unmeasured, the timing stands."""
    out = tmp_path / "blocked"
    out.mkdir()
    (out / "traces").write_text("not a folder")
    proc = run_bench("run", *TRAIN, "--modes", "train", "--engine", "ddp", "--nproc", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = _records(out)
    assert rec["status"] == "ok" and rec["latency_ms"] > 0 and rec["throughput"] > 0
    assert "comm-unmeasured" in rec["flags"] and "traces" in rec["comm_error"]
    assert rec.get("comm_ms") is None
