"""The one error type for bad user input (a one-line message and exit code 2), the exit codes of
every command (docs/exit-codes.md), and the one way to turn any exception into the single line a
user or a record is shown."""
import os
import signal
import sys
import threading

import click

# The exit codes (docs/exit-codes.md). 99, a stop at a cell boundary, is bench.launch.signals's
# PREEMPTED_EXIT. Crashes have their own code so that a CI gate never reads one as "slower".
OK_EXIT = 0
SLOWER_EXIT = 1          # compare / history: a cell (the newest step) is slower or uses more; run: a write failed
BAD_INPUT_EXIT = 2       # BadInput, click's usage errors
INTERNAL_ERROR_EXIT = 3  # an unexpected exception: a bug of bench's (cli.entry prints one line)
INTERRUPTED_EXIT = 130   # Ctrl-C (128 + SIGINT), as a shell reports it
TRACEBACK_ENV = "BENCH_TRACEBACK"  # set to 1: an internal error prints its whole traceback too


class BadInput(click.ClickException):
    """Raised for unknown models, bad resolutions, missing data, broken checkpoints or configs.

    click prints ``Error: <message>`` on one line and exits with ``exit_code``.
    """

    exit_code = BAD_INPUT_EXIT


def first_line(exc: BaseException, limit: int = 300, with_type: bool = False) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters, so a multi-line error
    (a traceback-like torch message, a YAML parser's caret diagram) stays one line in a record or
    on the terminal. An exception without a message is named by its type instead, so the line is
    never empty; ``with_type`` prefixes the type ("OSError: disk full")."""
    text = str(exc).strip()
    line = text.splitlines()[0][:limit] if text else ""
    name = type(exc).__name__
    if with_type:
        return f"{name}: {line}" if line else name
    return line or name


# Leaving (``leave``): once bench has decided its exit code, a late Ctrl-C must not change it. Two
# ways it did (a serial CI run, 2026-12-05; about 1 in 3 tries of a Ctrl-C 0.8-2.8 s after start):
# - the interpreter's teardown takes seconds once torch is imported, and Python restores the default
#   SIGINT action early in it, so a Ctrl-C then killed the process by the signal (exit -2) even
#   after it had printed its one-line error; SIGINT is ignored from the decision on (Python leaves
#   an ignored signal ignored through its teardown);
# - CPython 3.11 remembers a KeyboardInterrupt that left any nested PyRun_* call (pybind11's
#   exec/eval during an import do that) and, at exit, kills itself with SIGINT even when the
#   interrupt was caught and handled; so an interrupted run ends with os._exit(130) after the
#   atexit handlers (temporary directories, logging), as bench.db.limits.SignalStop does.
def leave(code: int, *, interrupted: bool = False) -> None:
    """Exit with ``code``, deaf to Ctrl-C from here on. ``interrupted``: the work was stopped by
    Ctrl-C and has unwound; exit at once with ``code`` (the comment above says why)."""
    if threading.current_thread() is threading.main_thread():  # only there may a handler be set
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not interrupted:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()  # what a normal exit would run: weakref finalizers, logging's flush
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone away or a closed stream: nothing more to say
            pass
    os._exit(code)
