"""`bench report`: the command line over render_report."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from bench.db.limits import DEFAULTS, QueryLimits, limit_options
from bench.errors import BadInput
from bench.outputs import print_out, shown
from bench.report.formats import FORMATS
from bench.sanitize import visible


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
@limit_options
def report_command(run_dirs: tuple[Path, ...], out: Path | None, fmt: str | None, where: str | None,
                   index: Path | None, limits: QueryLimits) -> None:
    """Render a report comparing one or more run directories side by side."""
    if where is not None and not where.strip():
        raise BadInput("--where is empty; give an SQL condition, e.g. --where \"model = 'pvt_tiny'\", or leave it out")
    if index is not None and where is None:
        raise BadInput("--index is read only with --where; add --where SQL or leave --index out")
    if limits != DEFAULTS and where is None:
        raise BadInput("--memory-limit, --spill-limit, --threads and --timeout bound --where's SQL; add --where "
                       "SQL or leave them out")
    fmt = _format(out, fmt)
    if out is None:
        out = Path("reports") / f"{Path(run_dirs[0]).resolve().name}.{fmt}"
    if all(Path(p).is_dir() for p in run_dirs):
        # `bench report results/*`: folders holding runs stand for them; folders with none are passed over
        from bench.rundirs import resolve_run_dirs

        run_dirs = tuple(resolve_run_dirs(run_dirs))
    # pandas, matplotlib and scipy: imported when a report is rendered, not at `bench` start-up
    from bench.report.load import load_runs, load_where
    from bench.report.render import render_report

    load = load_runs if where is None else partial(load_where, where=where, index=index, limits=limits)
    print_out(visible(str(render_report(list(run_dirs), out, fmt, load)), one_line=True))


def _format(out: Path | None, fmt: str | None) -> str:
    """The format: --format, else --out's suffix. A suffix that names no format (r.pdf) without
    --format, or one that names another format than --format, is refused: the file would hold
    something else than its name says."""
    suffix = out.suffix.lstrip(".").lower() if out is not None else ""
    if fmt is None and out is not None and suffix not in FORMATS:
        raise BadInput(f"--out {shown(out)}: a report is written as {', '.join(FORMATS)}; end the name with "
                       f"{', '.join('.' + f for f in FORMATS)} or give --format")
    if fmt is not None and suffix in FORMATS and suffix != fmt:
        raise BadInput(f"--out {shown(out)} ends in .{suffix} but --format is {fmt}; make them agree")
    return fmt or suffix or "html"
