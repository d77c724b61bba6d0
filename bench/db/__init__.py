"""Many run directories as one table: DuckDB views ``records`` and ``invocations`` over an index
built from the run directories with bench's own reader (bench.record), so SQL sees exactly the
records ``RunDir.records()`` returns. See bench/db/index.py."""
from bench.db.index import QueryResult, ResultsDB, UpdateStats

__all__ = ["QueryResult", "ResultsDB", "UpdateStats"]
