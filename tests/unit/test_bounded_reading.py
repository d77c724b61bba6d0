"""Issue 27 groups 2, 3 and 7 in-process: readers thin long sample lists and say so, damaged sample
lists and zero counts are left out with the count said, and the DuckDB connection of ``bench query``
/ ``report --where`` runs under bench's limits (memory, spill, threads, rows, time)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.commands.compare import compare_command
from bench.db import ResultsDB
from bench.db.limits import QueryLimits, parse_duration, parse_size
from bench.errors import BadInput
from bench.record import MAX_KEPT_SAMPLES, RunDir, read_records, valid

CELL = "cls|resnet18|64|infer|1"


def _record(samples: list, cell: str = CELL, **fields) -> dict:
    return {"schema_version": 2, "kind": "run", "status": "ok", "task": "cls", "model": "resnet18", "res": "64",
            "mode": "infer", "batch": 1, "global_batch": 1, "world_size": 1, "device": "cpu",
            "device_name": "Test CPU", "cell_key": cell, "config_id": "c1", "settings_id": "s1", "latency_ms": 5.0,
            "iters": len(samples), "timestamp": "2026-01-01T00:00:00", "latency_samples_ms": samples, **fields}


def _write(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    # json.dumps writes NaN as NaN (Python's JSON reader takes it): what a hand edit leaves
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _steady(centre: float, n: int = 200, seed: int = 0) -> list[float]:
    return [float(x) for x in centre * np.random.default_rng(seed).lognormal(0, 0.01, n)]


# --------------------------------------------------------------------------- group 2: thinning on read
def test_a_long_sample_list_is_thinned_evenly_on_read_and_said(tmp_path, capsys):
    samples = [float(i + 1) for i in range(100_000)]
    run = _write(tmp_path / "R", [_record(samples), _record(samples[:MAX_KEPT_SAMPLES], cell="cls|x|64|infer|1")])
    read = read_records(run / "records.jsonl")
    long, short = read.records
    assert read.thinned == 1 and read.skipped == 0
    assert len(long["latency_samples_ms"]) == MAX_KEPT_SAMPLES and long["samples_thinned"] is True
    assert long["latency_samples_ms"][0] == 1.0 and long["latency_samples_ms"][-1] == 100_000.0  # evenly, ends kept
    assert read_records(run / "records.jsonl").records == read.records  # deterministic
    assert len(short["latency_samples_ms"]) == MAX_KEPT_SAMPLES and "samples_thinned" not in short
    RunDir(run).records()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "thinned the latency samples of 1 record(s)" in err[0] and "5,000" in err[0]
    with ResultsDB([run]) as db:  # the index reads the same way and says the same
        assert db.query("SELECT max(len(latency_samples_ms)) FROM records").rows == [(MAX_KEPT_SAMPLES,)]
        assert any("thinned the latency samples of 1 record(s)" in line for line in db.warnings())


# --------------------------------------------------------------------------- group 7: damaged samples
DAMAGED = {
    "all negative": {"latency_samples_ms": [-5.0] * 50},
    "all zero": {"latency_samples_ms": [0.0] * 50},
    "all 1e308": {"latency_samples_ms": [1e308] * 50},
    "one NaN": {"latency_samples_ms": [5.0] * 49 + [math.nan]},
    "one inf": {"latency_samples_ms": [5.0] * 49 + [math.inf]},
    "a string": {"latency_samples_ms": [5.0] * 49 + ["5"]},
    "a bool": {"latency_samples_ms": [5.0] * 49 + [True]},
    "global_batch 0": {"global_batch": 0},
    "batch 0": {"batch": 0},
    "world_size 0": {"world_size": 0},
    "global_batch 1e12": {"global_batch": 10**12},
    "repeat 1000": {"repeat": 1000},  # beyond --repeats' bound: the hierarchical bootstrap holds 2,000 x repeats
    "repeat -1": {"repeat": -1},
}


@pytest.mark.parametrize("probe", list(DAMAGED))
def test_a_damaged_record_is_invalid(probe):
    assert valid(_record(_steady(5.0)))
    assert not valid({**_record(_steady(5.0)), **DAMAGED[probe]})


@pytest.mark.parametrize("probe", list(DAMAGED))
def test_compare_leaves_a_damaged_record_out_and_says_how_many(tmp_path, probe):
    """The probe's cell was 'faster' with q 2e-16, 'ratio 0.000' or 'slower' in 300 digits; now it is
    left out of the new run (only in the base run), counted in one line, and the other cell compares."""
    other = "cls|pvt_tiny|64|infer|1"
    base = _write(tmp_path / "base", [_record(_steady(5.0)), _record(_steady(7.0, seed=1), cell=other)])
    damaged = {**_record(_steady(5.0, seed=2)), **DAMAGED[probe]}
    new = _write(tmp_path / "new", [damaged, _record(_steady(7.0, seed=3), cell=other)])
    result = CliRunner().invoke(compare_command, [str(base), str(new), "--json"])
    assert result.exit_code in (0, 1), result.output
    rows = json.loads(result.stdout)
    assert [r["cell_key"] for r in rows] == [other]
    said = [line for line in result.stderr.splitlines() if "invalid record" in line]
    assert len(said) == 1 and "skipped 1 " in said[0] and "damaged latency samples" in said[0]
    assert f"only in the base run (1): {CELL}" in result.stderr


# --------------------------------------------------------------------------- group 3: the query's bounds
@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("q") / "R", [_record(_steady(5.0))])


def test_duckdb_runs_under_benchs_limits(small_run):
    limits = QueryLimits(memory_limit="300MB", spill_limit="1GB", threads=1, timeout="5s")
    with ResultsDB([small_run], limits=limits) as db:
        (memory, spill, threads, temp), = db.query(
            "SELECT current_setting('memory_limit'), current_setting('max_temp_directory_size'), "
            "current_setting('threads'), current_setting('temp_directory')").rows
        assert (memory, spill, threads) == ("286.1 MiB", "953.6 MiB", 1)  # 300e6 and 1e9 bytes, as DuckDB says
        assert Path(temp).parent.name.startswith("bench-query-")  # spills into bench's own directory
        with pytest.raises(BadInput, match="--memory-limit 300MB"):
            db.query("SELECT list(range) FROM range(100000000)")
        capped = db.query("SELECT * FROM range(50)", max_rows=20)
        assert len(capped.rows) == 20 and capped.capped
        whole = db.query("SELECT * FROM range(50)", max_rows=None)
        assert len(whole.rows) == 50 and not whole.capped
    assert not Path(temp).parent.exists()


def test_timeout_stops_an_endless_query_in_process(small_run):
    endless = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t"
    with ResultsDB([small_run], limits=QueryLimits(timeout="300ms")) as db:
        start = time.monotonic()
        with pytest.raises(BadInput, match=r"ran past --timeout 300ms.*raise --timeout"):
            db.query(endless)
        with pytest.raises(BadInput, match=r"--where ran past --timeout 300ms"):
            list(db.record_dicts(f"({endless}) > 0"))
        assert time.monotonic() - start < 10


@pytest.mark.parametrize("text,flag", [("2 lots", "--memory-limit"), ("10MB", "--memory-limit"),
                                       ("-1GB", "--spill-limit"), ("0s", "--timeout"), ("forever", "--timeout"),
                                       ("8d", "--timeout")])
def test_bad_limits_are_one_line(text, flag):
    with pytest.raises(BadInput, match=flag):
        QueryLimits(**{{"--memory-limit": "memory_limit", "--spill-limit": "spill_limit",
                        "--timeout": "timeout"}[flag]: text})


def test_limit_units():
    assert parse_size("2GB", "x") == 2 * 10**9 and parse_size("1.5GiB", "x") == 3 * 2**29
    assert parse_duration("90", "x") == 90 and parse_duration("2m", "x") == 120 and parse_duration("1h", "x") == 3600
