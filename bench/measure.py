"""Measure one cell: build its model, time inference or a training step, track peak memory,
optionally profile, and return the record to write.

Distributed cells time the same number of iterations on every rank (decisions are agreed with
an all-reduce outside the timed blocks), report each rank's median step time, and compute global
throughput from the slowest rank.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.build import build_model, place_model
from bench.distributed import DistContext, all_gather_floats, all_reduce_max
from bench.engines import DTYPES, build_trainer
from bench.memory import PeakMemory, free_memory, is_oom
from bench.plan import Cell
from bench.speed import measure, measure_lockstep


@dataclass
class CellOptions:
    budget_s: float = 2.0
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    engine: str = "none"
    zero: int = 0
    grad_clip: float = 0.0
    ds_config: str | None = None
    profile_dir: Path | None = None
    max_batch: int = 1024


class _Skip(Exception):
    """A batch the auto-search predicts won't fit (CPU: would swap or be OOM-killed)."""


def _make_step(cell: Cell, batch: int, ctx: DistContext, opts: CellOptions) -> tuple[Callable[[], object], nn.Module, object]:
    """Return (step function, bare model, engine trainer or None) for one iteration of the cell."""
    model = place_model(build_model(cell.model), ctx.device, opts.channels_last)
    memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, cell.height, cell.width, device=ctx.device).contiguous(memory_format=memory_format)
    if cell.mode == "infer":
        model.eval()
        fwd = torch.compile(model) if opts.compile else model
        autocast = (
            torch.autocast(ctx.device.type, dtype=DTYPES[opts.dtype]) if opts.dtype != "fp32" else None
        )

        @torch.inference_mode()
        def step():
            if autocast is None:
                return fwd(x)
            with autocast:
                return fwd(x)

        return step, model, None
    trainer = build_trainer(
        model,
        ctx,
        engine=opts.engine,
        zero=opts.zero,
        dtype=opts.dtype,
        grad_clip=opts.grad_clip,
        micro_batch=batch,
        ds_config=opts.ds_config,
    )
    x = x.to(trainer.input_dtype)
    target = torch.randint(0, 1000, (batch,), device=ctx.device)
    fwd = torch.compile(trainer.model) if opts.compile else trainer.model

    def step():
        with trainer.autocast():
            loss = F.cross_entropy(fwd(x).float(), target)
        trainer.step(loss)
        return loss

    return step, model, trainer


def _fits_cpu_memory(per_sample_mb: float, batch: int) -> bool:
    return per_sample_mb * batch < 0.8 * psutil.virtual_memory().available / 2**20


def find_max_batch(cell: Cell, ctx: DistContext, opts: CellOptions) -> tuple[int, list[dict]]:
    """Largest batch that runs one step: double until it fails, then bisect. On CPU a batch
    whose predicted memory (from batch 1) exceeds 80% of free RAM counts as not fitting, since
    the kernel would swap or kill us rather than raise."""
    tried: list[dict] = []
    per_sample = None  # peak MB of batch 1 (weights included: a conservative per-image figure)

    def fits(b: int) -> bool:
        nonlocal per_sample
        try:
            if ctx.device.type == "cpu" and per_sample is not None and not _fits_cpu_memory(per_sample, b):
                raise _Skip
            step, model, _ = _make_step(cell, b, ctx, opts)
            with PeakMemory(ctx.device, model) as mem:
                step()
            if b == 1:
                per_sample = mem.peak_mb
            ok = True
        except _Skip:
            ok = False
        except Exception as exc:  # noqa: BLE001 - OOM is the expected failure
            if not is_oom(exc):
                raise
            ok = False
        free_memory(ctx.device)
        ok = all_reduce_max(0.0 if ok else 1.0, ctx) == 0.0  # every rank must fit
        tried.append({"batch": b, "fits": ok})
        return ok

    if not fits(1):
        return 0, tried
    good, bad = 1, None
    while bad is None and good < opts.max_batch:
        b = min(good * 2, opts.max_batch)
        if fits(b):
            good = b
        else:
            bad = b
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good, tried


def _agreed_measure(step, ctx: DistContext, budget_s: float):
    if not ctx.distributed:
        return measure(step, ctx.device, budget_s)
    return measure_lockstep(step, ctx.device, budget_s, lambda v: all_reduce_max(v, ctx))


def measure_cell(cell: Cell, ctx: DistContext, opts: CellOptions) -> dict:
    """Run one cell; returns the measured fields (status ok / oom / error)."""
    out: dict = {"status": "ok", "error": None}
    t0, cpu0 = time.perf_counter(), time.process_time()
    out["loadavg_1m"] = os.getloadavg()[0]
    try:
        batch = cell.batch
        if batch == "auto":
            batch, tried = find_max_batch(cell, ctx, opts)
            out["batch_search"] = tried
            if batch == 0:
                out.update(status="oom", error="batch 1 does not fit", batch=None)
                return out
        out["batch"] = batch
        step, model, trainer = _make_step(cell, batch, ctx, opts)
        with PeakMemory(ctx.device, model) as mem:
            timing = _agreed_measure(step, ctx, opts.budget_s)
        out["peak_mem_mb"] = round(mem.peak_mb, 1)
        out["peak_mem_method"] = mem.method
        per_rank = all_gather_floats(timing.median_ms, ctx)
        slowest_ms = max(per_rank)
        out.update(
            latency_ms=timing.median_ms,
            latency_p90_ms=timing.p90_ms,
            iters=len(timing.times_ms),
            warmup_iters=timing.warmup_iters,
            per_rank_step_ms=per_rank,
            global_batch=batch * ctx.world_size,
            throughput=batch * ctx.world_size / (slowest_ms / 1e3),
        )
        if trainer is not None and trainer.ds_config is not None:
            out["ds_config"] = trainer.ds_config
        if opts.profile_dir is not None:
            from bench.profile import profile_cell

            # One TensorBoard run per cell, one worker per rank.
            cell_dir = opts.profile_dir / f"{cell.model}_{cell.res}_{cell.mode}_b{batch}_{opts.engine}_w{ctx.world_size}"
            out["op_breakdown"], out["trace_file"] = profile_cell(step, ctx.device, cell_dir, f"rank{ctx.rank}")
        del step, model, trainer
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        if isinstance(exc, KeyboardInterrupt):
            raise
        out["status"] = "oom" if is_oom(exc) else "error"
        out["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    finally:
        free_memory(ctx.device)
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    out["cpu_time_s"] = round(time.process_time() - cpu0, 3)
    return out
