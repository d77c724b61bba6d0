"""A deployed cell (``--backend aoti | onnxruntime | onnxruntime-int8 | openvino | tensorrt``): the
cell's model, weights and input handed to the runtime (bench.deploy), timed by the protocol of
bench.measure.timing with the same budget, cap and samples as the eager cell, in the same memory
window (process RSS on CPU), then checked against the fp32 eager reference on a pristine copy of
the same weights (bench.measure.agreement: worst cosine per output, ``numerics-drift``).

Export, build (session, AOT compile, INT8 calibration) and the first call are the cell's set-up,
outside ``--max-time``; each is recorded. An export the exporter refuses is the cell's finding
(status ``export-failed``, the exporter's first line and the failing op), a runtime that cannot
run here is ``backend-unavailable``; the sweep goes on either way.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from bench.config import RunConfig
from bench.deploy import (
    BACKEND_UNAVAILABLE,
    EXPORT_FAILED,
    BackendUnavailable,
    Deployed,
    DeploySpec,
    ExportFailed,
    backend_for,
)
from bench.errors import first_line
from bench.launch.context import DistContext
from bench.measure.agreement import Agreement, compare_tensors
from bench.measure.memory import PeakMemory, free_memory, is_oom
from bench.measure.setup import SetupClock, SetupTimeout
from bench.measure.timing import Throughput, measure
from bench.plan import Cell
from bench.scenarios.numerics import NumericsCheck, fixed_input, reference_output
from bench.scenarios.result import CellResult
from bench.tasks import Task, task_for

#: INT8 calibration: this many generated images, drawn from this seed (never the agreement's input)
CALIBRATION_IMAGES = 32
CALIBRATION_SEED = 20261210


def calibration_batches(task: Task, cell: Cell, batch: int, device: torch.device) -> list[torch.Tensor]:
    """A fixed set of generated images in batches of the cell's (static) shape."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(CALIBRATION_SEED)
        return [task.input(cell, batch, device, torch.float32, False) for _ in range(-(-CALIBRATION_IMAGES // batch))]


def measure_deployed(cell: Cell, ctx: DistContext, cfg: RunConfig, result: CellResult) -> CellResult:
    """One deployed cell into ``result`` (status ok / export-failed / backend-unavailable / oom /
    error): the same typed parts as an eager cell (set-up, memory, latency, throughput, numerics)
    plus the runtime's costs."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    result.loadavg_1m = os.getloadavg()[0]
    result.batch = cell.batch
    try:
        with SetupClock(cfg.setup_timeout) as clock, tempfile.TemporaryDirectory(prefix="bench-deploy-") as work:
            result.setup = clock
            _measure(cell, ctx, cfg, clock, Path(work), result)
    except ExportFailed as exc:
        result.failed(EXPORT_FAILED, first_line(exc))
        result.export_error_op = exc.op
    except BackendUnavailable as exc:
        result.failed(BACKEND_UNAVAILABLE, first_line(exc))
        result.deploy_flags += exc.flags
    except SetupTimeout as exc:
        result.failed("error", first_line(exc, with_type=True))
        result.setup_timed_out = True
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        result.failed("oom" if is_oom(exc) else "error", first_line(exc, with_type=True))
    finally:
        free_memory(ctx.device)
    result.wall_s = round(time.perf_counter() - t0, 3)
    result.cpu_time_s = round(time.process_time() - cpu0, 3)
    return result


def _measure(cell: Cell, ctx: DistContext, cfg: RunConfig, clock: SetupClock, work: Path, result: CellResult) -> None:
    task = task_for(cell.task)
    batch = int(cell.batch)
    model = task.build(cell).eval().to(ctx.device)
    pristine = copy.deepcopy(model) if cfg.numerics else None
    x = task.input(cell, batch, ctx.device, torch.float32, False)
    runtime = backend_for(cell.backend)
    spec = DeploySpec(ctx.device, torch.get_num_threads(), work,
                      calibration_batches(task, cell, batch, ctx.device) if runtime.int8 else [])
    exported = runtime.export(model, x, spec)
    # The window holds the runtime: its build, its own copy of the weights and its workspace. The
    # export and the torch model it read are resident before it opens and not counted (an empty
    # module stands in for the weights the eager cell adds).
    with PeakMemory(ctx.device, nn.Identity()) as peak:
        deployed = runtime.build(exported, x, spec)
        peak.after_compile()  # the build's own peak apart, as compile_peak_mem_mb
        clock.first_step_s = _first_call(deployed, ctx.device)
        clock.done()
        latency = measure(deployed.step, ctx.device, cfg.budget, max_time_s=cfg.max_time)
    result.deploy, result.latency = deployed.costs, latency
    result.deploy_flags += deployed.flags
    result.memory = dataclasses.replace(
        peak.result(), method=f"{peak.method} (the runtime's weights and workspace; the torch model not counted)")
    if latency.iters == 0:
        raise TimeoutError(f"--max-time {cfg.max_time:g} s ran out before a single timed iteration")
    result.throughput = Throughput.sustained(latency, batch, 1, [latency.median_ms])
    if pristine is not None:
        result.numerics = _agreement(task, cell, pristine, deployed, batch, ctx.device)


def _first_call(deployed: Deployed, device: torch.device) -> float:
    t0 = time.perf_counter()
    deployed.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _agreement(task: Task, cell: Cell, pristine: nn.Module, deployed: Deployed, batch: int,
               device: torch.device) -> NumericsCheck:
    """The runtime's outputs against the fp32 eager reference on the same weights and the fixed-seed
    input, at the cell's batch (the artifact has static shapes). A check that fails is said
    (numerics-unchecked), never the cell's failure: the timing stands."""
    t0 = time.perf_counter()
    check = NumericsCheck(checked=True)
    try:
        x = fixed_input(task, cell, batch, device)
        reference = reference_output(task, pristine, x)
        own = deployed.infer(x)
        if len(own) != len(reference):
            raise ValueError(f"the runtime gave {len(own)} outputs, the reference {len(reference)}")
        names = ["logits"] if len(reference) == 1 else [f"output{i}" for i in range(len(reference))]
        per_output = [compare_tensors(name, None, mine, ref) for name, mine, ref in zip(names, own, reference)]
        check.agreement = Agreement(mode=cell.backend, batch=batch, weights="random", per_output=per_output).judge()
    except Exception as exc:  # noqa: BLE001 - the timing stands; the check's failure is said
        check.error = first_line(exc, with_type=True)
    free_memory(device)
    check.seconds = round(time.perf_counter() - t0, 3)
    return check
