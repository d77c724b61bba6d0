"""`bench report`: the command line over render_report."""
from __future__ import annotations

from pathlib import Path

import click

from bench.report.render import FORMATS, render_report
from bench.report.sanitize import visible


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="File to write [default: reports/<first run dir name>.<format>].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="html (self-contained page), csv or md (the tables) [default: from --out, else html].")
def report_command(run_dirs: tuple[Path, ...], out: Path | None, fmt: str | None) -> None:
    """Render a report comparing one or more run directories side by side."""
    if fmt is None:
        suffix = out.suffix.lstrip(".").lower() if out is not None else ""
        fmt = suffix if suffix in FORMATS else "html"
    if out is None:
        out = Path("reports") / f"{Path(run_dirs[0]).resolve().name}.{fmt}"
    click.echo(visible(str(render_report(list(run_dirs), out, fmt))))
