"""Figures derived from measured ones: achieved TFLOP/s and MFU, scaling efficiency.

MFU = achieved model FLOP/s over a peak measured in the same run (a GEMM sweep in the same dtype
and math mode, re-measured after each cell: bench.measure.peak), both recorded; ``mfu_datasheet``
uses the vendor's peak instead where the device is known. Training counts (2 + f) x forward:
forward, the activation gradients, and the weight gradients of the trainable share f of the
parametrised MACs (``Flops.trainable_fraction``; f = 1, the usual 3x, when nothing is frozen).

Scaling efficiency compares a cell with the latest record (by timestamp) of the same cell at world
size 1 in the same run (``run_id``: a run directory is one study; a baseline from another run, on
another day's load, is not compared) that is comparable (``comparable_base``, the one rule the
report's study section uses too): the same model, resolution, mode, task, precision, device name,
channels-last, compile and TF32, the same scaling mode and batch basis (weak: the batch per rank;
strong, ``--global-batch``: the global batch, so efficiency = speed-up / N), and either the same
total threads (``same-total-threads``: efficiency = speed-up, since both used the same cores; a
local CPU study's default, which gives each of N ranks cores / N threads) or the same threads per rank
(``same-threads-per-rank``: efficiency = throughput / (N x baseline), the usual weak-scaling figure,
since the global batch grows with N while the batch per rank stays). On CUDA the resource each
rank brings is its GPU, not its CPU threads (the launcher's cores / N split leaves a world-size-1
base with N x the threads, which would read as ``same-total-threads`` and turn 2 GPUs at 95% into
1.9): basis ``one-gpu-per-rank``, efficiency = throughput / (N x baseline) whatever the threads. Its
95% interval
(``scaling_efficiency_ci95``) is bench.stats' seeded percentile bootstrap of the throughput ratio
over the two cells' timed iterations (``compare_runs``, one repeat a side: within-run noise only),
divided by N where the basis is per rank; None where either side lacks samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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


# What a multi-rank cell and its world-size-1 base share (issue 19 A: one rule for the record's
# field at write time and for the report's study section). The engine is not among them: a
# world-size-1 DDP cell and a plain one are the same single-rank work.
_SAME = ("model", "res", "mode", "task", "precision", "device_name", "channels_last", "compile", "tf32")
BASES = ("same-total-threads", "same-threads-per-rank")
GPU_BASIS = "one-gpu-per-rank"  # CUDA: each rank brings a GPU; the threads do not set the ideal


def scaling_mode(rec: dict) -> str:
    """weak (--batch per rank; records from before issue 19) or strong (--global-batch)."""
    return "strong" if rec.get("scaling_mode") == "strong" else "weak"


def _ok(r: dict) -> bool:
    return r.get("status") == "ok" and bool(r.get("throughput"))


def comparable_base(rec: dict, r: dict) -> bool:
    """Whether world-size-1 record ``r`` is a base for ``rec``: the same cell settings, the same
    scaling mode, and the same batch basis (weak: the batch per rank; strong: the global batch)."""
    batch_key = "global_batch" if scaling_mode(rec) == "strong" else "batch"
    return (r.get("world_size") == 1 and _ok(r) and scaling_mode(r) == scaling_mode(rec)
            and all(r.get(k) == rec.get(k) for k in (*_SAME, batch_key)))


def match_base(history: list[dict], rec: dict, run_id: str | None = None) -> tuple[list[dict], str] | None:
    """The world-size-1 records (every repeat) that ``rec`` is compared with, and the basis:
    ``same-total-threads`` (the base used the cores of all the ranks together: efficiency =
    speed-up) before ``same-threads-per-rank`` (efficiency = speed-up / N); on CUDA
    ``one-gpu-per-rank`` (efficiency = speed-up / N, any threads). Only records of run
    ``run_id`` when given (a run directory is one study). None where there is none."""
    world = rec.get("world_size") or 1
    if world <= 1 or not _ok(rec):
        return None
    singles = [r for r in history if comparable_base(rec, r) and (run_id is None or r.get("run_id") == run_id)]
    if rec.get("device") == "cuda":
        return (singles, GPU_BASIS) if singles else None
    threads = rec.get("threads") or 0
    for basis, want in zip(BASES, (threads * world, threads)):
        matching = [r for r in singles if r.get("threads") == want]
        if matching:
            return matching, basis
    return None


def resource_factor(basis: str, world: int) -> int:
    """What the ideal speed-up is: N where each rank brings its own threads or its own GPU, 1 where
    the total threads are fixed."""
    return 1 if basis == "same-total-threads" else world


def scaling(history: list[dict], rec: dict, run_id: str | None = None) -> dict[str, Any]:
    """``scaling_efficiency``, its ``scaling_efficiency_ci95`` and ``scaling_basis`` of ``rec``
    against a comparable world-size-1 record of run ``run_id`` in ``history`` (None when there is none)."""
    none = {"scaling_efficiency": None, "scaling_basis": None, "scaling_efficiency_ci95": None}
    matched = match_base(history, rec, run_id)
    if matched is None:
        return none
    bases, basis = matched
    base = max(bases, key=lambda r: str(r.get("timestamp") or ""))
    per = resource_factor(basis, rec.get("world_size") or 1)
    return {"scaling_efficiency": rec["throughput"] / base["throughput"] / per, "scaling_basis": basis,
            "scaling_efficiency_ci95": _ratio_ci([base], [rec], per)}


def _ratio_ci(base: list[dict], new: list[dict], per: int) -> list[float] | None:
    """The bootstrap 95% interval of new/base throughput over their timed iterations (and repeats,
    hierarchical, when the records hold several), / ``per``."""
    b, n = Timings.from_records(base), Timings.from_records(new)
    if b is None or n is None:
        return None
    lo, hi = compare_runs(b, n, metric="throughput").ci
    return [lo / per, hi / per] if math.isfinite(lo) and math.isfinite(hi) else None


@dataclass(frozen=True)
class StudyEfficiency:
    """A multi-rank cell against its world-size-1 base, over every repeat of both: throughput
    ratio (speed-up), the resource factor, efficiency = speed-up / factor and its 95% CI."""

    speedup: float
    factor: int
    efficiency: float
    ci95: tuple[float, float] | None
    basis: str
    base_throughput: float


def study_efficiency(cell: list[dict], history: list[dict]) -> StudyEfficiency | None:
    """Efficiency of a cell (``cell``: all its repeat records, one identity and world size) against
    the matching world-size-1 cell in ``history`` (all of a run directory's records): weak,
    throughput / (N x base); strong, speed-up / N -- one formula once the base is matched by
    ``comparable_base``. Pure: the answer does not depend on the order the records were written."""
    ok = [r for r in cell if _ok(r)]
    if not ok:
        return None
    rec = ok[0]
    matched = match_base(history, rec)
    if matched is None:
        return None
    bases, basis = matched
    per = resource_factor(basis, rec.get("world_size") or 1)
    tb, tn = Timings.from_records(bases), Timings.from_records(ok)
    if tb is not None and tn is not None:
        comp = compare_runs(tb, tn, metric="throughput")
        ratio, base_thr = comp.ratio, tb.estimate("throughput")
        lo, hi = comp.ci
        ci = (lo / per, hi / per) if math.isfinite(lo) and math.isfinite(hi) else None
    else:  # records without samples: the medians' ratio, no interval
        base_thr = float(sorted(r["throughput"] for r in bases)[len(bases) // 2])
        ratio, ci = float(sorted(r["throughput"] for r in ok)[len(ok) // 2]) / base_thr, None
    return StudyEfficiency(ratio, per, ratio / per, ci, basis, base_thr)
