"""`bench query "SQL" RUN_DIR...`: SQL over many run directories as one table (bench.db): the views
``records`` (one row per record, every shard, with ``run_dir``) and ``invocations``. The answer is
printed as a table (rich), CSV, JSON (a list of row objects) or Markdown."""
from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
import math
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bench.db.limits import QueryLimits, limit_options
from bench.errors import BadInput
from bench.sanitize import md_text, visible

if TYPE_CHECKING:
    from bench.db import QueryResult

FORMATS = ("table", "csv", "json", "md")
DEFAULT_MAX_ROWS = 10_000
INDEX_HELP = ("A saved index (a DuckDB file) to read and keep up to date: only run directories whose records "
              "or invocations changed are re-read [default: none, a temporary index for this command].")


@click.command("query")
@click.argument("sql")
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table (for reading), csv, json (a list of row objects) or md.")
@click.option("--index", type=click.Path(path_type=Path, dir_okay=False), default=None, help=INDEX_HELP)
@click.option("--rebuild", is_flag=True, help="Re-read every run directory into --index, changed or not.")
@click.option("--max-rows", default=str(DEFAULT_MAX_ROWS), show_default=True, metavar="N|all",
              help="Print at most N rows (a line on stderr says when there were more); all: every row.")
@limit_options
def query_command(sql: str, run_dirs: tuple[str, ...], fmt: str, index: Path | None, rebuild: bool, max_rows: str,
                  limits: QueryLimits) -> None:
    """Run one SELECT over the run directories' records and invocations (DuckDB SQL).

    \b
    bench query "SELECT model, res, mode, median(latency_ms) FROM records GROUP BY ALL" results/*
    Views: records (a column per record field, plus run_dir, source_file, record_index, extra),
    invocations (run_dir, line, command, git_commit, ..., entry). Read-only: one SELECT statement.
    """
    if rebuild and index is None:
        raise BadInput("--rebuild needs --index PATH (without it every query reads the run directories afresh)")
    row_cap = _max_rows(max_rows)
    from bench.db import ResultsDB  # duckdb: imported by this command only
    from bench.rundirs import resolve_run_dirs

    dirs = resolve_run_dirs(run_dirs)
    with ResultsDB(dirs, index, rebuild=rebuild, limits=limits) as db:
        for line in db.warnings():
            click.echo(line, err=True)
        if index is not None:
            click.echo(db.stats.summary(), err=True)
        result = db.query(sql, row_cap)
    click.echo(format_result(result, fmt), nl=False)
    if result.capped:
        click.echo(f"bench: printed the first {row_cap:,} rows; the query returns more (raise --max-rows, "
                   "or --max-rows all, or add LIMIT / an aggregate)", err=True)


def _max_rows(text: str) -> int | None:
    """--max-rows: a count of at least 1, or 'all' (None)."""
    if text.strip().lower() == "all":
        return None
    try:
        rows = int(text)
    except ValueError:
        rows = 0
    if not 1 <= rows <= 10**9:
        raise BadInput(f"--max-rows {text!r}: give a count from 1 to 1,000,000,000, or all")
    return rows


def format_result(result: QueryResult, fmt: str) -> str:
    """The answer in ``fmt``; text from the run directories shown, never acted on (bench.sanitize)."""
    if fmt == "json":
        return json.dumps([{c: _json_value(v, t) for c, v, t in zip(result.columns, row, result.types)}
                           for row in result.rows], indent=1, allow_nan=False) + "\n"
    cells = [[_text(v) for v in row] for row in result.rows]
    if fmt == "csv":
        from bench.report.render import neutralise_csv_cell

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([neutralise_csv_cell(c) for c in result.columns])
        writer.writerows([[neutralise_csv_cell(c) for c in row] for row in cells])
        return buf.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(md_text(c) for c in result.columns) + " |",
                 "|" + "|".join("---" for _ in result.columns) + "|"]
        lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    return _rich_table(result.columns, cells)


def _rich_table(columns: list[str], cells: list[list[str]]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(*[visible(c) for c in columns])
    for row in cells:
        table.add_row(*[visible(c) for c in row])
    # Never wrapped to a narrow pipe: as wide as the content needs (rich measures it).
    console = Console(file=io.StringIO(), width=100_000 if not sys.stdout.isatty() else None,
                      highlight=False, markup=False)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, dict)):
        return json.dumps(_json_value(value, ""))
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def _json_value(value: Any, type_name: str) -> Any:
    """A value JSON can hold: a JSON column parsed, a date as ISO text, a decimal as a float; a
    non-finite float (DuckDB's 0/0) as null, since JSON has no NaN."""
    if value is None:
        return None
    if type_name == "JSON" and isinstance(value, str):
        try:
            return json.loads(value, parse_constant=lambda _: None)
        except ValueError:
            return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, uuid.UUID)):
        return value.isoformat() if hasattr(value, "isoformat") else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_value(v, "") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, "") for v in value]
    return value
