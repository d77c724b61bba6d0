"""The memory frontier: the largest batch that fits, against resolution, from the cells that ran
with ``--batch auto`` (their ``batch_search``: every batch tried and whether it fit), per model,
engine and ZeRO stage."""
from __future__ import annotations

import pandas as pd

from bench.report.load import is_missing, performance_cells
from bench.report.plots import PlotSpec, figure, one_legend, res_axis
from bench.report.tables import Table, TableCell, as_text, fmt_number, missing_cell, status_cell

FRONTIER_INTRO = [
    "Cells run with --batch auto search for the largest batch that runs one step: the batch "
    "doubles until a step fails, then bisects. A search that never failed stopped at its cap, "
    "so its largest batch is a lower bound (shown as “≥ N”).",
]


def frontier_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The cells with a batch search, one row each, with ``largest`` (the largest batch that
    fit, 0 where batch 1 did not), ``smallest_failed`` (None where none failed: the search's
    cap), ``tried`` and ``strategy`` (engine and ZeRO stage)."""
    perf = performance_cells(df)
    part = perf[perf["batch_search"].map(lambda s: isinstance(s, list) and bool(s))].copy()
    if part.empty:
        return part
    trials = part["batch_search"].map(_trials)
    part["largest"] = trials.map(lambda t: max([b for b, fits in t if fits], default=0))
    part["smallest_failed"] = pd.Series([min([b for b, fits in t if not fits and b > big], default=None)
                                         for t, big in zip(trials, part["largest"])], index=part.index, dtype=object)
    part["tried"] = trials.map(len)
    part["strategy"] = part["engine_label"]
    return part.sort_values(["mode", "series_order", "model_order", "strategy", "input_pixels"], kind="stable")


def _trials(search: list) -> list[tuple[int, bool]]:
    out = []
    for trial in search:
        if isinstance(trial, dict) and isinstance(trial.get("batch"), (int, float)):
            out.append((int(trial["batch"]), bool(trial.get("fits"))))
    return out


def largest_text(r: pd.Series) -> str:
    largest = int(r["largest"])
    return f"≥ {largest}" if is_missing(r["smallest_failed"]) and largest > 0 else str(largest)


def frontier_table(df: pd.DataFrame) -> Table | None:
    part = frontier_cells(df)
    if part.empty:
        return None
    several_runs = part["run_id"].nunique() > 1  # the engine and world size are columns of their own
    several_tasks = part["task"].nunique() > 1
    columns = ["mode", "model", *(["task"] if several_tasks else []), "engine", "world size", "precision",
               *(["run id"] if several_runs else []), "res", "largest batch that fits", "smallest that did not",
               "batches tried", "peak memory at that batch (MB)", "status"]
    rows, starts, previous = [], set(), None
    for _, r in part.iterrows():
        group = (r["mode"], r["series"], r["label"], r["strategy"], r["precision"])
        if group != previous:
            starts.add(len(rows))
            previous = group
        row = [TableCell(r["mode"]), TableCell(r["model"])] + ([TableCell(r["task"])] if several_tasks else [])
        row += [TableCell(r["strategy"]), TableCell(as_text(r["world_size"])), TableCell(as_text(r["precision"]))]
        row += [TableCell(r["run_id"])] if several_runs else []
        row += [TableCell(r["res"]), TableCell(largest_text(r), kind="num"),
                TableCell(str(int(r["smallest_failed"])), kind="num") if not is_missing(r["smallest_failed"])
                else missing_cell("none (search cap)"),
                TableCell(str(r["tried"]), kind="num"),
                TableCell(fmt_number(r["peak_mem_mb"]),
                          kind="num") if not is_missing(r["peak_mem_mb"]) else missing_cell(),
                status_cell(r["status"], r["error"])]
        rows.append(row)
    return Table("frontier", "Memory frontier: largest batch per resolution", columns, rows, [], starts)


def plot_frontier(df: pd.DataFrame):
    """Largest batch that fits against resolution (log–log, base 2 on y), one panel per mode;
    colour: model, dashes and markers: engine and ZeRO stage; a lower bound (search cap) is a
    hollow marker above its point."""
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    part = frontier_cells(df)
    part = part[part["largest"] > 0] if not part.empty else part
    if part.empty:
        return None
    part = part.assign(line=part["label"] + (" · " + part["run_id"] if part["run_id"].nunique() > 1 else ""))
    modes = list(dict.fromkeys(part["mode"]))
    fig, axes = figure(5.5 * len(modes) + 3, 4.2, ncols=len(modes))
    for ax, mode in zip(axes, modes):
        data = part[part["mode"] == mode]
        sns.lineplot(data, x="input_pixels", y="largest", hue="line", hue_order=list(dict.fromkeys(part["line"])),
                     style="strategy", style_order=list(dict.fromkeys(part["strategy"])), markers=True,
                     errorbar=None, ax=ax)
        capped = data[data["smallest_failed"].isna()]
        if not capped.empty:
            ax.scatter(capped["input_pixels"], capped["largest"] * 1.25, marker="^", facecolors="none",
                       edgecolors="grey", label="lower bound (search cap)")
        res_axis(ax, data, "input_pixels")
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylabel("largest batch that fits")
        ax.set_title(mode)
    one_legend(axes, axes[-1])
    return fig


FRONTIER_PLOTS: list[PlotSpec] = [
    ("Largest batch vs resolution", "The largest batch that ran one step, per model (colour) and engine "
     "and ZeRO stage (dashes), log–log; a grey triangle marks a lower bound (the search never failed).",
     plot_frontier),
]
