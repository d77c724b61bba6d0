"""bench.db: the DuckDB views hold exactly the records RunDir reads (committed runs, shards, torn and
invalid lines), the saved index re-reads only what changed, and only SELECTs run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.db import ResultsDB
from bench.errors import BadInput
from bench.record import RunDir
from bench.rundirs import resolve_run_dirs

REPO = Path(__file__).resolve().parents[2]
COMMITTED = [REPO / "results" / name for name in (
    "20261128-main-cpu-a", "20261128-repeats-cpu-a", "20261128-repeats-cpu-b", "20261125-engines-cpu",
    "20261125-finetune-det-cpu", "20261128-setup-under-load-cpu/compile")]


def as_read(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if v is not None} for r in records]


def by_dir(db: ResultsDB, where: str = "true") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key, rec in db.record_dicts(where):
        out.setdefault(key, []).append(rec)
    return out


def test_views_hold_exactly_what_rundir_reads_on_the_committed_runs():
    with ResultsDB(COMMITTED) as db:
        got = by_dir(db)
        counts = dict(db.query("SELECT run_dir, count(*) FROM records GROUP BY run_dir").rows)
        assert db.query("SELECT count(*) FROM invocations").rows[0][0] >= 4
    for path in COMMITTED:
        expected = RunDir(path).records()
        assert counts[str(path.resolve())] == len(expected)
        assert got[str(path.resolve())] == as_read(expected), path


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    """A run directory with records.jsonl, a SLURM shard, a torn line, an invalid record, a
    torn-aside file, and a field the schema does not know."""
    run = tmp_path / "run"
    shutil.copytree(REPO / "results" / "20261128-main-cpu-a", run, ignore=shutil.ignore_patterns("claims"))
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text("\n".join(lines[:10]) + "\n")
    shard = [json.loads(x) for x in lines[10:]]
    shard[0]["not_in_schema"] = {"a": 1}
    shard[1]["params"] = 1 << 70  # an int no BIGINT holds: NULL in SQL, kept in extra
    bad = dict(shard[2], latency_ms=-5.0)  # invalid: a negative time
    (run / "records.slurm-7-0.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in shard) + json.dumps(bad) + "\n" + '{"model": "torn"')
    (run / "records.torn-x.jsonl").write_text(json.dumps(shard[0]) + "\n")
    return run


def test_shards_torn_and_invalid_lines_as_rundir(sharded: Path, capsys):
    expected = RunDir(sharded).records(warn=False)
    assert len(expected) == 18
    with ResultsDB([sharded]) as db:
        assert by_dir(db)[str(sharded.resolve())] == as_read(expected)
        rows = dict(db.query("SELECT source_file, count(*) FROM records GROUP BY ALL").rows)
        assert rows == {"records.jsonl": 10, "records.slurm-7-0.jsonl": 8}
        assert db.query("SELECT count(*) FROM records WHERE params IS NULL AND extra->>'params' IS NOT NULL"
                        ).rows[0][0] == 1
        assert db.warnings() and "skipped 2" in db.warnings()[0]


def test_saved_index_rereads_only_a_changed_run_dir(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        shutil.copytree(REPO / "results" / "20261128-repeats-cpu-a", d, ignore=shutil.ignore_patterns("claims"))
    index = tmp_path / "idx.duckdb"
    with ResultsDB([a, b], index) as db:
        assert len(db.stats.added) == 2
    with ResultsDB([a, b], index) as db:  # nothing changed: not re-read, not even opened for writing
        assert db.stats.unchanged == [str(a.resolve()), str(b.resolve())] and not db.stats.updated
        assert db.query("SELECT max(builds) FROM _runs").rows[0][0] == 1
    rec = RunDir(a).records()[0]
    RunDir(a).append({**rec, "timestamp": "2099-01-01T00:00:00.000000+0000", "model": "appended"})
    with ResultsDB([a, b], index) as db:
        assert db.stats.updated == [str(a.resolve())] and db.stats.unchanged == [str(b.resolve())]
        assert db.query("SELECT count(*) FROM records WHERE model = 'appended'").rows[0][0] == 1
        assert dict(db.query("SELECT run_dir, builds FROM _runs").rows) == {str(a.resolve()): 2,
                                                                          str(b.resolve()): 1}
    shutil.rmtree(b)
    with ResultsDB([a], index) as db:
        assert db.stats.removed == [str(b.resolve())]
        assert db.query("SELECT count(DISTINCT run_dir) FROM _records").rows[0][0] == 1


def test_an_index_of_other_runs_is_filtered_to_the_ones_asked(tmp_path: Path):
    index = tmp_path / "idx.duckdb"
    with ResultsDB(COMMITTED[:2], index):
        pass
    with ResultsDB(COMMITTED[:1], index) as db:
        assert db.query("SELECT count(DISTINCT run_dir) FROM records").rows[0][0] == 1


@pytest.mark.parametrize("sql", ["DELETE FROM _records", "SELECT 1; SELECT 2", "COPY _records TO 'x.csv'",
                                 "SELECT * FROM read_json('/etc/hostname')", "SELEC 1", "ATTACH 'y.db'"])
def test_only_one_read_only_select(sql: str, tmp_path: Path):
    with ResultsDB(COMMITTED[:1], tmp_path / "i.duckdb") as db, pytest.raises(BadInput):
        db.query(sql)
    assert not (Path.cwd() / "x.csv").exists()


def test_bad_run_dirs_and_index(tmp_path: Path):
    with pytest.raises(BadInput, match="does not exist"):
        resolve_run_dirs([tmp_path / "nope"])
    with pytest.raises(BadInput, match="not a run directory"):
        resolve_run_dirs([tmp_path])
    with pytest.raises(BadInput, match="matches no run directory"):
        resolve_run_dirs([str(tmp_path / "x*")])
    assert resolve_run_dirs([str(REPO / "results" / "20261128-repeats-cpu-*")]) == [
        REPO / "results" / "20261128-repeats-cpu-a", REPO / "results" / "20261128-repeats-cpu-b"]
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    with pytest.raises(BadInput, match="bench did not make for --index"):  # bench.outputs' rule, before opening
        ResultsDB(COMMITTED[:1], junk).open()
    assert junk.read_text() == "not a database"


def test_results_star_takes_runs_folders_of_runs_and_passes_over_the_rest(tmp_path: Path, capsys):
    """`bench query "..." results/*`: a folder of runs stands for its runs (a study kept as several
    runs), a folder with no run (notes) is passed over in one line, and nothing at all is an error."""
    every = sorted(p for p in (REPO / "results").iterdir() if p.is_dir())
    dirs = resolve_run_dirs(every)
    nested = REPO / "results" / "20261128-setup-under-load-cpu"
    assert any(nested in d.parents for d in dirs) and nested not in dirs
    assert REPO / "results" / "20261128-main-cpu-a" in dirs
    err = capsys.readouterr().err
    assert "that hold no run" in err and "20261128-agreement-grid-cpu" in err and "main-cpu-a" not in err
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("not a run")
    with pytest.raises(BadInput, match="not a run directory"):
        resolve_run_dirs([notes])
    with pytest.raises(BadInput, match="none of the 2 directories"):
        resolve_run_dirs([notes, tmp_path])
