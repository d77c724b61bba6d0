"""The scaling study: a run directory holding the same cells at several world sizes (``bench run
--nproc 1,2,4``, ``bench slurm submit --nodes 1,2,4``) compared against its own world-size-1 cells.

Everything is computed here from the records (pure functions of a run's records), so the answer
does not depend on the order the world sizes were measured in (Slurm jobs finishing out of order).
The base of a multi-rank cell, the formula and the basis are bench.measure.derived's (the same
rule as the record's ``scaling_efficiency``): weak scaling compares the same batch per rank,
strong scaling the same global batch, and efficiency = throughput ratio / resource factor, where
the factor is N when each rank brings its own threads or, on CUDA, its own GPU, and 1 when the
total threads were fixed (a CPU study's default: the ranks share the cores the single process
had). The intervals are
bench.stats' bootstrap over both cells' samples and repeats.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.measure.derived import StudyEfficiency, match_base, scaling_mode, study_efficiency
from bench.record import span
from bench.report.load import FINETUNE_MODES, Run
from bench.report.plots import PlotSpec, panel_grid
from bench.report.tables import Table, TableCell, fmt_number, missing_cell
from bench.stats import Timings, estimate_ci, identity_key

STUDY_INTRO = [
    "The same cells at several world sizes in one run directory, each multi-rank cell against the "
    "world-size-1 cell of the same run with the same model, resolution, mode, precision, device and "
    "batch basis (weak scaling: the same batch per rank; strong scaling, --global-batch: the same "
    "global batch). Efficiency = throughput ratio / resource factor: N where each rank brings its "
    "own threads (basis same-threads-per-rank; weak scaling: throughput / (N × base), strong: "
    "speed-up / N), 1 where the total threads were fixed (basis same-total-threads, a CPU study's "
    "default: the ranks share the cores of the single process, so efficiency is the speed-up). On "
    "GPUs each rank brings its own GPU (basis one-gpu-per-rank): throughput / (N × base), whatever the "
    "threads. "
    "95% intervals: bootstrap over both cells' samples and repeats. Exposed communication is the "
    "share of a step spent in collectives not hidden behind compute, where it was profiled.",
]


@dataclass(frozen=True)
class StudyRow:
    """One cell of a study at one world size, with its efficiency against its base (None at
    world size 1, or where no base matched)."""

    run_id: str
    model: str
    res: str
    mode: str
    scaling_mode: str
    world_size: int
    nodes: int
    batch: int | None
    global_batch: int | None
    throughput: float
    throughput_ci: tuple[float, float] | None
    efficiency: StudyEfficiency | None
    exposed_share: float | None
    doubts: tuple[str, ...] = ()  # flags of doubt on this cell or its base (time-cap, few-samples, ...)

    @property
    def ideal(self) -> float | None:
        """What perfect scaling would give: the base times the resource factor."""
        e = self.efficiency
        return e.base_throughput * e.factor if e else (self.throughput if self.world_size == 1 else None)

    @property
    def group(self) -> tuple:
        return self.run_id, self.model, self.res, self.mode, self.scaling_mode


def _perf(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("status") == "ok" and r.get("throughput")
            and r.get("mode") not in FINETUNE_MODES and isinstance(r.get("world_size"), int)]


def is_study(records: list[dict]) -> bool:
    """A run with measured cells at two or more world sizes."""
    return len({r["world_size"] for r in _perf(records)}) >= 2


def _median(values: list) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(nums) if nums else None


def every_record(run: Run) -> list[dict]:
    """Every record of the run, each repeat included: the loaded ``Run.records`` keep the latest
    record per cell only, and the CI is over the repeats. Read again from the run directory (made
    visible as the rest of the report's strings: bench.sanitize); a run without a directory
    (built in memory) gives its records."""
    from bench.record import RunDir
    from bench.sanitize import neutral

    if not Path(run.path).is_dir():
        return run.records
    return neutral(RunDir(Path(run.path)).records())


def run_rows(run: Run) -> list[StudyRow]:
    """A run's study rows, one per cell identity and world size (all its repeats together)."""
    if not is_study(run.records):
        return []
    records = _perf(every_record(run))
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        ident = identity_key(r)
        if ident is not None:
            cells.setdefault((*ident, r["world_size"], r.get("nodes") or 1), []).append(r)
    rows = []
    for (_, _, world, nodes), group in cells.items():
        first = group[0]
        timings = Timings.from_records(group)
        thr = timings.estimate("throughput") if timings else _median([r["throughput"] for r in group])
        rows.append(StudyRow(
            run.run_id, str(first.get("model")), str(first.get("res")), str(first.get("mode")), scaling_mode(first),
            world, int(nodes), first.get("batch"), first.get("global_batch"), float(thr),
            estimate_ci(timings, "throughput") if timings and min(map(len, timings.repeats)) >= 2 else None,
            study_efficiency(group, records) if world > 1 else None,
            _median([r.get("comm_exposed_share") for r in group]), _doubts(group, records, world)))
    return sorted(rows, key=lambda x: (*x.group, x.world_size, x.nodes))


_DOUBT = ("time-cap", "few-samples", "warmup-unsteady", "wide-ci")


def _doubts(group: list[dict], records: list[dict], world: int) -> tuple[str, ...]:
    """The flags of doubt on a cell and, for a multi-rank cell, on its world-size-1 base."""
    cells = list(group)
    if world > 1:
        matched = match_base(records, group[0])
        cells += matched[0] if matched else []
    return tuple(f for f in _DOUBT if any(f in (r.get("flags") or []) for r in cells))


def study_rows(runs: list[Run]) -> list[StudyRow]:
    return [row for run in runs for row in run_rows(run)]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci_text(ci: tuple[float, float] | None, pct: bool = False) -> str:
    """An interval as "low–high" (record.span, as every report cell writes one), "—" when none."""
    return span(ci, _pct if pct else fmt_number) or "—"


def statement(row: StudyRow) -> str | None:
    """What a reader can act on: how much of ideal the ranks give, whether that is within the noise
    of ideal, and how much of each step is exposed communication."""
    e = row.efficiency
    if e is None:
        return None
    strong = " (strong scaling)" if row.scaling_mode == "strong" else ""
    where = f"{row.model}@{row.res} {row.mode}{strong}"
    ranks = f"{row.world_size} ranks" + (f" on {row.nodes} nodes" if row.nodes > 1 else "")
    if e.ci95 is not None and e.ci95[0] <= 1.0 <= e.ci95[1]:
        text = f"{where}: {ranks} scale ideally within the noise ({_pct(e.efficiency)}, CI {_ci_text(e.ci95, True)})"
    else:
        ci = f"CI {_ci_text(e.ci95, True)}" if e.ci95 else "no interval: records without samples"
        text = f"{where}: {ranks} give {_pct(e.efficiency)} ({ci}) of ideal"
    text += f" [{e.basis}]"
    if row.exposed_share is not None:
        text += f"; {_pct(row.exposed_share)} of each step is exposed communication"
    if row.doubts:
        text += f"; doubtful, the cell or its base is flagged {', '.join(row.doubts)} (add --budget or --repeats)"
    return text + "."


def study_statements(rows: list[StudyRow]) -> list[str]:
    return [s for s in map(statement, rows) if s]


def study_table(rows: list[StudyRow]) -> Table | None:
    if not rows:
        return None
    several_runs = len({r.run_id for r in rows}) > 1
    columns = ["model", "res", "mode", *(["run id"] if several_runs else []), "world size", "nodes", "scaling mode",
               "batch per rank", "global batch", "throughput (img/s)", "throughput 95% CI", "ideal (img/s)",
               "efficiency", "efficiency 95% CI", "basis", "exposed communication"]
    table_rows, starts, previous = [], set(), None
    for r in rows:
        if r.group != previous:
            starts.add(len(table_rows))
            previous = r.group
        e = r.efficiency
        ideal = r.ideal
        table_rows.append(
            [TableCell(r.model), TableCell(r.res), TableCell(r.mode), *([TableCell(r.run_id)] if several_runs else []),
             TableCell(str(r.world_size), kind="num"), TableCell(str(r.nodes), kind="num"), TableCell(r.scaling_mode),
             TableCell(str(r.batch), kind="num"), TableCell(str(r.global_batch), kind="num"),
             TableCell(fmt_number(r.throughput), kind="num"), TableCell(_ci_text(r.throughput_ci), kind="num"),
             TableCell(fmt_number(ideal), kind="num") if ideal is not None else missing_cell(),
             TableCell(_pct(e.efficiency),
                       kind="num") if e else missing_cell("base" if r.world_size == 1 else "no base"),
             TableCell(_ci_text(e.ci95, True), kind="num") if e else missing_cell(),
             TableCell(e.basis) if e else missing_cell(),
             TableCell(_pct(r.exposed_share), kind="num") if r.exposed_share is not None else missing_cell("-")])
    return Table("study", "Scaling study: throughput and efficiency against the world-size-1 cells", columns,
                 table_rows, ["ideal: the world-size-1 throughput times the resource factor (N, or 1 where the "
                              "total CPU threads were fixed)"], starts)


def _panels(rows: list[StudyRow]) -> dict[tuple, list[StudyRow]]:
    panels: dict[tuple, list[StudyRow]] = {}
    for r in rows:
        panels.setdefault((r.run_id, r.model, r.res), []).append(r)
    return panels


def _series(rows: list[StudyRow]) -> dict[str, list[StudyRow]]:
    out: dict[str, list[StudyRow]] = {}
    for r in rows:
        out.setdefault(f"{r.mode} · {r.scaling_mode}", []).append(r)
    return out


def plot_study_throughput(rows: list[StudyRow]):
    """Throughput against ranks, per model and resolution, with 95% CI bars and the ideal dashed."""
    panels = _panels(rows)
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), 4.2, 3.4)
    several_runs = len({k[0] for k in panels}) > 1
    for ax, ((run_id, model, res), part) in zip(axes, panels.items()):
        for i, (name, series) in enumerate(_series(part).items()):
            colour = f"C{i}"
            x = [r.world_size for r in series]
            y = [r.throughput for r in series]
            err = [[max(0.0, r.throughput - r.throughput_ci[0]) if r.throughput_ci else 0 for r in series],
                   [max(0.0, r.throughput_ci[1] - r.throughput) if r.throughput_ci else 0 for r in series]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, label=name)
            ideal = [(r.world_size, r.ideal) for r in series if r.ideal is not None]
            if ideal:
                ax.plot(*zip(*ideal), ls="--", color=colour, alpha=0.6, label=f"{name}: ideal")
        ax.set_xticks(sorted({r.world_size for r in part}))
        ax.set_xlabel("ranks (world size)")
        ax.set_ylabel("throughput (img/s)")
        ax.set_title(f"{model} @ {res}" + (f" · {run_id}" if several_runs else ""), fontsize="medium")
        ax.legend(fontsize="small", frameon=False)
    return fig


def plot_study_efficiency(rows: list[StudyRow]):
    """Efficiency against ranks with 95% CI bars; 100% (ideal) dotted."""
    multi = [r for r in rows if r.efficiency is not None]
    panels = _panels(multi)
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), 4.2, 3.4)
    for ax, ((_, model, res), part) in zip(axes, panels.items()):
        for i, (name, series) in enumerate(_series(part).items()):
            effs = [r.efficiency for r in series]
            y = [100 * e.efficiency for e in effs if e]
            err = [[100 * (e.efficiency - e.ci95[0]) if e and e.ci95 else 0 for e in effs],
                   [100 * (e.ci95[1] - e.efficiency) if e and e.ci95 else 0 for e in effs]]
            ax.errorbar([r.world_size for r in series], y, yerr=err, marker="o", capsize=3, color=f"C{i}", label=name)
        ax.axhline(100, color="grey", lw=0.8, ls=":")
        ax.set_xticks(sorted({r.world_size for r in part}))
        ax.set_xlabel("ranks (world size)")
        ax.set_ylabel("efficiency (%)")
        ax.set_title(f"{model} @ {res}", fontsize="medium")
        ax.legend(fontsize="small", frameon=False)
    return fig


def study_section(runs: list[Run]) -> tuple[list[str], list[Table], list[PlotSpec]]:
    """The section's statements, table and plots (empty when no run has two world sizes)."""
    rows = study_rows(runs)
    if not rows:
        return [], [], []
    table = study_table(rows)
    plots: list[PlotSpec] = [
        ("Throughput against ranks", "Sustained throughput per world size with its 95% CI; dashed: the ideal "
         "(the world-size-1 throughput times the resource factor).", lambda _df: plot_study_throughput(rows)),
        ("Efficiency against ranks", "Efficiency with its 95% CI; dotted: 100% (ideal).",
         lambda _df: plot_study_efficiency(rows)),
    ]
    return study_statements(rows), [table] if table else [], plots

