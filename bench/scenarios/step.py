"""``bench run``'s cells: a backbone as a classifier, timed for inference or a training step.

One cell: count FLOPs (once per model x resolution, rank 0, broadcast), build the model, open the
memory window, build the engine, compile if asked (timed apart as ``compile_s``) or else run one
untimed first step (``first_step_s``), time the step by the protocol of bench.measure.timing, then
derive throughput, MFU and scaling efficiency. Everything before the first timed iteration is the
cell's set-up (``setup_s``): outside ``--max-time``, whose clock starts with the timing, and
bounded by ``--setup-timeout`` instead (bench.measure.setup). A failure anywhere in the cell (FLOP
counting included) is recorded in that cell (``oom`` / ``error``) and the sweep goes on.

Distributed cells time the same number of iterations on every rank (decisions are agreed with an
all-reduce outside the timed blocks). Every statistic of the cell (latency, CI, flags, throughput,
MFU) comes from one series, the per-iteration maximum over ranks; each rank's own median step and
peak memory are kept beside it, peak memory is the largest rank's and a flag of any rank is the cell's.
"""
from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import psutil
import torch
import torch.nn as nn

from bench.build import place_model
from bench.config import RunConfig, cudnn_benchmark_on
from bench.deploy import deployed
from bench.engines import build_trainer, comm_prediction, trainer_record_fields
from bench.engines.base import autocast_dtype, make_optimizer, weight_dtype
from bench.errors import first_line
from bench.launch.context import (
    DistContext,
    all_gather,
    all_gather_floats,
    all_reduce_max,
    broadcast_object,
    elementwise_max,
)
from bench.measure import derived
from bench.measure.compiling import CompileWatch
from bench.measure.flops import Flops
from bench.measure.memory import DeviceCounters, PeakMemory, free_memory, is_oom, memory_breakdown, warm_up
from bench.measure.peak import Peak, datasheet_tflops, measure_peak, remeasure
from bench.measure.setup import SetupClock, SetupTimeout
from bench.measure.timing import Throughput, measure_lockstep
from bench.plan import Cell, make_cells
from bench.record import RunDir
from bench.scenarios.common import base_record, train_spec
from bench.scenarios.deployed import measure_deployed
from bench.scenarios.numerics import cell_math_mode, check_numerics
from bench.scenarios.result import BatchSearch, CellResult, CommFigures
from bench.tasks import Task, task_for
from bench.tasks.dense import PartsSetup


class _Skip(Exception):
    """A batch the auto-search predicts won't fit (CPU: would swap or be OOM-killed)."""


def apply_math_mode(cfg: RunConfig) -> None:
    """TF32 for convs and matmuls alike, and cuDNN autotuning, before anything is measured (the
    MFU peak included, so it is measured in the same math mode as the model)."""
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32
    torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
    torch.backends.cudnn.benchmark = cudnn_benchmark_on(cfg)  # --cudnn-benchmark auto: on for CUDA


class StepScenario:
    def __init__(self, config: RunConfig):
        self.config = config
        apply_math_mode(config)  # before the environment is recorded, so env.json says it too
        self.peak: Peak | None = None  # the GEMM sweep's result (``prepare``), re-measured after each cell
        self.profile_dir: Path | None = None
        self.comm_dir: Path | None = None
        self.run_id: str | None = None
        self._flops: dict[tuple[str, int, int], object] = {}

    def cells(self) -> list[Cell]:
        """The sweep's cells; with --global-batch (strong scaling) the batch per rank is the global
        batch over this process group's world size (the group exists when the sweep asks)."""
        c = self.config
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        return make_cells(c.models, c.res, c.modes, c.batches_for(world), c.task, c.backends)

    def prepare(self, ctx: DistContext, run_dir: RunDir, todo: list[Cell]) -> None:
        # The GEMM sweep once (its best size is re-measured after each cell: bench.measure.peak).
        if self.config.mfu:
            self.peak = measure_peak(ctx.device, self._peak_dtype(), budget_s=min(1.0, self.config.budget))
        self.profile_dir = run_dir.path / "traces" if self.config.profile else None
        self.comm_dir = run_dir.path / "traces" / "comm" if self.config.comm_steps else None
        self.run_id = run_dir.path.name  # as the sweep stamps each record (scaling compares within it)

    def _peak_dtype(self) -> torch.dtype:
        return autocast_dtype(self.config.dtype) or weight_dtype(self.config.dtype)

    def _count(self, cell: Cell, ctx: DistContext) -> Flops | BaseException:
        """FLOPs of (model, resolution), counted once on rank 0 and broadcast; an exception
        (a trace that does not fit in memory) comes back as the exception itself."""
        key = (cell.model, cell.height, cell.width)
        if key not in self._flops:
            counted: object = None
            if ctx.is_main:
                try:
                    counted = task_for(cell.task).count(cell)
                except Exception as exc:  # noqa: BLE001 - recorded in the cell
                    counted = RuntimeError(f"{type(exc).__name__} while counting FLOPs: {first_line(exc)}") \
                        if not is_oom(exc) else MemoryError(f"out of memory while counting FLOPs: {first_line(exc)}")
                free_memory(torch.device("cpu"))
            self._flops[key] = broadcast_object(counted, ctx)
        return self._flops[key]

    def _cell_config(self, cell: Cell) -> RunConfig:
        """The config a cell runs under: ``--backend compile`` is ``--compile`` for its cells."""
        return replace(self.config, compile=True) if cell.backend == "compile" else self.config

    def _base(self, cell: Cell, ctx: DistContext) -> dict:
        cfg = self._cell_config(cell)
        return base_record(cell, ctx, cfg, kind="run", train=cell.train) | {"backend": cell.backend,
            "tf32": cfg.tf32, "cudnn_benchmark": cudnn_benchmark_on(cfg), "channels_last": cfg.channels_last,
            "compile": cfg.compile, "numerics": cfg.numerics, "budget_s": cfg.budget, "max_time_s": cfg.max_time,
            "setup_timeout_s": cfg.setup_timeout, "scaling_mode": cfg.scaling_mode}

    def run(self, cell: Cell, ctx: DistContext, history: list[dict]) -> CellResult:
        """One cell: its FLOP count, what ``measure_cell`` measured, and the figures derived from them."""
        counted = self._count(cell, ctx)
        if isinstance(counted, BaseException):
            result = CellResult(self._base(cell, ctx), ctx.world_size, flops_failed=True, wall_s=0.0, cpu_time_s=0.0,
                                loadavg_1m=os.getloadavg()[0])
            result.failed("oom" if isinstance(counted, MemoryError) else "error", str(counted)[:300])
            return result
        task = task_for(cell.task)
        result = CellResult(self._base(cell, ctx), ctx.world_size, flops=counted,
                            shape={"input_hw": list(task.input_hw(cell)), "bn_mode": task.bn_mode})
        if deployed(cell.backend):  # a runtime of bench.deploy: its own export, build and timing
            measure_deployed(cell, ctx, self.config, result)
        else:
            measure_cell(cell, ctx, self._cell_config(cell), self.profile_dir, self.comm_dir, result)
        if result.status == "ok" and result.throughput is not None:  # frontier-only cells have no time
            self._derive(result, counted, cell, ctx, history)
        return result

    def _derive(self, result: CellResult, counted: Flops, cell: Cell, ctx: DistContext, history: list[dict]) -> None:
        """Achieved TFLOP/s, MFU and scaling efficiency, and the flags they raise."""
        derived_fields: dict = {}
        peak = self.peak
        if peak is not None:  # the measurement nearest this cell: right after its timing
            self.peak = peak = remeasure(peak, ctx.device, self._peak_dtype(), min(0.25, self.config.budget / 4))
            derived_fields["peak_tflops_ci95"] = [v * ctx.world_size for v in peak.ci95] if peak.ci95 else None
            derived_fields["peak_method"] = peak.method + (f"; x {ctx.world_size} ranks" if ctx.world_size > 1 else "")
        derived_fields |= derived.utilisation(counted.gmacs, cell.train, result.throughput.images_per_s,
                                              self.peak.tflops if self.peak else None, ctx.world_size,
                                              counted.trainable_fraction)
        derived_fields |= derived.datasheet_utilisation(
            derived_fields["achieved_tflops"],
            datasheet_tflops(result.settings.get("device_name"), self.config.dtype, self.config.tf32), ctx.world_size)
        result.derived_flags = derived.mfu_flags(derived_fields.get("mfu"))
        result.derived = derived_fields
        # a baseline of this run only, matched on the measured record
        result.derived = derived_fields | derived.scaling(history, result.to_record(), self.run_id)

    def summarize(self, records: list[dict], run_dir: RunDir, ctx: DistContext, console) -> None:
        """The summary table on the sweep's console; the command renders the report afterwards."""
        _summary(console, records, run_dir)


# --------------------------------------------------------------------------------------------
# One cell


def _make_step(task: Task, cell: Cell, batch: int, model: nn.Module, ctx: DistContext, cfg: RunConfig):
    """(step function, engine trainer or None) for one iteration of the cell, on an already
    built model."""
    model = place_model(model, ctx.device, cfg.channels_last)
    if not cell.train:
        model.eval().to(weight_dtype(cfg.dtype))
        x = task.input(cell, batch, ctx.device, weight_dtype(cfg.dtype), cfg.channels_last)
        fwd = torch.compile(model) if cfg.compile else model
        return task.infer_step(fwd, x, autocast_dtype(cfg.dtype)), None
    trainer = build_trainer(model, ctx, train_spec(cfg, batch))
    x = task.input(cell, batch, ctx.device, trainer.input_dtype, cfg.channels_last)
    fwd = torch.compile(trainer.model, **trainer.compile_options) if cfg.compile else trainer.model
    targets = task.train_targets(x)

    def step():
        with trainer.autocast():
            loss = task.loss(fwd, x, targets)
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
            task = task_for(cell.task)
            model = task.build(cell)
            with PeakMemory(ctx.device, model) as mem:
                step, _ = _make_step(task, cell, b, model, ctx, cfg)
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


def _resolve_batch(cell: Cell, ctx: DistContext, cfg: RunConfig) -> tuple[int | None, BatchSearch | None]:
    """The batch to time (None: nothing to time) and the search that found it: ``--batch auto``
    searches the largest that fits; without ``--time-auto-batch`` that frontier is the cell."""
    if cell.batch != "auto":
        return cell.batch, None
    found, tried = find_max_batch(cell, ctx, cfg)
    search = BatchSearch(tried, found, timed=cfg.time_auto_batch)
    return (found if found and cfg.time_auto_batch else None), search


PLANT_ENV = "BENCH_TEST_SLOWDOWN"


def _planted_slowdown(step: Callable[[], object], model: str) -> Callable[[], object]:
    """Test-only (issue 29's planted regression): with BENCH_TEST_SLOWDOWN='MODEL=FACTOR,...' a
    listed model's step takes FACTOR times as long, the extra spent spinning the CPU right after
    the real step (work, not a sleep that would free the core). Unset in every real run."""
    spec = os.environ.get(PLANT_ENV, "")
    factors = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if model not in factors:
        return step
    extra = float(factors[model]) - 1

    def slowed():
        t0 = time.perf_counter()
        out = step()
        end = time.perf_counter() + extra * (time.perf_counter() - t0)
        while time.perf_counter() < end:
            pass
        return out
    return slowed


def _first_step(step: Callable[[], object], device: torch.device) -> float:
    """The untimed first step of an eager cell, in seconds: its allocations, cuDNN's autotuning and
    whatever an engine builds on first use (DeepSpeed's communication op) are set-up, not timing."""
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _warm_caches(task: Task, cell: Cell, batch: int, model: nn.Module, ctx: DistContext, cfg: RunConfig) -> None:
    """CPU: first-use caches land before the memory window opens, in every cell alike."""
    model = place_model(model, ctx.device, cfg.channels_last)
    # Training: fp32 weights (the engine casts them later), bf16 ops through autocast.
    amp = autocast_dtype(cfg.dtype) or (None if weight_dtype(cfg.dtype) == torch.float32 else torch.bfloat16)
    if cell.train:
        x = task.input(cell, batch, ctx.device, torch.float32, cfg.channels_last)
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            warm_up(model.train(), lambda: task.loss(model, x, task.train_targets(x)), train=True,
                    make_optimizer=lambda m: make_optimizer(m, train_spec(cfg, batch), ctx.device)[0])
    else:
        x = task.input(cell, batch, ctx.device, weight_dtype(cfg.dtype), cfg.channels_last)
        warm_up(model.to(weight_dtype(cfg.dtype)), task.infer_step(model, x, autocast_dtype(cfg.dtype)), False)


def measure_cell(cell: Cell, ctx: DistContext, cfg: RunConfig, profile_dir: Path | None = None,
                 comm_dir: Path | None = None, result: CellResult | None = None) -> CellResult:
    """Measure one cell (status ok / oom / error) into ``result`` (a fresh one without settings
    when None) and return it, top to bottom: resolve the batch,
    build, open the trackers (memory, compile, device counters), time, then what runs after the
    timing (parts, engine facts, communication, profile, numerics). Each tracker's typed result is
    put in ``result`` as soon as it exists, so a cell that fails half-way keeps what it measured.
    The memory window opens before the engine is built, on every device: DDP buckets, ZeRO
    partitions, optimizer state and the input all count. Set-up ends (``clock``) right before the
    timing, whose cap then runs from zero."""
    result = result if result is not None else CellResult({}, ctx.world_size)
    t0, cpu0 = time.perf_counter(), time.process_time()
    result.loadavg_1m = os.getloadavg()[0]
    if cfg.compile:
        torch._dynamo.reset()  # nothing of the previous cell's graphs is reused
    try:
        with SetupClock(cfg.setup_timeout) as clock:
            batch, result.batch_search = _resolve_batch(cell, ctx, cfg)
            if batch is None:  # nothing fits, or the frontier is the cell
                if result.batch_search.found == 0:
                    result.failed("oom", "batch 1 does not fit")
                return result
            result.batch = batch
            task = task_for(cell.task)
            model = task.build(cell)
            checking = cfg.numerics and ctx.is_main and cell_math_mode(cfg, ctx.device) is not None
            pristine = copy.deepcopy(model) if checking else None  # the weights before any step moves them
            if ctx.device.type == "cpu":
                _warm_caches(task, cell, batch, model, ctx, cfg)

            with contextlib.ExitStack() as trackers:
                memory = trackers.enter_context(PeakMemory(ctx.device, model))
                step, trainer = _make_step(task, cell, batch, model, ctx, cfg)
                # The first call of a compiled step is the compile: timed apart, never in warm-up.
                watch = trackers.enter_context(CompileWatch(step, ctx.device)) if cfg.compile else None
                if watch:  # the steps' peak, not the compile's (kept apart as compile_peak_mem_mb)
                    memory.after_compile()
                else:
                    clock.first_step_s = _first_step(step, ctx.device)
                    memory.after_first_step()  # its peak kept apart, as a compile's is: the same steps
                clock.done()
                counters = trackers.enter_context(DeviceCounters(ctx.device))
                # every rank times the same iterations (one rank: measure_lockstep is measure)
                own = measure_lockstep(_planted_slowdown(step, cell.model), ctx.device, cfg.budget,
                                       lambda v: all_reduce_max(v, ctx), cfg.max_time)

        result.setup = clock
        result.memory = memory.result(counters).over_ranks(
            all_gather(None if memory.peak_mb is None else round(memory.peak_mb, 1), ctx))  # the largest rank's
        result.energy = counters.energy((own.warmup_iters + own.iters) * batch)
        result.compile = watch.result.over_ranks(all_gather(watch.result.flags, ctx)) if watch else None
        result.latency = own.over_ranks(elementwise_max(own.times_ms, ctx))  # one series: the slowest rank's
        if own.iters == 0:
            raise TimeoutError(f"--max-time {cfg.max_time:g} s ran out before a single timed iteration "
                               f"({own.warmup_iters} warm-up iterations after {clock.seconds():.1f} s of set-up)")
        result.throughput = Throughput.sustained(result.latency, batch, ctx.world_size,
                                                 all_gather_floats(own.median_ms, ctx))

        if not cell.train:  # the parts of a dense model, in a pass of their own
            x = task.input(cell, batch, ctx.device, weight_dtype(cfg.dtype), cfg.channels_last)
            setup = PartsSetup(amp=autocast_dtype(cfg.dtype), budget_s=cfg.budget, max_time_s=cfg.max_time,
                               channels_last=cfg.channels_last, compiled=cfg.compile, data=cfg.data)
            result.parts = task.part_latency_ms(model, x, setup)
        if trainer is not None:
            result.engine_fields = {"optimizer_impl": trainer.optimizer_impl, **trainer_record_fields(trainer)}
            # this rank's parts (the peak stays the largest rank's)
            result.memory = replace(result.memory, breakdown_mb=memory_breakdown(trainer, step))
            if comm_dir is not None and ctx.distributed:  # issue 19 comms: extra profiled steps, outside the timing
                result.comms = CommFigures(*_comms(step, cell, batch, ctx, cfg, comm_dir, trainer))
        if profile_dir is not None:
            from bench.measure.profile import profile_cell

            # One TensorBoard run per cell, one worker per rank.
            engine = cfg.engine if cell.train else "none"
            cell_dir = profile_dir / f"{cell.model}_{cell.res}_{cell.mode}_b{batch}_{engine}_w{ctx.world_size}"
            op_breakdown, trace_file = profile_cell(step, ctx.device, cell_dir, f"rank{ctx.rank}")
            result.profile = {"op_breakdown": op_breakdown, "trace_file": trace_file}
        if cfg.numerics:  # last: the check drops the cell's compiled graphs (torch._dynamo.reset) to compile its own
            result.numerics = broadcast_object(check_numerics(task, cell, pristine, batch, ctx.device, cfg), ctx)
    except SetupTimeout as exc:
        clock.done()
        result.setup, result.setup_timed_out = clock, True
        result.failed("error", first_line(exc, with_type=True))
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        result.failed("oom" if is_oom(exc) else "error", first_line(exc, with_type=True))
    finally:
        free_memory(ctx.device)
    result.wall_s = round(time.perf_counter() - t0, 3)
    result.cpu_time_s = round(time.process_time() - cpu0, 3)
    return result


def _comms(step: Callable[[], object], cell: Cell, batch: int, ctx: DistContext, cfg: RunConfig, comm_dir: Path,
           trainer) -> tuple[dict, list[str]]:
    """Collective time, exposed communication, bytes and bus bandwidth of ``--comm-steps`` profiled
    steps (bench.measure.comms), against the bytes the engine predicts it moves for this model."""
    from bench.measure import comms

    tag, predicted = comm_prediction(trainer, ctx.world_size)
    name = f"{cell.model}_{cell.res}_{cell.mode}_b{batch}_{tag}_w{ctx.world_size}"
    return comms.measure_comms(step, ctx, cfg.comm_steps, comm_dir, name, predicted)


def _ci_text(r: dict) -> str:
    """The median's 95% CI as -x%/+y%, or why there is none."""
    ci, med = r.get("latency_ci95_ms"), r.get("latency_ms")
    if not ci or not med:
        return "none (n < 6)"
    return f"-{100 * (med - ci[0]) / med:.1f}/+{100 * (ci[1] - med) / med:.1f}%"


def _summary(console, records: list[dict], run_dir: RunDir) -> None:
    from rich.table import Table

    table = Table(title=f"bench run -> {run_dir.path}")
    for col in ("model", "res", "mode", "batch", "rep", "params (M)", "GMACs", "latency ms (p50)", "95% CI",
                "iters", "p90/p10", "img/s", "peak MB", "status", "flags"):
        table.add_column(col, justify="left" if col in ("model", "mode", "status", "flags") else "right")
    for r in records:
        ok = r["status"] == "ok" and r.get("latency_ms") is not None  # frontier-only cells: no time
        table.add_row(
            r["model"], r["res"], r["mode"], str(r.get("batch")), str(r.get("repeat") or 0),
            f"{r['params'] / 1e6:.1f}" if r.get("params") else "-", f"{r['gmacs']:.2f}" if r.get("gmacs") else "-",
            f"{r['latency_ms']:.1f}" if ok else "-", _ci_text(r) if ok else "-",
            str(r.get("iters", "-")) if ok else "-",
            f"{r['latency_p90_ms'] / r['latency_p10_ms']:.2f}" if ok and r.get("latency_p10_ms") else "-",
            f"{r['throughput']:.1f}" if ok else "-",
            f"{r['peak_mem_mb']:.0f}" if r.get("peak_mem_mb") is not None else "-",
            r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error') or ''}"[:60],
            ", ".join(r.get("flags") or []) or "-",
        )
    console.print(table)
    console.print(f"records: {run_dir.records_path}")
