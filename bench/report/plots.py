"""Plots of the performance cells, embedded in the page as PNG data URIs (no external files),
and the figure helpers the fine-tune plots share.

Figures are built without pyplot (no global state, nothing left open) and with mathtext off, so
a '$' in a model name is just a '$'.
"""
from __future__ import annotations

import base64
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pandas as pd

from bench.report.load import performance_cells
from bench.report.scaling import fit_label, gmacs_slopes, panel_title, scaling_fits

# (title, caption, function of the records frame returning a figure, or None when it has no data);
# the caption is a string or a function of the records frame (a caption that quotes the data).
PlotSpec = tuple[str, "str | Callable[[pd.DataFrame], str]", Callable]


@dataclass
class Plot:
    title: str
    caption: str
    data_uri: str


def make_plots(df: pd.DataFrame, specs: list[PlotSpec]) -> list[Plot]:
    """Render each plot that has data. Mathtext is off: a '$' in a model name is just a '$'."""
    import matplotlib
    import seaborn as sns

    plots = []
    with matplotlib.rc_context({"text.parse_math": False}):
        sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
        for title, caption, make in specs:
            fig = make(df)
            if fig is not None:
                plots.append(Plot(title, caption(df) if callable(caption) else caption, _data_uri(fig)))
    return plots


def _data_uri(fig) -> str:
    """The figure as a PNG data URI. Its labels come from records made visible
    (bench.report.render.neutral_runs: no control or bidi character reaches a font); a name in a
    script the font lacks, or one too long for the layout, still draws (a box per glyph, a tighter
    layout), so matplotlib's warning for each glyph or panel is not printed: the tables name it."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        warnings.filterwarnings("ignore", r"constrained_layout not applied", UserWarning)
        fig.savefig(buffer, format="png", dpi=96)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Figure helpers
# --------------------------------------------------------------------------------------------

PANELS_PER_ROW = 3  # in a grid of panels (panel_grid)


def figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A pyplot-free figure (no global state, nothing left open) in the report's style."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.flat)


def panel_grid(n: int, panel_width: float, panel_height: float):
    """A figure of ``n`` panels, at most PANELS_PER_ROW a row (plus room for a legend on the
    right); the unused places of the last row are hidden and left out of the returned axes."""
    ncols = min(n, PANELS_PER_ROW)
    nrows = -(-n // ncols)
    fig, axes = figure(panel_width * ncols + 2, panel_height * nrows, ncols=ncols, nrows=nrows)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def res_axis(ax, part: pd.DataFrame, x: str = "pixels") -> None:
    """x = pixel count (column ``x``) on a log scale, labelled with the resolution names."""
    ticks = part.drop_duplicates(x).sort_values(x)
    ax.set_xscale("log")
    ax.set_xticks(list(ticks[x]), list(ticks["res"]))
    ax.minorticks_off()
    ax.set_xlabel("resolution (log pixels)")


def log_y(ax) -> None:
    """Log y axis with plain numbers as tick labels (the default labels are mathtext, which is
    switched off so that user strings are never parsed as TeX)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def slanted_xticks(ax) -> None:
    """Long model names as x labels, slanted so they do not overlap."""
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")


def legend_outside(ax) -> None:
    import seaborn as sns

    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize="small")


def one_legend(axes: list, keep) -> None:
    """Panels share their colours and dashes, so only ``keep`` shows the legend, outside it."""
    for ax in axes:
        if ax is not keep and ax.get_legend() is not None:
            ax.get_legend().remove()
    legend_outside(keep)


# --------------------------------------------------------------------------------------------
# Performance plots
# --------------------------------------------------------------------------------------------


def _per_mode_lines(df: pd.DataFrame, y: str, ylabel: str, logy: bool) -> Any:
    """A line per model (and dash style per run) against resolution, one panel per mode."""
    import seaborn as sns

    perf = performance_cells(df)
    data = perf[(perf["status"] == "ok") & perf[y].notna() & perf["pixels"].notna()]
    if data.empty:
        return None
    modes = list(dict.fromkeys(data["mode"]))
    series = list(dict.fromkeys(data["series"]))
    # The same colour and dash for a model and a run in every panel, and every one in the legend.
    lines = {"style": "series", "style_order": series, "markers": True} if len(series) > 1 else {"marker": "o"}
    fig, axes = figure(5.5 * len(modes) + 3, 4.2, ncols=len(modes))
    for ax, mode in zip(axes, modes):
        part = data[data["mode"] == mode].sort_values("pixels")
        sns.lineplot(part, x="pixels", y=y, hue="label", hue_order=list(dict.fromkeys(data["label"])),
                     errorbar=None, ax=ax, **lines)
        res_axis(ax, part)
        if logy:
            log_y(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(mode)
    one_legend(axes, axes[-1])
    return fig


def plot_throughput(df: pd.DataFrame):
    return _per_mode_lines(df, "throughput", "throughput (images/s)", logy=True)


def plot_memory(df: pd.DataFrame):
    return _per_mode_lines(df, "peak_mem_mb", "peak memory (MB)", logy=False)


def plot_gmacs(df: pd.DataFrame):
    """GMACs depend on model and resolution only: one line per model, log-log."""
    import seaborn as sns

    perf = performance_cells(df)
    data = perf[perf["gmacs"].notna() & perf["pixels"].notna()].drop_duplicates(["label", "res"]).sort_values("pixels")
    if data.empty:
        return None
    fig, (ax,) = figure(8.5, 4.5)
    sns.lineplot(data, x="pixels", y="gmacs", hue="label", hue_order=list(dict.fromkeys(data["label"])),
                 style="family" if data["family"].notna().all() else None, markers=True, errorbar=None, ax=ax)
    res_axis(ax, data)
    log_y(ax)
    ax.set_ylabel("GMACs per image (log)")
    legend_outside(ax)
    return fig


TAIL_GROUPS = ("head", "other")


def stage_order(labels: Iterable[str]) -> list[str]:
    """Input to output: the embedding, then stages or block groups by their first number
    ("stage2" before "stage10", "blocks3-5" after "blocks0-2"), then the head and "other".
    Records are written with sorted keys, so their own order is alphabetical."""
    def key(label: str) -> tuple:
        if label in TAIL_GROUPS:
            return (3, TAIL_GROUPS.index(label), 0, label)
        number = re.search(r"\d+", label)
        if number is None:
            return (0, 0, 0, label)  # patch_embed, stem, ...
        return (1, 0, int(number.group()), label)

    return sorted(dict.fromkeys(labels), key=key)


def plot_stage_gmacs(df: pd.DataFrame):
    """Stacked bars of GMACs per stage, one bar per model, one panel per resolution."""
    import seaborn as sns

    data = df[df["stage_gmacs"].map(lambda s: isinstance(s, dict) and bool(s))]
    data = data.drop_duplicates(["label", "res"]).sort_values(["pixels", "model_order"])
    if data.empty:
        return None
    resolutions = list(dict.fromkeys(data["res"]))
    fig, axes = panel_grid(len(resolutions), 5, 3.8)
    stages = stage_order(k for s in data["stage_gmacs"] for k in s)
    body = [s for s in stages if s not in TAIL_GROUPS]
    # The backbone in one sequential palette (input to output), the head and the rest in greys.
    colours = sns.color_palette("crest", len(body)) + sns.color_palette("Greys_r", len(stages) - len(body) + 2)[1:-1]
    for ax, res in zip(axes, resolutions):
        part = data[data["res"] == res]
        table = pd.DataFrame(list(part["stage_gmacs"]), index=list(part["label"]), columns=stages).fillna(0.0)
        table.plot.bar(stacked=True, ax=ax, color=colours, legend=ax is axes[-1])
        slanted_xticks(ax)
        ax.set_title(f"{res}")
        ax.set_ylabel("GMACs")
    legend_outside(axes[-1])
    return fig


OP_CATEGORIES = ["attention", "matmul", "conv", "norm", "elementwise", "communication", "other"]


def plot_op_breakdown(df: pd.DataFrame):
    """Share of time per op category for every profiled cell, as stacked horizontal bars."""
    import seaborn as sns

    data = df[df["op_breakdown"].map(lambda s: isinstance(s, dict) and bool(s))]
    data = data.sort_values(["mode", "pixels", "model_order", "series_order"], kind="stable")
    if data.empty:
        return None
    several_runs = data["series"].nunique() > 1
    labels = [f"{r.model} @ {r.res} · {r.mode}" + (f" · {r.series}" if several_runs else "")
              for r in data.itertuples()]
    table = pd.DataFrame(list(data["op_breakdown"]), index=labels).fillna(0.0) * 100
    categories = [c for c in OP_CATEGORIES if c in table] + [c for c in table if c not in OP_CATEGORIES]
    table = table[categories].iloc[::-1]  # first cell on top
    fig, (ax,) = figure(11, 1.2 + 0.26 * len(table))
    table.plot.barh(stacked=True, ax=ax, color=sns.color_palette("tab10", len(categories)), width=0.8)
    ax.set_xlabel("share of time (%)")
    ax.set_xlim(0, max(100.0, float(table.sum(axis=1).max())))
    legend_outside(ax)
    return fig


def plot_scaling(df: pd.DataFrame):
    """Scaling efficiency against world size, when more than one engine or world size ran.

    Uses the recorded efficiency; where it is missing, per-rank throughput relative to the
    smallest world size of the same model, resolution, mode and device in the same run.
    """
    import seaborn as sns

    perf = performance_cells(df)
    data = perf[perf["status"] == "ok"].copy()
    if data[["engine", "world_size"]].drop_duplicates().shape[0] < 2:
        return None
    key = ["model", "res", "mode", "device_name"] + (["run_id"] if "run_id" in data else [])  # within one run
    per_rank = data["throughput"] / data["world_size"]
    smallest = data.groupby(key, dropna=False)["world_size"].transform("min")
    base = per_rank.where(data["world_size"] == smallest).groupby([data[k] for k in key], dropna=False).transform("max")
    data["efficiency"] = (data["scaling_efficiency"].fillna(per_rank / base)) * 100
    data = data[data["efficiency"].notna()]
    if data.empty:
        return None
    data["cell"] = data["res"] + " · " + data["mode"]
    legend_entries = data["model"].nunique() + data["engine"].nunique() + 2
    fig, (ax,) = figure(8.5, max(4.5, 0.25 * legend_entries))
    # One line per model, resolution and mode (units), coloured by model, dashed by engine.
    sns.lineplot(data.sort_values("world_size"), x="world_size", y="efficiency", hue="model", style="engine",
                 units="cell", estimator=None, markers=True, ax=ax)
    ax.set_xticks(sorted(data["world_size"].unique()))
    ax.set_xlabel("world size (ranks)")
    ax.set_ylabel("scaling efficiency (%)")
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    legend_outside(ax)
    return fig


def gmacs_caption(df: pd.DataFrame) -> str:
    return ("Multiply-adds per image, log–log, so a line's slope is the k of GMACs ∝ pixels^k. "
            "Convolutions have k = 1; global attention (ViT) grows with the square of the token "
            "count N, and PVT v1's spatial-reduction attention with N²/R² — divided by R², still "
            "quadratic. " + gmacs_slopes(df)).strip()


# --------------------------------------------------------------------------------------------
# Resolution scaling: measured points and fitted lines (bench.report.scaling)
# --------------------------------------------------------------------------------------------


def plot_scaling_fits(df: pd.DataFrame):
    """One log–log panel per metric and mode: the measured points and each fitted line over the
    range it was fitted on, with k in the legend."""
    import numpy as np
    import seaborn as sns

    fits = scaling_fits(df)
    if not fits:
        return None
    panels = list(dict.fromkeys((f.metric, f.mode) for f in fits))
    labels = list(dict.fromkeys(fit_label(f, fits) for f in fits))
    colours = dict(zip(labels, sns.color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))))
    fig, axes = panel_grid(len(panels), 4.6, 3.6)
    for ax, (metric, mode) in zip(axes, panels):
        ticks: dict[float, str] = {}
        for f in (f for f in fits if (f.metric, f.mode) == (metric, mode)):
            label = fit_label(f, fits)
            ax.plot(f.pixels, f.values, "o", color=colours[label], ms=5)
            x = np.geomspace(min(f.pixels), max(f.pixels), 50)
            ax.plot(x, f.predict(x), "-", color=colours[label], lw=1.4, label=f"{label}: k {f.k:.2f}, R² {f.r2:.3f}")
            ticks.update(zip(f.pixels, f.res))
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks), [ticks[p] for p in sorted(ticks)])
        ax.minorticks_off()
        ax.set_xlabel("input (log pixels)")
        log_y(ax)
        ax.set_title(panel_title(metric, mode))
        ax.legend(fontsize="x-small", frameon=False, loc="upper left")
    return fig


SCALING_PLOTS: list[PlotSpec] = [
    ("Cost vs resolution, fitted", "Points: measured cells; lines: the least-squares fit cost = c · "
     "pixels^k on log–log, drawn over the range it was fitted on (a straight line of slope k). "
     "k and R² of each fit are in the panel's legend.", plot_scaling_fits),
]


PERF_PLOTS: list[PlotSpec] = [
    ("Throughput vs resolution", "Images per second (log), one line per model; dashes tell runs apart.",
     plot_throughput),
    ("GMACs vs resolution", gmacs_caption, plot_gmacs),
    ("Peak memory vs resolution", "Peak memory of a cell in MB.", plot_memory),
    ("GMACs per stage", "Where the multiply-adds are spent, per model and resolution.", plot_stage_gmacs),
    ("Time by operation category", "Share of profiled time per op category.", plot_op_breakdown),
    ("Scaling efficiency vs world size",
     "Per-rank throughput relative to the smallest world size; 100% is linear scaling.", plot_scaling),
]
