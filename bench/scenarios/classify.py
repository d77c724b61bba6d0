"""``bench run``'s cells: a backbone as a classifier, timed for inference or a training step.

One cell: count FLOPs (once per model x resolution, rank 0, broadcast), build the model, open the
memory window, build the engine, compile if asked (timed apart as ``compile_s``), time the step by
the protocol of bench.measure.timing, then derive throughput, MFU and scaling efficiency. A failure
anywhere in the cell (FLOP counting included) is recorded in that cell (``oom`` / ``error``) and
the sweep goes on.

Distributed cells time the same number of iterations on every rank (decisions are agreed with an
all-reduce outside the timed blocks), report each rank's median step time, and compute global
throughput from the slowest rank.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

import psutil
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.build import build_model, place_model
from bench.config import RunConfig
from bench.engines import PRECISIONS, TrainSpec, base_record_fields, build_trainer, trainer_record_fields
from bench.engines.base import autocast_dtype, weight_dtype
from bench.errors import first_line
from bench.launch.context import DistContext, all_gather_floats, all_reduce_max, broadcast_object
from bench.measure import derived
from bench.measure.flops import count_flops
from bench.measure.memory import DeviceCounters, PeakMemory, free_memory, is_oom, memory_breakdown
from bench.measure.timing import measure, measure_lockstep, peak_matmul_tflops
from bench.plan import Cell, make_cells
from bench.record import RunDir
from bench.scenarios import dense


class _Skip(Exception):
    """A batch the auto-search predicts won't fit (CPU: would swap or be OOM-killed)."""


def apply_math_mode(cfg: RunConfig) -> None:
    """TF32 for convs and matmuls alike, and cuDNN autotuning, before anything is measured (the
    MFU peak included, so it is measured in the same math mode as the model)."""
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark


class ClassifyScenario:
    def __init__(self, config: RunConfig):
        self.config = config
        apply_math_mode(config)  # before the environment is recorded, so env.json says it too
        self.peak_tflops: float | None = None
        self._flops: dict[tuple[str, int, int], object] = {}

    def cells(self) -> list[Cell]:
        c = self.config
        return make_cells(c.models, c.res, c.modes, c.batches, c.task)

    def prepare(self, ctx: DistContext, run_dir: RunDir, todo: list[Cell]) -> None:
        dtype = autocast_dtype(self.config.dtype) or weight_dtype(self.config.dtype)
        peak = peak_matmul_tflops(ctx.device, dtype, budget_s=min(1.0, self.config.budget))
        self.peak_tflops = peak if math.isfinite(peak) and peak > 0 else None
        self.profile_dir = run_dir.path / "traces" if self.config.profile else None

    def _count(self, cell: Cell, ctx: DistContext):
        """FLOPs of (model, resolution), counted once on rank 0 and broadcast; an exception
        (a trace that does not fit in memory) comes back as the exception itself."""
        key = (cell.model, cell.height, cell.width)
        if key not in self._flops:
            counted: object = None
            if ctx.is_main:
                try:
                    counted = dense.count(cell) if cell.task != "cls" else count_flops(
                        build_model(cell.model), cell.model, cell.height, cell.width, cross_check=False)
                except Exception as exc:  # noqa: BLE001 - recorded in the cell
                    counted = RuntimeError(f"{type(exc).__name__} while counting FLOPs: {first_line(exc)}") \
                        if not is_oom(exc) else MemoryError(f"out of memory while counting FLOPs: {first_line(exc)}")
                free_memory(torch.device("cpu"))
            self._flops[key] = broadcast_object(counted, ctx)
        return self._flops[key]

    def run(self, cell: Cell, ctx: DistContext, history: list[dict]) -> dict:
        from models import model_family

        cfg = self.config
        rec = {**cell.as_dict(), "kind": "run", "family": model_family(cell.model), "device": ctx.device.type,
               "dtype": cfg.dtype, "precision": PRECISIONS[cfg.dtype], "tf32": cfg.tf32,
               "cudnn_benchmark": cfg.cudnn_benchmark,
               "engine": cfg.engine if cell.train else "none",
               **base_record_fields(cfg, cell.train),  # the engine's own fields (DeepSpeed: zero)
               "world_size": ctx.world_size, "threads": torch.get_num_threads(),
               "channels_last": cfg.channels_last, "compile": cfg.compile,
               "grad_clip": cfg.grad_clip if cell.train else None, "budget_s": cfg.budget, "max_time_s": cfg.max_time}
        from bench.environment import device_name

        rec["device_name"] = device_name(ctx.device)
        counted = self._count(cell, ctx)
        if isinstance(counted, BaseException):
            rec.update(status="oom" if isinstance(counted, MemoryError) else "error", error=str(counted)[:300],
                       flags=["flops-failed"], wall_s=0.0, cpu_time_s=0.0, loadavg_1m=os.getloadavg()[0])
            return rec
        rec.update(params=counted.params, gmacs=counted.gmacs, gflops=counted.gflops, stage_gmacs=counted.stage_gmacs,
                   attention_gmacs_per_stage=counted.attention_gmacs_per_stage or None,
                   part_gmacs=counted.part_gmacs or None, part_params=counted.part_params or None,
                   input_hw=list(dense.input_hw(cell)), bn_mode="frozen" if cell.task != "cls" else None)
        rec.update(measure_cell(cell, ctx, cfg, getattr(self, "profile_dir", None)))
        flags = list(rec.get("flags") or [])
        if rec["status"] == "ok" and rec.get("per_rank_step_ms"):  # frontier-only cells have no time
            rec.update(derived.utilisation(counted.gmacs, cell.train, rec["global_batch"], rec["per_rank_step_ms"],
                                           self.peak_tflops, ctx.world_size))
            flags += derived.mfu_flags(rec.get("mfu"))
            rec.update(derived.scaling(history, rec))
        rec["flags"] = flags
        return rec

    def summarize(self, records: list[dict], run_dir: RunDir, ctx: DistContext, console) -> None:
        """The summary table on the sweep's console; the command renders the report afterwards."""
        _summary(console, records, run_dir)


# --------------------------------------------------------------------------------------------
# One cell


def _build(cell: Cell) -> nn.Module:
    """The classifier, or the whole detector / segmentor for --task det|seg."""
    return build_model(cell.model) if cell.task == "cls" else dense.build(cell)


def _input(cell: Cell, batch: int, device: torch.device, channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    height, width = dense.input_hw(cell)
    # Detectors take images in [0, 1] (their transform normalises); classifiers normalised noise.
    x = (torch.rand if cell.task == "det" else torch.randn)(batch, 3, height, width, device=device, dtype=dtype)
    return x.contiguous(memory_format=memory_format)


def _make_step(cell: Cell, batch: int, model: nn.Module, ctx: DistContext, cfg: RunConfig):
    """(step function, engine trainer or None) for one iteration of the cell, on an already
    built model."""
    model = place_model(model, ctx.device, cfg.channels_last)
    if not cell.train:
        model.eval().to(weight_dtype(cfg.dtype))
        x = _input(cell, batch, ctx.device, cfg.channels_last, weight_dtype(cfg.dtype))
        fwd = torch.compile(model) if cfg.compile else model
        amp = autocast_dtype(cfg.dtype)
        if cell.task != "cls":
            return dense.make_infer_step(cell, fwd, x, torch.autocast(ctx.device.type, dtype=amp) if amp else None), None

        @torch.inference_mode()
        def step():
            if amp is None:
                return fwd(x)
            with torch.autocast(ctx.device.type, dtype=amp):
                return fwd(x)

        return step, None
    spec = TrainSpec(engine=cfg.engine, zero=cfg.zero, dtype=cfg.dtype, grad_clip=cfg.grad_clip, micro_batch=batch,
                     ds_config=cfg.ds_config)
    trainer = build_trainer(model, ctx, spec)
    x = _input(cell, batch, ctx.device, cfg.channels_last, trainer.input_dtype)
    fwd = torch.compile(trainer.model) if cfg.compile else trainer.model
    if cell.task != "cls":
        targets = dense.train_targets(cell, x)

        def step():
            with trainer.autocast():
                loss = dense.train_loss(cell, fwd, x, targets)
            trainer.step(loss)
            return loss

        return step, trainer
    target = torch.randint(0, 1000, (batch,), device=ctx.device)

    def step():
        with trainer.autocast():
            loss = F.cross_entropy(fwd(x).float(), target)
        trainer.step(loss)
        return loss

    return step, trainer


def _fits_cpu_memory(per_sample_mb: float, batch: int) -> bool:
    return per_sample_mb * batch < 0.8 * psutil.virtual_memory().available / 2**20


def find_max_batch(cell: Cell, ctx: DistContext, cfg: RunConfig) -> tuple[int, list[dict]]:
    """Largest batch that runs one step: double until it fails, then bisect. On CPU a batch
    whose predicted memory (from batch 1) exceeds 80% of free RAM counts as not fitting, since
    the kernel would swap or kill us rather than raise."""
    tried: list[dict] = []
    per_sample = None  # peak MB of batch 1 (weights included: a conservative per-image figure)

    def fits(b: int) -> bool:
        nonlocal per_sample
        peak = None
        try:
            if ctx.device.type == "cpu" and per_sample is not None and not _fits_cpu_memory(per_sample, b):
                raise _Skip
            model = _build(cell)
            with PeakMemory(ctx.device, model) as mem:
                step, _ = _make_step(cell, b, model, ctx, cfg)
                step()
            if b == 1:
                per_sample = mem.peak_mb
            peak = round(mem.peak_mb, 1)
            ok = True
        except _Skip:
            ok = False
        except Exception as exc:  # noqa: BLE001 - OOM is the expected failure
            if not is_oom(exc):
                raise
            ok = False
        free_memory(ctx.device)
        ok = all_reduce_max(0.0 if ok else 1.0, ctx) == 0.0  # every rank must fit
        tried.append({"batch": b, "fits": ok, "peak_mem_mb": peak if ok else None})
        return ok

    if not fits(1):
        return 0, tried
    good, bad = 1, None
    while bad is None and good < cfg.max_batch:
        b = min(good * 2, cfg.max_batch)
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


def _timed(step: Callable[[], object], ctx: DistContext, cfg: RunConfig, time_left_s: float):
    if not ctx.distributed:
        return measure(step, ctx.device, cfg.budget, max_time_s=time_left_s)
    return measure_lockstep(step, ctx.device, cfg.budget, lambda v: all_reduce_max(v, ctx), max_time_s=time_left_s)


def _compile_first_call(step: Callable[[], object], ctx: DistContext) -> dict:
    """The first call of a compiled step is the compile: timed apart, never in warm-up."""
    from torch._dynamo.utils import counters

    counters.clear()
    t0 = time.perf_counter()
    step()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    return {"compile_s": round(time.perf_counter() - t0, 3),
            "_graphs_after_compile": counters["stats"]["unique_graphs"]}


def _compile_counts(after_compile: int) -> dict:
    from torch._dynamo.utils import counters

    breaks = sum(counters["graph_break"].values())
    return {"compile_graph_breaks": breaks,
            "compile_recompiles": counters["stats"]["unique_graphs"] - after_compile}


def measure_cell(cell: Cell, ctx: DistContext, cfg: RunConfig, profile_dir: Path | None = None) -> dict:
    """Run one cell; returns the measured fields (status ok / oom / error)."""
    out: dict = {"status": "ok", "error": None}
    flags: list[str] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    out["loadavg_1m"] = os.getloadavg()[0]
    if cfg.compile:
        torch._dynamo.reset()  # nothing of the previous cell's graphs is reused
    try:
        batch = cell.batch
        if batch == "auto":
            batch, tried = find_max_batch(cell, ctx, cfg)
            out["batch_search"] = tried
            if batch == 0:
                out.update(status="oom", error="batch 1 does not fit", batch=None, flags=["batch-1-oom"])
                return out
            if not cfg.time_auto_batch:
                # The frontier: one step per trial, the found batch not timed (ask --time-auto-batch).
                found = next(t for t in reversed(tried) if t["batch"] == batch)
                out.update(batch=batch, global_batch=batch * ctx.world_size, peak_mem_mb=found["peak_mem_mb"],
                           peak_mem_method="largest fitting trial", flags=["frontier-only"])
                return out
        out["batch"] = batch
        model = _build(cell)
        # The window opens before the engine is built, on every device: DDP buckets, ZeRO
        # partitions, optimizer state and the input all count.
        with PeakMemory(ctx.device, model) as mem:
            step, trainer = _make_step(cell, batch, model, ctx, cfg)
            compiled = _compile_first_call(step, ctx) if cfg.compile else None
            time_left = max(0.0, cfg.max_time - (time.perf_counter() - t0))
            with DeviceCounters(ctx.device) as device_counters:
                timing = _timed(step, ctx, cfg, time_left)
        out["peak_mem_mb"] = round(mem.peak_mb, 1)
        out["peak_mem_method"] = mem.method
        out["mem_reserved_mb"] = mem.reserved_mb
        out["device_mem_used_mb"] = device_counters.used_mb
        if device_counters.energy_mj is not None:
            images = (timing.warmup_iters + timing.iters) * batch
            out["energy_j_per_image"] = device_counters.energy_mj / 1e3 / max(1, images)
        if compiled is not None:
            out["compile_s"] = compiled["compile_s"]
            out.update(_compile_counts(compiled["_graphs_after_compile"]))
            if out["compile_graph_breaks"] or out["compile_recompiles"]:
                flags.append("compile-fallback")
        out.update(timing.as_record())
        flags += list(timing.flags)
        if timing.iters == 0:
            raise TimeoutError(f"--max-time {cfg.max_time:g} s ran out before a single timed iteration "
                               f"({timing.warmup_iters} warm-up iterations)")
        per_rank = all_gather_floats(timing.median_ms, ctx)
        out.update(per_rank_step_ms=per_rank, global_batch=batch * ctx.world_size,
                   throughput=batch * ctx.world_size / (max(per_rank) / 1e3))
        if cell.task != "cls" and not cell.train:
            x = _input(cell, batch, ctx.device, cfg.channels_last, weight_dtype(cfg.dtype))
            out["part_latency_ms"] = dense.part_latency_ms(cell, model, x)
        if trainer is not None:
            out["optimizer_impl"] = trainer.optimizer_impl
            out.update(trainer_record_fields(trainer))
            out["mem_breakdown_mb"] = memory_breakdown(trainer, step)
        if profile_dir is not None:
            from bench.measure.profile import profile_cell

            # One TensorBoard run per cell, one worker per rank.
            cell_dir = profile_dir / f"{cell.model}_{cell.res}_{cell.mode}_b{batch}_{cfg.engine if cell.train else 'none'}_w{ctx.world_size}"
            out["op_breakdown"], out["trace_file"] = profile_cell(step, ctx.device, cell_dir, f"rank{ctx.rank}")
        del step, model, trainer
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        out["status"] = "oom" if is_oom(exc) else "error"
        out["error"] = first_line(exc, with_type=True)
    finally:
        free_memory(ctx.device)
    out["flags"] = flags
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    out["cpu_time_s"] = round(time.process_time() - cpu0, 3)
    return out


def _summary(console, records: list[dict], run_dir: RunDir) -> None:
    from rich.table import Table

    table = Table(title=f"bench run -> {run_dir.path}")
    for col in ("model", "res", "mode", "batch", "params (M)", "GMACs", "latency ms (p50/p90)", "iters", "CV",
                "img/s", "peak MB", "status", "flags"):
        table.add_column(col, justify="left" if col in ("model", "mode", "status", "flags") else "right")
    for r in records:
        ok = r["status"] == "ok" and r.get("latency_ms") is not None  # frontier-only cells: no time
        table.add_row(
            r["model"], r["res"], r["mode"], str(r.get("batch")),
            f"{r['params'] / 1e6:.1f}" if r.get("params") else "-", f"{r['gmacs']:.2f}" if r.get("gmacs") else "-",
            f"{r['latency_ms']:.1f} / {r['latency_p90_ms']:.1f}" if ok else "-",
            str(r.get("iters", "-")) if ok else "-",
            f"{100 * r['latency_cv']:.1f}%" if ok and r.get("latency_cv") is not None else "-",
            f"{r['throughput']:.1f}" if ok else "-",
            f"{r['peak_mem_mb']:.0f}" if r.get("peak_mem_mb") is not None else "-",
            r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error') or ''}"[:60],
            ", ".join(r.get("flags") or []) or "-",
        )
    console.print(table)
    console.print(f"records: {run_dir.records_path}")
