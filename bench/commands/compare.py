"""``bench compare BASE NEW``: did this change make it slower? Cell by cell, with an interval,
a q-value and a verdict; exit 1 when any cell is slower (a CI gate), 0 otherwise, 2 on bad input.
The statistics are bench.stats's, the same ones ``bench report`` uses for runs side by side."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click

from bench import stats
from bench.errors import SLOWER_EXIT, BadInput
from bench.outputs import print_out, print_rich
from bench.record import RunDir, upgrade
from bench.sanitize import md_text, terminal, visible


def _records(path: str, role: str) -> list[dict]:
    run = Path(path)
    if not run.is_dir():
        why = "is not a directory" if run.exists() else "does not exist"
        raise BadInput(f"{role} run directory {path} {why}; pass a directory written by `bench run --out DIR`")
    records = [upgrade(r) for r in RunDir(run).records() if isinstance(r, dict)]
    if not any(r.get("status") == "ok" for r in records):
        raise BadInput(f"{role} run directory {path} holds no finished (ok) record")
    return records


def _devices(records: list[dict]) -> set[str]:
    return {str(r.get("device_name")) for r in records if r.get("status") == "ok" and r.get("device_name")}


def _threshold(given: float | None, records: list[dict]) -> float:
    if given is not None:
        if not (0 < given < 1 and math.isfinite(given)):
            raise BadInput(f"--threshold {given!r} must lie strictly between 0 and 1 (0.03 = 3%)")
        return given
    return stats.records_threshold(records)


@click.command("compare")
@click.argument("base")
@click.argument("new")
@click.option("--metric", type=click.Choice(stats.METRICS), default="latency", show_default=True,
              help="latency: median step; throughput: sustained images/s; peak_mem: peak memory "
                   "(exact on a GPU allocator, within a measured tolerance on CPU RSS).")
@click.option("--threshold", type=float, default=None,
              help="The change that matters, as a fraction [default: 0.03 on CPU, 0.02 on CUDA].")
@click.option("--format", "fmt", type=click.Choice(("table", "md")), default="table", show_default=True,
              help="md: a Markdown table for a pull-request comment.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per matched cell.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the bootstraps.")
@click.option("--cross-device", is_flag=True, help="Compare runs made on different devices (a comparison of machines).")
@click.option("--calibration", default=None,
              help="This device's run-to-run noise: a file written by bench calibrate, or a folder of them "
                   "[default: results/calibration, and calibration/ beside BASE].")
@click.option("--within-run", is_flag=True,
              help="Take each run's own spread as the whole noise (two copies of one run; a device known to be "
                   "quiet): the old within-run interval and Mann-Whitney p, said in the basis.")
@click.option("--change", type=float, default=None,
              help="The change whose price (runs per side) inconclusive cells state [default: the threshold].")
def compare_command(base: str, new: str, metric: str, threshold: float | None, fmt: str, as_json: bool, seed: int,
                    cross_device: bool, calibration: str | None, within_run: bool, change: float | None) -> None:
    """Compare run NEW against run BASE, cell by cell (task, model, res, mode, batch, settings).

    Verdicts: faster / slower (q < 0.05 and the 95% CI of the ratio wholly beyond +-threshold),
    same (the CI wholly inside +-threshold), inconclusive (neither; says what would settle it).
    The interval holds the noise between runs: this device's calibration (bench calibrate), or
    the spread between each side's processes; a run of one process with neither is inconclusive.

    Exit codes: 0 no cell slower, 1 a cell slower (or more memory), 2 bad input, 3 internal
    error, 130 interrupted (docs/exit-codes.md)."""
    if Path(base).resolve() == Path(new).resolve():
        raise BadInput(f"BASE and NEW are the same run directory ({visible(base, one_line=True)}): a run against "
                       "itself says nothing (and no amount of samples would); compare two runs")
    base_records, new_records = _records(base, "base"), _records(new, "new")
    t = _threshold(threshold, base_records + new_records)
    if change is not None and not (0 < change < 10 and math.isfinite(change)):
        raise BadInput(f"--change {change!r} must lie strictly between 0 and 10 (0.10 = 10%)")
    cal, cal_note = _calibration(base, new, calibration)
    db, dn = _devices(base_records), _devices(new_records)
    if db != dn and not cross_device:
        raise BadInput(f"the runs were measured on different devices ({', '.join(sorted(db)) or '?'} vs "
                       f"{', '.join(sorted(dn)) or '?'}); pass --cross-device to compare the machines")
    gpu = any(str(r.get("device") or "").startswith("cuda") for r in base_records + new_records)
    tolerance = 0.0 if gpu else stats.CPU_RSS_TOLERANCE
    from bench.measure.calibration import apart  # runs of different sessions (days, machine instances)

    result = stats.compare_records(base_records, new_records, metric, t, seed, tolerance,
                                   cal.noise() if cal else None, within_run, change, apart(base, new))
    code = SLOWER_EXIT if result.regressions else 0
    # A reader that stops early (`| head`) ends the output, not the verdict: the exit code stays it.
    if as_json:
        print_out(json.dumps([_json_row(c, metric) for c in _sorted(result)], indent=2))
    else:
        header = _header(result, base, new, db != dn, tolerance) + ("" if within_run else " " + cal_note)
        header = md_text(header) if fmt == "md" else header
        if print_out(header + "\n" + (_markdown(result) if fmt == "md" else ""), nl=fmt == "md") and fmt == "table":
            _print_table(result)
    for role, keys in (("base", result.only_base), ("new", result.only_new)):
        if keys:
            click.echo(f"only in the {role} run ({len(keys)}): {', '.join(visible(k, one_line=True) for k in keys)}",
                       err=True)
    if not result.cells:
        click.echo("no cell is in both runs (cells match by task, model, res, mode, batch and settings)", err=True)
    raise SystemExit(code)


def _calibration(base: str, new: str, given: str | None):
    """(the calibration of the machine both runs were measured on, or None; a sentence saying which)."""
    from bench.measure.calibration import for_pair  # shared with bench history

    return for_pair(base, new, given)


def _sorted(result: stats.RunComparison) -> list[stats.CellComparison]:
    """Largest change first: the cells that got worse at the top, then improvements, no samples last."""
    def change(c: stats.CellComparison) -> float:
        r = c.comparison.ratio
        if not (r > 0):
            return -math.inf
        worse = r if stats.lower_is_better(result.metric) else 1 / r
        return worse
    return sorted(result.cells, key=change, reverse=True)


def _basis(result: stats.RunComparison) -> str:
    bases = sorted({c.comparison.basis for c in result.cells if c.comparison.verdict != "no samples"})
    return "; ".join(bases) or "no samples"


def _header(result: stats.RunComparison, base: str, new: str, machines: bool, tolerance: float) -> str:
    counts = {v: sum(c.comparison.verdict == v for c in result.cells)
              for v in (*stats.VERDICTS, "more", "less")}
    said = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    what = "a comparison of machines, " if machines else ""
    extra = f", CPU RSS tolerance +-{100 * tolerance:g}%" if result.metric == "peak_mem" and tolerance else ""
    new, base = visible(new, one_line=True), visible(base, one_line=True)
    return (f"bench compare: {new} against {base}: {what}{result.metric} new/base, threshold "
            f"+-{100 * result.threshold:g}%{extra}; {len(result.cells)} cells: {said or 'none'}. "
            f"Intervals: {_basis(result)}.")


def _fmt(v: float | None, metric: str) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.1f}" if metric != "throughput" else f"{v:.2f}"


def _row(c: stats.CellComparison, metric: str) -> list[str]:
    cmp = c.comparison
    finite = all(math.isfinite(x) for x in cmp.ci)
    ci = f"[{cmp.ci[0]:.3f}, {cmp.ci[1]:.3f}]" if finite and cmp.verdict != "no samples" else "-"
    q = "-" if cmp.q is None else f"{cmp.q:.2g}"
    ratio = "-" if not math.isfinite(cmp.ratio) else f"{cmp.ratio:.3f}"
    return [c.cell_key, _fmt(c.base, metric), _fmt(c.new, metric), ratio, ci, q, cmp.verdict, cmp.needed or ""]


COLUMNS = ("cell", "base", "new", "ratio", "95% CI", "q", "verdict", "to settle it")
UNITS = {"latency": "ms", "throughput": "img/s", "peak_mem": "MB"}


def _print_table(result: stats.RunComparison) -> None:
    """The rich table; every cell shown as text (bench.sanitize.terminal), never as markup or a
    terminal escape: a cell key may hold "[/]", "[link=...]" or ESC."""
    from rich.table import Table

    colours = {"slower": "red", "more": "red", "faster": "green", "less": "green", "same": "cyan"}
    table = Table()
    for col in COLUMNS:
        unit = f" ({UNITS[result.metric]})" if col in ("base", "new") else ""
        table.add_column(col + unit, justify="left" if col in ("cell", "verdict", "to settle it") else "right")
    for c in _sorted(result):
        row = [terminal(cell) for cell in _row(c, result.metric)]
        colour = colours.get(c.comparison.verdict)
        row[6] = f"[{colour}]{row[6]}[/]" if colour else row[6]
        table.add_row(*row)
    print_rich(table, width=200)


def _markdown(result: stats.RunComparison) -> str:
    unit = UNITS[result.metric]
    head = [f"{col} ({unit})" if col in ("base", "new") else col for col in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in _sorted(result):
        row = [md_text(cell) for cell in _row(c, result.metric)]  # escapes, links and HTML neutralised
        row[6] = f"**{row[6]}**" if row[6] in stats.REGRESSIONS else row[6]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _json_row(c: stats.CellComparison, metric: str) -> dict:
    cmp = c.comparison

    def num(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else v

    return {"cell_key": c.cell_key, "settings_id": c.settings_id, "metric": metric,
            "base_ms": num(c.base_ms), "new_ms": num(c.new_ms), "base": num(c.base), "new": num(c.new),
            "ratio": num(cmp.ratio), "ci": [num(cmp.ci[0]), num(cmp.ci[1])], "p": cmp.p, "q": cmp.q,
            "verdict": cmp.verdict, "basis": cmp.basis, "needed": cmp.needed}
