"""The one error type for bad user input (a one-line message and exit code 2), and the one way to
turn any exception into the single line a user or a record is shown."""
import click


class BadInput(click.ClickException):
    """Raised for unknown models, bad resolutions, missing data, broken checkpoints or configs.

    click prints ``Error: <message>`` on one line and exits with ``exit_code``.
    """

    exit_code = 2


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
