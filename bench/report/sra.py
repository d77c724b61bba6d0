"""The spatial-reduction ablation: what PVT v1's spatial-reduction attention (SRA) buys.

Where a run holds ``pvt_X`` and ``pvt_X_nosr`` (the same network with every reduction ratio
R_i = 1) at the same resolution, this section sets them side by side: the attention products per
stage (QK^T and AV, from ``attention_gmacs_per_stage``), whose ratio should be R_i² (64 in stage
1), the total GMACs, the latency and the peak memory, each with its ratio, and plain sentences
generated from those numbers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from bench.report.load import is_missing, performance_cells, series_names
from bench.report.plots import stage_order
from bench.report.tables import Table, TableCell, as_text, cell_flags, fmt_number, missing_cell, status_cell

NOSR_SUFFIX = "_nosr"
# PVT v1's reduction ratios R_i of stages 1-4 (paper, Table 1; every variant).
PVT_V1_SR_RATIOS = (8, 4, 2, 1)
SR_RATIOS = {m: PVT_V1_SR_RATIOS for m in ("pvt_tiny", "pvt_small", "pvt_medium", "pvt_large")}

SRA_INTRO = [
    "pvt_X_nosr is pvt_X with spatial reduction off (R_i = 1 in every stage): the keys and values "
    "are not reduced, so each stage's attention products (QK^T and AV) cost N² per head "
    "dimension instead of N²/R_i². Their ratio should be R_i²: 64, 16, 4 and 1 in stages 1–4. "
    "Ratios are without SR over with SR: how many times cheaper SRA makes it.",
]

# (record field, what it is, unit) of the whole-model comparisons
COSTS = [("latency_ms", "latency", "ms"), ("peak_mem_mb", "peak memory", "MB")]


def sra_pairs(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(pvt_X, pvt_X_nosr) for every X whose two models some run measured at one resolution."""
    perf = performance_cells(df)
    cells = set(zip(perf["series"], perf["task"], perf["res"], perf["model"]))
    pairs = []
    for model in dict.fromkeys(perf["model"]):
        if model.endswith(NOSR_SUFFIX):
            base = model[: -len(NOSR_SUFFIX)]
            if any((s, t, r, base) in cells for s, t, r, m in cells if m == model):
                pairs.append((base, model))
    return pairs


def ratio_text(ratio: float) -> str:
    return f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"


def _stage_ratio(model: str, stage: str) -> int | None:
    """R_i of ``stage`` ("stage1") of ``model``, where the paper gives it."""
    ratios = SR_RATIOS.get(model)
    found = re.search(r"\d+", stage)
    if ratios is None or found is None or not 1 <= int(found.group()) <= len(ratios):
        return None
    return ratios[int(found.group()) - 1]


def _one(part: pd.DataFrame, model: str, need: str | None = None) -> pd.Series | None:
    rows = part[part["model"] == model]
    if need is not None:
        rows = rows[rows[need].map(lambda v: not is_missing(v) and (not isinstance(v, dict) or bool(v)))]
    return None if rows.empty else rows.iloc[0]


def _num(value: float) -> TableCell:
    return TableCell(fmt_number(float(value)), kind="num")


def _ratio_cell(without_sr, with_sr) -> TableCell:
    if is_missing(without_sr) or is_missing(with_sr) or not with_sr:
        return missing_cell()
    return TableCell(ratio_text(float(without_sr) / float(with_sr)), kind="num")


def sra_section(df: pd.DataFrame) -> tuple[list[str], list[Table]]:
    """(the sentences, the tables) of the ablation; nothing where no run holds a pair."""
    pairs = sra_pairs(df)
    if not pairs:
        return [], []
    perf = performance_cells(df)
    # Only the series that hold a pair are named apart.
    holding = {series for (series, _, _), at in perf.groupby(["series", "task", "res"], sort=False)
               if any({base, nosr} <= set(at["model"]) for base, nosr in pairs)}
    names = series_names(perf[perf["series"].isin(holding)])
    several_runs = len(holding) > 1
    statements: list[str] = []
    attention_rows, cost_rows = [], []
    attention_starts, cost_starts = set(), set()
    for base, nosr in pairs:
        part = perf[perf["model"].isin([base, nosr])].sort_values(
            ["series_order", "task", "input_pixels"], kind="stable")
        for (series, task, res), at in part.groupby(["series", "task", "res"], sort=False):
            if not {base, nosr} <= set(at["model"]):
                continue
            run = names[series]
            ident = [TableCell(base + ("" if task == "cls" else f" ({task})"))] \
                + ([TableCell(run)] if several_runs else []) + [TableCell(res)]
            rows, cuts = _attention(at, base, nosr, ident)
            if rows:
                attention_starts.add(len(attention_rows))
                attention_rows += rows
            cuts += _gmacs_cut(at, base, nosr)
            rows, cost = _costs(at, base, nosr, ident)
            if rows:
                cost_starts.add(len(cost_rows))
                cost_rows += rows
            where = f"At {res}" + (f" ({run})" if several_runs else "") + (f", in {task}" if task != "cls" else "")
            sentence = _sentence(base, cuts + cost.cuts, cost.raises, cost.failures)
            if sentence:
                statements.append(f"{where}, {sentence}.")
    ident_columns = ["model", *(["run"] if several_runs else []), "res"]
    return statements, _sra_tables(ident_columns, attention_rows, attention_starts, cost_rows, cost_starts)


def _attention(at: pd.DataFrame, base: str, nosr: str, ident: list[TableCell]) -> tuple[list[list[TableCell]],
                                                                                        list[str]]:
    """The per-stage attention rows of one pair at one size, and the stage-1 cut in words
    ("stage-1 attention from X to Y GMACs (64.0×; R₁² = 64)"); none where either lacks them."""
    with_sr = _one(at, base, "attention_gmacs_per_stage")
    without_sr = _one(at, nosr, "attention_gmacs_per_stage")
    if with_sr is None or without_sr is None:
        return [], []
    a, b = with_sr["attention_gmacs_per_stage"], without_sr["attention_gmacs_per_stage"]
    rows = []
    for stage in stage_order([*b, *a]):
        r_i = _stage_ratio(base, stage)
        va, vb = a.get(stage), b.get(stage)
        rows.append(ident + [
            TableCell(stage), TableCell(as_text(r_i)),
            _num(vb) if not is_missing(vb) else missing_cell(),
            _num(va) if not is_missing(va) else missing_cell(),
            _ratio_cell(vb, va), TableCell(as_text(r_i * r_i) if r_i else "—", kind="num")])
    first = stage_order(a)[0] if a else None
    if not (first and not is_missing(a.get(first)) and not is_missing(b.get(first)) and a[first] > 0):
        return rows, []
    number = re.search(r"\d+", first)
    r_i = _stage_ratio(base, first)
    expected = f"; R{_subscript(number.group())}² = {r_i * r_i}" if r_i and number else ""
    return rows, [f"{'stage-' + number.group() if number else first} attention from "
                  f"{fmt_number(b[first])} to {fmt_number(a[first])} GMACs "
                  f"({ratio_text(b[first] / a[first])}{expected})"]


def _gmacs_cut(at: pd.DataFrame, base: str, nosr: str) -> list[str]:
    """The whole model's GMACs per image, no SR against SRA, in words."""
    g_with, g_without = _one(at, base, "gmacs"), _one(at, nosr, "gmacs")
    if g_with is None or g_without is None or not g_with["gmacs"] > 0:
        return []
    return [f"total GMACs from {fmt_number(g_without['gmacs'])} to {fmt_number(g_with['gmacs'])} "
            f"({ratio_text(g_without['gmacs'] / g_with['gmacs'])})"]


@dataclass
class _Clauses:
    cuts: list[str] = field(default_factory=list)      # where SRA is cheaper
    raises: list[str] = field(default_factory=list)    # where SRA costs more (noise, or a real overhead)
    failures: list[str] = field(default_factory=list)  # cells that ran out of memory or failed


def _costs(at: pd.DataFrame, base: str, nosr: str, ident: list[TableCell]) -> tuple[list[list[TableCell]], _Clauses]:
    """The whole-model rows of one pair at one size (per mode, batch, precision): GMACs, then
    latency and memory, and what they say in words."""
    rows, said = [], _Clauses()
    for (mode, batch, precision), cells in at.groupby(["mode", "batch", "precision"], sort=False, dropna=False):
        rw, rn = _one(cells, base), _one(cells, nosr)
        if rw is None or rn is None:
            continue
        row = ident + [TableCell(mode), TableCell(as_text(batch)), TableCell(as_text(precision)),
                       _value_cell(rn, "gmacs", counted=True), _value_cell(rw, "gmacs", counted=True),
                       _ratio_cell(rn["gmacs"], rw["gmacs"])]
        said.failures += [f"{m} {'ran out of memory' if r['status'] == 'oom' else 'failed'} in {mode}"
                          for m, r in ((nosr, rn), (base, rw)) if r["status"] != "ok"]
        both_ok = (rn["status"], rw["status"]) == ("ok", "ok")
        for name, what, unit in COSTS:
            row += [_value_cell(rn, name), _value_cell(rw, name),
                    _ratio_cell(rn[name], rw[name]) if both_ok else missing_cell()]
            a, b = rw[name], rn[name]
            if both_ok and not is_missing(a) and not is_missing(b) and a > 0 and b > 0:
                numbers = f"({fmt_number(b)} → {fmt_number(a)} {unit})"
                flags = list(dict.fromkeys(cell_flags(rn) + cell_flags(rw)))
                if flags and name == "latency_ms":  # a timing that may be off says so
                    numbers += f" [flagged: {', '.join(flags)}]"
                if a <= b:
                    said.cuts.append(f"{mode} {what} by {ratio_text(b / a)} {numbers}")
                else:
                    said.raises.append(f"{mode} {what} by {ratio_text(a / b)} {numbers}")
        rows.append(row)
    return rows, said


def _sentence(base: str, cuts: list[str], raises: list[str], failures: list[str]) -> str:
    """What SRA does to ``base`` at one size, in one sentence ("" when nothing was measured)."""
    parts = []
    if cuts:
        parts.append(f"SRA cuts {base}'s " + _join(cuts))
    if raises:
        parts.append(("it raises " if cuts else f"SRA raises {base}'s ") + _join(raises))
    if failures:
        parts.append(_join(failures))
    return "; ".join(parts)


def _sra_tables(ident_columns: list[str], attention_rows: list, attention_starts: set[int],
                cost_rows: list, cost_starts: set[int]) -> list[Table]:
    tables = []
    if attention_rows:
        tables.append(Table("sra-attention", "SRA ablation: attention products per stage",
                            ident_columns + ["stage", "R_i", "GMACs, no SR (R_i = 1)", "GMACs, SRA", "ratio",
                                             "expected R_i²"], attention_rows,
                            ["Measured: the attention products QK^T and AV of each stage, per image."],
                            attention_starts))
    if cost_rows:
        columns = ident_columns + ["mode", "batch", "precision", "GMACs, no SR", "GMACs, SRA", "GMACs ratio"]
        for _, what, unit in COSTS:
            columns += [f"{what} ({unit}), no SR", f"{what} ({unit}), SRA", f"{what} ratio"]
        tables.append(Table("sra-cost", "SRA ablation: whole model", columns, cost_rows,
                            ["Ratios are no SR / SRA: above 1, SRA is cheaper."], cost_starts))
    return tables


def _value_cell(r: pd.Series, field: str, counted: bool = False) -> TableCell:
    """A measured value, or the status of a cell that did not finish (GMACs are counted before
    the cell runs: ``counted`` shows them whatever its status)."""
    if r["status"] != "ok" and not counted:
        return status_cell(r["status"], None)
    return _num(r[field]) if not is_missing(r[field]) else missing_cell()


def _join(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _subscript(digits: str) -> str:
    return digits.translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
