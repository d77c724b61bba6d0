"""A sweep killed mid-way loses no finished cell, leaves no torn line, and resumes; SIGUSR1
(SLURM preemption) stops at a cell boundary with exit code 99."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import NO_MFU, REPO, run_bench

from bench.record import read_records_counted

ARGS = ["run", "--models", "resnet18", "--res", "64,96,128", "--modes", "infer,train", "--budget", "0.5", "--no-report",
        *NO_MFU]


def _start(out):
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *ARGS, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_records(out, n, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(read_records_counted(out / "records.jsonl")[0]) >= n:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError("cells did not finish in time")


def test_sigkill_mid_sweep_then_resume(tmp_path):
    out = tmp_path / "r"
    proc = _start(out)
    _wait_for_records(out, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = (out / "records.jsonl").read_text().splitlines()
    assert 2 <= len(lines) < 6
    finished = [json.loads(line) for line in lines]  # every line whole
    resumed = run_bench(*ARGS, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"skipping {len(finished)} finished cells" in resumed.stderr
    records = read_records_counted(out / "records.jsonl")[0]
    assert len(records) == 6 and len({r["cell_key"] for r in records}) == 6
    assert records[: len(finished)] == finished


def test_sigusr1_stops_at_cell_boundary_with_code_99(tmp_path):
    out = tmp_path / "p"
    proc = _start(out)
    _wait_for_records(out, 1, proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 99, err[-2000:]
    assert "preempted" in err
    records = read_records_counted(out / "records.jsonl")[0]
    assert 1 <= len(records) < 6 and all(r["status"] == "ok" for r in records)


def test_batch_auto_finds_the_cap(tmp_path):
    out = tmp_path / "auto"
    proc = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "infer", "--batch", "auto",
                     "--max-batch", "6", "--budget", "0.2", "--out", str(out), "--no-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = read_records_counted(out / "records.jsonl")[0]
    assert rec["batch"] == 6 and rec["cell_key"].endswith("|auto")
    assert [t["batch"] for t in rec["batch_search"]] == [1, 2, 4, 6]
    # The frontier only: one step per trial, the found batch is not timed unless asked.
    assert rec["flags"] == ["frontier-only"] and rec.get("latency_ms") is None and rec["peak_mem_mb"] > 0
    timed = run_bench("run", "--models", "resnet18", "--res", "64", "--modes", "infer", "--batch", "auto",
                      "--max-batch", "2", "--time-auto-batch", "--budget", "0.2", "--max-time", "10",
                      "--out", str(out), "--no-report")
    assert timed.returncode == 0, timed.stderr[-2000:]
    last = read_records_counted(out / "records.jsonl")[0][-1]
    assert last["batch"] == 2 and last["latency_ms"] > 0


def test_repeats_interleave_in_shuffled_rounds_and_resume_counts_them(tmp_path):
    from bench.plan import make_cells
    from bench.sweep import visit_order

    out = tmp_path / "rep"
    args = ["run", "--models", "resnet18,vit_t", "--res", "64", "--modes", "infer", "--budget", "0.1",
            "--max-time", "5", "--no-report", "--repeats", "3", "--order-seed", "7", "--out", str(out)]
    proc = run_bench(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = read_records_counted(out / "records.jsonl")[0]
    cells = make_cells(["resnet18", "vit_t"], [(64, 64)], ["infer"], [1])
    # the records come in the seeded, shuffled round order: every round visits every cell once
    assert [(r["cell_key"], r["repeat"]) for r in records] == [(v.cell.key, v.repeat)
                                                               for v in visit_order(cells, 3, 7)]
    assert all(r["repeats"] == 3 and r["order_seed"] == 7 for r in records)
    assert len({r["config_id"] for r in records if r["model"] == "vit_t"}) == 1  # one cell identity, 3 visits
    assert all(r["latency_samples_ms"] and len(r["latency_samples_ms"]) == r["iters"] for r in records)
    again = run_bench(*[a if a != "3" else "4" for a in args])  # --repeats 4: only the fourth round is new
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skipping 6 finished cells" in again.stderr
    records = read_records_counted(out / "records.jsonl")[0]
    assert sorted(r["repeat"] for r in records[6:]) == [3, 3]
