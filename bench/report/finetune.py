"""The fine-tune section: detection and segmentation scores per backbone (with the paper's
for the same backbone), loss curves and final metrics."""
from __future__ import annotations

from typing import Any

import pandas as pd

from bench.record import FINETUNE, Display
from bench.report.load import finetune_cells, is_missing
from bench.report.plots import PANELS_PER_ROW, PlotSpec, figure, one_legend, panel_grid, slanted_xticks
from bench.report.references import DENSE_NOTES, paper_dense_score
from bench.report.tables import Metric, Table, TableCell, metric_table, schema_metrics

# What the report derives itself: the mean loss over the last steps (the last step's loss for
# records without it).
FINAL_LOSS = Metric("final_loss", "final loss", Display("final loss", better="min", sections=(FINETUNE,)))


def finetune_metrics() -> list[Metric]:
    """The fine-tune table's columns, from the schema (section "finetune"): the scores first
    (recorded as fractions, shown in percent like the paper's; the untrained and majority-class
    scores are the floor to clear, never marked best), the final loss, then what the fine-tune
    shares with the performance tables (throughput, memory)."""
    metrics = schema_metrics(FINETUNE)
    own = [m for m in metrics if m.display.sections[0] == FINETUNE]
    return own + [FINAL_LOSS] + metrics[len(own):]


TASK_TITLES = {"det": "Fine-tunes: detection (RetinaNet)", "seg": "Fine-tunes: segmentation (Semantic FPN)"}
PAPER_DENSE_HEADERS = {"det": "paper RetinaNet AP (%)", "seg": "paper Semantic FPN mIoU (%)"}
FINETUNE_ID_COLUMNS = [("res", "res"), ("model", "model"), ("pretrained_text", "pretrained"),
                       ("setup", "run"), ("run_id", "run id")]


def finetune_tables(df: pd.DataFrame) -> list[Table]:
    """One table per fine-tune task: the scores per backbone, and the paper's for the same one."""
    tables = []
    finetunes = finetune_cells(df)
    for task in dict.fromkeys(finetunes["mode"]):
        part = finetunes[finetunes["mode"] == task].copy()
        # The mean over the last tenth of the steps where recorded: one noisy step says little.
        last = pd.Series([_final_loss(c) for c in part["loss_curve"]], index=part.index)
        part["final_loss"] = part["loss_last_mean"].fillna(last)
        part["pretrained_text"] = part["pretrained"].map(lambda p: "—" if is_missing(p) else ("yes" if p else "no"))
        part = part.sort_values(["pixels", "model_order", "pretrained_text", "series_order"], kind="stable")
        part = part.reset_index(drop=True)
        title = TASK_TITLES.get(task, f"Fine-tunes: {task}")
        table = metric_table(f"finetune-{task}", title, part, FINETUNE_ID_COLUMNS, finetune_metrics(), ["res"])
        # The paper's score goes just before the status column (the last but one: flags close the row).
        table.columns.insert(len(table.columns) - 2, PAPER_DENSE_HEADERS.get(task, "paper"))
        for row, model in zip(table.rows, part["model"]):
            row.insert(len(row) - 2, TableCell(paper_dense_score(model, task), kind="num"))
        tables.append(table)
        details = metric_table(f"finetune-{task}-details", f"{title}: step times", part, FINETUNE_ID_COLUMNS,
                               schema_metrics(FINETUNE, main=False), ["res"])
        if len(details.columns) > len(FINETUNE_ID_COLUMNS) + 2:  # more than the status and flags columns
            tables.append(details)
    if tables:
        tables[-1].notes = DENSE_NOTES  # once, below the last fine-tune table
    return tables


def _final_loss(curve: Any) -> float:
    if isinstance(curve, list) and curve:
        try:
            return float(curve[-1])
        except (TypeError, ValueError):
            return float("nan")
    return float("nan")


def _labelled_finetunes(df: pd.DataFrame) -> pd.DataFrame:
    """Fine-tune records with a "backbone" label and a readable "init" (pretrained or scratch).

    The label is the model; the run id joins it only where the same backbone was fine-tuned for
    the same task in more than one run (a det run and a seg run side by side are told apart by
    their panels, not their labels)."""
    part = finetune_cells(df).copy()
    runs_per_backbone = part.groupby(["model", "mode"])["series"].transform("nunique")
    part["backbone"] = [m + (f" · {run}" if n > 1 else "")
                        for m, run, n in zip(part["model"], part["run_id"], runs_per_backbone)]
    part["init"] = part["pretrained"].map(lambda p: "pretrained" if p is True else ("scratch" if p is False else "?"))
    return part


# Loss curves are noisy step to step: each is drawn smoothed by an exponential moving average,
# s_1 = loss_1, s_t = EMA_SMOOTHING · s_(t-1) + (1 - EMA_SMOOTHING) · loss_t, over its raw curve.
EMA_SMOOTHING = 0.9
INIT_DASHES = {"pretrained": "-", "scratch": "--", "?": ":"}


def ema(values, smoothing: float = EMA_SMOOTHING) -> list[float]:
    """The exponential moving average of ``values`` (a missing value keeps the average)."""
    out, s = [], None
    for v in values:
        if v is not None and v == v:
            s = float(v) if s is None else smoothing * s + (1.0 - smoothing) * float(v)
        out.append(float("nan") if s is None else s)
    return out


def plot_loss_curves(df: pd.DataFrame):
    """Training loss against step, one panel per task: each curve raw (faint) and smoothed."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    part = _labelled_finetunes(df)
    part = part[part["loss_curve"].map(lambda c: isinstance(c, list) and bool(c))]
    if part.empty:
        return None
    modes = list(dict.fromkeys(part["mode"]))
    backbones = list(dict.fromkeys(part["backbone"]))
    inits = list(dict.fromkeys(part["init"]))
    colours = dict(zip(backbones, sns.color_palette("tab10" if len(backbones) <= 10 else "husl", len(backbones))))
    dashes = INIT_DASHES if len(inits) > 1 else {}  # one kind of start: every line solid
    fig, axes = figure(5.5 * len(modes) + 3, 4, ncols=len(modes))
    for ax, mode in zip(axes, modes):
        for _, r in part[part["mode"] == mode].iterrows():
            loss = pd.to_numeric(pd.Series(r["loss_curve"]), errors="coerce")
            steps = range(1, len(loss) + 1)
            style = {"color": colours[r["backbone"]], "linestyle": dashes.get(r["init"], "-")}
            ax.plot(steps, loss, alpha=0.22, lw=0.8, **style)
            ax.plot(steps, ema(loss), lw=1.8, **style)
        ax.set_title(mode)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    handles = [Line2D([], [], color=colours[b], lw=1.8, label=b) for b in backbones]
    handles += [Line2D([], [], color="grey", lw=1.8, linestyle=dashes[i], label=i) for i in inits if dashes]
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize="small")
    return fig


def plot_finetune_metrics(df: pd.DataFrame):
    """Bars of each final metric per backbone, pretrained and scratch side by side."""
    import seaborn as sns

    part = _labelled_finetunes(df)
    part = part[part["status"] == "ok"]
    # The scores a fine-tune is judged by: its own figures where higher is better, in percent.
    scores = {m.field: m for m in finetune_metrics()
              if m.display.sections[0] == FINETUNE and m.better == "max" and m.display.unit == "%"}
    metrics = [f for f in scores if f in part.columns and part[f].notna().any()]
    if part.empty or not metrics:
        return None
    long = part.melt(id_vars=["backbone", "init", "mode"], value_vars=metrics, var_name="metric")
    long = long.dropna(subset=["value"])
    long["value"] = long["value"] * long["metric"].map({f: scores[f].display.scale for f in metrics})
    inits = list(dict.fromkeys(long["init"]))
    fig, axes = panel_grid(len(metrics), 4.2, 3.4)
    for ax, metric in zip(axes, metrics):
        sns.barplot(long[long["metric"] == metric], x="backbone", y="value", hue="init", hue_order=inits,
                    errorbar=None, ax=ax)
        ax.set_title(scores[metric].header)
        ax.set_ylabel("%")
        ax.set_xlabel("")
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
        slanted_xticks(ax)
    # Top right: the legend widens the last column only.
    one_legend(axes, axes[min(len(axes), PANELS_PER_ROW) - 1])
    return fig


FINETUNE_PLOTS: list[PlotSpec] = [
    ("Fine-tune loss curves",
     f"Training loss per step, per backbone: faint, the raw loss of each step; solid, its exponential moving "
     f"average with smoothing factor {EMA_SMOOTHING:g} (s_t = {EMA_SMOOTHING:g}·s_(t−1) + "
     f"{1 - EMA_SMOOTHING:.1f}·loss_t, starting at the first step's loss). Where pretrained and "
     f"from-scratch fine-tunes are both shown, from scratch is dashed.", plot_loss_curves),
    ("Fine-tune metrics", "Final metrics per backbone (colour: pretrained or from scratch).", plot_finetune_metrics),
]
