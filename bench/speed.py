"""Timing: warm up until steady, then time iterations until the cell's budget is spent.

CPU work is synchronous, so a host clock (``perf_counter_ns``) around each iteration is exact.
CUDA work is asynchronous: each iteration is bracketed by CUDA events recorded on the stream, and
the host synchronises once, after the loop, before reading them — no host timer ever wraps async
work and no per-iteration sync perturbs the pipeline. The loop body is only the step and two
clock reads, so the harness adds nothing measurable (see tests/benchmarks/timing_overhead.py).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Timing:
    times_ms: list[float]
    warmup_iters: int
    warmup_ms: float

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90_ms(self) -> float:
        ordered = sorted(self.times_ms)
        # nearest-rank p90
        return ordered[min(len(ordered) - 1, max(0, int(round(0.9 * len(ordered) + 0.5)) - 1))]


def time_block(step: Callable[[], object], device: torch.device, n: int) -> list[float]:
    """Run ``step`` n times and return per-iteration milliseconds."""
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            starts[i].record()
            step()
            ends[i].record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        step()
        out.append((clock() - t0) / 1e6)
    return out


def measure(
    step: Callable[[], object],
    device: torch.device,
    budget_s: float,
    min_iters: int = 3,
    max_iters: int = 1000,
    max_warmup: int = 10,
    steady_tolerance: float = 0.1,
) -> Timing:
    """Warm up until two consecutive iterations agree within ``steady_tolerance`` (or
    ``max_warmup`` iterations or a third of the budget), then time at least ``min_iters``
    iterations and as many more as fit in the rest of ``budget_s``."""
    warm: list[float] = []
    t_start = time.perf_counter()
    while len(warm) < max_warmup:
        warm += time_block(step, device, 1)
        if len(warm) >= 2 and abs(warm[-1] - warm[-2]) <= steady_tolerance * warm[-2]:
            break
        if time.perf_counter() - t_start > budget_s / 3:
            break
    per_iter_s = max(warm[-1] / 1e3, 1e-6)
    remaining = budget_s - (time.perf_counter() - t_start)
    n = int(min(max_iters, max(min_iters, remaining // per_iter_s)))
    times: list[float] = []
    # Time in blocks so a slow-down mid-cell doesn't blow the budget by much.
    while len(times) < n:
        block = min(n - len(times), max(1, n // 4))
        times += time_block(step, device, block)
        if len(times) >= min_iters and time.perf_counter() - t_start > budget_s * 1.5:
            break
    return Timing(times_ms=times, warmup_iters=len(warm), warmup_ms=sum(warm))


def measure_lockstep(
    step: Callable[[], object], device: torch.device, budget_s: float, agree_max: Callable[[float], float]
) -> Timing:
    """``measure`` for several ranks whose step holds collectives: two warm-up iterations, then
    an iteration count every rank agrees on (``agree_max`` = all-reduce max), so no rank stops
    while another still waits in a collective."""
    warm = time_block(step, device, 2)
    per_iter_ms = max(agree_max(warm[-1]), 1e-3)
    n = int(agree_max(max(3, min(1000, (budget_s * 1e3 - sum(warm)) // per_iter_ms))))
    return Timing(times_ms=time_block(step, device, n), warmup_iters=len(warm), warmup_ms=sum(warm))


def peak_matmul_tflops(device: torch.device, dtype: torch.dtype, budget_s: float = 1.0) -> float:
    """Peak achievable TFLOP/s measured by a large square matmul in ``dtype`` on ``device``:
    the denominator of MFU, measured in the same run rather than read off a datasheet."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = measure(lambda: torch.mm(a, b), device, budget_s=budget_s, min_iters=3, max_iters=50)
    return 2 * n**3 / (min(timing.times_ms) / 1e3) / 1e12
