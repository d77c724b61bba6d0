"""Every record committed under results/ still loads through RunDir (the record package's split,
and any later renaming, must leave old records readable: record.upgrade holds the shims)."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.record import RunDir, check_record

RESULTS = Path(__file__).resolve().parents[2] / "results"
RUN_DIRS = sorted({p.parent for p in RESULTS.glob("*/records*.jsonl")})


@pytest.mark.parametrize("run_dir", RUN_DIRS, ids=[p.name for p in RUN_DIRS])
def test_every_committed_record_loads_and_fits_the_schema(run_dir):
    lines = sum(1 for path in RunDir(run_dir).record_files() if path.is_file()
                for line in path.read_text().splitlines() if line.strip())
    records = RunDir(run_dir).records(warn=False)
    assert len(records) == lines > 0  # none skipped as unreadable or invalid
    for rec in records:
        check_record(rec)  # every field of an old record is still declared


def test_there_are_committed_records_to_load():
    assert len(RUN_DIRS) >= 10
