"""The bounds a user's SQL runs under (``bench query``, ``bench report --where``), and the guard that
keeps them: DuckDB's own defaults are a memory limit of 80% of RAM and spilling up to 90% of the disk,
with no time limit, and a signal handler cannot run while the main thread is inside DuckDB (Ctrl-C
did nothing for 40 s and more).

- ``QueryLimits``: memory, spill, threads, time; the options that set them are declared once here
  (``limit_options``) and shown with their defaults in both commands' ``--help``.
- ``QueryGuard``: each DuckDB call of the user's SQL runs on a worker thread while the main thread
  waits in short joins, so SIGINT, SIGTERM and the deadline reach the connection through
  ``con.interrupt()`` (DuckDB's own, thread-safe cancel). Ctrl-C: exit 130 within a second;
  SIGTERM: exit 143; both after the caller's ``finally`` removed the temporary index; past
  ``--timeout``: one line naming the option, exit 2.
"""
from __future__ import annotations

import functools
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import click

from bench.errors import BadInput

T = TypeVar("T")
POLL_S = 0.05    # how often the waiting main thread looks at the deadline and for signals
GRACE_S = 2.0    # how long an interrupted DuckDB call may take to return before bench leaves it
MAX_TIMEOUT_S = 7 * 86400
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
MIN_MEMORY = 64 * 2**20  # DuckDB needs some room for any query; below this every query fails


def parse_size(text: str, flag: str, minimum: int = 0) -> int:
    """'2GB', '512MiB', '1.5GB' -> bytes (DuckDB's own units, so the text is passed on as given)."""
    match = _SIZE.match(str(text))
    if not match:
        raise BadInput(f"{flag} {text!r}: give a size with its unit, e.g. 2GB, 512MB or 1GiB")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < minimum:
        raise BadInput(f"{flag} {text!r} is below the least DuckDB can work in ({minimum // 2**20} MiB)")
    return size


def parse_duration(text: str, flag: str) -> float:
    """'60s', '2m', '1.5h', '90' (seconds) -> seconds, in (0, 7 days]."""
    match = _DURATION.match(str(text))
    if not match:
        raise BadInput(f"{flag} {text!r}: give a time, e.g. 60s, 5m or 1h")
    seconds = float(match.group(1)) * _SECONDS[(match.group(2) or "s").lower()]
    if not (0 < seconds <= MAX_TIMEOUT_S and math.isfinite(seconds)):
        raise BadInput(f"{flag} {text!r} must lie above 0 and at most 7 days")
    return seconds


@dataclass(frozen=True)
class QueryLimits:
    """What the user's SQL may take: DuckDB's memory_limit, max_temp_directory_size (spilling goes to
    bench's own temporary directory, removed afterwards), threads, and the wall time of the query."""

    memory_limit: str = "2GB"
    spill_limit: str = "4GB"
    threads: int = 2
    timeout: str = "60s"

    def __post_init__(self) -> None:
        parse_size(self.memory_limit, "--memory-limit", MIN_MEMORY)
        parse_size(self.spill_limit, "--spill-limit")
        parse_duration(self.timeout, "--timeout")

    @property
    def timeout_s(self) -> float:
        return parse_duration(self.timeout, "--timeout")

    def duckdb_config(self, temp_directory: str) -> dict[str, Any]:
        """The connection's configuration (``duckdb.connect(config=...)``)."""
        return {"memory_limit": str(parse_size(self.memory_limit, "--memory-limit", MIN_MEMORY)) + "B",
                "max_temp_directory_size": str(parse_size(self.spill_limit, "--spill-limit")) + "B",
                "threads": self.threads, "temp_directory": temp_directory}


DEFAULTS = QueryLimits()


def limit_options(f: Callable) -> Callable:
    """--memory-limit, --spill-limit, --threads and --timeout, handed to the command as one
    ``limits: QueryLimits`` argument (declared once for ``bench query`` and ``bench report``)."""

    @functools.wraps(f)
    def command(*args: Any, memory_limit: str, spill_limit: str, threads: int, timeout: str, **kwargs: Any) -> Any:
        return f(*args, limits=QueryLimits(memory_limit, spill_limit, threads, timeout), **kwargs)

    options = [
        click.option("--memory-limit", default=DEFAULTS.memory_limit, show_default=True, metavar="SIZE",
                     help="DuckDB's memory limit for the SQL (e.g. 512MB, 4GB); past it, it spills to a "
                          "temporary directory, then fails with one line."),
        click.option("--spill-limit", default=DEFAULTS.spill_limit, show_default=True, metavar="SIZE",
                     help="The most the SQL may spill to disk (bench's own temporary directory, removed "
                          "afterwards); 0B: never spill."),
        click.option("--threads", type=click.IntRange(1, 256), default=DEFAULTS.threads, show_default=True,
                     help="DuckDB threads for the SQL."),
        click.option("--timeout", default=DEFAULTS.timeout, show_default=True, metavar="TIME",
                     help="The longest the SQL may run (60s, 5m, 1h; reading run directories into the index "
                          "not counted); past it bench stops it, exit 2. Ctrl-C stops it at once."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


class SignalStop(BaseException):
    """Ctrl-C or SIGTERM stopped the SQL. ``ResultsDB`` removes its temporary directory as this
    unwinds, then calls ``exit_now``: one line, exit 128 + the signal, at once. os._exit skips the
    interpreter's teardown, which takes seconds once torch is imported (every bench command imports
    it) and would break "stops within a second"; nothing of bench's is left to clean by then."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def exit_now(self) -> None:
        sys.stdout.flush()
        name = signal.Signals(self.signum).name
        print("Interrupted." if self.signum == signal.SIGINT else f"bench: terminated ({name})",
              file=sys.stderr, flush=True)
        os._exit(128 + self.signum)


class QueryGuard:
    """Runs a connection's calls so that Ctrl-C, SIGTERM and the deadline interrupt them (see the
    module doc). ``what`` names the SQL in the timeout's message (the query, --where)."""

    def __init__(self, con: Any, timeout_s: float, what: str, timeout_text: str):
        self.con = con
        self.deadline = time.monotonic() + timeout_s
        self.what = what
        self.timeout_text = timeout_text
        self.stuck = False  # a call that did not return after its interrupt: the connection is in use

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` (a DuckDB call on ``con``) on a worker thread; its exception re-raised here."""
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # handed to the main thread whatever it is
                outcome["error"] = exc

        stop: list[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            stop.append(signum)
            self.con.interrupt()

        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        worker = threading.Thread(target=work, name="bench-sql", daemon=True)
        timed_out, stopped_at = False, None
        try:
            worker.start()
            while worker.is_alive():
                worker.join(POLL_S)
                now = time.monotonic()
                if not timed_out and now > self.deadline:
                    timed_out, stopped_at = True, stopped_at or now
                    self.con.interrupt()
                if stop and stopped_at is None:
                    stopped_at = now
                if stopped_at is not None and now - stopped_at > GRACE_S:
                    self.stuck = True  # DuckDB did not stop: leave the daemon thread, exit anyway
                    break
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if stop:
            raise SignalStop(stop[0])
        if timed_out:
            raise BadInput(f"{self.what} ran past --timeout {self.timeout_text} and was stopped; raise --timeout "
                           "or narrow the query")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
