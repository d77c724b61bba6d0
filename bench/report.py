"""Reports: one or more run directories -> a self-contained HTML page, or the same tables as CSV
or Markdown for papers and PRs.

Every view is built from the same ``Table`` objects, so the HTML, CSV and Markdown cannot
disagree. The page has no scripts and no external links: plots are PNG data URIs, the CSS is
inline, and every string from a user or a results file goes through jinja2's autoescape.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import click
import pandas as pd

from bench import __version__
from bench.errors import BadInput
from bench.record import ENV, RECORDS, read_records

FORMATS = ("html", "csv", "md")
TEMPLATE = "report.html.j2"

# --------------------------------------------------------------------------------------------
# Reference figures, held against ours where a run measured the same thing.
# --------------------------------------------------------------------------------------------

# PVT v1 paper (Wang et al., 2021), Table 2: ImageNet-1k classification at 224x224. The paper's
# "GFLOPs" count one multiply-add as one operation, i.e. they are GMACs.
PAPER_TABLE2: dict[str, tuple[str, float, float]] = {
    # our name: (paper's name, params in millions, GMACs)
    "resnet18": ("ResNet18", 11.7, 1.8),
    "pvt_tiny": ("PVT-Tiny", 13.2, 1.9),
    "resnet50": ("ResNet50", 25.6, 4.1),
    "vit_s": ("DeiT-Small/16", 22.1, 4.6),
    "pvt_small": ("PVT-Small", 24.5, 3.8),
    "resnet101": ("ResNet101", 44.7, 7.9),
    "pvt_medium": ("PVT-Medium", 44.2, 6.7),
    "vit_b": ("ViT-Base/16", 86.6, 17.6),
    "pvt_large": ("PVT-Large", 61.4, 9.8),
}

# Published inference throughput at 224 (images/s): the V100 column is the survey table citing
# DeiT and T2T; the RTX 4090 column is timm's published benchmark CSV (AMP, batch 1024).
PUBLISHED_THROUGHPUT: dict[str, dict[str, float]] = {
    "resnet50": {"V100": 1226, "RTX 4090": 4302.8},
    "vit_s": {"V100": 940, "RTX 4090": 8214.7},
    "pvt_small": {"V100": 820},
}

# PVT v1 paper, Tables 3, 5 and 11: RetinaNet (COCO, 1x schedule) box AP and Semantic FPN
# (ADE20K) mIoU, both in percent.
PAPER_DENSE: dict[str, dict[str, float]] = {
    "resnet18": {"det": 31.8, "seg": 32.9},
    "pvt_tiny": {"det": 36.7, "seg": 35.7},
    "resnet50": {"det": 36.3, "seg": 36.7},
    "pvt_small": {"det": 40.4, "seg": 39.8},
}

REFERENCE_NOTES = [
    "The paper's “GFLOPs” count a multiply-add as one operation, so they are compared with our "
    "GMACs; our GFLOPs (recorded as 2 × GMACs) are twice that.",
    "FLOP counters disagree on what to count: ours counts the multiply-adds of convolutions, "
    "linear layers and attention matmuls and skips softmax, normalisation, activations and "
    "additions, so a few percent either way is expected.",
    "Parameters include the 1000-class head. The paper's ViT-S row is DeiT-Small/16, the same "
    "architecture as our vit_s; its ViT-B row is ViT-Base/16 = DeiT-Base/16.",
]

THROUGHPUT_NOTES = [
    "Published throughputs were measured on V100 and RTX 4090 GPUs (timm's with AMP at batch "
    "1024); they are only comparable with a run on the same GPU, dtype and batch. A CPU run is "
    "never comparable — the column is shown for scale only.",
]

DENSE_NOTES = [
    "The paper trains RetinaNet on COCO for 12 epochs at a shorter side of 800 and Semantic FPN "
    "on ADE20K for 80k iterations; a short fine-tune on a small set will score far lower. "
    "Compare backbones with each other within a run, not with the paper.",
]

# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

RECORD_FIELDS = [
    "model", "family", "res", "height", "width", "mode", "batch", "device", "device_name",
    "dtype", "engine", "zero", "world_size", "global_batch", "params", "gmacs", "gflops",
    "stage_gmacs", "latency_ms", "latency_p90_ms", "throughput", "per_rank_step_ms",
    "scaling_efficiency", "peak_mem_mb", "mfu", "peak_tflops", "op_breakdown", "status", "error",
    "iters", "wall_s", "loadavg_1m", "run_id", "timestamp", "map", "ap50", "ap75", "miou",
    "pixel_acc", "loss_curve", "pretrained", "untrained_map", "untrained_miou", "majority_miou",
    "loss_last_mean",
]
FINETUNE_MODES = ("det", "seg")


@dataclass
class Run:
    """One run directory: its environment and its records."""

    path: Path
    env: dict[str, Any]
    records: list[dict[str, Any]]
    run_id: str = ""  # unique among the runs of one report (see load_runs)


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """Load every run; a run id that two of them share (a copied directory) gets a "#2" suffix,
    so each run keeps its own column and line."""
    runs = [load_run(Path(p)) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:
        base = str(run.env.get("run_id") or _first(run.records, "run_id") or run.path.name)
        seen[base] = seen.get(base, 0) + 1
        run.run_id = base if seen[base] == 1 else f"{base} #{seen[base]}"
    return runs


def load_run(path: Path) -> Run:
    """Read a run directory; a missing directory or one with no records is bad input."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"run directory '{path}' does not exist; pass a directory written by `bench run --out DIR`")
    records_path = path / RECORDS
    if not records_path.is_file():
        raise BadInput(f"'{path}' has no {RECORDS}; pass a directory written by `bench run --out DIR`")
    records = [r for r in read_records(records_path) if isinstance(r, dict)]
    if not records:
        raise BadInput(f"'{records_path}' holds no finished cell; run `bench run --out {path}` to fill it")
    env: dict[str, Any] = {}
    env_path = path / ENV
    if env_path.is_file():
        try:
            loaded = json.loads(env_path.read_text())
            env = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            env = {}
    return Run(path=path, env=env, records=records)


def _first(records: Iterable[dict], key: str) -> Any:
    return next((r.get(key) for r in records if r.get(key) is not None), None)


def records_frame(runs: list[Run]) -> pd.DataFrame:
    """All records of all runs in one frame, with the labels and sort keys the report needs.

    ``setup`` is "<device_name> · <engine> ×<world_size>", ``series`` adds the run id so two runs
    of the same set-up (two commits, say) stay apart.
    """
    rows = []
    for run_index, run in enumerate(runs):
        for r in run.records:
            row = {**{k: r.get(k) for k in RECORD_FIELDS}, "run_id": run.run_id, "run_index": run_index}
            row["device_name"] = row["device_name"] or run.env.get("device_name") or row["device"]
            rows.append(row)
    df = pd.DataFrame(rows, columns=[*RECORD_FIELDS, "run_index"])
    df = df.astype({"model": "object", "res": "object", "mode": "object"})
    df["model"] = df["model"].map(lambda m: "?" if m is None or m != m else str(m))
    df["mode"] = df["mode"].map(lambda m: "infer" if m is None or m != m else str(m))
    df["engine"] = df["engine"].fillna("none").astype(str)
    # bench run records the step time of every rank; the slowest one sets the pace.
    df["per_rank_step_ms"] = df["per_rank_step_ms"].map(_slowest_rank)
    df["world_size"] = pd.to_numeric(df["world_size"], errors="coerce").fillna(1).astype(int)
    df["device_name"] = df["device_name"].fillna("unknown device").astype(str)
    df["status"] = df["status"].fillna("ok").astype(str)
    df["res"] = [_res_label(r) for r in df[["res", "height", "width"]].to_dict("records")]
    df["pixels"] = [_pixels(r) for r in df[["res", "height", "width"]].to_dict("records")]
    for col in ("params", "gmacs", "latency_ms", "latency_p90_ms", "throughput", "per_rank_step_ms",
                "scaling_efficiency", "peak_mem_mb", "mfu", "map", "ap50", "ap75", "miou", "pixel_acc",
                "untrained_map", "untrained_miou", "majority_miou", "loss_last_mean"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    engine = df["engine"] + [f" ZeRO-{int(z)}" if e == "deepspeed" and pd.notna(z) else "" for e, z in zip(df["engine"], df["zero"])]
    df["setup"] = df["device_name"] + " · " + engine + " ×" + df["world_size"].astype(str)
    df["series"] = df["setup"] + " · " + df["run_id"]
    # Order of first appearance: the order the user asked for models and runs.
    df["model_order"] = df["model"].map({m: i for i, m in enumerate(dict.fromkeys(df["model"]))})
    df["series_order"] = df["series"].map({s: i for i, s in enumerate(dict.fromkeys(df["series"]))})
    return df


def _slowest_rank(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        numbers = [x for x in v if isinstance(x, (int, float))]
        return max(numbers) if numbers else None
    return v


def _res_label(r: dict) -> str:
    if r.get("res") is not None and r["res"] == r["res"]:
        return str(r["res"])
    h, w = r.get("height"), r.get("width")
    if h is None or h != h:
        return "?"
    h, w = int(h), int(w if w is not None and w == w else h)
    return str(h) if h == w else f"{h}x{w}"


def _pixels(r: dict) -> float:
    h, w = r.get("height"), r.get("width")
    if h is not None and h == h:
        return float(h) * float(w if w is not None and w == w else h)
    try:
        sides = [float(s) for s in str(r.get("res")).lower().split("x")]
        return sides[0] * sides[-1]
    except ValueError:
        return float("nan")


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    text: str
    best: bool = False
    kind: str = ""  # a CSS class: "num", "oom", "error", "missing"


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    group_starts: set[int] = field(default_factory=set)  # row indices that start a new group

    def to_frame(self, mark_best: str = "") -> pd.DataFrame:
        """Cell texts; ``mark_best`` wraps best cells (Markdown: "**")."""
        data = [[f"{mark_best}{c.text}{mark_best}" if c.best and mark_best else c.text for c in row] for row in self.rows]
        return pd.DataFrame(data, columns=self.columns)


@dataclass(frozen=True)
class Metric:
    field: str
    header: str
    better: str  # "min", "max", or "" for a reference value that is never marked
    scale: float = 1.0


# Best per column, among the "ok" cells of the same resolution and batch (comparing a 224 cell
# with an 800 one says nothing): the largest throughput, MFU and scaling efficiency; the
# smallest params, GMACs, latency, step time and memory (the cheaper model for the same job).
PERF_METRICS = [
    Metric("params", "params (M)", "min", 1e-6),
    Metric("gmacs", "GMACs", "min"),
    Metric("latency_ms", "latency (ms, median)", "min"),
    Metric("latency_p90_ms", "latency p90 (ms)", "min"),
    Metric("throughput", "throughput (img/s)", "max"),
    Metric("per_rank_step_ms", "step per rank (ms)", "min"),
    Metric("peak_mem_mb", "peak memory (MB)", "min"),
    Metric("mfu", "MFU (%)", "max", 100.0),
    Metric("scaling_efficiency", "scaling efficiency (%)", "max", 100.0),
]

# Fine-tune scores are recorded as fractions and shown in percent, like the paper's. The
# untrained and majority-class scores are the floor a fine-tune has to clear, not contenders.
FINETUNE_METRICS = [
    Metric("map", "mAP (%)", "max", 100.0),
    Metric("ap50", "AP50 (%)", "max", 100.0),
    Metric("ap75", "AP75 (%)", "max", 100.0),
    Metric("untrained_map", "mAP untrained (%)", "", 100.0),
    Metric("miou", "mIoU (%)", "max", 100.0),
    Metric("pixel_acc", "pixel acc. (%)", "max", 100.0),
    Metric("untrained_miou", "mIoU untrained (%)", "", 100.0),
    Metric("majority_miou", "mIoU majority class (%)", "", 100.0),
    Metric("final_loss", "final loss", "min"),
    Metric("throughput", "throughput (img/s)", "max"),
    Metric("peak_mem_mb", "peak memory (MB)", "min"),
]


def fmt_number(x: float) -> str:
    """Four or so significant digits, never scientific notation for ordinary magnitudes."""
    ax = abs(x)
    if ax >= 100:
        return f"{x:.0f}" if ax >= 1000 else f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


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


def _metric_table(key: str, title: str, df: pd.DataFrame, id_columns: list[tuple[str, str]],
                  metrics: list[Metric], group_by: list[str], notes: list[str] | None = None) -> Table:
    """Rows of ``df`` as a table: identity columns, the metrics that have any value, status.

    A metric cell of an OOM or failed cell shows that status instead of a gap; an ok cell that
    did not measure the metric shows "—".
    """
    metrics = [m for m in metrics if df[m.field].notna().any()]
    ok = df["status"] == "ok"
    best: dict[str, pd.Series] = {}
    for m in metrics:
        if not m.better:
            best[m.field] = pd.Series(False, index=df.index)
            continue
        values = df[m.field].where(ok)
        groups = values.groupby([df[g] for g in group_by], dropna=False, sort=False)
        target = groups.transform("max" if m.better == "max" else "min")
        # Only where there is a choice: two or more values that are not all the same.
        best[m.field] = (values == target) & (groups.transform("nunique") >= 2)

    rows: list[list[Cell]] = []
    group_starts: set[int] = set()
    previous_group = None
    for i, (idx, r) in enumerate(df.iterrows()):
        group = tuple(r[g] for g in group_by)
        if group != previous_group:
            group_starts.add(i)
            previous_group = group
        row = [Cell(_text(r[c])) for c, _ in id_columns]
        short_status = status_text(r["status"], None)
        for m in metrics:
            v = r[m.field]
            if pd.notna(v):
                row.append(Cell(fmt_number(float(v) * m.scale), bool(best[m.field].loc[idx]), "num"))
            elif r["status"] != "ok":
                row.append(Cell(short_status, kind=status_kind(r["status"])))
            else:
                row.append(Cell("—", kind="missing"))
        row.append(Cell(status_text(r["status"], r["error"]), kind=status_kind(r["status"])))
        rows.append(row)
    columns = [h for _, h in id_columns] + [m.header for m in metrics] + ["status"]
    return Table(key, title, columns, rows, notes or [], group_starts)


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Resolution-major (the best marks compare models at one resolution), then model, batch,
    run."""
    return df.sort_values(["pixels", "res", "model_order", "batch", "series_order", "dtype"],
                          na_position="last", kind="stable")


PERF_ID_COLUMNS = [("res", "res"), ("model", "model"), ("batch", "batch"), ("dtype", "dtype"),
                   ("setup", "run"), ("run_id", "run id")]


def perf_tables(df: pd.DataFrame) -> list[Table]:
    """One table per mode (infer, train, ...), rows model × resolution × batch × run."""
    tables = []
    perf = df[~df["mode"].isin(FINETUNE_MODES)]
    for mode in dict.fromkeys(perf["mode"]):
        part = _sorted(perf[perf["mode"] == mode]).reset_index(drop=True)
        tables.append(_metric_table(f"results-{mode}", f"{mode}: model × resolution", part,
                                    PERF_ID_COLUMNS, PERF_METRICS, ["res", "batch"]))
    return tables


def comparison_table(df: pd.DataFrame) -> Table | None:
    """Throughput of each run side by side, and each run's speed relative to the first, for
    every model × resolution × mode × batch × dtype; only when there is more than one run or
    set-up."""
    perf = df[~df["mode"].isin(FINETUNE_MODES)]
    series = list(dict.fromkeys(perf.sort_values("series_order", kind="stable")["series"]))
    if len(series) < 2:
        return None
    first = series[0]
    key = ["mode", "res", "model", "batch", "dtype"]
    columns = key + [f"throughput (img/s): {s}" for s in series] + \
              [f"speed vs first: {s}" for s in series[1:]]
    rows, group_starts, previous = [], set(), None
    mode_order = {m: i for i, m in enumerate(dict.fromkeys(perf["mode"]))}
    ordered = _sorted(perf).sort_values("mode", key=lambda m: m.map(mode_order), kind="stable")
    for values, part in ordered.groupby(key, sort=False, dropna=False):
        by_series = {s: g.iloc[0] for s, g in part.groupby("series", sort=False)}
        thr = {s: by_series[s]["throughput"] if s in by_series and by_series[s]["status"] == "ok" else None
               for s in series}
        present = [v for v in thr.values() if v is not None and pd.notna(v)]
        best = max(present) if len(present) >= 2 else None
        row = [Cell(_text(v)) for v in values]
        for s in series:
            row.append(_comparison_cell(by_series.get(s), thr[s], best))
        for s in series[1:]:
            base, other = thr[first], thr[s]
            if base is not None and other is not None and pd.notna(base) and pd.notna(other) and base > 0:
                row.append(Cell(f"{other / base:.2f}×", kind="num"))
            else:
                row.append(Cell("—", kind="missing"))
        if values[:2] != previous:  # a new mode or resolution
            group_starts.add(len(rows))
            previous = values[:2]
        rows.append(row)
    return Table("comparison", "Runs side by side: throughput", columns, rows, [], group_starts)


def _comparison_cell(record: pd.Series | None, throughput: Any, best: float | None) -> Cell:
    if record is None:
        return Cell("not run", kind="missing")
    if record["status"] != "ok":
        return Cell(status_text(record["status"], record["error"]), kind=status_kind(record["status"]))
    if throughput is None or pd.isna(throughput):
        return Cell("—", kind="missing")
    return Cell(fmt_number(float(throughput)), best is not None and throughput == best, "num")


def reference_table(df: pd.DataFrame) -> Table | None:
    """Our params and GMACs at 224×224 next to the paper's Table 2, for the models it lists."""
    at224 = df[(df["res"] == "224") & df["model"].isin(list(PAPER_TABLE2))]
    rows = []
    for model, part in at224.groupby("model", sort=False):
        params = part["params"].dropna()
        gmacs = part["gmacs"].dropna()
        if params.empty and gmacs.empty:
            continue
        paper_name, paper_params, paper_gmacs = PAPER_TABLE2[model]
        row = [Cell(model), Cell(paper_name)]
        for ours, paper, scale in ((params, paper_params, 1e-6), (gmacs, paper_gmacs, 1.0)):
            if ours.empty:
                row += [Cell("not measured", kind="missing"), Cell(fmt_number(paper), kind="num"), Cell("—", kind="missing")]
                continue
            value = float(ours.iloc[0]) * scale
            row += [Cell(fmt_number(value), kind="num"), Cell(fmt_number(paper), kind="num"),
                    Cell(f"{(value - paper) / paper * 100:+.1f}%", kind="num")]
        rows.append(row)
    if not rows:
        return None
    columns = ["model", "paper name", "params (M), ours", "params (M), paper", "Δ params",
               "GMACs, ours", "GFLOPs = GMACs, paper", "Δ GMACs"]
    return Table("reference", "Against the paper (PVT v1, Table 2, 224×224)", columns, rows, REFERENCE_NOTES)


def throughput_reference_table(df: pd.DataFrame) -> Table | None:
    """Our inference throughput at 224 next to the published GPU figures, saying whether the
    two are comparable at all."""
    part = df[(df["res"] == "224") & (df["mode"] == "infer") & (df["status"] == "ok")
              & df["model"].isin(list(PUBLISHED_THROUGHPUT)) & df["throughput"].notna()]
    rows = []
    for _, r in _sorted(part).iterrows():
        published = PUBLISHED_THROUGHPUT[r["model"]]
        same_gpu = [gpu for gpu in published if gpu.replace(" ", "").lower() in str(r["device_name"]).replace(" ", "").lower()]
        verdict = (f"same GPU family as the {same_gpu[0]} figure; check dtype and batch" if same_gpu
                   else f"not comparable: measured on {r['device_name']}")
        rows.append([Cell(r["model"]), Cell(_text(r["batch"])), Cell(_text(r["dtype"])), Cell(r["setup"]),
                     Cell(fmt_number(float(r["throughput"])), kind="num"),
                     Cell(_published(published, "V100"), kind="num"), Cell(_published(published, "RTX 4090"), kind="num"),
                     Cell(verdict)])
    if not rows:
        return None
    columns = ["model", "batch", "dtype", "run", "throughput (img/s), ours", "V100, published",
               "RTX 4090, published", "comparable?"]
    return Table("reference-throughput", "Against published throughput (224×224)", columns, rows, THROUGHPUT_NOTES)


def _published(published: dict[str, float], gpu: str) -> str:
    return fmt_number(published[gpu]) if gpu in published else "—"


TASK_TITLES = {"det": "Fine-tunes: detection (RetinaNet)", "seg": "Fine-tunes: segmentation (Semantic FPN)"}
PAPER_DENSE_HEADERS = {"det": "paper RetinaNet AP (%)", "seg": "paper Semantic FPN mIoU (%)"}


def finetune_tables(df: pd.DataFrame) -> list[Table]:
    """One table per fine-tune task: the scores per backbone, and the paper's for the same one."""
    tables = []
    finetunes = df[df["mode"].isin(FINETUNE_MODES)]
    for task in dict.fromkeys(finetunes["mode"]):
        part = finetunes[finetunes["mode"] == task].copy()
        # The mean over the last tenth of the steps where recorded: one noisy step says little.
        last = pd.Series([_final_loss(c) for c in part["loss_curve"]], index=part.index)
        part["final_loss"] = part["loss_last_mean"].fillna(last)
        part["pretrained_text"] = part["pretrained"].map(lambda p: "—" if p is None or p != p else ("yes" if p else "no"))
        part = part.sort_values(["pixels", "model_order", "pretrained_text", "series_order"], kind="stable")
        id_columns = [("res", "res"), ("model", "model"), ("pretrained_text", "pretrained"),
                      ("setup", "run"), ("run_id", "run id")]
        table = _metric_table(f"finetune-{task}", TASK_TITLES.get(task, f"Fine-tunes: {task}"),
                              part.reset_index(drop=True), id_columns, FINETUNE_METRICS, ["res"])
        table.columns.insert(len(table.columns) - 1, PAPER_DENSE_HEADERS.get(task, "paper"))
        for row, model in zip(table.rows, part["model"]):
            row.insert(len(row) - 1, Cell(_paper_dense(model, task), kind="num"))
        tables.append(table)
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


def _paper_dense(model: str, mode: str) -> str:
    value = PAPER_DENSE.get(model, {}).get(mode)
    return fmt_number(value) if value is not None else "—"


def all_tables(df: pd.DataFrame) -> list[Table]:
    """Every table of the report, in page order: the Markdown export is all of them, the CSV
    the per-cell ones (see render_csv)."""
    tables = perf_tables(df)
    for extra in (comparison_table(df), reference_table(df), throughput_reference_table(df)):
        if extra is not None:
            tables.append(extra)
    return tables + finetune_tables(df)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


@dataclass
class Plot:
    title: str
    caption: str
    data_uri: str


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A pyplot-free figure (no global state, nothing left open) in the report's style."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.flat)


def _data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _res_axis(ax, part: pd.DataFrame) -> None:
    """x = pixel count on a log scale, labelled with the resolution names."""
    ticks = part.drop_duplicates("pixels").sort_values("pixels")
    ax.set_xscale("log")
    ax.set_xticks(list(ticks["pixels"]), list(ticks["res"]))
    ax.minorticks_off()
    ax.set_xlabel("resolution (log pixels)")


def _log_y(ax) -> None:
    """Log y axis with plain numbers as tick labels (the default labels are mathtext, which is
    switched off so that user strings are never parsed as TeX)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _slanted_xticks(ax) -> None:
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")


TAIL_GROUPS = ("head", "other")


def _stage_order(labels: Iterable[str]) -> list[str]:
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


def _legend_outside(ax) -> None:
    import seaborn as sns

    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize="small")


def _per_mode_lines(df: pd.DataFrame, y: str, ylabel: str, logy: bool) -> Any:
    """A line per model (and dash style per run) against resolution, one panel per mode."""
    import seaborn as sns

    data = df[(df["status"] == "ok") & df[y].notna() & df["pixels"].notna() & ~df["mode"].isin(FINETUNE_MODES)]
    if data.empty:
        return None
    modes = list(dict.fromkeys(data["mode"]))
    series = list(dict.fromkeys(data["series"]))
    # The same colour and dash for a model and a run in every panel, and every one in the legend.
    lines = {"style": "series", "style_order": series, "markers": True} if len(series) > 1 else {"marker": "o"}
    fig, axes = _figure(5.5 * len(modes) + 3, 4.2, ncols=len(modes))
    for ax, mode in zip(axes, modes):
        part = data[data["mode"] == mode].sort_values("pixels")
        sns.lineplot(part, x="pixels", y=y, hue="model", hue_order=list(dict.fromkeys(data["model"])),
                     errorbar=None, ax=ax, **lines)
        _res_axis(ax, part)
        if logy:
            _log_y(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(mode)
        if ax is not axes[-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    _legend_outside(axes[-1])
    return fig


def plot_throughput(df: pd.DataFrame):
    return _per_mode_lines(df, "throughput", "throughput (images/s)", logy=True)


def plot_memory(df: pd.DataFrame):
    return _per_mode_lines(df, "peak_mem_mb", "peak memory (MB)", logy=False)


def plot_gmacs(df: pd.DataFrame):
    """GMACs depend on model and resolution only: one line per model, log-log."""
    import seaborn as sns

    data = (df[df["gmacs"].notna() & df["pixels"].notna() & ~df["mode"].isin(FINETUNE_MODES)]
            .drop_duplicates(["model", "res"]).sort_values("pixels"))
    if data.empty:
        return None
    fig, (ax,) = _figure(8.5, 4.5)
    sns.lineplot(data, x="pixels", y="gmacs", hue="model", hue_order=list(dict.fromkeys(data["model"])),
                 style="family" if data["family"].notna().all() else None, markers=True, errorbar=None, ax=ax)
    _res_axis(ax, data)
    _log_y(ax)
    ax.set_ylabel("GMACs per image (log)")
    _legend_outside(ax)
    return fig


def plot_stage_gmacs(df: pd.DataFrame):
    """Stacked bars of GMACs per stage, one bar per model, one panel per resolution."""
    import seaborn as sns

    data = df[df["stage_gmacs"].map(lambda s: isinstance(s, dict) and bool(s))]
    data = data.drop_duplicates(["model", "res"]).sort_values(["pixels", "model_order"])
    if data.empty:
        return None
    resolutions = list(dict.fromkeys(data["res"]))
    ncols = min(len(resolutions), 3)
    nrows = -(-len(resolutions) // ncols)
    fig, axes = _figure(5 * ncols + 2, 3.8 * nrows, ncols=ncols, nrows=nrows)
    stages = _stage_order(k for s in data["stage_gmacs"] for k in s)
    body = [s for s in stages if s not in TAIL_GROUPS]
    # The backbone in one sequential palette (input to output), the head and the rest in greys.
    colours = sns.color_palette("crest", len(body)) + sns.color_palette("Greys_r", len(stages) - len(body) + 2)[1:-1]
    for ax, res in zip(axes, resolutions):
        part = data[data["res"] == res]
        table = pd.DataFrame(list(part["stage_gmacs"]), index=list(part["model"]), columns=stages).fillna(0.0)
        table.plot.bar(stacked=True, ax=ax, color=colours, legend=ax is axes[len(resolutions) - 1])
        _slanted_xticks(ax)
        ax.set_title(f"{res}")
        ax.set_ylabel("GMACs")
    for ax in axes[len(resolutions):]:
        ax.set_visible(False)
    _legend_outside(axes[len(resolutions) - 1])
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
    fig, (ax,) = _figure(11, 1.2 + 0.26 * len(table))
    table.plot.barh(stacked=True, ax=ax, color=sns.color_palette("tab10", len(categories)), width=0.8)
    ax.set_xlabel("share of time (%)")
    ax.set_xlim(0, max(100.0, float(table.sum(axis=1).max())))
    _legend_outside(ax)
    return fig


def plot_scaling(df: pd.DataFrame):
    """Scaling efficiency against world size, when more than one engine or world size ran.

    Uses the recorded efficiency; where it is missing, per-rank throughput relative to the
    smallest world size of the same model, resolution, mode and device.
    """
    import seaborn as sns

    data = df[(df["status"] == "ok") & ~df["mode"].isin(FINETUNE_MODES)].copy()
    if data[["engine", "world_size"]].drop_duplicates().shape[0] < 2:
        return None
    key = ["model", "res", "mode", "device_name"]
    per_rank = data["throughput"] / data["world_size"]
    smallest = data.groupby(key, dropna=False)["world_size"].transform("min")
    base = per_rank.where(data["world_size"] == smallest).groupby([data[k] for k in key], dropna=False).transform("max")
    data["efficiency"] = (data["scaling_efficiency"].fillna(per_rank / base)) * 100
    data = data[data["efficiency"].notna()]
    if data.empty:
        return None
    data["cell"] = data["res"] + " · " + data["mode"]
    legend_entries = data["model"].nunique() + data["engine"].nunique() + 2
    fig, (ax,) = _figure(8.5, max(4.5, 0.25 * legend_entries))
    # One line per model, resolution and mode (units), coloured by model, dashed by engine.
    sns.lineplot(data.sort_values("world_size"), x="world_size", y="efficiency", hue="model", style="engine",
                 units="cell", estimator=None, markers=True, ax=ax)
    ax.set_xticks(sorted(data["world_size"].unique()))
    ax.set_xlabel("world size (ranks)")
    ax.set_ylabel("scaling efficiency (%)")
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    _legend_outside(ax)
    return fig


def _finetunes(df: pd.DataFrame) -> pd.DataFrame:
    """Fine-tune records with a "backbone" label (the model, plus the run when there are
    several) and a readable "init" (pretrained or scratch)."""
    part = df[df["mode"].isin(FINETUNE_MODES)].copy()
    several_runs = part["series"].nunique() > 1
    part["backbone"] = part["model"] + (" · " + part["series"] if several_runs else "")
    part["init"] = part["pretrained"].map(lambda p: "pretrained" if p is True else ("scratch" if p is False else "?"))
    return part


def plot_loss_curves(df: pd.DataFrame):
    import seaborn as sns

    part = _finetunes(df)
    part = part[part["loss_curve"].map(lambda c: isinstance(c, list) and bool(c))]
    if part.empty:
        return None
    long = part.assign(step=part["loss_curve"].map(lambda c: list(range(1, len(c) + 1)))).explode(["loss_curve", "step"])
    long["loss"] = pd.to_numeric(long["loss_curve"], errors="coerce")
    long["step"] = pd.to_numeric(long["step"])
    modes = list(dict.fromkeys(long["mode"]))
    order = {"hue_order": list(dict.fromkeys(long["backbone"])), "style_order": list(dict.fromkeys(long["init"]))}
    fig, axes = _figure(5.5 * len(modes) + 3, 4, ncols=len(modes))
    for ax, mode in zip(axes, modes):
        sns.lineplot(long[long["mode"] == mode], x="step", y="loss", hue="backbone", style="init", errorbar=None,
                     ax=ax, **order)
        ax.set_title(mode)
        if ax is not axes[-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    _legend_outside(axes[-1])
    return fig


METRIC_NAMES = {m.field: m.header for m in FINETUNE_METRICS}


def plot_finetune_metrics(df: pd.DataFrame):
    import seaborn as sns

    part = _finetunes(df)
    part = part[part["status"] == "ok"]
    metrics = [m for m in ("map", "ap50", "ap75", "miou", "pixel_acc") if part[m].notna().any()]
    if part.empty or not metrics:
        return None
    long = part.melt(id_vars=["backbone", "init", "mode"], value_vars=metrics, var_name="metric").dropna(subset=["value"])
    long["value"] = long["value"] * 100
    inits = list(dict.fromkeys(long["init"]))
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = _figure(4.2 * ncols + 2, 3.4 * nrows, ncols=ncols, nrows=nrows)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes = axes[:len(metrics)]
    for ax, metric in zip(axes, metrics):
        sns.barplot(long[long["metric"] == metric], x="backbone", y="value", hue="init", hue_order=inits,
                    errorbar=None, ax=ax)
        ax.set_title(METRIC_NAMES[metric])
        ax.set_ylabel("%")
        ax.set_xlabel("")
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
        _slanted_xticks(ax)
        if ax is not axes[ncols - 1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    _legend_outside(axes[ncols - 1])  # top right: the legend widens the last column only
    return fig


PERF_PLOTS: list[tuple[str, str, Callable]] = [
    ("Throughput vs resolution", "Images per second (log), one line per model; dashes tell runs apart.", plot_throughput),
    ("GMACs vs resolution",
     "Multiply-adds per image, log–log. Convolutions grow linearly with the pixel count (slope 1); "
     "ViT's global attention grows with the square of its token count, so its line bends towards "
     "slope 2, while PVT's pyramid and spatial-reduction attention keep it close to linear.", plot_gmacs),
    ("Peak memory vs resolution", "Peak memory of a cell in MB.", plot_memory),
    ("GMACs per stage", "Where the multiply-adds are spent, per model and resolution.", plot_stage_gmacs),
    ("Time by operation category", "Share of profiled time per op category.", plot_op_breakdown),
    ("Scaling efficiency vs world size", "Per-rank throughput relative to the smallest world size; 100% is linear scaling.", plot_scaling),
]
FINETUNE_PLOTS: list[tuple[str, str, Callable]] = [
    ("Fine-tune loss curves", "Training loss per step, per backbone; dashes: pretrained or from scratch.", plot_loss_curves),
    ("Fine-tune metrics", "Final metrics per backbone.", plot_finetune_metrics),
]


def make_plots(df: pd.DataFrame, specs: list[tuple[str, str, Callable]]) -> list[Plot]:
    """Render each plot that has data. Mathtext is off: a '$' in a model name is just a '$'."""
    import matplotlib
    import seaborn as sns

    plots = []
    with matplotlib.rc_context({"text.parse_math": False}):
        sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
        for title, caption, make in specs:
            fig = make(df)
            if fig is not None:
                plots.append(Plot(title, caption, _data_uri(fig)))
    return plots


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

ENV_ORDER = ["run_id", "started_at", "command", "hostname", "platform", "python", "torch", "cuda",
             "device_name", "cpu", "threads", "nproc", "git_commit", "git_dirty"]


def environment(run: Run, df: pd.DataFrame) -> dict[str, Any]:
    """What the page says about one run: its set-ups, counts by status, how busy the machine
    was while the cells ran (a shared machine slows every timing), and its env.json."""
    part = df[df["run_id"] == run.run_id]
    loads = pd.to_numeric(part["loadavg_1m"], errors="coerce").dropna()
    cores = run.env.get("nproc")
    items = [(k, _text(run.env.get(k))) for k in ENV_ORDER if k in run.env]
    items += [(k, _text(v)) for k, v in run.env.items() if k not in ENV_ORDER and k != "packages"]
    packages = run.env.get("packages") if isinstance(run.env.get("packages"), dict) else {}
    return {
        "run_id": run.run_id,
        "path": str(run.path),
        "setups": list(dict.fromkeys(part["setup"])),
        "counts": {status_text(s, None): int(n) for s, n in part["status"].value_counts(sort=False).items()},
        "fields": items,
        "packages": sorted((str(k), _text(v)) for k, v in packages.items()),
        "has_env": bool(run.env),
        "load": f"{loads.min():.1f}–{loads.max():.1f}" if len(loads) else None,
        "cores": cores,
        "busy": bool(len(loads)) and isinstance(cores, (int, float)) and loads.max() > cores,
    }


def _template_env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench", "templates"),
        autoescape=True,  # every record and env string is escaped; the template never uses |safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(runs: list[Run], df: pd.DataFrame, tables: list[Table]) -> str:
    return _template_env().get_template(TEMPLATE).render(
        title="bench report: " + ", ".join(r.run_id for r in runs),
        version=__version__,
        runs=[environment(r, df) for r in runs],
        tables=tables,
        perf_plots=make_plots(df, PERF_PLOTS),
        finetune_plots=make_plots(df, FINETUNE_PLOTS),
        reference_models=list(PAPER_TABLE2),
        finetune_keys=[f"finetune-{task}" for task in FINETUNE_MODES],
    )


PER_CELL_TABLES = ("results-", "finetune")


def render_csv(tables: list[Table]) -> str:
    """The tables with one row per cell (infer, train, fine-tunes), stacked into one CSV whose
    first column names the table. The side-by-side and reference tables are views of the same
    rows (plus the paper's constants) with other columns; they are in the HTML and Markdown."""
    frames = [t.to_frame().assign(table=t.key).loc[:, lambda f: ["table", *t.columns]]
              for t in tables if t.key.startswith(PER_CELL_TABLES)]
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def render_md(runs: list[Run], tables: list[Table]) -> str:
    """Every table as a Markdown section; best cells in bold, the notes below each table."""
    parts = ["# bench report: " + ", ".join(r.run_id for r in runs), ""]
    for t in tables:
        # A "|" or a line break in a cell (a model name, an error message) would end the cell.
        frame = t.to_frame(mark_best="**").map(lambda text: " ".join(text.split()).replace("|", r"\|"))
        frame.columns = [c.replace("|", r"\|") for c in frame.columns]
        # disable_numparse: tabulate would otherwise re-format "13.20" as "13.2".
        parts += [f"## {t.title}", "", frame.to_markdown(index=False, disable_numparse=True), ""]
        parts += [f"- {note}" for note in t.notes]
        if t.notes:
            parts.append("")
    return "\n".join(parts)


def render_report(run_dirs: list[Path], out: Path, fmt: str = "html") -> Path:
    """Render the report of ``run_dirs`` to ``out`` (written atomically) and return its path."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown report format '{fmt}'; choose from {', '.join(FORMATS)}")
    if not run_dirs:
        raise BadInput("no run directory given; pass one or more directories written by `bench run --out DIR`")
    runs = load_runs(run_dirs)
    df = records_frame(runs)
    tables = all_tables(df)
    if fmt == "html":
        text = render_html(runs, df, tables)
    elif fmt == "csv":
        text = render_csv(tables)
    else:
        text = render_md(runs, tables)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="File to write [default: reports/<first run dir name>.<format>].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="html (self-contained page), csv or md (the tables) [default: from --out, else html].")
def report_command(run_dirs: tuple[Path, ...], out: Path | None, fmt: str | None) -> None:
    """Render a report comparing one or more run directories side by side."""
    if fmt is None:
        suffix = out.suffix.lstrip(".").lower() if out is not None else ""
        fmt = suffix if suffix in FORMATS else "html"
    if out is None:
        out = Path("reports") / f"{Path(run_dirs[0]).resolve().name}.{fmt}"
    click.echo(str(render_report(list(run_dirs), out, fmt)))
