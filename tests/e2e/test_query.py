"""bench query and bench report --where as a user runs them, on the committed example runs."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from conftest import REPO, run_bench

from bench.record import RunDir

MAIN_A = REPO / "results" / "20261128-main-cpu-a"
REP_A = REPO / "results" / "20261128-repeats-cpu-a"
SQL = "SELECT model, res, mode, count(*) AS n FROM records GROUP BY ALL ORDER BY ALL"


def one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error:"), proc.stderr[-2000:]
    return lines[0]


def test_formats_agree_with_rundir():
    expected = len(RunDir(MAIN_A).records()) + len(RunDir(REP_A).records())
    rows = json.loads(run_bench("query", SQL, str(MAIN_A), str(REP_A), "--format", "json").stdout)
    assert sum(r["n"] for r in rows) == expected and set(rows[0]) == {"model", "res", "mode", "n"}
    text = run_bench("query", SQL, str(MAIN_A), str(REP_A), "--format", "csv").stdout
    assert list(csv.DictReader(io.StringIO(text))) == [{k: str(v) for k, v in r.items()} for r in rows]
    md = run_bench("query", SQL, str(MAIN_A), str(REP_A), "--format", "md").stdout.splitlines()
    assert md[0] == "| model | res | mode | n |" and len(md) == 2 + len(rows)
    table = run_bench("query", SQL, str(MAIN_A), str(REP_A))
    assert table.returncode == 0 and "pvt_small" in table.stdout


def test_index_sees_an_appended_record(tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(REP_A, run, ignore=shutil.ignore_patterns("claims"))
    index = tmp_path / "i.duckdb"
    q = ("query", "SELECT count(*) AS n FROM records", str(run), "--index", str(index), "--format", "json")
    first = run_bench(*q)
    assert json.loads(first.stdout) == [{"n": 18}] and "1 run directories added" in first.stderr
    again = run_bench(*q)
    assert "1 unchanged" in again.stderr
    RunDir(run).append({**RunDir(run).records()[0], "timestamp": "2099-01-01T00:00:00.000000+0000"})
    after = run_bench(*q)
    assert json.loads(after.stdout) == [{"n": 19}] and "1 updated" in after.stderr


def test_report_where_shows_only_the_selected_cells(tmp_path: Path):
    out = tmp_path / "r.csv"
    proc = run_bench("report", str(MAIN_A), str(REP_A), "--where", "model = 'resnet50' AND res = '224'",
                     "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows and {r["model"] for r in rows} == {"resnet50"} and {r["res"] for r in rows} == {"224"}
    full = tmp_path / "full.csv"
    assert run_bench("report", str(MAIN_A), str(REP_A), "--out", str(full)).returncode == 0
    assert len(rows) < len(list(csv.DictReader(io.StringIO(full.read_text()))))


def test_bad_input_is_one_line_and_creates_nothing(tmp_path: Path):
    index = tmp_path / "i.duckdb"
    for args in [("query", "DROP TABLE _records", str(MAIN_A)), ("query", "SELEC 1", str(MAIN_A)),
                 ("query", "SELECT 1", str(tmp_path / "nope")), ("query", "SELECT 1", str(REPO / "README.md")),
                 ("query", "SELECT 1", str(tmp_path)), ("query", "SELECT 1", str(MAIN_A), "--rebuild"),
                 ("query", "SELECT 1", str(MAIN_A), "--index", str(MAIN_A / "x.duckdb")),
                 ("report", str(MAIN_A), "--where", "model = 'no such'", "--out", str(tmp_path / "r.html")),
                 ("report", str(MAIN_A), "--where", "nosuch = 1", "--out", str(tmp_path / "r.html")),
                 ("report", str(MAIN_A), "--index", str(index), "--out", str(tmp_path / "r.html"))]:
        one_line_error(run_bench(*args))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not (MAIN_A / "x.duckdb").exists()
