"""The MFU denominator: a measured GEMM peak with a CI, and the vendor's datasheet peak.

Measured (``measure_peak``): square GEMMs of several sizes (``SIZES``: 512, 1024, 2048 on CPU;
4096, 8192 on CUDA) in the cell's dtype and math mode, each timed by the latency protocol of
bench.measure.timing (warm-up until steady, then samples; the statistic is the median with its
distribution-free 95% CI, as for a cell's latency). The peak is the best size's median TFLOP/s,
its CI the inverted CI of that median. A size is skipped, and the record's method says so, when
its ``MIN_ITERS`` iterations would not fit in its share of the sweep's budget at the speed of the
size below it: on a 2-core CPU one 2048^3 GEMM takes 0.2 s at one thread, so six of them plus
warm-up cost seconds per cell for a peak no higher than 1024's (0.081 vs 0.083 TFLOP/s at one
thread, 0.181 vs 0.170 at two), which made the peak, not the cell, most of a short run's time.
One best-of-N of a single size (the old figure) moved 20% between runs on a shared VM; a median
of a steady series does not chase the luckiest iteration.

Interleaved with the cells (bench.scenarios.step): the whole sweep once before the first cell
picks the best size; after each timed cell that size is measured again briefly, and the cell's MFU
uses that measurement, the one nearest in time to its own timing (machine state drifts over a
sweep: the peak is measured under the load the cell just had).

Datasheet (``datasheet_tflops``): dense (no sparsity) tensor-core peaks from NVIDIA's datasheets,
as PaLM-style MFU reports against: H100 SXM5 and H200 SXM (the same compute), H100 PCIe, H100 NVL,
H200 NVL, A100 SXM4/PCIe, V100 SXM2/PCIe. Sources: "NVIDIA H100 Tensor Core GPU" datasheet
(nvidia.com/en-us/data-center/h100), "NVIDIA H200 Tensor Core GPU" (nvidia.com/en-us/data-center/h200),
"NVIDIA A100 Tensor Core GPU" datasheet (2021), "NVIDIA V100 Tensor Core GPU" datasheet (2020); the
sparsity figures they print are halved. None where the device or its math is not in the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bench.measure.timing import measure

SIZES = {"cpu": (512, 1024, 2048), "cuda": (4096, 8192)}
MIN_ITERS = 6  # the smallest n with a 95% interval of the median


@dataclass
class Peak:
    """One measurement of the GEMM peak: the best size's median TFLOP/s and its 95% CI."""

    tflops: float
    ci95: list[float] | None
    size: int
    iters: int
    sizes: dict[int, float] = field(default_factory=dict)  # size -> median TFLOP/s (the sweep)
    when: str = "sweep"  # "sweep" (before the first cell) | "after-cell"
    skipped: tuple[int, ...] = ()  # sizes whose MIN_ITERS iterations would not fit in the budget

    @property
    def method(self) -> str:
        swept = ",".join(str(n) for n in self.sizes) or str(self.size)
        over = f"; {','.join(str(n) for n in self.skipped)} skipped (over the budget)" if self.skipped else ""
        return (f"GEMM {self.size}^3 median of {self.iters} ({self.when}); best of sizes {swept}{over}; "
                f"timing protocol of bench.measure.timing")


def _gemm(device: torch.device, dtype: torch.dtype, n: int, budget_s: float) -> tuple[float, list[float] | None, int]:
    """(median TFLOP/s, its 95% CI or None, timed iterations) of an n x n x n GEMM."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = measure(lambda: torch.mm(a, b), device, budget_s=budget_s, max_time_s=10 * budget_s + 10,
                     min_iters=MIN_ITERS, min_time_s=0.0, max_iters=200)
    if not timing.times_ms:
        return math.nan, None, 0
    work = 2 * n**3 / 1e12
    rec = timing.to_record()
    ci = rec["latency_ci95_ms"]
    return work / (timing.median_ms / 1e3), ([work / (ci[1] / 1e3), work / (ci[0] / 1e3)] if ci else None), timing.iters


def sizes_for(device: torch.device | str) -> tuple[int, ...]:
    return SIZES["cuda" if torch.device(device).type == "cuda" else "cpu"]


def measure_peak(device: torch.device | str, dtype: torch.dtype, budget_s: float = 1.0,
                 sizes: tuple[int, ...] | None = None, when: str = "sweep") -> Peak | None:
    """The GEMM sweep over ``sizes`` (default: the device's ``SIZES``), smallest first,
    ``budget_s`` shared among them; a size whose ``MIN_ITERS`` iterations at the speed of the
    largest size measured so far would overrun its share is skipped (the smallest never is);
    None when no size gave a timed iteration."""
    device = torch.device(device)
    sizes = tuple(sorted(sizes or sizes_for(device)))
    share = budget_s / len(sizes)
    found: dict[int, tuple[float, list[float] | None, int]] = {}
    skipped: list[int] = []
    for n in sizes:
        if found and _seconds_at(n, found[max(found)][0]) * MIN_ITERS > share:
            skipped.append(n)
            continue
        found[n] = _gemm(device, dtype, n, share)
    good = {n: v for n, v in found.items() if math.isfinite(v[0]) and v[0] > 0}
    if not good:
        return None
    best = max(good, key=lambda n: good[n][0])
    tflops, ci, iters = good[best]
    return Peak(tflops, ci, best, iters, {n: v[0] for n, v in good.items()}, when, tuple(skipped))


def _seconds_at(n: int, tflops: float) -> float:
    """One n^3 GEMM's seconds at ``tflops`` (NaN, never skipping, when that speed is unknown)."""
    return 2 * n**3 / 1e12 / tflops if math.isfinite(tflops) and tflops > 0 else math.nan


def remeasure(previous: Peak, device: torch.device | str, dtype: torch.dtype, budget_s: float) -> Peak:
    """The best size of ``previous`` measured again (after a cell); the sweep's figures kept."""
    again = measure_peak(device, dtype, budget_s, sizes=(previous.size,), when="after-cell")
    if again is None:
        return previous
    again.sizes = {**previous.sizes, previous.size: again.tflops}
    again.skipped = previous.skipped
    return again


def peak_matmul_tflops(device: torch.device | str, dtype: torch.dtype, budget_s: float = 1.0) -> float:
    """The measured peak alone (moved from bench.measure.timing): the sweep's best median, NaN if none."""
    peak = measure_peak(device, dtype, budget_s)
    return peak.tflops if peak else math.nan


# --------------------------------------------------------------------------- datasheet
# Dense TFLOP/s per math: "fp32" (no tensor cores), "tf32", "bf16", "fp16". Matched against the
# device name in order (the first pattern all of whose words occur in the name wins).
DATASHEET: tuple[tuple[tuple[str, ...], dict[str, float]], ...] = (
    (("h200", "nvl"), {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (("h200",), {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}),
    (("h100", "nvl"), {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    (("h100", "pcie"), {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5}),
    (("h100",), {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}),
    (("a100",), {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (("v100", "pcie"), {"fp32": 14.0, "fp16": 112.0}),
    (("v100",), {"fp32": 15.7, "fp16": 125.0}),
)


def math_kind(dtype: str, tf32: bool) -> str:
    """The datasheet column of a ``--dtype`` (and ``--tf32``): the math of the model's matmuls."""
    if dtype in ("bf16", "bf16-weights"):
        return "bf16"
    if dtype == "fp16":
        return "fp16"
    return "tf32" if tf32 else "fp32"


def datasheet_tflops(device_name: str | None, dtype: str, tf32: bool) -> float | None:
    """The vendor's dense peak of one device for this math, or None (unknown device or math)."""
    name = (device_name or "").lower()
    for words, table in DATASHEET:
        if all(w in name for w in words):
            kind = math_kind(dtype, tf32)
            # no TF32 on the device (V100): --tf32 on changes nothing, its fp32 matmuls are plain fp32
            return table.get(kind, table.get("fp32") if kind == "tf32" else None)
    return None
