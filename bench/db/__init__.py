"""Many run directories as one table: DuckDB views ``records`` and ``invocations`` over an index
built from the run directories with bench's own reader (bench.record), so SQL sees exactly the
records ``RunDir.records()`` returns. See bench/db/index.py; the bounds the SQL runs under are in
bench/db/limits.py.

The names of ``index`` are loaded on first use: the commands import ``bench.db.limits`` for their
options at start-up, and that must not import duckdb (tests/e2e/test_lazy_imports.py)."""
from typing import Any

__all__ = ["QueryResult", "ResultsDB", "UpdateStats"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bench.db import index

        return getattr(index, name)
    raise AttributeError(f"module 'bench.db' has no attribute {name!r}")
