"""The verdict: the report's first section, the answer in words and one figure.

For each run, task, mode and batch, one paragraph per resolution, written from the numbers: the
models ranked by throughput with each one's ratio to the fastest and that ratio's 95% interval
(bench.stats.compare_models, q-values over every pair of the report), ties called ties, peak
memory and GMACs ranked the same way, and where the throughput ranking changes between
resolutions. Then the model-against-model matrix per resolution, coloured by verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from bench.report.load import Run, is_missing, performance_cells
from bench.report.scaling import crossovers, scaling_fits, side_text
from bench.report.tables import Table, TableCell, fmt_number, missing_cell
from bench.stats import Comparison, Timings, adjust, compare_models, default_threshold, identity_key

SEED = 0
CI_RESAMPLES = 500  # per cell, for the figure's error bars only
GROUP = ["run_id", "task", "mode", "batch", "dtype"]

VERDICT_INTRO = [
    "Each ratio is a model's throughput over the fastest model's at the same task, mode, batch and "
    "resolution, with its 95% interval. 'Same' means the interval lies wholly within the noise "
    "threshold (3% on CPU, 2% on CUDA); 'cannot be told apart' means it is neither inside nor "
    "clearly beyond it. q-values correct for every pair of the report (Benjamini-Hochberg).",
]


@dataclass(frozen=True)
class Entry:
    """One model at one resolution of a group: its figures and samples."""

    label: str
    res: str
    pixels: float
    throughput: float
    peak_mem: float | None
    gmacs: float | None
    timings: Timings | None


@dataclass(frozen=True)
class Ranked:
    """The models of one resolution, fastest first, each compared with the fastest."""

    group: tuple
    res: str
    entries: list[Entry]
    against_fastest: list[Comparison | None]  # None for the fastest itself
    threshold: float


def _entries(df: pd.DataFrame, runs: list[Run]) -> dict[tuple, dict[str, list[Entry]]]:
    """Ok performance cells with a throughput, by group and resolution."""
    timings = {r.run_id: r.timings for r in runs}
    perf = performance_cells(df)
    ok = perf[(perf["status"] == "ok") & perf["throughput"].notna()]
    ok = ok.sort_values(["pixels", "model_order"], kind="stable")
    out: dict[tuple, dict[str, list[Entry]]] = {}
    for values, part in ok.groupby(GROUP, sort=False, dropna=False):
        by_res: dict[str, list[Entry]] = {}
        for r in part.to_dict("records"):
            t = timings.get(r["run_id"], {}).get(identity_key(r))
            by_res.setdefault(r["res"], []).append(Entry(
                r["label"], r["res"], r["pixels"], float(r["throughput"]),
                None if is_missing(r.get("peak_mem_mb")) else float(r["peak_mem_mb"]),
                None if is_missing(r.get("gmacs")) else float(r["gmacs"]), t))
        out[tuple(values)] = by_res
    return out


def _device(df: pd.DataFrame) -> str:
    devices = df["device"].dropna().astype(str)
    return devices.iloc[0] if len(devices) else "cpu"


def rankings(df: pd.DataFrame, runs: list[Run]) -> list[Ranked]:
    """Every resolution of every group ranked by throughput, compared with its fastest model;
    q-values over all those comparisons at once."""
    threshold = default_threshold(_device(df))
    out: list[Ranked] = []
    for group, by_res in _entries(df, runs).items():
        for res, entries in by_res.items():
            ranked = sorted(entries, key=lambda e: -e.throughput)
            top = ranked[0]
            comps = [None] + [_compare(top, e, threshold) for e in ranked[1:]]
            out.append(Ranked(group, res, ranked, comps, threshold))
    flat = [c for r in out for c in r.against_fastest if c is not None and c.verdict != "no samples"]
    adjusted = iter(adjust(flat, threshold))
    return [replace(r, against_fastest=[c if c is None or c.verdict == "no samples" else next(adjusted)
                                        for c in r.against_fastest]) for r in out]


def _compare(a: Entry, b: Entry, threshold: float) -> Comparison:
    if a.timings is None or b.timings is None:
        return Comparison.no_samples("throughput")
    return compare_models(a.timings, b.timings, "throughput", threshold, SEED)


def _group_text(group: tuple, several_runs: bool) -> str:
    run_id, task, mode, batch, dtype = group
    text = f"{task} · {mode} · batch {fmt_batch(batch)}" + ("" if is_missing(dtype) else f" · {dtype}")
    return text + (f" · {run_id}" if several_runs else "")


def fmt_batch(batch) -> str:
    return "—" if is_missing(batch) else (str(int(batch)) if float(batch).is_integer() else str(batch))


def ratio_ci(c: Comparison) -> str:
    return f"{c.ratio:.2f}× [{c.ci[0]:.2f}, {c.ci[1]:.2f}]"


def paragraph(r: Ranked, several_runs: bool) -> str:
    """One resolution of one group in words."""
    top = r.entries[0]
    head = f"{_group_text(r.group, several_runs)} · {r.res}: "
    if len(r.entries) == 1:
        return head + f"{top.label} alone, {fmt_number(top.throughput)} img/s."
    parts = [f"{top.label} fastest ({fmt_number(top.throughput)} img/s)"]
    ties, unclear = [], []
    for e, c in zip(r.entries[1:], r.against_fastest[1:]):
        if c is None or c.verdict == "no samples":
            parts.append(f"{e.label} {e.throughput / top.throughput:.2f}× (no samples: no interval)")
            continue
        parts.append(f"{e.label} {ratio_ci(c)}")
        if c.verdict == "same":
            ties.append(e.label)
        elif c.verdict == "inconclusive":
            unclear.append(e.label)
    text = head + "throughput: " + ", ".join(parts) + "."
    pct = f"{100 * r.threshold:g}%"
    for label in ties:
        text += f" {label} and {top.label} are within {pct} of each other (a tie)."
    for label in unclear:
        text += f" {label} and {top.label} cannot be told apart at this noise."
    text += _ranked_by(r.entries, "peak_mem", "Peak memory, least first", "MB")
    text += _ranked_by(r.entries, "gmacs", "GMACs, fewest first (exact)", "")
    bases = {c.basis for c in r.against_fastest if c is not None and c.verdict != "no samples"}
    if any("1 repeat" in b for b in bases):
        text += " Intervals are within-run only (1 repeat): they leave out run-to-run noise."
    elif bases:
        text += f" Intervals: {'; '.join(sorted(bases))}."
    return text


def _ranked_by(entries: list[Entry], attr: str, title: str, unit: str) -> str:
    have = sorted((e for e in entries if getattr(e, attr) is not None), key=lambda e: getattr(e, attr))
    if len(have) < 2:
        return ""
    low = getattr(have[0], attr)
    items = [f"{have[0].label} {fmt_number(low)}{' ' + unit if unit else ''}"]
    items += [f"{e.label} {getattr(e, attr) / low:.2f}×" if low > 0 else e.label for e in have[1:]]
    return f" {title}: " + ", ".join(items) + "."


def order_changes(df: pd.DataFrame, ranked: list[Ranked], several_runs: bool) -> list[str]:
    """Where the throughput ranking changes between adjacent resolutions of one group, with the
    scaling fit's crossover of the two models' latencies where it has one."""
    fits = [f for f in scaling_fits(df) if f.metric == "latency_ms"]
    found = crossovers(fits)
    out: list[str] = []
    by_group: dict[tuple, list[Ranked]] = {}
    for r in ranked:
        by_group.setdefault(r.group, []).append(r)
    for group, rs in by_group.items():
        for lo, hi in zip(rs, rs[1:]):
            before = [e.label for e in lo.entries]
            after = [e.label for e in hi.entries if e.label in before]
            before = [b for b in before if b in after]
            if before == after:
                continue
            swapped = [(a, b) for i, a in enumerate(before) for b in before[i + 1:] if after.index(a) > after.index(b)]
            for a, b in swapped:
                where = _crossover_text(found, group, a, b)
                out.append(f"{_group_text(group, several_runs)}: {a} is faster than {b} at {lo.res} but slower "
                           f"at {hi.res}{where}.")
    return out


def _crossover_text(found, group: tuple, a: str, b: str) -> str:
    run_id, task, mode, batch, dtype = group
    for x in found:
        if x.a.mode == mode and x.a.task == task and {x.a.label, x.b.label} == {a, b} and x.a.batch == batch:
            return f"; their fitted latencies cross at {side_text(x.pixels)}, {x.where}"
    return ""


def verdict_statements(df: pd.DataFrame, runs: list[Run], ranked: list[Ranked] | None = None) -> list[str]:
    ranked = rankings(df, runs) if ranked is None else ranked
    several_runs = df["run_id"].nunique() > 1
    return [paragraph(r, several_runs) for r in ranked] + order_changes(df, ranked, several_runs)


def matrix_tables(df: pd.DataFrame, runs: list[Run]) -> list[Table]:
    """Per group and resolution with two or more models: row model's throughput over the column
    model's, with its 95% interval, coloured by the verdict of the row against the column."""
    threshold = default_threshold(_device(df))
    several_runs = df["run_id"].nunique() > 1
    pending: list[tuple[str, str, list[str], list[list[Comparison | None]]]] = []
    for group, by_res in _entries(df, runs).items():
        for res, entries in by_res.items():
            if len(entries) < 2:
                continue
            grid = [[None if a is b else _compare(b, a, threshold) for b in entries] for a in entries]
            key = f"matrix-{len(pending) + 1}"  # unique: run ids and model names need no escaping here
            pending.append((key, f"{_group_text(group, several_runs)} · {res}: throughput, row ÷ column",
                            [e.label for e in entries], grid))
    flat = [c for _, _, _, g in pending for row in g for c in row if c is not None and c.verdict != "no samples"]
    adjusted = iter(adjust(flat, threshold))
    tables = []
    for key, title, labels, grid in pending:
        rows = []
        for label, row in zip(labels, grid):
            cells = [TableCell(label)]
            for c in row:
                if c is None:
                    cells.append(missing_cell("—"))
                elif c.verdict == "no samples":
                    cells.append(missing_cell("no samples"))
                else:
                    c = next(adjusted)
                    cells.append(TableCell(f"{ratio_ci(c)} {c.verdict}", kind=f"num v-{c.verdict}"))
            rows.append(cells)
        tables.append(Table(key, title, ["model", *labels], rows))
    return tables


# --------------------------------------------------------------------------------------------
# The headline figure
# --------------------------------------------------------------------------------------------


def throughput_ci(t: Timings | None, seed: int = SEED) -> tuple[float, float] | None:
    """95% percentile bootstrap of the sustained throughput over the iterations (and repeats)."""
    if t is None:
        return None
    x = np.concatenate([np.asarray(r, dtype=float) for r in t.repeats])
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = x[rng.integers(0, len(x), size=(CI_RESAMPLES, len(x)))]
    figures = t.images_per_step / (draws.mean(axis=1) / 1e3)
    lo, hi = np.percentile(figures, [2.5, 97.5])
    return float(lo), float(hi)


def headline_figure(df: pd.DataFrame, runs: list[Run]):
    """Throughput (with 95% CI bars) and peak memory against resolution, one line per model,
    for the first group (run, task, mode, batch) that has two or more resolutions."""
    from bench.report.plots import figure, legend_outside, log_y, res_axis

    entries = _entries(df, runs)
    group = next((g for g, by_res in entries.items() if len(by_res) >= 2), None)
    if group is None:
        return None
    fig, (ax_t, ax_m) = figure(12, 4.2, ncols=2)
    rows = [e for es in entries[group].values() for e in es]
    labels = list(dict.fromkeys(e.label for e in rows))
    frame = pd.DataFrame([{"pixels": e.pixels, "res": e.res} for e in rows])
    for label in labels:
        mine = sorted((e for e in rows if e.label == label), key=lambda e: e.pixels)
        x = [e.pixels for e in mine]
        y = [e.throughput for e in mine]
        cis = [throughput_ci(e.timings) for e in mine]
        err = np.array([[max(0.0, v - c[0]) if c else 0.0 for v, c in zip(y, cis)],
                        [max(0.0, c[1] - v) if c else 0.0 for v, c in zip(y, cis)]])
        ax_t.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        mem = [(e.pixels, e.peak_mem) for e in mine if e.peak_mem is not None]
        if mem:
            ax_m.plot(*zip(*mem), marker="o", label=label)
    for ax in (ax_t, ax_m):
        res_axis(ax, frame)
    log_y(ax_t)
    ax_t.set_ylabel("throughput (images/s), 95% CI")
    ax_m.set_ylabel("peak memory (MB)")
    ax_t.set_title(_group_text(group, False))
    ax_m.legend()
    legend_outside(ax_m)
    return fig


def headline_caption(df: pd.DataFrame) -> str:
    return ("Throughput with its 95% interval (a bootstrap of the timed iterations) and peak memory "
            "against resolution, one line per model.")
