"""Run directories as DuckDB tables: the ``records`` and ``invocations`` views that ``bench query``
and ``bench report --where`` read.

How rows get in. Every record file of a run directory (``records.jsonl`` and each writer's shard
``records.<writer>.jsonl``, as ``RunDir.record_files`` lists them; ``records.torn-*`` never) is
read with bench's own reader, ``bench.record.read_records``: the same UTF-8 / JSON /
``upgrade`` / ``valid`` steps as ``RunDir.records()``, so a torn line or an invalid record is never
a row, an old record is read as the current schema, and the rows are exactly that reader's
records (tests/unit/test_db.py checks it on the committed runs). DuckDB's own JSON reader is only
used to load the rows this reader accepted (bulk, with the column types declared below): it
cannot apply ``valid()``, and reading the files with it directly would let rejected records in.

Columns of ``records``: ``run_dir`` (the directory's absolute path), ``source_file`` (which shard),
``record_index`` (the record's position in ``RunDir.records()`` order), then one column per field
of ``bench.record.Record`` (union by name: a field an older record lacks is NULL), typed from the
schema (int BIGINT, float DOUBLE, str VARCHAR, bool BOOLEAN, list and dict JSON; the samples
``latency_samples_ms`` DOUBLE[]), then ``extra``
(JSON): fields the schema does not declare, and the rare value a typed column cannot hold (an
integer beyond 64 bits, a float beyond a double). That is the one place SQL is looser than the
Python reader: such a value is NULL in its column and kept whole in ``extra``; ``record_dicts``
puts it back, so the report still sees the record as RunDir reads it.

Raw samples (``latency_samples_ms``) are read only when a query names them: the
index is a DuckDB database file, stored by column, so a query that does not project a column never
reads its segments from disk. Without ``--index`` the index is built in a temporary directory for
this one command (the same code; the samples are parsed once while loading, as RunDir parses
them, but are not read back unless asked for) and deleted afterwards.

The saved index (``--index PATH``) keeps, per run directory, a fingerprint: for each records
file, shard and invocations.jsonl its (name, size, mtime_ns, SHA-256 of its last 4 KiB). A run
directory whose fingerprint differs (an append changes the size; an edit in place the mtime or
the tail; a copy that keeps the mtime but not the content the tail) is re-read whole, and only its
rows are replaced; a directory that has disappeared loses its rows; the others are not touched.
What the fingerprint misses: an edit of the same size, before the last 4 KiB, that also puts the
mtime back. An index written by another schema of records (a field added) is rebuilt whole.

Reading is read-only: the user's SQL runs on a connection opened with ``read_only=True`` after
``enable_external_access`` is switched off and the configuration locked, so no statement can
write the index, read or write a file (COPY, read_csv, ATTACH), or switch that back on; on top,
only one SELECT-like statement is accepted (``check_sql``).

Bounds (bench/db/limits.py): every connection runs under ``QueryLimits`` (memory limit, spill
limit, threads) and spills only into this command's own temporary directory (``bench-query-*``,
removed on exit, on Ctrl-C and on SIGTERM); the user's SQL runs under ``QueryGuard`` (a deadline,
Ctrl-C and SIGTERM interrupt the connection), and ``query`` returns at most ``max_rows`` rows.
"""
from __future__ import annotations

import hashlib
import json
import re
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import duckdb

from bench.db.limits import QueryGuard, QueryLimits, SignalStop
from bench.errors import BadInput, first_line
from bench.outputs import check_output_file, is_duckdb_file
from bench.record import INVOCATIONS, RunDir, read_records, read_warnings, schema
from bench.sanitize import visible

INDEX_FORMAT = 2  # bump when the tables below change shape: older index files are rebuilt
TAIL_BYTES = 4096
FLUSH_BYTES = 32 << 20  # rows buffered in a temporary JSONL file before DuckDB loads them
# The JSON reader's largest line: the longest row written (so a long record loads, and a short file
# takes no 2 GiB buffer from --memory-limit), at least DuckDB's own default.
MIN_OBJECT_BYTES = 16 << 20
KEYS = {"run_dir": "VARCHAR", "source_file": "VARCHAR", "record_index": "BIGINT"}
EXTRA = "extra"
# The raw samples as a list of doubles (list_median(latency_samples_ms) in SQL); a value that is not
# a list of numbers (a hand-edited record RunDir still accepts) goes to ``extra``.
NUMBER_LISTS = ("latency_samples_ms",)
_DUCK_TYPES = {int: "BIGINT", float: "DOUBLE", str: "VARCHAR", bool: "BOOLEAN", list: "JSON", dict: "JSON"}
_INT64 = (-(1 << 63), (1 << 63) - 1)
# Top-level keys of invocations.jsonl lines shown as columns; the whole line is ``entry`` (JSON).
INVOCATION_KEYS = ("invocation", "command", "run_id", "kind", "started_at", "git_commit", "git_dirty", "hostname",
                   "device_name", "torch", "python", "slurm_job_id")
INVOCATION_TABLE = {"run_dir": "VARCHAR", "line": "BIGINT", "entry": "JSON"}
RUNS_TABLE = {"run_dir": "VARCHAR", "fingerprint": "VARCHAR", "n_records": "BIGINT", "n_skipped": "BIGINT",
              "n_thinned": "BIGINT", "builds": "BIGINT", "indexed_at": "DOUBLE"}
# What a user's statement may be: a query. WITH ... SELECT parses as SELECT.
READ_STATEMENTS = ("SELECT", "EXPLAIN")
# Nothing is downloaded at run time: a query naming an extension's function is refused, not fetched.
NO_EXTENSIONS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _shown(path: Any) -> str:
    """A path inside a one-line message: control characters escaped."""
    return visible(str(path), one_line=True)


def record_columns() -> dict[str, str]:
    """The ``records`` table's columns and DuckDB types, derived from the record schema."""
    cols = dict(KEYS)
    for name, spec in schema().fields.items():
        cols[name] = _DUCK_TYPES.get(spec.type, "JSON")
    for name in NUMBER_LISTS:
        cols[name] = "DOUBLE[]"
    cols[EXTRA] = "JSON"
    return cols


def _signature() -> str:
    return hashlib.sha256(json.dumps([INDEX_FORMAT, record_columns()]).encode()).hexdigest()[:16]


def _file_state(path: Path) -> list:
    """(name, size, mtime_ns, SHA-256 of the last 4 KiB): what tells a changed file."""
    st = path.stat()
    with path.open("rb") as fh:
        fh.seek(max(0, st.st_size - TAIL_BYTES))
        tail = hashlib.sha256(fh.read(TAIL_BYTES)).hexdigest()[:16]
    return [path.name, st.st_size, st.st_mtime_ns, tail]


def fingerprint(run_dir: Path) -> str:
    """The state of every file the index reads from ``run_dir``, as one string."""
    files = [p for p in [*RunDir(run_dir).record_files(), run_dir / INVOCATIONS] if p.is_file()]
    return json.dumps([_file_state(p) for p in files])


@dataclass
class UpdateStats:
    """What bringing the index up to date did, per run directory (the evidence that an unchanged
    directory is not re-read)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # run dir -> lines RunDir would skip too
    thinned: dict[str, int] = field(default_factory=dict)  # run dir -> records whose samples RunDir thins too

    def summary(self) -> str:
        return (f"index: {len(self.added)} run directories added, {len(self.updated)} updated, "
                f"{len(self.removed)} removed, {len(self.unchanged)} unchanged")


@dataclass
class QueryResult:
    """A query's answer: column names, DuckDB type names and the rows (the first ``max_rows``;
    ``capped``: the query returned more)."""

    columns: list[str]
    types: list[str]
    rows: list[tuple]
    capped: bool = False


class _Rows:
    """Rows for one table, buffered as JSON lines in a temporary file and loaded by DuckDB's JSON
    reader with the table's declared column types: a bulk load with no row-by-row INSERT and no
    pyarrow dependency."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str], path: Path):
        self.con, self.table, self.columns, self.path = con, table, columns, path
        self.fh = path.open("w", encoding="utf-8")
        self.size = 0
        self.longest = 0  # DuckDB's JSON reader holds buffers of about twice its maximum_object_size

    def add(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        self.fh.write(line)
        self.size += len(line)
        self.longest = max(self.longest, len(line.encode()))
        if self.size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        self.fh.close()
        if self.size:
            cols = ", ".join(self.columns)
            spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in self.columns.items()) + "}"
            self.con.execute(f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM read_json(?, "
                             f"format='newline_delimited', columns={spec}, "
                             f"maximum_object_size={max(MIN_OBJECT_BYTES, self.longest)})",
                             [str(self.path)])
        self.fh = self.path.open("w", encoding="utf-8")
        self.size = 0
        self.longest = 0

    def close(self) -> None:
        self.flush()
        self.fh.close()


def _split(rec: dict[str, Any], typed: dict[str, str]) -> dict[str, Any]:
    """A record as a row of typed columns; what no typed column holds goes to ``extra``."""
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in rec.items():
        kind = typed.get(name)
        if kind is None or name in KEYS or name == EXTRA:
            extra[name] = value
        elif kind == "BIGINT" and isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            extra[name] = value
        elif kind == "DOUBLE[]" and not (isinstance(value, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) <= 1e308 for x in value)):
            extra[name] = value
        elif kind == "DOUBLE" and isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e308:
            extra[name] = value
        else:
            row[name] = value
    if extra:
        row[EXTRA] = extra
    return row


class ResultsDB:
    """The run directories as DuckDB views, over a saved index (``index``) or a temporary one.

    Use as a context manager; ``stats`` says what the update did, ``query`` runs the user's SQL,
    ``record_dicts`` gives the records a WHERE selects as RunDir reads them."""

    def __init__(self, run_dirs: list[Path], index: Path | None = None, rebuild: bool = False,
                 limits: QueryLimits | None = None):
        self.run_dirs = [Path(p) for p in run_dirs]
        self.keys = [str(p.resolve()) for p in self.run_dirs]
        self.index = Path(index) if index is not None else None
        self.rebuild = rebuild
        self.limits = limits or QueryLimits()
        self.stats = UpdateStats()
        self.con: duckdb.DuckDBPyConnection | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._previous_sigterm: Any = None
        self._stuck = False  # a call of the user's SQL never returned: the connection is still in use

    def __enter__(self) -> "ResultsDB":
        self.open()
        return self

    def __exit__(self, _type: Any, exc: BaseException | None, _tb: Any) -> None:
        self.close()
        if isinstance(exc, SignalStop):  # the copy is gone: leave now (see SignalStop)
            exc.exit_now()

    def open(self) -> UpdateStats:
        if threading.current_thread() is threading.main_thread():
            # SIGTERM's default kills the process where it stands and leaves the bench-query-*
            # directory (a copy of the records) behind: an exception unwinds through close().
            self._previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
        try:
            self._tmp = tempfile.TemporaryDirectory(prefix="bench-query-")
            path = self._index_path()
            self.stats = self._update(path)
            self.con = self._reader(path)
        except BaseException as exc:
            self.close()
            if isinstance(exc, SignalStop):
                exc.exit_now()
            raise
        return self.stats

    def close(self) -> None:
        if self.con is not None and not self._stuck:
            self.con.close()
        self.con = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    # --- the index file -------------------------------------------------------------------------

    def _index_path(self) -> Path:
        assert self._tmp is not None
        if self.index is None:
            return Path(self._tmp.name) / "index.duckdb"
        path = check_output_file(self.index, "--index", ours=self._is_index)  # bench's one output-path rule
        parent = path.resolve().parent
        if str(parent) in self.keys:
            raise BadInput(f"--index '{_shown(path)}' is inside a run directory; bench query never writes "
                           "into one (put the index beside the runs)")
        if not parent.is_dir():
            raise BadInput(f"--index '{_shown(path)}': directory '{_shown(parent)}' does not exist")
        return path

    def _is_index(self, path: Path) -> bool:
        """An index bench made (a _meta table): the only existing file --index may rebuild."""
        try:
            con = self._connect(path, read_only=True) if is_duckdb_file(path) else None
        except BadInput:
            return False
        if con is None:
            return False
        with con:
            return "_meta" in {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}

    def _connect(self, path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the index; a file that is not a DuckDB database, or one another process is
        writing, is a one-line error (retried for a while in the second case)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only, config={**NO_EXTENSIONS, **self._config()})
            except duckdb.IOException as exc:
                text = first_line(exc)
                if "lock" not in text.lower() or time.monotonic() > deadline:
                    raise BadInput(f"cannot open index '{_shown(path)}': {text}") from None
                time.sleep(0.2)
            except duckdb.Error as exc:
                raise BadInput(f"cannot open index '{_shown(path)}': {first_line(exc)}") from None

    def _config(self) -> dict[str, Any]:
        """Every connection's bounds: bench's limits, spilling into this command's own directory."""
        assert self._tmp is not None
        spill = Path(self._tmp.name) / "spill"
        spill.mkdir(exist_ok=True)
        return self.limits.duckdb_config(str(spill))

    @staticmethod
    def _known(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, int, int, int]] | None:
        """run dir -> (fingerprint, lines skipped, builds, records thinned) of an index of the current
        format;
        None when the file holds no index or one of another format."""
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}
        if not {"_meta", "_runs", "_records", "_invocations"} <= tables:
            return None
        row = con.execute("SELECT value FROM _meta WHERE key = 'signature'").fetchone()
        if row is None or row[0] != _signature():
            return None
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in
                con.execute("SELECT run_dir, fingerprint, n_skipped, builds, n_thinned FROM _runs").fetchall()}

    def _update(self, path: Path) -> UpdateStats:
        """Bring the index up to date for this command's run directories (see the module doc)."""
        prints = {key: fingerprint(Path(key)) for key in self.keys}
        if path.exists() and not self.rebuild:
            con = self._connect(path, read_only=True)
            try:
                known = self._known(con)
            finally:
                con.close()
            if known is not None and all(k in known and known[k][0] == prints[k] for k in self.keys) \
                    and all(Path(k).is_dir() for k in known):
                return UpdateStats(unchanged=list(self.keys), skipped={k: known[k][1] for k in self.keys},
                                   thinned={k: known[k][3] for k in self.keys})
        con = self._connect(path, read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            known = None if self.rebuild else self._known(con)
            if known is None:
                self._create(con)
                known = {}
            stats = UpdateStats()
            stats.removed = [k for k in known if not Path(k).is_dir()]
            stale = [k for k in self.keys if k not in known or known[k][0] != prints[k]]
            for key in self.keys:
                (stats.updated if key in known and key in stale else stats.added if key in stale
                 else stats.unchanged).append(key)
                if key not in stale:
                    stats.skipped[key], stats.thinned[key] = known[key][1], known[key][3]
            gone = [*stats.removed, *stale]
            if gone:
                con.execute("CREATE TEMP TABLE _gone (run_dir VARCHAR)")
                con.executemany("INSERT INTO _gone VALUES (?)", [[k] for k in gone])
                for table in ("_records", "_invocations", "_runs"):
                    con.execute(f"DELETE FROM {table} WHERE run_dir IN (SELECT run_dir FROM _gone)")
            self._ingest(con, stale, prints, known, stats)
            con.execute("COMMIT")
        except BaseException as exc:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed COMMIT has rolled back already: the first error is the one to say
            if isinstance(exc, (duckdb.Error, OSError)):  # a full disk or TMPDIR, a quota
                raise BadInput(f"cannot write the index '{_shown(path)}': {first_line(exc)}") from None
            raise
        finally:
            con.close()
        return stats

    @staticmethod
    def _create(con: duckdb.DuckDBPyConnection) -> None:
        for table in ("_meta", "_runs", "_records", "_invocations"):
            con.execute(f"DROP TABLE IF EXISTS {table}")

        def ddl(cols: dict[str, str]) -> str:
            return ", ".join(f'"{k}" {v}' for k, v in cols.items())

        con.execute("CREATE TABLE _meta (key VARCHAR, value VARCHAR)")
        con.execute("INSERT INTO _meta VALUES ('signature', ?)", [_signature()])
        con.execute(f"CREATE TABLE _runs ({ddl(RUNS_TABLE)})")
        con.execute(f"CREATE TABLE _records ({ddl(record_columns())})")
        con.execute(f"CREATE TABLE _invocations ({ddl(INVOCATION_TABLE)})")

    def _ingest(self, con: duckdb.DuckDBPyConnection, stale: list[str], prints: dict[str, str],
                known: dict[str, tuple[str, int, int, int]], stats: UpdateStats) -> None:
        """Read each stale run directory with bench's reader and load its rows."""
        if not stale:
            return
        typed = record_columns()
        with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
            records = _Rows(con, "_records", typed, Path(tmp) / "records.jsonl")
            invocations = _Rows(con, "_invocations", INVOCATION_TABLE, Path(tmp) / "invocations.jsonl")
            runs = _Rows(con, "_runs", RUNS_TABLE, Path(tmp) / "runs.jsonl")
            for key in stale:
                n, skipped, thinned = 0, 0, 0
                for path in RunDir(Path(key)).record_files():
                    read = read_records(path)
                    skipped += read.skipped
                    thinned += read.thinned
                    for rec in read.records:
                        records.add({**_split(rec, typed), "run_dir": key, "source_file": path.name,
                                     "record_index": n})
                        n += 1
                for line, entry in enumerate(_invocation_lines(Path(key) / INVOCATIONS)):
                    invocations.add({"run_dir": key, "line": line, "entry": entry})
                stats.skipped[key], stats.thinned[key] = skipped, thinned
                runs.add({"run_dir": key, "fingerprint": prints[key], "n_records": n, "n_skipped": skipped,
                          "n_thinned": thinned, "builds": known.get(key, ("", 0, 0, 0))[2] + 1,
                          "indexed_at": time.time()})
            for rows in (records, invocations, runs):
                rows.close()

    def _reader(self, path: Path) -> duckdb.DuckDBPyConnection:
        """A read-only connection with the views over this command's run directories; no file
        access and a locked configuration from here on."""
        con = self._connect(path, read_only=True)
        con.execute("CREATE TEMP TABLE _selected (run_dir VARCHAR, run_order BIGINT)")
        con.executemany("INSERT INTO _selected VALUES (?, ?)", [[k, i] for i, k in enumerate(self.keys)])
        con.execute("CREATE TEMP VIEW records AS SELECT r.* FROM _records r JOIN _selected s USING (run_dir)")
        keys = ", ".join(f"entry->>'{k}' AS \"{k}\"" for k in INVOCATION_KEYS)
        con.execute(f"CREATE TEMP VIEW invocations AS SELECT i.run_dir, i.line, {keys}, i.entry "
                    "FROM _invocations i JOIN _selected s USING (run_dir)")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    # --- reading --------------------------------------------------------------------------------

    def warnings(self) -> list[str]:
        """RunDir's lines for each run directory with lines it skips or samples it thins (so do the
        views)."""
        return [line for k in self.keys for line in
                read_warnings(_shown(k), self.stats.skipped.get(k, 0), self.stats.thinned.get(k, 0))]

    def _guard(self, what: str) -> QueryGuard:
        assert self.con is not None, "open() first"
        return QueryGuard(self.con, self.limits.timeout_s, what, self.limits.timeout)

    def _failed(self, what: str, exc: duckdb.Error) -> BadInput:
        """The one line for SQL that failed; past the memory limit it names bench's options (DuckDB's
        own advice, SET memory_limit, is refused on this connection)."""
        if isinstance(exc, duckdb.OutOfMemoryException):
            return BadInput(f"{what} failed: it needs more memory than --memory-limit {self.limits.memory_limit} "
                            f"(spilling at most --spill-limit {self.limits.spill_limit}); raise them or narrow the "
                            "query")
        return BadInput(f"{what} failed: {duck_message(exc)}")

    def query(self, sql: str, max_rows: int | None = None) -> QueryResult:
        """Run one read-only statement of the user's under the limits and the guard; at most
        ``max_rows`` rows are fetched (None: all). Bad SQL is a one-line BadInput."""
        assert self.con is not None, "open() first"
        con = self.con
        check_sql(con, sql)
        guard = self._guard("the query")

        def run() -> tuple[list, list[tuple]]:
            cur = con.execute(sql)  # DuckDB streams: rows are made as they are fetched
            desc = cur.description or []
            return desc, (cur.fetchall() if max_rows is None else cur.fetchmany(max_rows + 1))

        try:
            desc, rows = guard.call(run)
        except duckdb.Error as exc:
            raise self._failed("query", exc) from None
        finally:
            self._stuck = guard.stuck
        capped = max_rows is not None and len(rows) > max_rows
        return QueryResult([d[0] for d in desc], [str(d[1]) for d in desc], rows[:max_rows] if capped else rows,
                           capped)

    def record_dicts(self, where: str, chunk: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
        """(run dir, record) for each record ``where`` selects, in run-directory order and then
        RunDir.records() order; the record as RunDir reads it (NULL columns left out, JSON
        columns parsed, ``extra`` merged back). Fetched in chunks: memory follows the selection.
        One deadline (--timeout) covers the execution and every fetch."""
        assert self.con is not None, "open() first"
        sql = (f"SELECT r.* FROM records r JOIN _selected s USING (run_dir) WHERE (\n{where}\n)\n"
               "ORDER BY s.run_order, r.record_index")
        check_sql(self.con, sql, what="--where")
        con, guard = self.con, self._guard("--where")
        try:
            cur = guard.call(lambda: con.execute(sql))
        except duckdb.Error as exc:
            raise self._failed("--where", exc) from None
        finally:
            self._stuck = guard.stuck
        names = [d[0] for d in cur.description]
        json_cols = {n for n, t in record_columns().items() if t == "JSON"}
        while True:
            try:
                batch = guard.call(lambda: cur.fetchmany(chunk))
            except duckdb.Error as exc:  # an error at run time (a failed cast) surfaces while fetching
                raise self._failed("--where", exc) from None
            finally:
                self._stuck = guard.stuck
            if not batch:
                return
            for row in batch:
                yield row[0], _as_record(names, row, json_cols)


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM while the index is built or read: unwind (the temporary directory is removed), exit 143."""
    raise SignalStop(signum)


def _as_record(names: list[str], row: tuple, json_cols: set[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in zip(names, row):
        if value is None or name in KEYS:
            continue
        if name == EXTRA:
            extra = json.loads(value)
        else:
            rec[name] = json.loads(value) if name in json_cols else value
    rec.update(extra)
    return rec


def _invocation_lines(path: Path) -> Iterator[Any]:
    """The JSON objects of invocations.jsonl; a line that is not one is skipped."""
    if not path.is_file():
        return
    with path.open("rb") as fh:
        for raw in fh:
            try:
                entry = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if isinstance(entry, dict):
                yield entry


_EXTENSION = re.compile(r"(?:exists in the|requires the extension|the required extension) '?([A-Za-z0-9_]+)")


def duck_message(exc: BaseException) -> str:
    """DuckDB's error as one line a bench user can act on: never advice bench refuses (``SET ...``,
    ``INSTALL ...``), and an extension's name whole (DuckDB breaks that message mid-name)."""
    text = " ".join(str(exc).split())
    if "max_expression_depth" in text:
        return (text.split(" Use ", 1)[0] + " bench keeps DuckDB's limit: write the expression with fewer "
                "nested parentheses or operators")
    name = _EXTENSION.search(text)
    if name:
        return (f"this needs DuckDB's '{name.group(1)}' extension; bench query runs with DuckDB's built-in "
                "functions only and never installs or loads an extension")
    return first_line(exc, limit=500)


def check_sql(con: duckdb.DuckDBPyConnection, sql: str, what: str = "the query") -> None:
    """One statement, a query (SELECT, WITH ... SELECT, EXPLAIN); anything else is refused before
    it runs (the connection is read-only as well: see the module doc)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadInput(f"{what} is not valid SQL: {duck_message(exc)}") from None
    if len(statements) != 1:
        raise BadInput(f"{what} must be one SQL statement, not {len(statements)}")
    kind = statements[0].type.name
    if kind not in READ_STATEMENTS:
        raise BadInput(f"{what} must be a SELECT (or WITH ... SELECT); a {kind} statement is refused: "
                       "bench query only reads")
