"""`bench report`: the command line over render_report."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from bench.errors import BadInput
from bench.report.formats import FORMATS
from bench.report.sanitize import visible


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="File to write [default: reports/<first run dir name>.<format>].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="html (self-contained page), csv or md (the tables) [default: from --out, else html].")
@click.option("--where", default=None, metavar="SQL",
              help="Only the records this SQL condition selects (over `bench query`'s records view), "
                   "e.g. \"device_name LIKE '%H100%' AND res = '800'\".")
@click.option("--index", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="With --where: a saved index to filter with (see `bench query --help`) [default: none].")
def report_command(run_dirs: tuple[Path, ...], out: Path | None, fmt: str | None, where: str | None,
                   index: Path | None) -> None:
    """Render a report comparing one or more run directories side by side."""
    if index is not None and where is None:
        raise BadInput("--index is read only with --where; add --where SQL or leave --index out")
    if fmt is None:
        suffix = out.suffix.lstrip(".").lower() if out is not None else ""
        fmt = suffix if suffix in FORMATS else "html"
    if out is None:
        out = Path("reports") / f"{Path(run_dirs[0]).resolve().name}.{fmt}"
    if all(Path(p).is_dir() for p in run_dirs):
        # `bench report results/*`: folders holding runs stand for them; folders with none are passed over
        from bench.db import resolve_run_dirs

        run_dirs = tuple(resolve_run_dirs(run_dirs))
    # pandas, matplotlib and scipy: imported when a report is rendered, not at `bench` start-up
    from bench.report.load import load_runs, load_where
    from bench.report.render import render_report

    load = load_runs if where is None else partial(load_where, where=where, index=index)
    click.echo(visible(str(render_report(list(run_dirs), out, fmt, load))))
