"""Resolution scaling, fitted: how each model's cost grows with the pixel count.

For every model of a run (and task, mode, batch, precision) measured at 3 or more pixel counts,
``cost = c · pixels^k`` is fitted by least squares on log–log (log cost = log c + k · log pixels)
for GMACs, latency and peak memory (inference and training apart), with R² of the fit in log
space. k = 1: cost in proportion to the pixel count (convolutions, MLPs, projections); k = 2: with
its square (global attention over all tokens). PVT v1's spatial-reduction attention costs
N²/R_i² per stage: R_i divides the quadratic term, it does not remove it.

Also here: attention's share of the GMACs per resolution (the two attention products only, from
``attention_gmacs_per_stage``), and the crossovers of the fitted lines, the pixel count where one
model's cost passes another's, kept only where it lies within the measured range or near it.

This module is pure (numbers and tables); the plot of the fits is in ``plots``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from bench.report.load import is_missing, performance_cells, series_names
from bench.report.tables import Table, TableCell, as_text, cell_flags, fmt_number, missing_cell

MIN_RESOLUTIONS = 3  # distinct pixel counts a fit needs: two points always lie on a line
# A crossover outside the measured range is shown when it lies within this factor of the range
# in pixels (2× on the side of a square image), and is said to be an extrapolation.
NEAR_FACTOR = 4.0
# A crossover needs slopes that differ: below this the lines are parallel within the noise.
MIN_SLOPE_GAP = 0.02

# (record field, name in tables and plots, whether the fit is per mode, batch and precision)
SCALING_METRICS: list[tuple[str, str, bool]] = [
    ("gmacs", "GMACs", False),  # per image: the same for inference and training, any batch
    ("latency_ms", "latency (ms)", True),
    ("peak_mem_mb", "peak memory (MB)", True),
]
METRIC_NAMES = {f: name for f, name, _ in SCALING_METRICS}

SCALING_INTRO = [
    "Each fit is least squares of log(cost) = log(c) + k · log(pixels) over the resolutions one "
    "run measured (3 or more pixel counts; the pixels fed to the model, so a detector's padding "
    "to a multiple of 32 counts). k = 1: cost grows in proportion to the pixel count; k = 2: with "
    "its square. R² is that of the fit on log–log.",
    "Convolutions, MLPs and the q/k/v projections are linear in the token count N. Global "
    "self-attention (ViT) costs N² per layer. PVT v1's spatial-reduction attention costs "
    "N²/R_i² per stage (R_i = 8, 4, 2, 1): the reduction divides the quadratic term by R_i², "
    "but it still grows with the square of the token count, and at high resolution it "
    "dominates. One k over a range is an average slope: where attention's share grows with "
    "resolution, the local slope at the top of the range is steeper than k, so extrapolating "
    "above the measured range understates the cost.",
]


def fit_power_law(pixels: Sequence[float], values: Sequence[float]) -> tuple[float, float, float]:
    """Fit ``values = coefficient · pixels^k`` by least squares on log–log.

    Returns ``(k, coefficient, r2)``, R² of the fit in log space. Needs positive, finite numbers
    and at least two distinct pixel counts (ValueError otherwise). Constant values fit k = 0 with
    R² = 1; scattered values with no trend give an R² near 0.
    """
    x = np.asarray(pixels, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"pixels and values must be two sequences of one length, not {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (x > 0).all() and (y > 0).all()):
        raise ValueError("a power law is fitted to positive, finite pixel counts and values only")
    if len(np.unique(x)) < 2:
        raise ValueError("a power law needs at least two distinct pixel counts")
    lx, ly = np.log(x), np.log(y)
    design = np.column_stack([lx, np.ones_like(lx)])
    (k, log_c), *_ = np.linalg.lstsq(design, ly, rcond=None)
    residual = float(((ly - (k * lx + log_c)) ** 2).sum())
    total = float(((ly - ly.mean()) ** 2).sum())
    if total > 1e-24:
        r2 = 1.0 - residual / total
    else:  # every value the same: a flat line fits exactly
        r2 = 1.0 if residual <= 1e-24 else 0.0
    return float(k), float(math.exp(log_c)), float(r2)


@dataclass(frozen=True)
class Fit:
    """One fitted line: a metric of one model (task, mode, batch, precision) in one run."""

    metric: str            # the record field: gmacs, latency_ms, peak_mem_mb
    mode: str | None       # None for GMACs (per image, any mode)
    series: str            # set-up and run id (load.records_frame); the run id alone for GMACs
    run: str               # the series' name among the others (load.series_names)
    model: str
    task: str
    label: str             # load's label: the model, and its task where not classification
    batch: object
    precision: object
    k: float
    coefficient: float
    r2: float
    pixels: tuple[float, ...]
    values: tuple[float, ...]
    res: tuple[str, ...]
    flagged: tuple[str, ...]  # "res (flag, ...)" of the points whose cell carries flags

    def predict(self, pixels: float) -> float:
        return self.coefficient * pixels ** self.k

    @property
    def group(self) -> tuple:
        """What must be equal for two fits to be compared (a crossover, one plot panel)."""
        return (self.metric, self.mode, self.series, self.task, self.batch, self.precision)

    @property
    def span(self) -> str:
        return f"{self.res[0]}–{self.res[-1]}"


def scaling_fits(df: pd.DataFrame) -> list[Fit]:
    """Every fit the performance cells of ``df`` allow, metric-major, then in the order of the
    runs and models."""
    perf = performance_cells(df)
    perf = perf[perf["input_pixels"].notna() & (perf["input_pixels"] > 0)]
    names = series_names(perf) if not perf.empty else {}
    fits: list[Fit] = []
    for metric, _, per_mode in SCALING_METRICS:
        rows = perf[perf[metric].notna() & (perf[metric] > 0)]
        if per_mode:  # a time or a memory is a measurement only when the cell finished
            rows = rows[rows["status"] == "ok"]
        # GMACs per image depend on the model and the input only: one fit per run, whatever the
        # engine or device; a time or a memory is one set-up's.
        key = ["series", "task", "model", "mode", "batch", "precision"] if per_mode else ["run_id", "task", "model"]
        rows = rows.sort_values(["series_order", "model_order", "input_pixels"], kind="stable")
        for _, part in rows.groupby(key, sort=False, dropna=False):
            part = part.drop_duplicates("input_pixels")
            if part["input_pixels"].nunique() < MIN_RESOLUTIONS:
                continue
            k, c, r2 = fit_power_law(part["input_pixels"], part[metric])
            first = part.iloc[0]
            fits.append(Fit(
                metric=metric, mode=first["mode"] if per_mode else None,
                series=first["series"] if per_mode else first["run_id"],
                run=names[first["series"]] if per_mode else first["run_id"],
                model=first["model"], task=first["task"], label=first["label"],
                batch=first["batch"] if per_mode else None, precision=first["precision"] if per_mode else None,
                k=k, coefficient=c, r2=r2, pixels=tuple(part["input_pixels"].astype(float)),
                values=tuple(part[metric].astype(float)), res=tuple(part["res"]),
                flagged=_flagged(part) if per_mode else ()))
    return fits


def _flagged(part: pd.DataFrame) -> tuple[str, ...]:
    """"res (flag, ...)" of the points whose cell carries flags. Only the three columns are turned
    into dicts: a whole row holds every field, raw samples included (slow for hundreds of cells)."""
    cols = [c for c in ("res", "flags", "timing_flags") if c in part.columns]
    return tuple(f"{r['res']} ({', '.join(cell_flags(r))})" for r in part[cols].to_dict("records") if cell_flags(r))


def fit_label(fit: Fit, fits: Iterable[Fit]) -> str:
    """The name of a fit among ``fits``: its label, plus the run, batch and precision where those
    vary among the fits of the same metric and mode."""
    peers = [f for f in fits if (f.metric, f.mode) == (fit.metric, fit.mode)]
    parts = [fit.label]
    if len({f.series for f in peers}) > 1:
        parts.append(fit.run)
    if len({f.batch for f in peers}) > 1:
        parts.append(f"batch {fit.batch}")
    if len({f.precision for f in peers}) > 1:
        parts.append(str(fit.precision))
    return " · ".join(parts)


def panel_title(metric: str, mode: str | None) -> str:
    return METRIC_NAMES[metric] + (f" · {mode}" if mode else " per image")


# --------------------------------------------------------------------------------------------
# Crossovers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossover:
    """Where the fitted lines of ``a`` and ``b`` meet: above ``pixels``, ``steeper`` costs more."""

    a: Fit
    b: Fit
    pixels: float
    low: float   # the pixel range both fits measured
    high: float

    @property
    def steeper(self) -> Fit:
        return self.a if self.a.k > self.b.k else self.b

    @property
    def flatter(self) -> Fit:
        return self.b if self.steeper is self.a else self.a

    @property
    def within(self) -> bool:
        return self.low <= self.pixels <= self.high

    @property
    def where(self) -> str:
        measured = f"the measured {self.low_res}–{self.high_res}"
        if self.within:
            return f"within {measured} (interpolated)"
        side = "below" if self.pixels < self.low else "above"
        return f"near: {side} {measured} (extrapolated)"

    @property
    def low_res(self) -> str:
        return _res_at(self.a, self.b, self.low)

    @property
    def high_res(self) -> str:
        return _res_at(self.a, self.b, self.high)


def _res_at(a: Fit, b: Fit, pixels: float) -> str:
    for fit in (a, b):
        if pixels in fit.pixels:
            return fit.res[fit.pixels.index(pixels)]
    return f"{math.sqrt(pixels):.0f}²"


def crossovers(fits: list[Fit]) -> list[Crossover]:
    """The crossovers of every two fits of the same group (metric, mode, run, task, batch,
    precision) that lie within the range both measured, or within NEAR_FACTOR of it."""
    out = []
    for i, a in enumerate(fits):
        for b in fits[i + 1:]:
            if a.group != b.group or a.model == b.model or abs(a.k - b.k) < MIN_SLOPE_GAP:
                continue
            pixels = (b.coefficient / a.coefficient) ** (1.0 / (a.k - b.k))
            low, high = max(min(a.pixels), min(b.pixels)), min(max(a.pixels), max(b.pixels))
            if not math.isfinite(pixels) or low > high:
                continue
            if low / NEAR_FACTOR <= pixels <= high * NEAR_FACTOR:
                out.append(Crossover(a, b, pixels, low, high))
    return out


def side_text(pixels: float) -> str:
    """A pixel count as the side of the square image that has it: "≈ 612² px (0.37 MP)"."""
    return f"≈ {math.sqrt(pixels):.0f}² px ({pixels / 1e6:.2f} MP)"


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def fits_table(fits: list[Fit]) -> Table | None:
    if not fits:
        return None
    several_runs = len({f.series for f in fits}) > 1
    several_tasks = len({f.task for f in fits}) > 1
    columns = ["cost", "mode", "model", *(["task"] if several_tasks else []), *(["run"] if several_runs else []),
               "batch", "precision", "resolutions", "k (cost ∝ pixels^k)", "c", "R²", "flagged points"]
    rows, starts, previous = [], set(), None
    for f in fits:
        if (f.metric, f.mode) != previous:
            starts.add(len(rows))
            previous = (f.metric, f.mode)
        row = [TableCell(METRIC_NAMES[f.metric]), TableCell(f.mode or "per image"), TableCell(f.model)]
        row += [TableCell(f.task)] if several_tasks else []
        row += [TableCell(f.run)] if several_runs else []
        row += [TableCell("—" if f.mode is None else as_text(f.batch)),
                TableCell("—" if f.mode is None else as_text(f.precision)),
                TableCell(", ".join(f.res)), TableCell(f"{f.k:.3f}", kind="num"), TableCell(f"{f.coefficient:.3g}",
                                                                                            kind="num"),
                TableCell(f"{f.r2:.4f}", kind="num"),
                TableCell("; ".join(f.flagged), kind="warn") if f.flagged else missing_cell()]
        rows.append(row)
    notes = ["GMACs are per image: one fit per model, whatever the mode or batch. Latency is the "
             "median time of one iteration (one step when training) at the cell's batch.",
             "A flagged point (time cap, unstable timing) may be off, and the fit with it."]
    return Table("scaling-fits", "Resolution scaling: fitted k", columns, rows, notes, starts)


def crossover_table(found: list[Crossover], fits: list[Fit]) -> Table | None:
    if not found:
        return None
    rows, starts, previous = [], set(), None
    for x in found:
        if (x.a.metric, x.a.mode) != previous:
            starts.add(len(rows))
            previous = (x.a.metric, x.a.mode)
        steep, flat = x.steeper, x.flatter
        rows.append([
            TableCell(METRIC_NAMES[x.a.metric]), TableCell(x.a.mode or "per image"),
            TableCell(f"{fit_label(x.a, fits)} / {fit_label(x.b, fits)}"), TableCell(side_text(x.pixels), kind="num"),
            TableCell(x.where, kind="" if x.within else "warn"),
            TableCell(f"{fit_label(steep, fits)} (k {steep.k:.2f} vs {flat.k:.2f})"),
            TableCell(fit_label(flat, fits)),
        ])
    notes = ["From the fitted lines, not from a measured cell: shown only where the crossover lies "
             f"within the range both models were measured over, or within {NEAR_FACTOR:g}× of it in "
             "pixels (then marked as extrapolated)."]
    return Table("scaling-crossovers", "Where one model's cost passes another's", columns=[
        "cost", "mode", "models", "crossover", "where", "costs more above it", "costs more below it"],
        rows=rows, notes=notes, group_starts=starts)


def attention_share_table(df: pd.DataFrame) -> Table | None:
    """Attention products (QK^T and AV, summed over the stages) as a share of the GMACs, per
    model and resolution."""
    perf = performance_cells(df)
    has = perf["attention_gmacs_per_stage"].map(lambda a: isinstance(a, dict) and bool(a)) & perf["gmacs"].notna()
    data = perf[has].sort_values(["series_order", "model_order", "input_pixels"], kind="stable")
    # Per image, like the GMACs: one row per run and model, whatever the engine or device.
    data = data.drop_duplicates(["run_id", "task", "model", "res"])
    if data.empty:
        return None
    resolutions = list(dict.fromkeys(data.sort_values("input_pixels", kind="stable")["res"]))
    several_runs = data["run_id"].nunique() > 1
    rows = []
    for _, part in data.groupby(["run_id", "task", "model"], sort=False):
        by_res = {r["res"]: r for _, r in part.iterrows()}
        first = part.iloc[0]
        row = [TableCell(first["label"])] + ([TableCell(first["run_id"])] if several_runs else [])
        for res in resolutions:
            r = by_res.get(res)
            if r is None:
                row.append(missing_cell())
                continue
            attention = attention_gmacs(r["attention_gmacs_per_stage"])
            row.append(TableCell(f"{attention / r['gmacs'] * 100:.1f}% ({fmt_number(attention)} of "
                            f"{fmt_number(r['gmacs'])})", kind="num"))
        rows.append(row)
    columns = ["model", *(["run id"] if several_runs else []), *[f"at {res}" for res in resolutions]]
    notes = ["Attention here is the two attention products only (QK^T and AV, summed over the "
             "stages); the q/k/v and output projections are linear layers and count with the rest."]
    return Table("scaling-attention", "Attention's share of the GMACs", columns, rows, notes)


def attention_statements(df: pd.DataFrame) -> list[str]:
    """One sentence per model measured at two or more resolutions with attention counted: its
    attention products' share of the GMACs at the smallest and the largest."""
    out: list[str] = []
    perf = performance_cells(df)
    has = perf["attention_gmacs_per_stage"].map(lambda a: isinstance(a, dict) and bool(a)) & (perf["gmacs"] > 0)
    data = perf[has].sort_values(["series_order", "model_order", "input_pixels"], kind="stable")
    several_runs = data["run_id"].nunique() > 1
    for _, part in data.groupby(["run_id", "task", "model"], sort=False):
        part = part.drop_duplicates("res")
        if len(part) < 2:
            continue
        low, high = part.iloc[0], part.iloc[-1]
        share = [attention_gmacs(r["attention_gmacs_per_stage"]) / r["gmacs"] * 100 for r in (low, high)]
        out.append(f"{low['label']}" + (f" ({low['run_id']})" if several_runs else "")
                   + f": the attention products are {share[0]:.1f}% of the GMACs at {low['res']} and "
                   f"{share[1]:.1f}% at {high['res']}.")
    return out


def attention_gmacs(per_stage: dict) -> float:
    return float(sum(v for v in per_stage.values() if isinstance(v, (int, float)) and not is_missing(v)))


def scaling_tables(df: pd.DataFrame) -> list[Table]:
    fits = scaling_fits(df)
    tables = [fits_table(fits), crossover_table(crossovers(fits), fits), attention_share_table(df)]
    return [t for t in tables if t is not None]


def gmacs_slopes(df: pd.DataFrame) -> str:
    """The fitted k of every model's GMACs, as one sentence ("" without fits)."""
    fits = [f for f in scaling_fits(df) if f.metric == "gmacs"]
    if not fits:
        return ""
    return "Fitted k (GMACs ∝ pixels^k): " + ", ".join(f"{fit_label(f, fits)} {f.k:.2f}" for f in fits) + "."
