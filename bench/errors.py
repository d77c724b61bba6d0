"""The one error type for bad user input: a one-line message and exit code 2."""
import click


class BadInput(click.ClickException):
    """Raised for unknown models, bad resolutions, missing data, broken checkpoints or configs.

    click prints ``Error: <message>`` on one line and exits with ``exit_code``.
    """

    exit_code = 2
