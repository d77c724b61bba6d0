"""Issue 18 item 13: records are validated against the Record schema when read; an invalid one
is neither finished on resume nor shown as a figure, and is counted in a warning."""
from __future__ import annotations

import json

import pytest

from bench.record import RunDir, read_records_counted, valid

GOOD = {"cell_key": "cls|resnet18|64|infer|1", "config_id": "c", "status": "ok", "latency_ms": 5.0, "iters": 10}


@pytest.mark.parametrize("bad", [{"latency_ms": float("nan")}, {"latency_ms": -5.0}, {"iters": -3},
                                 {"iters": 1e308}, {"throughput": "fast"}, {"throughput": "1e3"},
                                 {"latency_ms": float("inf")}])
def test_invalid_record_is_not_read(tmp_path, bad, capsys):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **bad}) + "\n")
    recs, skipped = read_records_counted(path)
    assert recs == [GOOD] or [r["latency_ms"] for r in recs] == [5.0]
    assert skipped == 1
    RunDir(tmp_path).records()
    assert "invalid" in capsys.readouterr().err


def test_valid_record_is_valid():
    assert valid(GOOD)
    assert not valid({**GOOD, "iters": True})
