"""The one error type for bad user input (a one-line message and exit code 2), the exit codes of
every command (docs/exit-codes.md), and the one way to turn any exception into the single line a
user or a record is shown."""
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
