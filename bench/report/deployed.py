"""The report's "Deployed" section (issue 30): each backbone under each backend of ``--backend``
against its own eager fp32 cell of the same run (same model, resolution and batch): the speed-up
with its 95% CI and verdict (bench.stats, throughput), the agreement with the fp32 eager reference
beside it (a speed-up that changes the answer is not one), what deploying cost (export, build,
artifact), then the backbones ranked per backend, each against the next with its verdict, and the
cells whose export failed with the exporter's reason. A plot draws the speed-ups with their CIs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.report.load import Run
from bench.report.plots import PlotSpec, panel_grid
from bench.report.tables import Table, TableCell
from bench.stats import Comparison, Timings, adjust, compare_models, default_threshold, ratio_text

DEPLOYED_INTRO = [
    "Each backbone under each backend of --backend, against the eager fp32 cell of the same model, resolution "
    "and batch in the same run: the same weights and input, static shapes, intra-op threads = --threads, inter-op "
    "1, the same timing protocol. Speed-up = throughput of the backend over the eager cell's (> 1: faster), with "
    "its 95% CI and verdict (bench.stats; q-values over every pair of the section). Agreement: the backend's "
    "outputs against the fp32 eager reference on the same weights and a fixed-seed input. Export (torch.export, "
    "+ ONNX translation) and build (session, AOT compile, INT8 calibration) happen once per deployment and are "
    "not in the latency. docs/deployed.md says how each runtime is set up.",
]


@dataclass
class _Row:
    model: str
    res: str
    batch: object
    backend: str
    record: dict  # the latest record of the cell
    timings: Timings | None
    speedup: Comparison | None  # against the eager cell (None: no eager cell, or this is it)


def _key(r: dict) -> tuple:
    return (r.get("run_id"), r.get("task") or "cls", r.get("model"), r.get("res"), r.get("batch"),
            r.get("device_name"))


def _rows(runs: list[Run]) -> list[_Row]:
    """One row per deployed or eager inference cell of runs that hold a deployed backend."""
    rows = []
    for run in runs:
        records = [r for r in run.records if r.get("mode") == "infer" and r.get("kind", "run") == "run"]
        if not any((r.get("backend") or "eager") != "eager" for r in records):
            continue
        latest: dict[tuple, dict] = {}
        for r in records:
            latest[(_key(r), r.get("backend") or "eager")] = r
        groups: dict[tuple, list[dict]] = {}
        for r in records:
            groups.setdefault((_key(r), r.get("backend") or "eager"), []).append(r)
        timings = {k: Timings.from_records(v) for k, v in groups.items()}
        for (key, backend), rec in latest.items():
            rows.append(_Row(rec.get("model"), str(rec.get("res")), rec.get("batch"), backend, rec,
                             timings[(key, backend)], None))
        threshold = default_threshold(next(iter(records)).get("device"))
        pairs = [(i, timings.get((_key(row.record), "eager"))) for i, row in enumerate(rows)
                 if row.backend != "eager" and row.timings is not None]
        found = [(i, compare_models(base, rows[i].timings, "throughput", threshold)) for i, base in pairs if base]
        for (i, _), c in zip(found, adjust([c for _, c in found], threshold)):
            rows[i].speedup = c
    return rows


def _fmt(value, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _answer(rec: dict) -> tuple[str, str]:
    a = rec.get("agreement")
    if not isinstance(a, dict):
        return ("not checked: " + (rec.get("agreement_error") or "--numerics off")), "warn"
    if a.get("within_tolerance"):
        return f"kept (worst cosine {a.get('worst_cosine'):.6f})", ""
    return "DRIFTED: " + "; ".join(a.get("failures") or []), "error"


def deployed_table(rows: list[_Row]) -> Table:
    out = []
    for row in sorted(rows, key=lambda r: (r.model, r.res, str(r.batch), r.backend != "eager", r.backend)):
        rec = row.record
        status = rec.get("status")
        if status != "ok":
            reason = rec.get("error") or ""
            if rec.get("export_error_op"):
                reason += f" (at {rec['export_error_op']})"
            out.append([TableCell(row.model), TableCell(row.res), TableCell(str(row.batch)), TableCell(row.backend),
                        TableCell(f"{status}: {reason}", kind="error")] + [TableCell("—")] * 7)
            continue
        speed = "reference" if row.backend == "eager" else \
            "no eager cell" if row.speedup is None else f"×{ratio_text(row.speedup)} {row.speedup.verdict}"
        answer, kind = _answer(rec) if row.backend != "eager" else ("reference", "")
        size = rec.get("artifact_bytes")
        out.append([TableCell(row.model), TableCell(row.res), TableCell(str(row.batch)), TableCell(row.backend),
                    TableCell("ok"), TableCell(speed),
                    TableCell(_fmt(rec.get("throughput"), ".1f"), kind="num"), TableCell(answer, kind=kind),
                    TableCell(_fmt(rec.get("export_s"), ".1f"), kind="num"),
                    TableCell(_fmt(rec.get("build_s"), ".1f"), kind="num"),
                    TableCell(_fmt(None if size is None else size / 2**20, ".1f"), kind="num"),
                    TableCell(rec.get("runtime_version") or "torch (eager)")])
    return Table("deployed", "Each backbone per backend against its eager fp32 cell",
                 ["model", "res", "batch", "backend", "status", "speed-up vs eager fp32 (throughput ratio [95% CI])",
                  "throughput (img/s)", "agreement with fp32 eager", "export (s)", "build (s)", "artifact (MB)",
                  "runtime"], out,
                 notes=["export-failed: the exporter's own first error line and the op or model line it blamed; "
                        "backend-unavailable: the runtime is not installed here or ran elsewhere than asked."])


def ranking(rows: list[_Row]) -> tuple[Table | None, list[str]]:
    """Per backend, resolution and batch: the backbones by throughput, each against the next faster
    one (compare_models, q-values over the whole table), with its verdict."""
    ok = [r for r in rows if r.record.get("status") == "ok" and r.timings is not None]
    groups: dict[tuple, list[_Row]] = {}
    for r in ok:
        groups.setdefault((r.backend, r.res, str(r.batch), r.record.get("run_id")), []).append(r)
    threshold = default_threshold(ok[0].record.get("device")) if ok else 0.03
    lines: list[tuple[tuple, int, _Row, Comparison | None]] = []
    for key, members in groups.items():
        ranked = sorted(members, key=lambda r: -r.timings.estimate("throughput"))
        for i, r in enumerate(ranked):
            lines.append((key, i + 1, r, compare_models(ranked[i - 1].timings, r.timings, "throughput", threshold)
                          if i else None))
    compared = [c for *_, c in lines if c is not None]
    adjusted = iter(adjust(compared, threshold))
    table_rows, statements = [], []
    for key, rank, r, c in lines:
        c = next(adjusted) if c is not None else None
        against = "fastest" if c is None else f"×{ratio_text(c)} of #{rank - 1}: {c.verdict}"
        table_rows.append([TableCell(key[0]), TableCell(key[1]), TableCell(key[2]), TableCell(str(rank)),
                           TableCell(r.model),
                           TableCell(_fmt(r.timings.estimate("throughput"), ".1f"), kind="num"), TableCell(against),
                           TableCell(_answer(r.record)[0] if r.backend != "eager" else "reference")])
    for key, members in groups.items():
        if len(members) > 1:
            order = [r.model for r in sorted(members, key=lambda r: -r.timings.estimate("throughput"))]
            statements.append(f"{key[0]} at {key[1]} (batch {key[2]}): {' > '.join(order)} by throughput.")
    if not table_rows:
        return None, []
    table = Table("deployed-ranking", "Backbones ranked per backend",
                  ["backend", "res", "batch", "rank", "model", "throughput (img/s)",
                   "against the next faster (throughput ratio [95% CI]: verdict)", "agreement"], table_rows)
    return table, statements


def _statements(rows: list[_Row]) -> list[str]:
    out = []
    failed = [r for r in rows if r.record.get("status") not in ("ok", None)]
    for r in failed:
        op = f", at {r.record['export_error_op']}" if r.record.get("export_error_op") else ""
        out.append(f"{r.model} at {r.res} under {r.backend}: {r.record.get('status')} ({r.record.get('error')}{op}).")
    for r in rows:
        a = r.record.get("agreement")
        if r.backend != "eager" and isinstance(a, dict) and not a.get("within_tolerance"):
            speed = f" (×{r.speedup.ratio:.2f} eager)" if r.speedup else ""
            out.append(f"{r.model} at {r.res} under {r.backend} lost the answer{speed}: "
                       + "; ".join(a.get("failures") or []) + ". Its speed is not a speed-up of the same model.")
    return out


def plot_speedups(rows: list[_Row]):
    """Speed-up over eager fp32 per backend, one panel per resolution, with 95% CI bars."""
    shown = [r for r in rows if r.speedup is not None and math.isfinite(r.speedup.ratio)]
    if not shown:
        return None
    panels: dict[str, list[_Row]] = {}
    for r in shown:
        panels.setdefault(r.res, []).append(r)
    fig, axes = panel_grid(len(panels), 5.0, 3.4)
    for ax, (res, part) in zip(axes, panels.items()):
        models = list(dict.fromkeys(r.model for r in part))
        backends = list(dict.fromkeys(r.backend for r in part))
        width = 0.8 / max(1, len(backends))
        for j, backend in enumerate(backends):
            for i, model in enumerate(models):
                r = next((x for x in part if x.model == model and x.backend == backend), None)
                if r is None:
                    continue
                lo, hi = r.speedup.ci
                err = [[max(0.0, r.speedup.ratio - lo)], [max(0.0, hi - r.speedup.ratio)]] \
                    if math.isfinite(lo) and math.isfinite(hi) else None
                ax.bar(i + j * width, r.speedup.ratio, width, yerr=err, capsize=3, color=f"C{j}",
                       label=backend if i == 0 else None)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(models))], models)
        ax.set_ylabel("speed-up over eager fp32 (×)")
        ax.set_title(f"{res} px", fontsize="medium")
        ax.legend(fontsize="small", frameon=False)
    return fig


def deployed_section(runs: list[Run]) -> tuple[list[str], list[Table], list[PlotSpec]]:
    """(statements, tables, plots) of the section; nothing when no run holds a deployed backend."""
    rows = _rows(runs)
    if not rows:
        return [], [], []
    rank_table, rank_statements = ranking(rows)
    tables = [deployed_table(rows)] + ([rank_table] if rank_table else [])
    plots: list[PlotSpec] = [("Speed-up over eager fp32 per backend", "Throughput of each backend over the eager "
                              "fp32 cell's, with its 95% CI; dotted: 1 (as fast as eager).",
                              lambda _df: plot_speedups(rows))]
    return _statements(rows) + rank_statements, tables, plots
