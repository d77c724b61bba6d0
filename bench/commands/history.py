"""``bench history RUN_DIR... --model M --res R --mode MODE``: one cell identity followed across
runs, in the order of time, git commit or torch version, as asv's graphs follow a benchmark.

Each point is one run directory's measurement of the identity (``cell_key`` and ``config_id``:
every setting and runtime fact that changes a measurement): its estimate (the median step, or the
mean of the repeat medians; or the sustained throughput) with a 95% interval from bench.stats's
two-level bootstrap, and its provenance (run directory, time, git commit, torch). Each step
between neighbours gets bench compare's verdict by bench compare's rule
(``stats.compare_between_runs`` with the machine's calibration, found as compare finds it,
``bench.measure.calibration.for_pair``; ``--within-run``: the old within-run ``compare_runs``),
the same thresholds, with Benjamini-Hochberg q-values over the steps of the series. Exit 1 when the newest step is
``slower``, 0 otherwise, 2 on bad input.

Several identities matching the filter (two batch sizes, two engines) are refused with one line
that lists them and the option that narrows: a verdict and an exit code belong to one series.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from bench import stats
from bench.errors import SLOWER_EXIT, BadInput
from bench.outputs import print_out, print_rich, shown
from bench.record import ENV, RunDir, cell_identity
from bench.sanitize import md_text, terminal, visible

METRICS = {"latency_ms": "latency", "throughput": "throughput"}  # --metric -> bench.stats's metric
UNITS = {"latency_ms": "ms", "throughput": "img/s"}
BY = ("time", "commit", "torch")
PLOT_SUFFIXES = (".png", ".svg", ".html")
# Fields that tell matching identities apart, with the option that picks one (None: --config-id).
DISTINGUISHING = (("batch", "--batch"), ("engine", "--engine"), ("zero", None), ("dtype", "--dtype"),
                  ("precision", "--precision"), ("task", "--task"), ("device_name", "--device-name"),
                  ("world_size", None), ("threads", None), ("channels_last", None), ("compile", None))


@dataclass(frozen=True)
class Filter:
    """What the user asked for; None: any."""

    model: str
    res: tuple[int, int]
    mode: str
    batch: int | None = None
    engine: str | None = None
    dtype: str | None = None
    precision: str | None = None
    task: str | None = None
    device_name: str | None = None
    config_id: str | None = None

    def matches(self, r: dict) -> bool:
        if r.get("status") != "ok" or r.get("model") != self.model or r.get("mode") != self.mode:
            return False
        if _record_hw(r) != self.res:
            return False
        wanted = {"batch": self.batch, "engine": self.engine, "dtype": self.dtype, "precision": self.precision,
                  "task": self.task, "device_name": self.device_name, "config_id": self.config_id}
        return all(v is None or r.get(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class Provenance:
    """Where a point comes from: its invocation's line in invocations.jsonl (or env.json)."""

    git_commit: str | None = None
    git_dirty: bool | None = None
    torch: str | None = None


@dataclass(frozen=True)
class Match:
    """The records of one cell identity in one run directory, as ``_load_points`` reads them."""

    run_dir: str
    identity: tuple[str, str]   # (cell_key, config_id)
    records: list[dict]
    provenance: Provenance


@dataclass(frozen=True)
class Point:
    run_dir: str
    timestamp: str              # the latest ok record's (ISO 8601)
    provenance: Provenance
    timings: stats.Timings | None
    estimate: float | None      # the metric's figure (None: a record from before samples were kept)
    ci: tuple[float, float]
    samples: int
    processes: tuple[str, ...] = ()  # the process (invocation) of each repeat (stats.repeat_processes)

    @property
    def commit_label(self) -> str:
        c = self.provenance.git_commit
        return "?" if not c else c[:10] + ("-dirty" if self.provenance.git_dirty else "")


@dataclass(frozen=True)
class History:
    identity: tuple[str, str]
    metric: str                 # --metric's name (latency_ms, throughput)
    threshold: float
    by: str
    points: list[Point]
    steps: list[stats.Comparison | None]  # steps[i]: point i against point i-1; None for the first
    notes: list[str | None] = field(default_factory=list)  # notes[i]: which calibration step i used

    @property
    def newest_slower(self) -> bool:
        last = self.steps[-1] if self.steps else None
        return last is not None and last.verdict in stats.REGRESSIONS


# --------------------------------------------------------------------------- reading
def _record_hw(r: dict) -> tuple[int, int] | None:
    """(height, width) of a record: its height/width fields, else its res label ('224', '512x640')."""
    h, w = r.get("height"), r.get("width")
    if isinstance(h, int) and not isinstance(h, bool):
        return h, w if isinstance(w, int) and not isinstance(w, bool) else h
    try:
        sides = [int(s) for s in str(r.get("res")).lower().split("x")]
    except ValueError:
        return None
    return (sides[0], sides[-1]) if len(sides) in (1, 2) else None


def _provenances(path: Path) -> tuple[dict[str, Provenance], Provenance]:
    """Each invocation's provenance by its id, and env.json's (the run's first) as a fallback."""
    def of(d: Any) -> Provenance:
        if not isinstance(d, dict):
            return Provenance()
        torch = d.get("torch") or (d.get("packages") or {}).get("torch")
        commit, dirty = d.get("git_commit"), d.get("git_dirty")
        return Provenance(commit if isinstance(commit, str) else None, dirty if isinstance(dirty, bool) else None,
                          str(torch) if torch else None)

    by_id = {invocation: of(d) for invocation, d in RunDir(path).invocation_entries().items()}
    env = Provenance()
    if (path / ENV).is_file():
        try:
            env = of(json.loads((path / ENV).read_text()))
        except (OSError, ValueError):
            pass
    return by_id, env


def _load_points(paths: list[str], flt: Filter) -> list[Match]:
    """Every (run directory, cell identity) whose ok records match the filter. The one place that
    reads run directories (bench.record.RunDir), so that another reader can replace it."""
    out: list[Match] = []
    from bench.rundirs import resolve_run_dirs  # results/*: runs, folders of runs; others passed over

    runs = [RunDir(path) for path in resolve_run_dirs(paths)]
    for run in runs:
        p, path = str(run.path), run.path
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in run.records():
            ident = cell_identity(r)
            if ident is not None and flt.matches(r):
                groups.setdefault(ident, []).append(r)
        if not groups:
            continue
        by_id, env = _provenances(path)
        for ident, records in groups.items():
            latest = max(records, key=lambda r: str(r.get("timestamp") or ""))
            prov = by_id.get(str(latest.get("invocation")), env)
            out.append(Match(str(p), ident, records, prov))
    return out


# --------------------------------------------------------------------------- the series
def _one_identity(matches: list[Match], flt: Filter, n_runs: int) -> tuple[str, str]:
    """The single identity the filter selects, or a one-line refusal naming them and what narrows."""
    what = f"--model {flt.model} --res {flt.res[0]}" + (f"x{flt.res[1]}" if flt.res[0] != flt.res[1] else "")
    if not matches:
        raise BadInput(f"no finished (ok) record matches {what} --mode {flt.mode} (and the narrowing options) "
                       f"in {n_runs} run director{'y' if n_runs == 1 else 'ies'}")
    idents: dict[tuple[str, str], dict] = {}
    for m in matches:
        idents.setdefault(m.identity, m.records[-1])
    if len(idents) == 1:
        return next(iter(idents))
    fields = [(k, opt) for k, opt in DISTINGUISHING if len({json.dumps(r.get(k)) for r in idents.values()}) > 1]
    described = []
    for (key, cid), r in sorted(idents.items()):
        parts = " ".join(f"{k}={r.get(k)}" for k, _ in fields) or key
        described.append(f"{cid} ({parts})")
    options = sorted({opt for _, opt in fields if opt}) or ["--config-id"]
    raise BadInput(f"{len(idents)} cell identities match {what} --mode {flt.mode}: {'; '.join(described)}; "
                   f"narrow with {' or '.join(options)} (or --config-id ID)")


def _torch_key(version: str | None) -> tuple:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(version or ""))
    except InvalidVersion:
        return (1, str(version))  # unknown or unparsable versions last


def _ordered(points: list[Point], by: str) -> list[Point]:
    """Time order; by commit: commits in the order of their first point, runs of one commit in
    time order (the repository's graph is not at hand: time stands in for it); by torch: version
    order, then time."""
    timed = sorted(points, key=lambda p: p.timestamp)
    if by == "commit":
        first: dict[str, int] = {}
        for i, p in enumerate(timed):
            first.setdefault(p.commit_label, i)
        return sorted(timed, key=lambda p: first[p.commit_label])  # stable: time within a commit
    if by == "torch":
        return sorted(timed, key=lambda p: _torch_key(p.provenance.torch))
    return timed


def build_history(matches: list[Match], identity: tuple[str, str], metric: str, by: str,
                  threshold: float | None, seed: int = 0, calibration: str | None = None,
                  within_run: bool = False) -> History:
    """The points of one identity, ordered, and each step's verdict by bench compare's rule
    (compare_between_runs with the pair's calibration; compare_runs with ``within_run``), q over the steps."""
    m = METRICS[metric]
    points = []
    for match in (x for x in matches if x.identity == identity):
        t = stats.Timings.from_records(match.records)
        ci = stats.estimate_ci(t, m, seed) if t else (math.nan, math.nan)
        latest = max(match.records, key=lambda r: str(r.get("timestamp") or ""))
        estimate = t.estimate(m) if t else _recorded(latest, metric)
        points.append(Point(match.run_dir, str(latest.get("timestamp") or ""), match.provenance, t, estimate, ci,
                            sum(len(r) for r in t.repeats) if t else 0, stats.repeat_processes(match.records)))
    points = _ordered(points, by)
    records = [r for x in matches if x.identity == identity for r in x.records]
    from bench.commands.compare import _threshold  # the same threshold rule (and check) as bench compare

    t = _threshold(threshold, records)
    raw: list[stats.Comparison] = []
    notes: list[str | None] = [None] if points else []
    for prev, cur in zip(points, points[1:]):
        if prev.timings is None or cur.timings is None:
            raw.append(stats.Comparison.no_samples(m))
            notes.append(None)
        elif within_run:
            raw.append(stats.compare_runs(prev.timings, cur.timings, m, t, seed))
            notes.append(None)
        else:
            from bench.measure.calibration import apart, for_pair  # the one calibration rule of compare and history

            cal, note = for_pair(prev.run_dir, cur.run_dir, calibration)
            raw.append(stats.compare_between_runs(prev.timings, cur.timings, m, t, cal.noise() if cal else None,
                                                  prev.processes, cur.processes, seed,
                                                  apart=apart(prev.run_dir, cur.run_dir)))
            notes.append(note)
    steps: list[stats.Comparison | None] = [None, *stats.adjust(raw, t)] if points else []
    return History(identity, metric, t, by, points, steps, notes)


def _recorded(r: dict, metric: str) -> float | None:
    v = r.get(metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# --------------------------------------------------------------------------- output
COLUMNS = ("#", "run", "time", "commit", "torch", "{metric} ({unit})", "95% CI", "samples", "vs previous [95% CI]",
           "q", "verdict")


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4g}"


def rows(h: History) -> list[list[str]]:
    out = []
    for i, (p, s) in enumerate(zip(h.points, h.steps)):
        ci = "-" if not all(math.isfinite(x) for x in p.ci) else f"[{_num(p.ci[0])}, {_num(p.ci[1])}]"
        step = "-" if s is None else stats.ratio_text(s)
        q = "-" if s is None or s.q is None else f"{s.q:.2g}"
        out.append([str(i + 1), p.run_dir, p.timestamp[:19].replace("T", " "), p.commit_label,
                    p.provenance.torch or "?", _num(p.estimate), ci, str(p.samples), step, q,
                    "-" if s is None else s.verdict])
    return out


def _header(h: History) -> str:
    counts = {v: sum(1 for s in h.steps if s is not None and s.verdict == v) for v in stats.VERDICTS}
    said = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "none"
    key, config = (visible(part, one_line=True) for part in h.identity)
    return (f"bench history: {key} (config {config}), {len(h.points)} runs by {h.by}; "
            f"{h.metric}, each step against the previous point, threshold +-{100 * h.threshold:g}%, "
            f"q over the {len(h.steps) - 1 if h.steps else 0} steps; steps: {said}."
            + "".join(f" {n}" for n in dict.fromkeys(n for n in h.notes if n)))


def _columns(h: History) -> list[str]:
    return [c.format(metric=h.metric, unit=UNITS[h.metric]) for c in COLUMNS]


def _print_table(h: History) -> None:
    """The rich table; every cell shown as text (bench.sanitize.terminal), never as markup or a
    terminal escape: a run path, commit or torch version may hold "[/]", "[link=...]" or ESC."""
    from rich.table import Table

    colours = {"slower": "red", "faster": "green", "same": "cyan"}
    table = Table()
    for col in _columns(h):
        table.add_column(col, justify="left" if col in ("run", "time", "commit", "torch", "verdict") else "right")
    for row in rows(h):
        colour = colours.get(row[-1])
        row = [terminal(cell) for cell in row]
        row[-1] = f"[{colour}]{row[-1]}[/]" if colour else row[-1]
        table.add_row(*row)
    print_rich(table, width=220)


def markdown(h: History) -> str:
    head = _columns(h)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows(h):
        row[-1] = f"**{row[-1]}**" if row[-1] in stats.REGRESSIONS else row[-1]
        lines.append("| " + " | ".join(md_text(c) for c in row) + " |")
    return "\n".join(lines)


def as_json(h: History) -> dict:
    def num(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else v

    points = []
    notes = h.notes or [None] * len(h.steps)
    for p, s, note in zip(h.points, h.steps, notes):
        step = None if s is None else {"ratio": num(s.ratio), "ci": [num(s.ci[0]), num(s.ci[1])], "p": s.p,
                                       "q": s.q, "verdict": s.verdict, "basis": s.basis, "needed": s.needed,
                                       "calibration": note}
        points.append({"run_dir": p.run_dir, "timestamp": p.timestamp, "git_commit": p.provenance.git_commit,
                       "git_dirty": p.provenance.git_dirty, "torch": p.provenance.torch,
                       "estimate": num(p.estimate), "ci": [num(p.ci[0]), num(p.ci[1])], "samples": p.samples,
                       "repeats": p.timings.n_repeats if p.timings else 0, "step": step})
    return {"cell_key": h.identity[0], "config_id": h.identity[1], "metric": h.metric, "by": h.by,
            "threshold": h.threshold, "newest_slower": h.newest_slower, "points": points}


def plot_data(h: History):
    """What bench.report.history draws: plain data, so the report layer never imports a command."""
    from bench.report.history import HistoryPlot

    if h.by == "commit":
        labels = [p.commit_label for p in h.points]
    elif h.by == "torch":
        labels = [p.provenance.torch or "?" for p in h.points]
    else:
        labels = [p.timestamp[:16].replace("T", " ") for p in h.points]
    xlabel = {"time": "time of the measurement (UTC)", "commit": "git commit (in time order)",
              "torch": "torch version"}[h.by]
    return HistoryPlot(f"{h.identity[0]} (config {h.identity[1]})", f"{h.metric} ({UNITS[h.metric]}), 95% CI",
                       xlabel, labels, [p.estimate for p in h.points], [p.ci for p in h.points],
                       [None if s is None else s.verdict for s in h.steps], _columns(h), rows(h))


# --------------------------------------------------------------------------- the command
def _res(text: str) -> tuple[int, int]:
    from bench.config import parse_resolutions

    sizes = parse_resolutions(text, multiple=1)  # detection sizes are not multiples of 32
    if len(sizes) != 1:
        raise BadInput(f"--res {text!r}: give one size (224 or HxW like 800x1333); a history follows one cell")
    return sizes[0]


def _out_path(out: str | None) -> Path | None:
    if out is None:
        return None
    from bench.outputs import check_output_file

    path = check_output_file(out)  # bench's one output-path rule (bench.outputs)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise BadInput(f"--out {shown(out)}: the plot is written as {', '.join(PLOT_SUFFIXES)}; end the name with one")
    return path


@click.command("history")
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--model", required=True, help="The model, as in records (pvt_small).")
@click.option("--res", "res", required=True, help="One input size: 800, or HxW like 800x1333.")
@click.option("--mode", required=True, help="infer or train (det / seg for fine-tune cells).")
@click.option("--batch", type=click.IntRange(1), default=None, help="Narrow to this batch (per rank).")
@click.option("--engine", default=None, help="Narrow to this engine (none, ddp, deepspeed, fsdp2).")
@click.option("--dtype", default=None, help="Narrow to this --dtype (fp32, bf16, ...).")
@click.option("--precision", default=None, help="Narrow to this precision field (fp32, amp-bf16, ...).")
@click.option("--task", default=None, help="Narrow to this task (cls, det, seg).")
@click.option("--device-name", default=None, help="Narrow to this device name, as in records.")
@click.option("--config-id", default=None, help="Narrow to this config_id (one measuring identity).")
@click.option("--by", type=click.Choice(BY), default="time", show_default=True,
              help="x axis: time; git commit (commits in time order); torch version.")
@click.option("--metric", type=click.Choice(tuple(METRICS)), default="latency_ms", show_default=True,
              help="latency_ms: median step; throughput: sustained images/s.")
@click.option("--threshold", type=float, default=None,
              help="The change that matters, as a fraction [default: 0.03 on CPU, 0.02 on CUDA].")
@click.option("--calibration", default=None,
              help="This device's run-to-run noise: a file written by bench calibrate, or a folder of them "
                   "[default: results/calibration, and calibration/ beside each step's older run].")
@click.option("--within-run", is_flag=True,
              help="Take each run's own spread as the whole noise (as bench compare --within-run): the old "
                   "within-run interval and Mann-Whitney p, said in each step's basis.")
@click.option("--out", default=None, help="Also draw the history into this file (.png, .svg or .html).")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "md")), default="table", show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the bootstraps.")
def history_command(run_dirs: tuple[str, ...], model: str, res: str, mode: str, batch: int | None,
                    engine: str | None, dtype: str | None, precision: str | None, task: str | None,
                    device_name: str | None, config_id: str | None, by: str, metric: str, threshold: float | None,
                    calibration: str | None, within_run: bool, out: str | None, fmt: str, seed: int) -> None:
    """Follow one cell identity across RUN_DIRS in time (or commit, or torch) order: each run's
    figure with its 95% interval, each step's verdict as bench compare gives it
    (faster / slower / same / inconclusive).

    Exit codes: 0 the newest step not slower, 1 it is slower, 2 bad input, 3 internal error,
    130 interrupted (docs/exit-codes.md)."""
    flt = Filter(model, _res(res), mode, batch, engine, dtype, precision, task, device_name, config_id)
    plot_path = _out_path(out)
    if threshold is not None and not (0 < threshold < 1 and math.isfinite(threshold)):
        raise BadInput(f"--threshold {threshold!r} must lie strictly between 0 and 1 (0.03 = 3%)")
    from bench.measure.calibration import check_given

    check_given(calibration)
    matches = _load_points(list(run_dirs), flt)
    identity = _one_identity(matches, flt, len(run_dirs))
    h = build_history(matches, identity, metric, by, threshold, seed, calibration, within_run)
    code = SLOWER_EXIT if h.newest_slower else 0
    # A reader that stops early (`| head`) ends the output, not the verdict: the exit code stays it.
    if fmt == "json":
        print_out(json.dumps(as_json(h), indent=2))
    elif fmt == "md":
        print_out(md_text(_header(h)) + "\n\n" + markdown(h))
    elif print_out(_header(h)):
        _print_table(h)
    if plot_path is not None:
        from bench.report.history import write_plot

        write_plot(plot_data(h), plot_path)
        click.echo(f"wrote {shown(plot_path)}", err=True)
    raise SystemExit(code)
