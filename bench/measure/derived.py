"""Figures derived from measured ones: achieved TFLOP/s and MFU, scaling efficiency.

MFU = achieved model FLOP/s over a peak measured in the same run (a GEMM sweep in the same dtype
and math mode, re-measured after each cell: bench.measure.peak), both recorded; ``mfu_datasheet``
uses the vendor's peak instead where the device is known. Training counts (2 + f) x forward:
forward, the activation gradients, and the weight gradients of the trainable share f of the
parametrised MACs (``Flops.trainable_fraction``; f = 1, the usual 3x, when nothing is frozen).

Scaling efficiency compares a cell with the latest record (by timestamp) of the same cell at world
size 1 in the same run (``run_id``: a run directory is one study; a baseline from another run, on
another day's load, is not compared) that is comparable: the same model, resolution, batch per
rank, precision, device name, and either the same total threads (``same-total-threads``:
efficiency = speed-up, since both used the same cores) or the same threads per rank
(``same-threads-per-rank``: efficiency = throughput / (N x baseline), the usual weak-scaling figure,
since the global batch grows with N while the batch per rank stays). Its 95% interval
(``scaling_efficiency_ci95``) is bench.stats' seeded percentile bootstrap of the throughput ratio
over the two cells' timed iterations (``compare_runs``, one repeat a side: within-run noise only),
divided by N where the basis is per rank; None where either side lacks samples.
"""
from __future__ import annotations

import math
from typing import Any

from bench.stats import Timings, compare_runs


def train_factor(trainable_fraction: float = 1.0) -> float:
    """Training FLOPs per forward FLOP: 1 (forward) + 1 (activation gradients) + the trainable
    share of the weight gradients."""
    if not 0.0 <= trainable_fraction <= 1.0:
        raise ValueError(f"trainable_fraction must lie in [0, 1], got {trainable_fraction!r}")
    return 2.0 + trainable_fraction


def utilisation(gmacs: float, train: bool, throughput: float, peak_tflops_per_rank: float | None,
                world_size: int, trainable_fraction: float = 1.0) -> dict[str, Any]:
    """Achieved TFLOP/s at the sustained global ``throughput`` (images/s; a training image costs
    ``train_factor`` x its forward), and MFU against the per-rank peak times the ranks."""
    achieved = 2 * gmacs * 1e9 * (train_factor(trainable_fraction) if train else 1) * throughput / 1e12
    peak = peak_tflops_per_rank * world_size if peak_tflops_per_rank else None
    return {"achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak if peak else None}


def datasheet_utilisation(achieved_tflops: float, datasheet_per_rank: float | None,
                          world_size: int) -> dict[str, Any]:
    """MFU against the vendor's peak times the ranks (None where the device is not in the table)."""
    peak = datasheet_per_rank * world_size if datasheet_per_rank else None
    return {"peak_tflops_datasheet": peak, "mfu_datasheet": achieved_tflops / peak if peak else None}


def mfu_flags(mfu: float | None) -> list[str]:
    """MFU must lie in (0, 1]: above 1 means the peak or the FLOP count is wrong for this math."""
    if mfu is None:
        return []
    if mfu > 1:
        return ["mfu-over-1"]
    return [] if mfu > 0 else ["mfu-not-positive"]


_SAME = ("model", "res", "mode", "batch", "task", "precision", "device_name", "channels_last", "compile", "tf32")


def scaling(history: list[dict], rec: dict, run_id: str | None = None) -> dict[str, Any]:
    """``scaling_efficiency``, its ``scaling_efficiency_ci95`` and ``scaling_basis`` of ``rec``
    against a comparable world-size-1 record of run ``run_id`` in ``history`` (None when there is none)."""
    none = {"scaling_efficiency": None, "scaling_basis": None, "scaling_efficiency_ci95": None}
    world = rec.get("world_size") or 1
    if world <= 1 or rec.get("status") != "ok" or not rec.get("throughput"):
        return none
    singles = [r for r in history if r.get("status") == "ok" and r.get("world_size") == 1 and r.get("throughput")
               and all(r.get(k) == rec.get(k) for k in _SAME) and (run_id is None or r.get("run_id") == run_id)]
    threads = rec.get("threads") or 0
    for basis, want in (("same-total-threads", threads * world), ("same-threads-per-rank", threads)):
        matching = [r for r in singles if r.get("threads") == want]
        if matching:
            base = max(matching, key=lambda r: str(r.get("timestamp") or ""))
            per = 1 if basis == "same-total-threads" else world
            return {"scaling_efficiency": rec["throughput"] / base["throughput"] / per, "scaling_basis": basis,
                    "scaling_efficiency_ci95": _ratio_ci(base, rec, per)}
    return none


def _ratio_ci(base: dict, rec: dict, per: int) -> list[float] | None:
    """The bootstrap 95% interval of rec/base throughput over their timed iterations, / ``per``."""
    b, n = Timings.from_records([base]), Timings.from_records([rec])
    if b is None or n is None:
        return None
    lo, hi = compare_runs(b, n, metric="throughput").ci
    return [lo / per, hi / per] if math.isfinite(lo) and math.isfinite(hi) else None
