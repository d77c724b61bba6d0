"""The ``bench`` console script, and how every bench process leaves.

Importing the command line (click, the commands, their imports) takes a moment; a Ctrl-C in it
would print a traceback of whatever module was loading. Here it is one line and exit 130, as
everywhere else (bench.cli.entry takes over once imported). Imports nothing of bench at module
level, so the window without a handler is the interpreter's own start-up.

Leaving (``leave``): once bench has decided its exit code, a late Ctrl-C must not change it. Two
ways it did (a serial CI run, 2026-12-05; about 1 in 3 tries of a Ctrl-C 0.8-2.8 s after start):
- the interpreter's teardown takes seconds once torch is imported, and Python restores the default
  SIGINT action early in it, so a Ctrl-C then killed the process by the signal (exit -2) even
  after it had printed its one-line error; SIGINT is ignored from the decision on (Python leaves
  an ignored signal ignored through its teardown);
- CPython 3.11 remembers a KeyboardInterrupt that left any nested PyRun_* call (pybind11's
  exec/eval during an import do that) and, at exit, kills itself with SIGINT even when the
  interrupt was caught and handled; so an interrupted run ends with os._exit(130) after the
  atexit handlers (temporary directories, logging), as bench.db.limits.SignalStop does.
"""
import os
import signal
import sys
import threading

INTERRUPTED_EXIT = 130  # bench.errors.INTERRUPTED_EXIT; not imported, to stay light until guarded


def leave(code: int, *, interrupted: bool = False) -> None:
    """Exit with ``code``, deaf to Ctrl-C from here on. ``interrupted``: the work was stopped by
    Ctrl-C and has unwound; exit at once with ``code`` (the module doc says why)."""
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


def entry() -> None:
    try:
        from bench.cli import entry as cli_entry
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        leave(INTERRUPTED_EXIT, interrupted=True)
    cli_entry()


if __name__ == "__main__":
    entry()
