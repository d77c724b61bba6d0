"""Stage 1: CUDA-event timing, fp32 with TF32 on and off, the environment a CUDA run records."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from .conftest import FAST, REPO, check_cuda_record, one

CELLS = ("--models", "resnet50,vit_s", "--res", "224", "--batch", "8", "--modes", "infer,train")

# time_block / measure on a kernel whose device time is known and whose launch costs the host
# almost nothing: torch.cuda._sleep spins the GPU for a number of clock cycles.
_EVENT_PROBE = r"""
import json, statistics, time, torch
from bench.measure.timing import measure, time_block
dev = torch.device("cuda", 0)
torch.cuda._sleep(1000); torch.cuda.synchronize()
def wall_ms(cycles):
    torch.cuda.synchronize(); t0 = time.perf_counter()
    torch.cuda._sleep(cycles); torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3
cycles = 10_000_000
cycles = int(cycles * 20.0 / statistics.median(wall_ms(cycles) for _ in range(3)))  # ~20 ms a kernel
walls = [wall_ms(cycles) for _ in range(5)]
torch.cuda.synchronize(); t0 = time.perf_counter(); torch.cuda._sleep(cycles)
launch_ms = (time.perf_counter() - t0) * 1e3; torch.cuda.synchronize()
t0 = time.perf_counter()
block = time_block(lambda: torch.cuda._sleep(cycles), dev, 10)
block_wall_ms = (time.perf_counter() - t0) * 1e3
timing = measure(lambda: torch.cuda._sleep(cycles), dev, budget_s=0.5, max_time_s=10)
print(json.dumps({"cycles": cycles, "walls": walls, "launch_ms": launch_ms, "block": block,
                  "block_wall_ms": block_wall_ms, "measure": timing.to_record()}))
"""


def test_time_block_times_device_work_with_cuda_events():
    """bench.measure.timing on CUDA reports the device's time per iteration (CUDA events,
    synchronised once after the block), not the host's time to launch it."""
    proc = subprocess.run([sys.executable, "-c", _EVENT_PROBE], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(got, indent=1))
    wall = statistics.median(got["walls"])
    assert 10 < wall < 60, f"the spin kernel took {wall:.1f} ms, not about 20"
    assert got["launch_ms"] < 0.25 * wall, "launching the kernel should cost the host far less than it runs"
    assert len(got["block"]) == 10
    for ms in got["block"]:
        assert ms == pytest.approx(wall, rel=0.25), (ms, wall)
    # One synchronize after the loop: the block returns only when the device has finished.
    assert got["block_wall_ms"] >= 0.9 * sum(got["block"])
    m = got["measure"]
    assert m["iters"] >= 10 and m["latency_ms"] == pytest.approx(wall, rel=0.25), m


@pytest.fixture(scope="module")
def tf32_on(bench):
    return bench("run", *CELLS, "--dtype", "fp32", "--tf32", "on", *FAST, name="fp32-tf32-on")


@pytest.fixture(scope="module")
def tf32_off(bench):
    return bench("run", *CELLS, "--dtype", "fp32", "--tf32", "off", *FAST, name="fp32-tf32-off")


def test_fp32_tf32_on(tf32_on, gpu):
    assert len(tf32_on) == 4
    for rec in tf32_on:
        check_cuda_record(rec, gpu, dtype="fp32", tf32=True)
        assert rec["engine"] == "none" and rec["world_size"] == 1 and rec["zero"] is None


def test_fp32_tf32_off(tf32_off, gpu):
    assert len(tf32_off) == 4
    for rec in tf32_off:
        check_cuda_record(rec, gpu, dtype="fp32", tf32=False)


def test_tf32_changes_the_math_mode(tf32_on, tf32_off):
    """The MFU peak is a matmul in the run's own math mode: TF32 tensor cores are several times
    faster than fp32 FMA (H100: ~400 vs ~50 TFLOP/s), so the flag must show in the peak."""
    peak_on = min(r["peak_tflops"] for r in tf32_on)
    peak_off = max(r["peak_tflops"] for r in tf32_off)
    print(f"peak TFLOP/s: tf32 on {peak_on:.1f}, off {peak_off:.1f}")
    assert peak_on > 1.5 * peak_off, (peak_on, peak_off)
    # The same cells with and without TF32: settings differ, so neither skipped the other.
    on = one(tf32_on, model="resnet50", mode="infer")
    off = one(tf32_off, model="resnet50", mode="infer")
    assert on["config_id"] != off["config_id"]


def test_env_json_of_a_cuda_run(tf32_on, bench, gpu):
    env = bench.env_json()
    assert env["cuda"] and env["gpu_count"] >= 1
    assert env["torch"] == gpu["torch"]
    invocations = [json.loads(line) for p in sorted(bench.run_dir.glob("invocations*.jsonl"))
                   for line in p.read_text().splitlines() if line.strip()]
    mine = [inv for inv in invocations if inv["invocation"] in {r["invocation"] for r in tf32_on}]
    assert mine and all(inv["device"] == "cuda" and inv["device_name"] == gpu["name"] for inv in mine)
    for pkg in ("torch", "timm", "fvcore", "deepspeed"):
        assert mine[-1]["packages"][pkg], f"{pkg} not installed (tests/gpu/wheels.sh carries it)"
