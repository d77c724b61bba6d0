"""Issue 27 groups 2 and 3: what a reader holds and what a query may take are bounded.

Group 2: records with 1e5 samples each drove compare and history past 5 GB (the bootstrap drew
2,000 x N values at once); now readers thin to bench.record.MAX_KEPT_SAMPLES and the bootstrap
resamples in chunks, so the peak RSS stays far below. Group 3: ``bench query`` and ``report
--where`` run under a memory limit, a row cap and ``--timeout``, and Ctrl-C / SIGTERM stop them
at once, leaving no ``bench-query-*`` copy behind. Peak RSS is measured by a wrapper process
(``resource.getrusage(RUSAGE_CHILDREN)`` of its one child), so other tests' children do not count.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_bench

pytestmark = pytest.mark.timing  # a signal must stop a query within 2 s: on quiet cores only

# Far above what these commands need once bounded (bench's imports: a few hundred MB), far below
# what they took before (compare / history: > 5 GB; the query: 3.3 GB).
RSS_BOUND_MB = 1500
ENDLESS = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"
ENDLESS_WHERE = f"({ENDLESS}) > 0"
WRAPPER = ("import json, resource, subprocess, sys\n"
           "p = subprocess.run([sys.executable, '-m', 'bench.cli', *sys.argv[1:]], capture_output=True, text=True)\n"
           "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
           "print(json.dumps({'rc': p.returncode, 'peak_mb': peak, 'stdout': p.stdout[-3000:], "
           "'stderr': p.stderr[-3000:]}))\n")


def peak_rss(*args: str, env: dict | None = None) -> dict:
    """Run ``bench ARGS`` in a wrapper that reports its exit code, output and peak RSS (MB)."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _record(samples: list[float], when: str) -> dict:
    return {"schema_version": 2, "kind": "run", "status": "ok", "task": "cls", "model": "resnet18", "res": "64",
            "height": 64, "width": 64, "mode": "infer", "batch": 1, "global_batch": 1, "world_size": 1,
            "engine": "none", "dtype": "fp32", "precision": "fp32", "device": "cpu", "device_name": "Test CPU",
            "cell_key": "cls|resnet18|64|infer|1", "config_id": "c1", "settings_id": "s1",
            "latency_ms": float(np.median(samples)), "iters": len(samples), "timestamp": when,
            "latency_samples_ms": samples, "invocation": "inv1"}


def _run_dir(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "invocations.jsonl").write_text(json.dumps({"invocation": "inv1", "git_commit": "c" * 40}) + "\n")
    return path


@pytest.fixture(scope="module")
def big_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of one cell, each record holding 1e5 samples (the issue's probe: a few MB of file)."""
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    runs = []
    for i, (name, centre) in enumerate((("base", 10.0), ("new", 10.5))):
        samples = [round(float(x), 4) for x in centre * rng.lognormal(0, 0.02, 100_000)]
        runs.append(_run_dir(root / name, [_record(samples, f"2026-01-0{i + 1}T00:00:00")]))
    return runs[0], runs[1]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return _run_dir(tmp_path_factory.mktemp("small") / "R", [_record([5.0, 5.1, 4.9, 5.2], "2026-01-01T00:00:00")])


# --------------------------------------------------------------------------- group 2
@pytest.mark.parametrize("command", ["compare", "history"])
def test_records_of_a_hundred_thousand_samples_are_read_in_bounded_memory(big_runs, command):
    base, new = big_runs
    args = [command, str(base), str(new)] + (["--model", "resnet18", "--res", "64", "--mode", "infer"]
                                              if command == "history" else [])
    res = peak_rss(*args)
    assert res["rc"] in (0, 1) and "Traceback" not in res["stderr"], res["stderr"]
    assert "resnet18" in res["stdout"]  # the cell was compared (its verdict is bench.stats's business)
    assert res["peak_mb"] < RSS_BOUND_MB, res
    said = [line for line in res["stderr"].splitlines() if "thinned the latency samples" in line]
    assert len(said) == 2 and "to 5,000 each" in said[0], res["stderr"]


# --------------------------------------------------------------------------- group 3
def test_a_hundred_million_rows_are_capped_and_said_in_bounded_memory(small_run):
    res = peak_rss("query", "SELECT * FROM range(100000000)", str(small_run), "--format", "csv")
    assert res["rc"] == 0, res["stderr"]
    assert res["stdout"].splitlines()[-1] == "9999"  # the header, then rows 0 .. 9,999
    assert "printed the first 10,000 rows" in res["stderr"] and "--max-rows all" in res["stderr"]
    assert res["peak_mb"] < RSS_BOUND_MB, res


@pytest.mark.parametrize("where", [False, True])
def test_an_endless_query_is_stopped_by_timeout(small_run, tmp_path, where):
    if where:
        out = tmp_path / "r.html"
        proc = run_bench("report", str(small_run), "--where", ENDLESS_WHERE, "--timeout", "1s", "--out", str(out))
    else:
        proc = run_bench("query", ENDLESS, str(small_run), "--timeout", "1s")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "ran past --timeout 1s" in lines[0] and "raise --timeout" in lines[0]
    assert not (tmp_path / "r.html").exists()


def _started(args: list[str], tmp: Path) -> subprocess.Popen:
    """``bench ARGS`` with its own TMPDIR, returned once its query has begun: the temporary index
    exists and the reading has had time to finish (the query itself never ends)."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    deadline = time.monotonic() + 300
    while not list(tmp.glob("bench-query-*/index.duckdb")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "bench never built its index"
        time.sleep(0.1)
    time.sleep(3)
    assert proc.poll() is None, proc.communicate()
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("where", [False, True], ids=["query", "report-where"])
def test_a_signal_stops_a_running_query_at_once_and_leaves_no_copy(small_run, tmp_path, sig, where):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = (["report", str(small_run), "--where", ENDLESS_WHERE, "--out", str(tmp_path / "r.html")] if where
            else ["query", ENDLESS, str(small_run)])
    proc = _started(args, tmp)  # the default --timeout (60s) is far away
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    took = time.monotonic() - sent
    assert took < 2.0, f"{took:.1f} s after {sig.name}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + sig and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert not list(tmp.glob("bench-*"))  # no bench-query-* copy of the records, no spill files
    assert not (tmp_path / "r.html").exists()
