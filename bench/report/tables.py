"""Tables: the one structure the HTML page, the CSV and the Markdown are all rendered from, so
they cannot disagree; the number and status formatting of every cell; the best-value marks; and
the performance tables (per mode, and runs side by side)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.record import PERFORMANCE, PROVENANCE, SETTING, Display, FieldSpec, schema
from bench.report.load import is_missing, performance_cells


@dataclass
class TableCell:
    text: str
    best: bool = False
    kind: str = ""  # a CSS class: "num", "oom", "error", "missing"


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[TableCell]]
    notes: list[str] = field(default_factory=list)
    group_starts: set[int] = field(default_factory=set)  # row indices that start a new group

    def to_frame(self, mark_best: str = "") -> pd.DataFrame:
        """TableCell texts; ``mark_best`` wraps best cells (Markdown: "**")."""
        data = [[f"{mark_best}{c.text}{mark_best}" if c.best and mark_best else c.text for c in row]
                for row in self.rows]
        return pd.DataFrame(data, columns=self.columns)


@dataclass(frozen=True)
class Metric:
    """A column of figures: a schema field and its ``Display`` (bench.record), or a figure the
    report derives itself (a fine-tune's final loss) with a Display of its own."""

    field: str
    header: str
    display: Display

    @classmethod
    def of(cls, spec: FieldSpec) -> "Metric":
        assert spec.display is not None
        return cls(spec.name, spec.header, spec.display)

    @property
    def better(self) -> str:
        return self.display.better

    def number(self, x: float) -> str:
        """One figure of this column, scaled and formatted as its Display says."""
        d = self.display
        return format(float(x) * d.scale, d.fmt) if d.fmt else fmt_number(float(x) * d.scale)

    def text(self, value: Any) -> str | None:
        """The cell text of ``value``; None when there is nothing to show (or it cannot be read)."""
        if self.display.text is not None:
            return self.display.text(value, self.number)
        return None if not has_value(value) else self.number(value)


def schema_metrics(section: str, main: bool = True) -> list[Metric]:
    """The columns of ``section``'s main table (or its details table), from the record schema:
    a field declared with a Display shows here with no change to the report."""
    return [Metric.of(f) for f in schema().shown(section, main)]


def has_value(v: Any) -> bool:
    """A figure was recorded: not missing, and not an empty list."""
    return bool(v) if isinstance(v, (list, tuple, dict)) else not is_missing(v)


# Best per column, among the "ok" cells of the same resolution and batch (comparing a 224 cell
# with an 800 one says nothing), in the direction each field's Display gives (bench.record).
PERF_ID_COLUMNS = [("res", "res"), ("model", "model"), ("batch", "batch"), ("dtype", "dtype"),
                   ("setup", "run"), ("run_id", "run id")]
# Settings already named by the identity columns (``setup`` = device name, engine, ZeRO, world size).
_SHOWN_SETTINGS = {"dtype", "device", "device_name", "engine", "zero", "world_size", "ds_config", "global_batch"}


def varying_settings(df: pd.DataFrame) -> list[str]:
    """The measuring settings (kind "setting" in bench.record.Record) whose value differs between
    the cells of one mode in ``df``: each becomes a column, so no two rows that differ look alike."""
    out = []
    for name in schema().of_kind(SETTING):
        if name in _SHOWN_SETTINGS or name not in df.columns:
            continue
        text = df[name].map(lambda v: "—" if v is None or v != v else str(v))
        # Within one mode: a training-only setting (grad clip) is blank for every inference cell.
        if (text.groupby(df["mode"], sort=False).nunique() > 1).any():
            out.append(name)
    return out


# --------------------------------------------------------------------------------------------
# TableCell texts
# --------------------------------------------------------------------------------------------


def cell_flags(record) -> list[str]:
    """The flags of one cell (a record or a frame row): its ``flags``, then any of its
    ``timing_flags`` not among them."""
    out: list[str] = []
    for name in ("flags", "timing_flags"):
        value = record.get(name)
        if isinstance(value, list):
            out += [str(f) for f in value if str(f) not in out]
    return out


# What each flag means, as the end of "N cells ...": past tense, right for one cell or many.
FLAG_TEXT = {
    "time-cap": "hit the time cap (--max-time ended the timing)",
    "unstable-timing": "timed unstably (coefficient of variation above 5%; old records only)",
    "few-samples": "timed fewer than 10 iterations",
    "wide-ci": "have a median whose 95% interval is wider than ±2%",
    "drift": "drifted during the timing (the late iterations differ from the early ones)",
    "warmup-unsteady": "never reached a steady warm-up",
    "compile-fallback": "fell back from torch.compile (graph breaks or recompiles)",
    "flops-failed": "could not be FLOP-counted",
    "mfu-over-1": "reported an MFU above 100% (a wrong peak or FLOP count)",
    "mfu-not-positive": "reported an MFU of zero or less",
    "batch-1-oom": "ran out of memory at batch 1",
    "numerics-drift": "computed a different answer from the fp32 eager reference (agreement outside its tolerance)",
    "accuracy-gate-missed": "scored under 99% of the fp32 reference's mAP / mIoU on real labels (--accuracy-data)",
    "numerics-unchecked": "could not be checked against the fp32 eager reference (agreement_error says why)",
}
# The flags that say a cell's figure itself may be wrong (the others say how it was obtained).
FIGURE_MAY_BE_WRONG = ("wide-ci", "drift", "few-samples", "time-cap", "warmup-unsteady", "unstable-timing",
                       "mfu-over-1", "mfu-not-positive", "flops-failed", "numerics-drift",
                       "accuracy-gate-missed")
FLAGGED_CELLS_LISTED = 12  # cells named per flag; the rest are counted


def flag_statements(df: pd.DataFrame) -> list[str]:
    """How many cells carry flags, and which, one sentence per flag ([] when none does)."""
    flags = [cell_flags(r) for r in df.to_dict("records")]
    flagged = sum(1 for f in flags if f)
    if not flagged:
        return []
    several_runs = df["run_id"].nunique() > 1
    names = [f"{r['label']} @ {r['res']} · {r['mode']}"
             + (f" · batch {as_text(r['batch'])}" if not pd.isna(r["batch"]) else "")
             + (f" · {r['run_id']}" if several_runs else "") for r in df.to_dict("records")]
    present = list(dict.fromkeys(f for fs in flags for f in fs))
    doubtful = [f for f in present if f in FIGURE_MAY_BE_WRONG]
    which = (f"{', '.join(doubtful)} mean{'s' if len(doubtful) == 1 else ''} a figure of that cell may be wrong"
             if doubtful else "none of these flags says a figure is wrong")
    out = [f"{flagged} of {len(df)} cells {'carries' if flagged == 1 else 'carry'} flags: {which} — read its "
           "row's flags column before quoting it."]
    for flag in present:
        cells = [n for n, fs in zip(names, flags) if flag in fs]
        listed = ", ".join(cells[:FLAGGED_CELLS_LISTED])
        more = f" and {len(cells) - FLAGGED_CELLS_LISTED} more" if len(cells) > FLAGGED_CELLS_LISTED else ""
        what = FLAG_TEXT.get(flag, f"carry the flag “{flag}”")
        out.append(f"{len(cells)} cell{'s' if len(cells) != 1 else ''} {what}: {listed}{more}.")
    return out


def fmt_number(x: float) -> str:
    """Four or so significant digits, never scientific notation for ordinary magnitudes."""
    ax = abs(x)
    if ax >= 100:
        return f"{x:.0f}" if ax >= 1000 else f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_optional(x: float | None) -> str:
    """A reference figure that may not exist for this model or GPU: the number, or "—"."""
    return fmt_number(x) if x is not None else "—"


def as_text(v: Any) -> str:
    """A record or env value as cell text: "—" for nothing, 3 rather than 3.0."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def status_text(status: str, error: Any) -> str:
    if status == "ok":
        return "ok"
    if status == "oom":
        return "OOM"
    if status == "error":
        return f"error: {error}" if error else "error"
    return str(status)


def status_kind(status: str) -> str:
    """The CSS class of a cell's status: none for ok, "oom", or "error" for anything else."""
    return "" if status == "ok" else ("oom" if status == "oom" else "error")


def status_cell(status: str, error: Any) -> TableCell:
    """A cell that says how a benchmark cell ended (with its error, if one is given)."""
    return TableCell(status_text(status, error), kind=status_kind(status))


def number_cell(value: float, best: bool = False) -> TableCell:
    return TableCell(fmt_number(float(value)), best, "num")


def missing_cell(text: str = "—") -> TableCell:
    return TableCell(text, kind="missing")


# --------------------------------------------------------------------------------------------
# Building tables
# --------------------------------------------------------------------------------------------


def metric_table(key: str, title: str, df: pd.DataFrame, id_columns: list[tuple[str, str]],
                 metrics: list[Metric], group_by: list[str], notes: list[str] | None = None,
                 timings: dict | None = None) -> Table:
    """Rows of ``df`` as a table: identity columns, the metrics that have any value, status.

    A metric cell of an OOM or failed cell shows that status instead of a gap; an ok cell that
    did not measure the metric shows "—".
    """
    metrics = [m for m in metrics if m.field in df.columns and df[m.field].map(has_value).any()]
    best = {m.field: _best_in_group(df, m, group_by) for m in metrics}
    for name in TIMED & best.keys():
        best[name] = _beyond_noise(df, name, best[name], group_by, timings or {})

    rows: list[list[TableCell]] = []
    group_starts: set[int] = set()
    previous_group = None
    for i, (idx, r) in enumerate(df.iterrows()):
        group = tuple(r[g] for g in group_by)
        if group != previous_group:
            group_starts.add(i)
            previous_group = group
        row = [TableCell(as_text(r[c])) for c, _ in id_columns]
        for m in metrics:
            text = m.text(r[m.field])
            if text is not None:
                row.append(TableCell(text, bool(best[m.field].loc[idx]), "num"))
            elif r["status"] != "ok":
                row.append(status_cell(r["status"], None))
            else:
                row.append(missing_cell())
        row.append(status_cell(r["status"], r["error"]))
        if "flags" in df.columns:
            flags = cell_flags(r)
            row.append(TableCell(", ".join(flags) or "—", kind="warn" if flags else ""))
        rows.append(row)
    columns = [h for _, h in id_columns] + [m.header for m in metrics] + ["status"] + \
        (["flags"] if "flags" in df.columns else [])
    return Table(key, title, columns, rows, notes or [], group_starts)


def _best_in_group(df: pd.DataFrame, metric: Metric, group_by: list[str]) -> pd.Series:
    """Which rows hold the best "ok" value of ``metric`` in their group; only where there is a
    choice: two or more values that are not all the same. A reference metric is never best."""
    if not metric.better or not pd.api.types.is_numeric_dtype(df[metric.field]):
        return pd.Series(False, index=df.index)
    values = df[metric.field].where(df["status"] == "ok")
    groups = values.groupby([df[g] for g in group_by], dropna=False, sort=False)
    target = groups.transform("max" if metric.better == "max" else "min")
    return (values == target) & (groups.transform("nunique") >= 2)


# The timed columns, and the bench.stats metric each is compared by.
TIMED_METRIC = {"throughput": "throughput", "latency_ms": "latency"}
TIMED = set(TIMED_METRIC)


def _beyond_noise(df: pd.DataFrame, name: str, best: pd.Series, group_by: list[str], timings: dict) -> pd.Series:
    """A timed best stays marked only where bench.stats.compare_models finds it faster than the
    runner-up of its group (a win smaller than the noise is no win). Cells without samples (old
    records) keep the plain rule: there is nothing to compare them by."""
    from bench.stats import compare_models, default_threshold, identity_key

    out = best.copy()
    values = df[name].where(df["status"] == "ok")
    for idx in best[best].index:
        row = df.loc[idx]
        same = (df[group_by].fillna(-1) == row[group_by].fillna(-1)).all(axis=1) & values.notna()
        others = values[same].drop(idx)
        if others.empty:
            continue
        runner = others.idxmax() if name == "throughput" else others.idxmin()
        t_best = timings.get(row["run_id"], {}).get(identity_key(row))
        t_next = timings.get(df.loc[runner, "run_id"], {}).get(identity_key(df.loc[runner]))
        if t_best is None or t_next is None:
            continue
        c = compare_models(t_next, t_best, TIMED_METRIC[name], default_threshold(str(row.get("device"))))
        out.loc[idx] = c.verdict == "faster"
    return out


def sort_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Resolution-major (the best marks compare models at one resolution), then task, model,
    batch, run."""
    return df.sort_values(["pixels", "res", "task", "model_order", "batch", "series_order", "dtype"],
                          na_position="last", kind="stable")


def perf_tables(df: pd.DataFrame, runs: list | None = None) -> list[Table]:
    """Per mode (infer, train, ...), rows model × resolution × batch × run: the main table, then
    the details table (the figures whose Display is not ``main``) where any was recorded. A run
    column that holds one value across the whole report is left out: the page's header names it."""
    tables = []
    perf = performance_cells(df)
    timings = {r.run_id: r.timings for r in (runs or [])}
    settings = [(name, name.replace("_", " ")) for name in varying_settings(perf)]
    run_columns = [(c, h) for c, h in PERF_ID_COLUMNS[4:] if perf[c].nunique(dropna=False) > 1]
    # A backbone alone and the same backbone inside a detector are different cells: the task is
    # a column (and part of the best-value group) as soon as more than one task ran.
    tasks = [("task", "task")] if perf["task"].nunique() > 1 else []
    id_columns = PERF_ID_COLUMNS[:2] + tasks + PERF_ID_COLUMNS[2:4] + settings + run_columns
    group_by = ["res", "batch"] + [n for n, _ in tasks] + [n for n, _ in settings]
    main, details = schema_metrics(PERFORMANCE), schema_metrics(PERFORMANCE, main=False)
    for mode in dict.fromkeys(perf["mode"]):
        part = sort_cells(perf[perf["mode"] == mode]).reset_index(drop=True)
        tables.append(metric_table(f"results-{mode}", f"{mode}: model × resolution", part, id_columns, main,
                                   group_by, timings=timings))
        more = metric_table(f"results-{mode}-details", f"{mode}: timing details and other figures", part,
                            id_columns, details, group_by)
        if len(more.columns) > len(id_columns) + 2:  # more than the status and flags columns
            tables.append(more)
    return tables


def best_value_rule(section: str = PERFORMANCE) -> str:
    """Which way each marked column counts, in words, from the schema's Display of each field."""
    metrics = schema_metrics(section)
    highest = [m.display.label for m in metrics if m.better == "max"]
    lowest = [m.display.label for m in metrics if m.better == "min"]
    return f"highest {', '.join(highest)}; lowest {', '.join(lowest)}"


def provenance_table(df: pd.DataFrame) -> Table | None:
    """Where and when each cell was measured (the details view, not the results tables)."""
    provenance = schema().of_kind(PROVENANCE)
    shown = [f for f in ("timestamp", "hostname", "wall_s", "cpu_time_s", "loadavg_1m", "invocation")
             if f in provenance and f in df.columns and df[f].notna().any()]
    if not shown:
        return None
    part = sort_cells(df).reset_index(drop=True)
    columns = ["model", "res", "mode", "batch", "run id", *[f.replace("_", " ") for f in shown]]
    rows = [[TableCell(as_text(r[c])) for c in ("model", "res", "mode", "batch", "run_id")]
            + [TableCell(_provenance_text(r[f])) for f in shown] for _, r in part.iterrows()]
    return Table("provenance", "Provenance of each cell", columns, rows)


def _provenance_text(v: Any) -> str:
    """Seconds and load averages to four or so digits (46.32, not 46.31661319732666)."""
    return fmt_number(v) if isinstance(v, float) and v == v and not v.is_integer() else as_text(v)


def comparison_table(df: pd.DataFrame, runs: list | None = None) -> Table | None:
    """Throughput of each run side by side, and each run against the first as ``bench compare``
    says it (bench.stats.compare_runs, q-values over every pair of the table): ratio, 95% interval,
    q and verdict, for every model × resolution × mode × batch × dtype; only when there is more
    than one run or set-up. ``runs`` brings the samples (without them: no interval, no verdict)."""
    from bench.stats import Comparison, adjust, compare_runs, default_threshold, identity_key

    perf = performance_cells(df)
    series = list(dict.fromkeys(perf.sort_values("series_order", kind="stable")["series"]))
    if len(series) < 2:
        return None
    timings = {r.run_id: r.timings for r in (runs or [])}
    devices = perf["device"].dropna().astype(str)
    threshold = default_threshold(devices.iloc[0] if len(devices) else None)
    first = series[0]
    key = ["mode", "res", "model", *(["task"] if perf["task"].nunique() > 1 else []), "batch", "dtype",
           *varying_settings(perf)]
    columns = key + [f"throughput (img/s): {s}" for s in series] + \
        [f"{s} vs first: ratio [95% CI], q, verdict" for s in series[1:]]
    rows, group_starts, previous, pending = [], set(), None, []
    mode_order = {m: i for i, m in enumerate(dict.fromkeys(perf["mode"]))}
    ordered = sort_cells(perf).sort_values("mode", key=lambda m: m.map(mode_order), kind="stable")
    for values, part in ordered.groupby(key, sort=False, dropna=False):
        by_series = {s: g.iloc[0] for s, g in part.groupby("series", sort=False)}
        ok = {s: r for s, r in by_series.items() if r["status"] == "ok" and pd.notna(r["throughput"])}
        row = [TableCell(as_text(v)) for v in values]
        for s in series:
            row.append(_comparison_cell(by_series.get(s), ok[s]["throughput"] if s in ok else None))
        for s in series[1:]:
            if first not in ok or s not in ok:
                row.append(missing_cell())
                continue
            tb = timings.get(ok[first]["run_id"], {}).get(identity_key(ok[first]))
            tn = timings.get(ok[s]["run_id"], {}).get(identity_key(ok[s]))
            c = compare_runs(tb, tn, "throughput", threshold) if tb and tn else Comparison.no_samples("throughput")
            row.append(TableCell("", kind="num"))
            pending.append((row[-1], c, ok[s]["throughput"] / ok[first]["throughput"]))
        if values[:2] != previous:  # a new mode or resolution
            group_starts.add(len(rows))
            previous = values[:2]
        rows.append(row)
    with_p = [c for _, c, _ in pending if c.verdict != "no samples"]
    adjusted = iter(adjust(with_p, threshold))
    for cell, c, plain in pending:
        if c.verdict == "no samples":
            cell.text, cell.kind = f"{plain:.2f}× (no samples)", "missing"
        else:
            c = next(adjusted)
            cell.text = f"{c.ratio:.3f}× [{c.ci[0]:.3f}, {c.ci[1]:.3f}], q {c.q:.2g}, {c.verdict}"
            cell.kind = f"num v-{c.verdict}"
    notes = [f"Verdicts as `bench compare` gives them: faster/slower when q < 0.05 and the interval lies beyond "
             f"±{100 * threshold:g}%, same when it lies within, inconclusive otherwise."]
    return Table("comparison", "Runs side by side: throughput", columns, rows, notes, group_starts)


def _comparison_cell(record: pd.Series | None, throughput: Any) -> TableCell:
    if record is None:
        return missing_cell("not run")
    if record["status"] != "ok":
        return status_cell(record["status"], record["error"])
    if throughput is None or pd.isna(throughput):
        return missing_cell()
    return number_cell(throughput)
