"""The ``bench`` console script.

Importing the command line (click, the commands, their imports) takes a moment; a Ctrl-C in it
would print a traceback of whatever module was loading. Here it is one line and exit 130, as
everywhere else (bench.cli.entry takes over once imported). Imports nothing of bench at module
level, so the window without a handler is the interpreter's own start-up. How every bench
process leaves, a late Ctrl-C included: bench.errors.leave.
"""
import sys

INTERRUPTED_EXIT = 130  # bench.errors.INTERRUPTED_EXIT; not imported, to stay light until guarded


def entry() -> None:
    try:
        from bench.cli import entry as cli_entry
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        from bench.errors import leave

        leave(INTERRUPTED_EXIT, interrupted=True)
    cli_entry()


if __name__ == "__main__":
    entry()
