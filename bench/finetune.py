"""``bench finetune``: short detection (RetinaNet) and segmentation (Semantic FPN) fine-tunes on
each backbone, so the families are compared as dense-prediction backbones, not only for speed.

Per (model, resolution) cell: build backbone + head, score the untrained model on the eval split,
train ``--steps`` steps through the engine of ``bench run`` (plain, DDP or DeepSpeed), score it
again, and append one record to ``records.jsonl``: loss per step, step time, images/s, peak
memory, and COCO mAP/AP50/AP75 (det) or mIoU/pixel accuracy (seg), before and after.
"""
from __future__ import annotations

import math
import os
import shlex
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import click
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from bench.data import IGNORE_INDEX, DataSplits, collate, open_data, parse_data_spec
from bench.errors import BadInput

TASKS = ("det", "seg")
DEFAULT_SYNTHETIC_TRAIN, DEFAULT_SYNTHETIC_VAL = 512, 64


@dataclass
class FinetuneSettings:
    """Everything that is the same for every cell of one ``bench finetune`` invocation."""

    task: str
    data: str = "synthetic"
    steps: int = 100
    batch: int = 2  # per rank
    lr: float = 1e-4  # the PVT paper's AdamW settings for both tasks
    weight_decay: float = 1e-4
    grad_clip: float = 0.0
    dtype: str = "fp32"
    engine: str = "none"
    zero: int = 0
    seed: int = 0
    train_images: int | None = None  # synthetic: how many; real data: a cap (None = all)
    val_images: int | None = None
    synthetic_classes: int = 3
    workers: int = 0
    fpn_channels: int = 256  # the paper's; Semantic FPN's head gets half
    head_norm: str = "none"  # RetinaNet head: "none" (paper) or "gn" (torchvision's v2 head)
    checkpoints: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Models


def build_task_model(task: str, name: str, num_classes: int, image_size: tuple[int, int],
                     checkpoint: str | None, fpn_channels: int = 256, head_norm: str = "none") -> nn.Module:
    """Backbone ``name`` (ImageNet weights from ``checkpoint`` if given) under the task's head."""
    from bench.build import build_model
    from models.heads import SemanticFPN, build_retinanet

    backbone = build_model(name, features_only=True, checkpoint=checkpoint)
    if task == "det":
        return build_retinanet(backbone, num_classes, image_size, fpn_channels=fpn_channels, head_norm=head_norm)
    return SemanticFPN(backbone, num_classes, fpn_channels=fpn_channels, head_channels=fpn_channels // 2)


def task_loss(task: str, model: nn.Module, batch: dict, device: torch.device,
              input_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    images = batch["images"].to(device, input_dtype, non_blocking=True)
    if task == "det":
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
        return sum(model(list(images), targets).values())
    logits = model(images)
    return F.cross_entropy(logits.float(), batch["semantic"].to(device), ignore_index=IGNORE_INDEX)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Evaluation (sharded over ranks, gathered on every rank)


@torch.no_grad()
def evaluate(task: str, module: nn.Module, dataset: Dataset, num_classes: int, ctx, batch: int) -> dict:
    """Score ``module`` on ``dataset``: each rank takes every world_size-th image, rank results
    are combined (confusion matrices summed; detections gathered for one COCO evaluation)."""
    from bench.metrics import coco_box_metrics, confusion_matrix, majority_class_metrics, segmentation_metrics

    was_training = module.training
    module.eval()
    dtype = next(module.parameters()).dtype  # DeepSpeed bf16/fp16 keeps the weights in that type
    shard = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    loader = DataLoader(shard, batch_size=batch, collate_fn=collate)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    targets, predictions = [], []
    for data in loader:
        images = data["images"].to(ctx.device, dtype)
        if task == "det":
            predictions += [{k: v.float().cpu() for k, v in p.items()} for p in module(list(images))]
            targets += data["targets"]
        else:
            pred = module(images).argmax(1).cpu()
            confusion += confusion_matrix(pred, data["semantic"], num_classes)
    module.train(was_training)
    if task == "seg":
        confusion = _sum_over_ranks(confusion, ctx)
        scores = segmentation_metrics(confusion)
        chance = majority_class_metrics(confusion)
        return {**scores, "majority_miou": chance["miou"], "majority_pixel_acc": chance["pixel_acc"]}
    if ctx.distributed:
        import torch.distributed as dist

        gathered = [None] * ctx.world_size
        dist.all_gather_object(gathered, (targets, predictions))
        targets = [t for rank_targets, _ in gathered for t in rank_targets]
        predictions = [p for _, rank_predictions in gathered for p in rank_predictions]
    return coco_box_metrics(targets, predictions, num_classes)


def _sum_over_ranks(tensor: torch.Tensor, ctx) -> torch.Tensor:
    if ctx.distributed:
        import torch.distributed as dist

        on_device = tensor.to(ctx.device if ctx.backend == "nccl" else "cpu")
        dist.all_reduce(on_device)
        tensor = on_device.cpu()
    return tensor


# --------------------------------------------------------------------------------------------
# One cell


def _infinite_batches(dataset: Dataset, batch: int, ctx, seed: int, workers: int):
    """This rank's shard of ``dataset``, reshuffled every epoch, forever."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=collate, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    if len(loader) == 0:
        raise BadInput(f"the training split has {len(dataset)} images: too few for batch {batch} on "
                       f"{ctx.world_size} rank(s)")
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _mean_curve_over_ranks(curve: list[float], ctx) -> list[float]:
    if not ctx.distributed:
        return curve
    import torch.distributed as dist

    curves = [None] * ctx.world_size
    dist.all_gather_object(curves, curve)
    return [sum(values) / len(values) for values in zip(*curves)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def base_record(settings: FinetuneSettings, name: str, height: int, width: int, ctx, run_id: str) -> dict:
    """What a cell's record says before it runs: the cell and its set-up."""
    from models import model_family

    res = str(height) if height == width else f"{height}x{width}"
    checkpoint = settings.checkpoints.get(name)
    return {
        "model": name, "family": model_family(name), "task": settings.task, "mode": settings.task,
        "res": res, "height": height, "width": width, "cell_key": f"{name}|{res}|{settings.task}",
        "data": settings.data, "steps": settings.steps, "batch": settings.batch,
        "global_batch": settings.batch * ctx.world_size, "lr": settings.lr, "weight_decay": settings.weight_decay,
        "grad_clip": settings.grad_clip, "optimizer": "AdamW", "seed": settings.seed,
        "fpn_channels": settings.fpn_channels, "head_norm": settings.head_norm if settings.task == "det" else "gn",
        "engine": settings.engine, "zero": settings.zero, "dtype": settings.dtype, "world_size": ctx.world_size,
        "device": str(ctx.device), "threads": torch.get_num_threads(),
        "pretrained": checkpoint is not None, "checkpoint": checkpoint, "run_id": run_id,
    }


def run_cell(settings: FinetuneSettings, name: str, height: int, width: int, data: DataSplits, ctx) -> dict:
    """Fine-tune one backbone at one resolution; return what it measured (metrics before and
    after training, loss per step, speed, memory)."""
    from bench.distributed import all_gather_floats
    from bench.engines import build_trainer
    from bench.memory import PeakMemory, free_memory

    task = settings.task
    checkpoint = settings.checkpoints.get(name)
    torch.manual_seed(settings.seed)  # the same initial weights on every rank and every run
    model = build_task_model(task, name, data.num_classes, (height, width), checkpoint,
                             settings.fpn_channels, settings.head_norm)
    backbone = model.backbone.body if task == "det" else model.backbone
    record = {
        "num_classes": data.num_classes, "class_names": data.class_names,
        "train_images": len(data.train), "val_images": len(data.val),
        "params": trainable_parameters(model), "backbone_params": trainable_parameters(backbone),
        "checkpoint_unused_keys": list(getattr(backbone, "checkpoint_unused_keys", [])),
        "frozen_unreached_params": list(getattr(model, "unreached_parameters", [])),
    }
    model = model.to(ctx.device)
    before = evaluate(task, model, data.val, data.num_classes, ctx, settings.batch)
    trainer = build_trainer(model, ctx, engine=settings.engine, zero=settings.zero, dtype=settings.dtype,
                            lr=settings.lr, weight_decay=settings.weight_decay, grad_clip=settings.grad_clip,
                            micro_batch=settings.batch)
    batches = _infinite_batches(data.train, settings.batch, ctx, settings.seed, settings.workers)
    losses, step_ms, data_ms = [], [], []
    load_before, cpu_before, wall_before = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with PeakMemory(ctx.device, trainer.module) as memory:
        for _ in range(settings.steps):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            with trainer.autocast():
                loss = task_loss(task, trainer.model, batch, ctx.device, trainer.input_dtype)
            trainer.step(loss)
            value = float(loss.detach())  # waits for the step on GPU too
            _sync(ctx.device)
            t2 = time.perf_counter()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {len(losses) + 1}")
            losses.append(value)
            data_ms.append((t1 - t0) * 1e3)
            step_ms.append((t2 - t1) * 1e3)
    # A shared machine slows steps several-fold: keep the load and CPU share next to the times.
    record.update({"loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0],
                   "train_cpu_s": time.process_time() - cpu_before, "train_wall_s": time.perf_counter() - wall_before})
    after = evaluate(task, trainer.module, data.val, data.num_classes, ctx, settings.batch)
    losses = _mean_curve_over_ranks(losses, ctx)
    tail = max(1, len(losses) // 10)
    # A step is as slow as the slowest rank: throughput from the largest per-rank median.
    per_rank_ms = all_gather_floats(statistics.median(step_ms), ctx)
    median_ms = max(per_rank_ms)
    record.update({
        "loss_curve": [round(v, 6) for v in losses],
        "loss_first": losses[0], "loss_last": losses[-1],
        "loss_first_mean": statistics.fmean(losses[:tail]), "loss_last_mean": statistics.fmean(losses[-tail:]),
        "loss_mean_window": tail,
        "step_time_ms": median_ms, "per_rank_step_ms": per_rank_ms,
        "step_time_ms_p90": statistics.quantiles(step_ms, n=10)[-1] if len(step_ms) > 1 else median_ms,
        "data_time_ms": statistics.median(data_ms),
        "throughput": settings.batch * ctx.world_size / (median_ms / 1e3),
        "peak_mem_mb": memory.peak_mb, "peak_mem_method": memory.method,
    })
    if task == "det":
        record.update({k: after[k] for k in ("map", "ap50", "ap75")})
        record.update({f"untrained_{k}": before[k] for k in ("map", "ap50", "ap75")})
    else:
        record.update({"miou": after["miou"], "pixel_acc": after["pixel_acc"], "iou_per_class": after["iou_per_class"],
                       "untrained_miou": before["miou"], "untrained_pixel_acc": before["pixel_acc"],
                       "majority_miou": after["majority_miou"], "majority_pixel_acc": after["majority_pixel_acc"]})
    del trainer, model
    free_memory(ctx.device)
    return record


# --------------------------------------------------------------------------------------------
# The whole run


def open_splits(settings: FinetuneSettings, height: int, width: int) -> DataSplits:
    synthetic = settings.data == "synthetic"
    data = open_data(
        settings.data, settings.task, height, width, seed=settings.seed,
        synthetic_classes=settings.synthetic_classes,
        train_images=settings.train_images or DEFAULT_SYNTHETIC_TRAIN,
        val_images=settings.val_images or DEFAULT_SYNTHETIC_VAL,
    )
    if not synthetic:  # caps on real splits: their first N images
        if settings.train_images:
            data.train = Subset(data.train, range(min(settings.train_images, len(data.train))))
        if settings.val_images:
            data.val = Subset(data.val, range(min(settings.val_images, len(data.val))))
    return data


def setup_key(record: dict) -> tuple:
    """What must match for a recorded cell to count as done when a run is resumed."""
    keys = ("task", "data", "checkpoint", "steps", "batch", "lr", "weight_decay", "grad_clip", "seed", "fpn_channels",
            "head_norm", "engine", "zero", "world_size", "dtype", "device")
    return tuple(record.get(k) for k in keys)


@dataclass
class FinetuneResult:
    run_dir: str
    records: list[dict]
    exit_code: int = 0  # PREEMPTED_EXIT when a signal stopped the sweep between cells


def run_finetune(settings: FinetuneSettings, models: list[str], resolutions: list[tuple[int, int]],
                 out: str | None = None, command: str = "") -> FinetuneResult:
    """Run every (model, resolution) cell; rank 0 writes ``records.jsonl`` and ``env.json``
    under ``out`` (default ``results/<run-id>``).

    Like ``bench run``: cells already recorded "ok" in ``out`` with the same set-up are skipped
    (a requeued SLURM job resumes), and SIGUSR1/SIGTERM stop the sweep at the next cell boundary
    with exit code 99. A cell cut short is run again from its start.
    """
    from bench.distributed import all_reduce_max, barrier, broadcast_object, init_distributed, shutdown
    from bench.environment import collect_env
    from bench.record import RunDir, new_run_id
    from bench.preempt import PREEMPTED_EXIT, StopFlag

    ctx = init_distributed(device="auto")
    try:
        if ctx.distributed and settings.engine == "none":
            raise BadInput(f"{ctx.world_size} ranks need --engine ddp or --engine deepspeed (with none each rank "
                           "would train its own model)")
        run_dir = RunDir(broadcast_object(str(out or f"results/{new_run_id()}"), ctx))
        if ctx.is_main:
            run_dir.create()
            if not (run_dir.path / "env.json").exists():  # SLURM array tasks share the directory
                run_dir.write_json("env.json", {**collect_env(command, ctx.device, run_dir.path.name),
                                                "kind": "finetune", "settings": asdict(settings)})
        barrier(ctx)
        stop = StopFlag().install()
        records = []
        for height, width in resolutions:
            data = None
            for name in models:
                record = base_record(settings, name, height, width, ctx, run_dir.path.name)
                done = {r["cell_key"] for r in run_dir.records()
                        if r.get("status") == "ok" and setup_key(r) == setup_key(record)}
                if record["cell_key"] in done:
                    if ctx.is_main:
                        click.echo(f"resume: {record['cell_key']} is already in {run_dir.records_path}, skipped")
                    continue
                if all_reduce_max(1.0 if stop.signal else 0.0, ctx):
                    if ctx.is_main:
                        click.echo(f"preempted (signal {stop.signal}): stopped between cells; rerun with "
                                   f"--out {run_dir.path} to resume", err=True)
                    return FinetuneResult(str(run_dir.path), records, PREEMPTED_EXIT)
                started = time.time()
                try:
                    data = data or open_splits(settings, height, width)
                    record.update(run_cell(settings, name, height, width, data, ctx))
                    record["status"], record["error"] = "ok", None
                except BadInput:
                    raise
                except Exception as exc:  # one failed cell (OOM, diverged loss) must not end the sweep
                    if ctx.distributed:
                        raise  # the other ranks may be waiting in a collective: end the job
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    record.update({"status": "error", "error": f"{type(exc).__name__}: {message}"[:500],
                                   "traceback": traceback.format_exc(limit=5)})
                record.update({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": time.time() - started})
                if ctx.is_main:
                    run_dir.append(record)
                    click.echo(summary_line(record))
                records.append(record)
        if ctx.is_main:
            click.echo(f"records: {run_dir.records_path}")
        return FinetuneResult(str(run_dir.path), records)
    finally:
        shutdown(ctx)


def summary_line(record: dict) -> str:
    head = f"{record['task']} {record['model']} @{record['res']}"
    if record["status"] != "ok":
        return f"{head}: error: {record['error']}"
    start = "checkpoint" if record["pretrained"] else "scratch"
    if record["task"] == "det":
        scores = (f"mAP {record['map']:.3f} (untrained {record['untrained_map']:.3f}) "
                  f"AP50 {record['ap50']:.3f} AP75 {record['ap75']:.3f}")
    else:
        scores = (f"mIoU {record['miou']:.3f} (untrained {record['untrained_miou']:.3f}, "
                  f"majority {record['majority_miou']:.3f}) pixel acc {record['pixel_acc']:.3f}")
    return (f"{head} [{start}]: loss {record['loss_first']:.3f} -> {record['loss_last_mean']:.3f}, {scores}, "
            f"{record['step_time_ms']:.0f} ms/step, {record['throughput']:.1f} img/s, "
            f"peak {record['peak_mem_mb']:.0f} MB")


def parse_checkpoints(items: tuple[str, ...], models: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"bad --checkpoint '{item}': give MODEL=PATH, e.g. pvt_small=pvt_small.pth")
        if name not in models:
            raise BadInput(f"--checkpoint names '{name}', which is not in --models ({', '.join(models)})")
        if not os.path.isfile(path):
            raise BadInput(f"checkpoint not found: {path} (for {name}; give a local .pth/.safetensors file)")
        out[name] = path
    return out


@click.command("finetune")
@click.option("--task", type=click.Choice(TASKS), required=True, help="det: RetinaNet; seg: Semantic FPN.")
@click.option("--models", "models_text", default="pvt_small,vit_s,resnet50", show_default=True,
              help="Comma-separated backbones.")
@click.option("--res", "res_text", default="512", show_default=True,
              help="Sizes, e.g. 512 or 512x640 (multiples of 32).")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True, help="Images per step per rank.")
@click.option("--data", default="synthetic", show_default=True,
              help="synthetic | coco:DIR (annotations/instances_{train,val}2017.json, {train,val}2017/) | "
                   "ade20k:DIR (images/ and annotations/{training,validation}/); layouts in bench/data.py.")
@click.option("--train-images", type=click.IntRange(min=1), default=None,
              help=f"Synthetic: scenes to train on (default {DEFAULT_SYNTHETIC_TRAIN}); real data: use the first N.")
@click.option("--val-images", type=click.IntRange(min=1), default=None,
              help=f"Synthetic: scenes to score on (default {DEFAULT_SYNTHETIC_VAL}); real data: use the first N.")
@click.option("--classes", "synthetic_classes", type=click.IntRange(1, 4), default=3, show_default=True,
              help="Synthetic: object classes (shapes).")
@click.option("--checkpoint", "checkpoint_items", multiple=True, metavar="MODEL=PATH",
              help="ImageNet weights for one backbone (official PVT .pth, timm .safetensors/.pth); repeatable.")
@click.option("--fpn-channels", type=click.IntRange(min=8), default=256, show_default=True,
              help="FPN width (the paper's 256; Semantic FPN's head gets half). Narrower is for quick CPU runs.")
@click.option("--head-norm", type=click.Choice(["none", "gn"]), default="none", show_default=True,
              help="RetinaNet head: none = the paper's; gn = GroupNorm convs (torchvision's v2 head), "
                   "steadier from scratch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True, help="AdamW learning rate (paper: 1e-4).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--grad-clip", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Max gradient norm; 0 = off.")
@click.option("--engine", type=click.Choice(["none", "ddp", "deepspeed"]), default="none", show_default=True)
@click.option("--zero", type=click.IntRange(0, 3), default=0, show_default=True, help="DeepSpeed ZeRO stage.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ranks on this node (re-launches under torchrun).")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data-loading processes per rank.")
@click.option("--out", default=None, help="Run directory (default results/<run-id>).")
def finetune_command(task, models_text, res_text, steps, batch, data, train_images, val_images, synthetic_classes,
                     checkpoint_items, fpn_channels, head_norm, lr, weight_decay, grad_clip, engine, zero, nproc, dtype,
                     seed, workers, out):
    """Fine-tune each backbone under RetinaNet (det) or Semantic FPN (seg) and score it."""
    from bench.launch import relaunch_if_requested
    from bench.plan import parse_models, parse_resolutions

    models = parse_models(models_text)
    resolutions = parse_resolutions(res_text)
    checkpoints = parse_checkpoints(checkpoint_items, models)
    parse_data_spec(data, task)
    if nproc > 1 and engine == "none":
        raise BadInput("--nproc > 1 needs --engine ddp or --engine deepspeed")
    relaunch_if_requested(nproc)
    settings = FinetuneSettings(task=task, data=data, steps=steps, batch=batch, lr=lr, weight_decay=weight_decay,
                                grad_clip=grad_clip, dtype=dtype, engine=engine, zero=zero, seed=seed,
                                train_images=train_images, val_images=val_images,
                                synthetic_classes=synthetic_classes, workers=workers, fpn_channels=fpn_channels,
                                head_norm=head_norm, checkpoints=checkpoints)
    result = run_finetune(settings, models, resolutions, out=out, command=shlex.join(["bench", *sys.argv[1:]]))
    if result.exit_code:
        sys.exit(result.exit_code)
