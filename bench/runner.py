"""``bench run``: cells through build, measure and record, with progress, resume and preemption.

- Each finished cell is appended to ``records.jsonl`` before the next starts (bench.record).
- Re-running with the same ``--out`` skips cells already finished (status ok/oom with the same
  engine, world size, dtype and device) and says so; cells that errored are tried again.
- SIGUSR1 / SIGTERM (SLURM preemption, ``--signal``) stop the sweep at the next cell boundary
  with exit code 99 ("preempted; rerun to resume").
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import click
import torch

from bench.distributed import DistContext, all_reduce_max, barrier, broadcast_object, init_distributed, shutdown
from bench.engines import DTYPES, ENGINES
from bench.errors import BadInput
from bench.measure import CellOptions, measure_cell
from bench.preempt import PREEMPTED_EXIT, StopFlag
from bench.plan import Cell, make_cells, parse_batches, parse_models, parse_modes, parse_resolutions
from bench.record import RunDir, new_run_id

FINISHED = ("ok", "oom")


def config_key(rec: dict) -> tuple:
    return (rec.get("engine"), rec.get("zero"), rec.get("world_size"), rec.get("dtype"), rec.get("device"))


def finished_cells(run_dir: RunDir, config: tuple) -> set[str]:
    return {
        r["cell_key"]
        for r in run_dir.records()
        if r.get("status") in FINISHED and "cell_key" in r and config_key(r) == config
    }


def scaling_efficiency(run_dir: RunDir, rec: dict) -> float | None:
    """Throughput over world_size x the same cell's throughput at world size 1, when recorded."""
    if rec.get("world_size", 1) <= 1 or rec.get("status") != "ok":
        return None
    singles = [
        r for r in run_dir.records()
        if r.get("status") == "ok" and r.get("world_size") == 1 and r.get("cell_key") == rec["cell_key"]
        and r.get("device") == rec.get("device") and r.get("dtype") == rec.get("dtype")
    ]
    same_engine = [r for r in singles if r.get("engine") == rec.get("engine")]
    base = (same_engine or singles or [None])[-1]
    if base is None:
        return None
    return rec["throughput"] / (rec["world_size"] * base["throughput"])


@click.command("run")
@click.option("--models", "models_text", required=True, help="Comma-separated, e.g. pvt_small,vit_s,resnet50.")
@click.option("--res", "res_text", default="224", show_default=True, help="Sizes, multiples of 32: 224,512,800 or 512x640.")
@click.option("--batch", "batch_text", default="1", show_default=True, help="Batch sizes per rank, or 'auto' (largest that fits).")
@click.option("--modes", "modes_text", default="infer,train", show_default=True, help="infer, train or both.")
@click.option("--budget", default=2.0, show_default=True, type=float, help="Seconds of timing per cell (after warm-up).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(list(DTYPES)))
@click.option("--channels-last", is_flag=True, help="NHWC memory format for models and inputs.")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the model (compile time is in warm-up).")
@click.option("--engine", default="none", show_default=True, type=click.Choice(ENGINES), help="Training engine.")
@click.option("--zero", default=0, show_default=True, type=click.IntRange(0, 3), help="DeepSpeed ZeRO stage.")
@click.option("--ds-config", type=click.Path(), help="Your DeepSpeed JSON config (overrides generated keys).")
@click.option("--grad-clip", default=0.0, show_default=True, type=float, help="Gradient clipping for every engine (0 = off).")
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(1), help="Ranks on this node (self-launch via torchrun).")
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads per rank (default: cores / ranks).")
@click.option("--profile", is_flag=True, help="Record torch.profiler traces per cell into RUN_DIR/traces.")
@click.option("--max-batch", default=1024, show_default=True, type=click.IntRange(1), help="Upper bound for --batch auto.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, type=float, help="Seconds before a stuck collective ends the job.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Run directory (default results/<run-id>).")
@click.option("--no-report", is_flag=True, help="Don't render RUN_DIR/report.html at the end.")
def run_command(models_text, res_text, batch_text, modes_text, budget, device, dtype, channels_last, use_compile,
                engine, zero, ds_config, grad_clip, nproc, threads, profile, max_batch, timeout_s, out_dir, no_report):
    """Measure params, GMACs, latency, throughput and peak memory for each model x resolution."""
    from bench.launch import relaunch_if_requested

    models = parse_models(models_text)
    sizes = parse_resolutions(res_text)
    batches = parse_batches(batch_text)
    modes = parse_modes(modes_text)
    if budget <= 0:
        raise BadInput(f"bad --budget {budget}: give a positive number of seconds per cell")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda, but no CUDA device is visible; use --device cpu")
    if ds_config and not Path(ds_config).is_file():
        raise BadInput(f"DeepSpeed config not found: {ds_config}")
    if ds_config:
        from bench.engines import load_ds_config

        load_ds_config(ds_config)  # malformed JSON fails here, before anything runs
    if nproc > 1:
        out_dir = out_dir or Path("results") / new_run_id()
        extra = [] if "--out" in sys.argv else ["--out", str(out_dir)]
        relaunch_if_requested(nproc, extra, threads)
    if threads:
        torch.set_num_threads(threads)

    ctx = init_distributed(device, timeout_s=timeout_s)
    try:
        code = _sweep(ctx, models, sizes, modes, batches, budget, dtype, channels_last, use_compile, engine, zero,
                      ds_config, grad_clip, profile, max_batch, out_dir, no_report)
    finally:
        shutdown(ctx)
    if code:
        sys.exit(code)


def _sweep(ctx: DistContext, models, sizes, modes, batches, budget, dtype, channels_last, use_compile, engine, zero,
           ds_config, grad_clip, profile, max_batch, out_dir, no_report) -> int:
    from rich.console import Console

    from bench.environment import collect_env, device_name
    from bench.flops import count_flops
    from bench.build import build_model
    from bench.speed import peak_matmul_tflops

    # Wide enough for the summary table when stderr is a log file rather than a terminal.
    console = Console(stderr=True, quiet=not ctx.is_main, width=None if sys.stderr.isatty() else 200)
    run_dir = RunDir(broadcast_object(str(out_dir or Path("results") / new_run_id()), ctx))
    command = shlex.join(["bench", *sys.argv[1:]])
    if ctx.is_main:
        run_dir.create()
        if not (run_dir.path / "env.json").exists():
            run_dir.write_json("env.json", collect_env(command, ctx.device, run_dir.path.name))
    barrier(ctx)
    cells = make_cells(models, sizes, modes, batches)
    world = ctx.world_size
    config = (engine, zero if engine == "deepspeed" else None, world, dtype, ctx.device.type)
    done = finished_cells(run_dir, config)
    todo = [c for c in cells if c.key not in done]
    if len(todo) < len(cells):
        console.print(f"[yellow]resume:[/] skipping {len(cells) - len(todo)} finished cells in {run_dir.path}: "
                      + ", ".join(c.key for c in cells if c.key in done))
    stop = StopFlag().install()
    opts = CellOptions(budget_s=budget, dtype=dtype, channels_last=channels_last, compile=use_compile, engine=engine,
                       zero=zero, grad_clip=grad_clip, ds_config=ds_config,
                       profile_dir=run_dir.path / "traces" if profile else None, max_batch=max_batch)
    peak_tflops = peak_matmul_tflops(ctx.device, DTYPES[dtype], budget_s=min(1.0, budget)) if todo else None
    flops_cache: dict[tuple[str, int, int], object] = {}
    new_records: list[dict] = []
    progress = _progress(console)
    with progress:
        task = progress.add_task("cells", total=len(todo))
        for cell in todo:
            if all_reduce_max(1.0 if stop.signal else 0.0, ctx):
                console.print(f"[red]preempted[/] (signal {stop.signal}): stopped at a cell boundary; rerun with --out {run_dir.path} to resume")
                return PREEMPTED_EXIT
            progress.update(task, description=f"{cell.model} {cell.res} {cell.mode} b{cell.batch}")
            key = (cell.model, cell.height, cell.width)
            if key not in flops_cache:  # counted once per model x resolution (batch 1, CPU, rank 0)
                counted = count_flops(build_model(cell.model), cell.model, cell.height, cell.width,
                                      cross_check=False) if ctx.is_main else None
                flops_cache[key] = broadcast_object(counted, ctx)
            fl = flops_cache[key]
            rec = _base_record(cell, ctx, fl, engine, zero, dtype, run_dir, device_name(ctx.device), channels_last, use_compile, grad_clip)
            rec.update(measure_cell(cell, ctx, opts))
            if rec["status"] == "ok":
                per_step_flops = 2 * fl.gmacs * 1e9 * (3 if cell.mode == "train" else 1) * rec["global_batch"]
                achieved = per_step_flops / (max(rec["per_rank_step_ms"]) / 1e3) / 1e12
                rec["achieved_tflops"] = achieved
                rec["peak_tflops"] = peak_tflops * world if peak_tflops else None
                rec["mfu"] = achieved / rec["peak_tflops"] if rec["peak_tflops"] else None
            rec["scaling_efficiency"] = scaling_efficiency(run_dir, rec)
            if ctx.is_main:
                run_dir.append(rec)
            new_records.append(rec)
            progress.advance(task)
            if ctx.distributed and rec["status"] == "error":
                # Ranks may now be out of step (a peer died, a collective failed): end the job
                # rather than let the next cell's collectives wait on a rank that is gone.
                console.print(f"[red]rank {ctx.rank}: cell {cell.key} failed in a {world}-rank job: {rec['error']}; ending the job")
                return 1
    if ctx.is_main:
        _summary(console, new_records, run_dir)
        if not no_report:
            _render_report(console, run_dir)
    return 0


def _base_record(cell: Cell, ctx: DistContext, fl, engine, zero, dtype, run_dir: RunDir, dev_name: str,
                 channels_last: bool, use_compile: bool, grad_clip: float) -> dict:
    from models import model_family

    world = ctx.world_size
    return {
        **cell.as_dict(),
        "cell_key": cell.key,
        "family": model_family(cell.model),
        "device": ctx.device.type,
        "device_name": dev_name,
        "dtype": dtype,
        "engine": engine,
        "zero": zero if engine == "deepspeed" else None,
        "world_size": world,
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
        "compile": use_compile,
        "grad_clip": grad_clip if cell.mode == "train" else None,
        "params": fl.params,
        "gmacs": fl.gmacs,
        "gflops": fl.gflops,
        "stage_gmacs": fl.stage_gmacs,
        "run_id": run_dir.path.name,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": os.uname().nodename,
    }


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _summary(console, records: list[dict], run_dir: RunDir) -> None:
    from rich.table import Table

    table = Table(title=f"bench run -> {run_dir.path}")
    for col in ("model", "res", "mode", "batch", "params (M)", "GMACs", "latency ms (p50/p90)", "img/s", "peak MB", "status"):
        table.add_column(col, justify="left" if col in ("model", "mode", "status") else "right")
    for r in records:
        ok = r["status"] == "ok"
        table.add_row(
            r["model"], r["res"], r["mode"], str(r.get("batch")), f"{r['params'] / 1e6:.1f}", f"{r['gmacs']:.2f}",
            f"{r['latency_ms']:.1f} / {r['latency_p90_ms']:.1f}" if ok else "-",
            f"{r['throughput']:.1f}" if ok else "-",
            f"{r['peak_mem_mb']:.0f}" if ok else "-",
            r["status"] if ok else f"{r['status']}: {r.get('error') or ''}"[:60],
        )
    console.print(table)
    console.print(f"records: {run_dir.records_path}")


def _render_report(console, run_dir: RunDir) -> None:
    try:
        from bench.report import render_report
    except ImportError:
        return
    path = render_report([run_dir.path], run_dir.path / "report.html")
    console.print(f"report: {path}")
