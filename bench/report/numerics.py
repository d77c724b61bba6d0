"""The report's "Numerics" section: every cell whose math differs from fp32 eager, its speed against
the fp32 eager cell of the same model, resolution, mode and batch (with the interval and verdict of
bench.stats) beside its agreement with that reference, and the per-output figures. A speed-up that
changes the answer is not a speed-up, so the two are never shown apart.

It reads the records' ``agreement`` dicts (bench.measure.agreement) from the runs themselves: the
frame keeps only the worst cosine of each.
"""
from __future__ import annotations

from bench.measure.agreement import math_mode
from bench.report.load import Run
from bench.report.tables import Table, TableCell
from bench.stats import Timings, compare_runs, ratio_text

NUMERICS_INTRO = [
    "Each cell whose math differs from the reference (fp32, eager, TF32 off, contiguous) was run once more, "
    "outside its timing, on the same weights and the same fixed-seed input as that reference. Cosine and "
    "relative L2 (‖cell − ref‖ / ‖ref‖) are over the logits and each feature level; training cells add the "
    "first step's loss and the cosine of the whole gradient; det / seg add the decisions (boxes after NMS, "
    "the argmax map) scored against the reference's. Tolerances per math mode are in bench/measure/agreement.py "
    "and the README. Speed is throughput against the fp32 eager cell of the same model, resolution, mode and "
    "batch, where the runs hold one: > 1 is faster.",
]


def _mode(rec: dict) -> str:
    return (rec.get("agreement") or {}).get("mode") or "fp32 eager"


def _cell(rec: dict) -> tuple:
    return (rec.get("task") or "cls", rec.get("model"), rec.get("res"), rec.get("mode"), rec.get("batch"),
            rec.get("engine") or "none", rec.get("world_size") or 1, rec.get("device_name"))


def _is_reference(rec: dict) -> bool:
    """A cell whose math is the reference's own (the numerics check's rule, math_mode): never a
    deployed runtime's or the compile backend's cell (bench.deploy)."""
    eager = (rec.get("backend") or "eager") == "eager"
    return eager and math_mode(rec.get("dtype") or "fp32", bool(rec.get("compile")), bool(rec.get("channels_last")),
                               bool(rec.get("tf32")) and rec.get("device") == "cuda") is None


def _speed(references: list[dict], cell: list[dict]) -> str:
    base, new = Timings.from_records(references), Timings.from_records(cell)
    if base is None or new is None:
        return "no fp32 eager cell in these runs" if not references else "no samples"
    comparison = compare_runs(base, new, metric="throughput")
    return f"×{ratio_text(comparison)} {comparison.verdict}"


def _fmt(value, spec: str = ".6f") -> str:
    return "—" if value is None else format(value, spec)


def _num(value, spec: str = ".6f") -> TableCell:
    return TableCell(_fmt(value, spec), kind="num")


def _main_row(key: tuple, a: dict, speed: str, labels: dict) -> list[TableCell]:
    task_score = (a.get("task_agreement") or {}).get("score")
    within = a.get("within_tolerance")
    answer = "kept" if within else "DRIFTED: " + "; ".join(a.get("failures") or [])
    return [TableCell(key[1]), TableCell(key[0]), TableCell(str(key[2])), TableCell(str(key[3])),
            TableCell(a["mode"]), TableCell(speed),
            _num(a.get("worst_cosine")), _num(a.get("worst_rel_l2"), ".3g"), _num(a.get("grad_cosine")),
            _num(a.get("loss_rel_err"), ".3g"), _num(task_score, ".3f"), _num(labels.get("ratio"), ".3f"),
            TableCell(a.get("weights") or "random"), TableCell(answer, kind="" if within else "error")]


def numerics_section(runs: list[Run]) -> tuple[list[str], list[Table]]:
    """(statements, tables) of the section; nothing when no cell was checked."""
    records = [r for run in runs for r in run.records if r.get("status") == "ok"]
    checked = [r for r in records if isinstance(r.get("agreement"), dict)]
    if not checked:
        return [], []
    references: dict[tuple, list[dict]] = {}
    for r in records:
        if _is_reference(r):
            references.setdefault(_cell(r), []).append(r)
    groups: dict[tuple, list[dict]] = {}
    for r in checked:
        groups.setdefault((*_cell(r), _mode(r)), []).append(r)
    rows, detail_rows, kept, drifted = [], [], {}, {}
    for key, cell_records in groups.items():
        rec = cell_records[-1]
        a = rec["agreement"]
        (kept if a.get("within_tolerance") else drifted).setdefault(key[1:3] + key[3:4], []).append(a["mode"])
        rows.append(_main_row(key, a, _speed(references.get(key[:-1], []), cell_records),
                              rec.get("accuracy_vs_labels") or {}))
        detail_rows += [[TableCell(key[1]), TableCell(str(key[2])), TableCell(str(key[3])), TableCell(a["mode"]),
                         TableCell(o["name"]),
                         TableCell("—" if o.get("stride") is None else str(o["stride"])),
                         _num(o.get("cosine")), _num(o.get("rel_l2"), ".3g"), _num(o.get("max_abs"), ".3g")]
                        for o in a.get("per_output") or []]
    main = Table("numerics", "Speed beside agreement with the fp32 eager reference",
                 ["model", "task", "res", "mode", "math", "speed vs fp32 eager (throughput ratio [95% CI])",
                  "worst cosine", "worst rel L2", "gradient cosine", "loss rel. error", "task agreement",
                  "real labels / fp32", "weights", "answer"], rows,
                 notes=["task agreement: det, share of reference boxes after NMS matched by a same-class box at "
                        "IoU ≥ 0.5; seg, mIoU of the argmax map against the reference's. Random weights make "
                        "these a weak test: near-tied scores flip under any rounding.",
                        "real labels / fp32: --accuracy-data's mAP or mIoU of the cell over the reference's "
                        "(MLPerf's gate: ≥ 0.99)."])
    detail = Table("numerics-outputs", "Agreement per output",
                   ["model", "res", "mode", "math", "output", "stride", "cosine", "rel L2", "max |diff|"], detail_rows)
    return _statements(checked, kept, drifted), [main, detail]


def _statements(checked: list[dict], kept: dict, drifted: dict) -> list[str]:
    out = [f"{len(checked)} checked cell{'s' if len(checked) != 1 else ''}: "
           f"{sum(1 for r in checked if r['agreement'].get('within_tolerance'))} kept the reference's answer "
           "within their tolerance."]
    for (model, res, mode), modes in drifted.items():
        out.append(f"{model} at {res} ({mode}): {', '.join(dict.fromkeys(modes))} changed the answer "
                   "(numerics-drift): its speed is not a speed-up of the same computation.")
    by_model: dict[tuple[str, str], dict[str, list[str]]] = {}  # (model, math) -> res -> cell modes
    for (model, res, mode), modes in kept.items():
        for math in dict.fromkeys(modes):
            by_model.setdefault((model, math), {}).setdefault(str(res), []).append(mode)
    for (model, math), sizes in by_model.items():
        where = ", ".join(f"{res} ({' and '.join(modes)})" for res, modes in sizes.items())
        out.append(f"{model}: {math} kept the answer at {where}.")
    if any((r["agreement"].get("weights") or "random") == "random" for r in checked):
        out.append("The weights were random (bench run builds untrained models): the feature and gradient "
                   "figures are sound, the task agreement of det / seg is a weak test.")
    return out
