"""Profiling: torch.profiler traces per cell (TensorBoard's torch-tb-profiler reads them) and a
time breakdown by op category from the same profile.

Categories map aten op names by pattern; "communication" covers gloo/NCCL collectives.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

CATEGORIES = ("attention", "matmul", "conv", "norm", "elementwise", "communication", "other")
_PATTERNS = [
    ("communication", re.compile(r"nccl|gloo|all_reduce|allreduce|all_gather|allgather|broadcast|reduce_scatter"
                                 r"|c10d", re.I)),
    ("attention", re.compile(r"scaled_dot_product|flash_attention|efficient_attention|_attention|softmax", re.I)),
    ("conv", re.compile(r"conv|cudnn_convolution|mkldnn_convolution", re.I)),
    ("matmul", re.compile(r"\b(aten::)?(mm|bmm|addmm|matmul|linear|baddbmm|addmv|mv|dot)\b|gemm", re.I)),
    ("norm", re.compile(r"norm", re.I)),
    ("elementwise", re.compile(r"add|mul|div|sub|gelu|relu|silu|sigmoid|tanh|exp|copy|fill|clone|cat|pow|sqrt|where"
                               r"|max_pool|avg_pool|mean|sum|neg|abs|clamp|lerp|addcmul|addcdiv|foreach", re.I)),
]


def categorize(op_name: str) -> str:
    for category, pattern in _PATTERNS:
        if pattern.search(op_name):
            return category
    return "other"


def op_breakdown(events, on_device: bool) -> dict[str, float]:
    """Share of profiled time per category.

    CPU: each op's self CPU time. GPU: device-side time only, each kernel counted once, under the
    op that launched it (``evt.kernels`` of the CPU op that issued it): a cuDNN conv kernel
    counts as conv because ``aten::cudnn_convolution`` launched it, a flash-attention kernel as
    attention. Summing every ``key_averages()`` row's device time instead would count a kernel
    twice (under the aten op and as the kernel) and sort kernels by their own cryptic names."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for evt in events:
        if evt.name.startswith("ProfilerStep"):
            continue
        if on_device:
            for kernel in getattr(evt, "kernels", None) or []:
                totals[categorize(evt.name)] += kernel.duration
        elif evt.self_cpu_time_total > 0:
            totals[categorize(evt.name)] += evt.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}


def profile_cell(step: Callable[[], object], device: torch.device, trace_dir: Path, worker: str,
                 active: int = 3) -> tuple[dict[str, float], str]:
    """Profile ``active`` steps after one warm-up; write a TensorBoard trace for ``worker`` and
    return (fraction of self time per category, trace path)."""
    trace_dir = Path(trace_dir)
    trace_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(
        activities=activities,
        schedule=schedule(wait=0, warmup=1, active=active, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(trace_dir), worker_name=worker),
        record_shapes=False,
    ) as prof:
        for _ in range(1 + active):
            step()
            prof.step()
    totals = op_breakdown(prof.events(), on_device=device.type == "cuda")
    traces = sorted(trace_dir.glob(f"{worker}.*.pt.trace.json"), key=lambda p: p.stat().st_mtime)
    return totals, str(traces[-1]) if traces else ""
