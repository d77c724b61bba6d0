"""Real multi-process runs (gloo on CPU): DDP (its scaling record and its traced bytes), FSDP2, a
dead rank; DeepSpeed ZeRO-2's run is tests/e2e/test_comms.py's (config and traced bytes in one run)."""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import NO_MFU, REPO, run_bench

from bench.record import read_records_counted

pytestmark = pytest.mark.multiproc  # 2-rank gloo jobs


def test_ddp_two_ranks_and_scaling_efficiency(tmp_path):
    out = tmp_path / "ddp"
    # bench's default threads (every allotted core, shared out over the ranks) are under test:
    # not the one thread an xdist worker gives the processes it starts (tests/conftest.py).
    default_threads = {"OMP_NUM_THREADS": None}
    single = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "train", "--budget", "0.3",
                       "--out", str(out), "--no-report", env=default_threads)
    assert single.returncode == 0, single.stderr[-2000:]
    # the DDP run also has an infer cell: only its train cell gets the profiled comm steps
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "infer,train", "--budget", "0.3",
                     "--engine", "ddp", "--nproc", "2", "--out", str(out), "--no-report", env=default_threads)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records_counted(out / "records.jsonl")[0]
    assert len(records) == 3
    one, infer, two = records
    assert (infer["mode"], infer["world_size"], infer["status"]) == ("infer", 2, "ok")
    _assert_ddp_traffic(two, infer, out)
    assert (one["world_size"], one["engine"]) == (1, "none")
    assert (two["world_size"], two["engine"], two["global_batch"]) == (2, "ddp", 2)
    assert two["status"] == "ok" and len(two["per_rank_step_ms"]) == 2
    # one series: the slowest rank per iteration; the sustained rate over its summed time
    samples = two["latency_samples_ms"]
    assert len(samples) == two["iters"] and two["latency_ms"] == pytest.approx(statistics.median(samples))
    assert two["latency_ms"] >= max(two["per_rank_step_ms"]) - 1e-9  # the max series is never faster than a rank
    assert two["throughput"] == pytest.approx(2 * two["iters"] / (sum(samples) / 1e3))
    assert two["throughput_per_rank"] == pytest.approx(two["throughput"] / 2)
    assert len(two["per_rank_peak_mem_mb"]) == 2 and two["peak_mem_mb"] == max(two["per_rank_peak_mem_mb"])
    # Same machine, same total threads (2 for one rank, 1 each for two): efficiency is the speed-up.
    assert one["threads"] == 2 * two["threads"]
    assert two["scaling_basis"] == "same-total-threads"
    assert two["scaling_efficiency"] == pytest.approx(two["throughput"] / one["throughput"])


def _assert_ddp_traffic(train: dict, infer: dict, out: Path) -> None:
    """The traced bytes of the DDP train cell against the prediction (tests/e2e/test_comms.py's
    check), and none for the infer cell."""
    from tests.e2e.test_comms import _check_comm_record

    kinds = _check_comm_record(train, out)
    # the independent check: one all-reduce of every gradient (fp32), counted from the FLOP counter's params
    assert kinds["all_reduce"]["bytes"] == 4 * train["params"]
    assert "broadcast" in kinds  # DDP's buffer broadcast each forward
    assert not any(k.startswith("comm_") for k in infer), "an infer cell got comm fields"
    assert len(list((out / "traces" / "comm").iterdir())) == 1  # only the train cell was profiled


def test_fsdp2_two_ranks_shard_params_and_optimizer_state_in_half(tmp_path):
    """FSDP2 on CPU over gloo: each rank holds half the parameters, gradients and AdamW state
    of the plain engine's one model (uneven dims are padded, hence the tolerance). pvt_tiny's
    (1, tokens, C) position embeddings would sit whole on rank 0 under FSDP2's default dim-0
    sharding (rank 0 then held 51.95 of 100.93 MB of AdamW state, 2.9% over half). pvt_tiny
    alone: convolutions (its patch embeddings), attention, norms and the uneven case in one model."""
    out = tmp_path / "fsdp2"
    common = ("run", "--models", "pvt_tiny", "--res", "64", "--modes", "train", "--budget", "0.3",
              "--out", str(out), "--no-report")
    single = run_bench(*common)
    assert single.returncode == 0, single.stderr[-2000:]
    proc = run_bench(*common, "--engine", "fsdp2", "--nproc", "2", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records_counted(out / "records.jsonl")[0]
    assert len(records) == 2
    plain, fsdp = records
    _assert_half(plain, fsdp)


def _assert_half(plain: dict, fsdp: dict) -> None:
    assert (plain["engine"], plain["world_size"]) == ("none", 1)
    assert fsdp["status"] == "ok", fsdp["error"]
    assert (fsdp["engine"], fsdp["world_size"], fsdp["global_batch"]) == ("fsdp2", 2, 2)
    assert fsdp["zero"] is None and fsdp["ds_config"] is None
    assert fsdp["config_id"] != plain["config_id"]
    one, per_rank = plain["mem_breakdown_mb"], fsdp["mem_breakdown_mb"]
    for part in ("optimizer", "params", "grads"):
        assert per_rank[part] == pytest.approx(one[part] / 2, rel=0.02), (part, one, per_rank)
    assert per_rank["master_weights"] == 0


def test_fsdp2_fine_tune_scores_an_uneven_validation_split(tmp_path):
    """5 validation images over 2 ranks at batch 2: rank 0 scores 2 batches, rank 1 one. Sharded
    blocks would all-gather in every forward and the ranks' collectives would no longer match;
    the engine's whole_weights() gathers them once for evaluation."""
    out = tmp_path / "ft"
    proc = run_bench("finetune", "--task", "seg", "--models", "resnet18", "--res", "64", "--steps", "2",
                     "--batch", "2", "--train-images", "8", "--val-images", "5", "--fpn-channels", "32",
                     "--engine", "fsdp2", "--nproc", "2", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = read_records_counted(out / "records.jsonl")[0]
    assert rec["status"] == "ok" and (rec["engine"], rec["world_size"]) == ("fsdp2", 2)
    assert rec["val_images"] == 5 and 0 <= rec["miou"] <= 1


def _worker_pids(parent: int, rank: int) -> list[int]:
    """The processes under ``parent`` whose environment says RANK=<rank> (torchrun's workers).
    Only its descendants: another job's ranks on the machine (an xdist worker beside this one, a
    Slurm test's job) are not ours to kill."""
    pids = []
    for child in psutil.Process(parent).children(recursive=True):
        try:
            environ = Path(f"/proc/{child.pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"bench.cli" in cmdline and b"torch.distributed.run" not in cmdline:
            pids.append(child.pid)
    return pids


def test_dead_rank_ends_the_job_in_bounded_time(tmp_path):
    out = tmp_path / "dead"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", "--models", "resnet18", "--res", "64,96,128,160",
         "--modes", "train", "--budget", "3", "--engine", "ddp", "--nproc", "2", "--timeout", "60",
         "--out", str(out), "--no-report", *NO_MFU],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (out / "records.jsonl").exists():
            time.sleep(0.5)
        assert (out / "records.jsonl").exists(), "no cell finished"
        victims = _worker_pids(proc.pid, 1)
        assert victims, "rank 1 not found"
        os.kill(victims[0], signal.SIGKILL)
        killed_at = time.time()
        output, _ = proc.communicate(timeout=120)
        assert time.time() - killed_at < 120
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "failed" in output.lower()
    records = read_records_counted(out / "records.jsonl")[0]  # every line whole
    finished = [r for r in records if r["status"] == "ok"]
    assert finished and finished == records[: len(finished)]
    # at most the cell in flight when the peer died, recorded as an error, never as ok
    assert len(records) - len(finished) <= 1 and all(r["error"] for r in records[len(finished):])
