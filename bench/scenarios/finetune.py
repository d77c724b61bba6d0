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
import statistics
import time
import traceback
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from bench.config import FinetuneConfig
from bench.data import DataSplits, collate, open_data
from bench.errors import BadInput, first_line
from bench.plan import Cell, make_cells
from bench.scenarios.common import base_record as common_base_record
from bench.scenarios.common import train_spec
from bench.tasks import task_for

DEFAULT_SYNTHETIC_TRAIN, DEFAULT_SYNTHETIC_VAL = 512, 64


# --------------------------------------------------------------------------------------------
# Models


def build_task_model(task: str, name: str, num_classes: int, image_size: tuple[int, int],
                     checkpoint: str | None, fpn_channels: int = 256, head_norm: str = "none",
                     bn_mode: str = "frozen") -> nn.Module:
    """Backbone ``name`` (ImageNet weights from ``checkpoint`` if given) under the task's head;
    its BatchNorms frozen by default (``bn_mode``), as the paper's mmdet/mmseg baselines."""
    from bench.build import build_model
    from models.heads import apply_bn_mode

    backbone = apply_bn_mode(build_model(name, features_only=True, checkpoint=checkpoint), bn_mode)
    return task_for(task).finetune_model(backbone, num_classes, image_size, fpn_channels, head_norm)


def _one_line_errors(iterable):
    """Bad data found by a DataLoader worker reaches the user as the same one line as in the main
    process: torch re-raises the worker's BadInput with the worker's whole traceback as its
    message; keep the original message (the last line) only."""
    iterator = iter(iterable)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except BadInput as exc:
            lines = [ln for ln in str(exc.message).splitlines() if ln.strip()]
            last = lines[-1] if lines else str(exc.message)
            for prefix in ("bench.errors.BadInput: ", "BadInput: "):
                if last.startswith(prefix):
                    last = last[len(prefix):]
            raise BadInput(last) from None
        yield item


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Evaluation (sharded over ranks, gathered on every rank)


@torch.no_grad()
def evaluate(task: str, module: nn.Module, dataset: Dataset, num_classes: int, ctx, batch: int) -> dict:
    """Score ``module`` on ``dataset``: each rank takes every world_size-th image, rank results
    are combined by the task's scorer (confusion matrices summed; detections gathered for one
    COCO evaluation)."""
    was_training = module.training
    module.eval()
    dtype = next(module.parameters()).dtype  # DeepSpeed bf16/fp16 keeps the weights in that type
    shard = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    scorer = task_for(task).scorer(num_classes)
    for data in _one_line_errors(DataLoader(shard, batch_size=batch, collate_fn=collate)):
        scorer.add(module, data["images"].to(ctx.device, dtype), data)
    module.train(was_training)
    return scorer.result(ctx)


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


def effective_bn_mode(settings: FinetuneConfig, name: str) -> str:
    if settings.bn_mode != "auto":
        return settings.bn_mode
    return "frozen" if settings.checkpoints.get(name) else "train"


def base_record(settings: FinetuneConfig, cell: Cell, ctx) -> dict:
    """What a cell's record says before it runs: the cell and its set-up."""
    checkpoint = settings.checkpoints.get(cell.model)
    return common_base_record(cell, ctx, settings, kind="finetune", train=True) | {
        "data": settings.data, "steps": settings.steps,
        "global_batch": settings.batch * ctx.world_size, "lr": settings.lr, "weight_decay": settings.weight_decay,
        "optimizer": "AdamW", "seed": settings.seed, "fpn_channels": settings.fpn_channels,
        "head_norm": task_for(settings.task).recorded_head_norm or settings.head_norm,
        "pretrained": checkpoint is not None, "checkpoint": checkpoint,
        "bn_mode": effective_bn_mode(settings, cell.model),
    }


def _train(steps: int, batches, trainer, task, ctx) -> tuple[list[float], list[float], list[float]]:
    """``steps`` training steps: (loss, step ms, data ms) per step. A step is timed from the
    batch in hand to the loss read back (which waits for the step on GPU too)."""
    losses, step_ms, data_ms = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(_one_line_errors(batches))
        t1 = time.perf_counter()
        with trainer.autocast():
            loss = task.batch_loss(trainer.model, batch, ctx.device, trainer.input_dtype)
        trainer.step(loss)
        value = float(loss.detach())  # waits for the step on GPU too
        _sync(ctx.device)
        t2 = time.perf_counter()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {len(losses) + 1}")
        losses.append(value)
        data_ms.append((t1 - t0) * 1e3)
        step_ms.append((t2 - t1) * 1e3)
    return losses, step_ms, data_ms


def step_time_fields(step_ms: list[float], data_ms: list[float], batch: int, ctx) -> dict:
    """Step-time statistics of bench.measure.timing's ``Latency`` and ``Throughput``, from one series
    as in a ``bench run`` cell: the per-step maximum over ranks (a step is as slow as its slowest
    rank), kept as ``latency_samples_ms``. Throughput is sustained: images over the summed step time
    (every step, the first, cold ones included: this is what the fine-tune took); the data wait is
    apart. The field names are the fine-tune's own (``step_time_ms``), as records have them."""
    from bench.launch.context import all_gather_floats, elementwise_max
    from bench.measure.timing import Latency, Throughput, median

    steps = Latency(times_ms=elementwise_max(step_ms, ctx), warmup_iters=0, warmup_ms=0.0)
    kept = steps.kept_samples_ms
    throughput = Throughput.sustained(steps, batch, ctx.world_size, all_gather_floats(median(step_ms), ctx))
    return {"step_time_ms": steps.median_ms, "step_time_ms_p90": steps.p90_ms, "data_time_ms": median(data_ms),
            "latency_samples_ms": kept, "samples_thinned": len(kept) < steps.iters} | throughput.to_record()


def loss_fields(losses: list[float]) -> dict:
    tail = max(1, len(losses) // 10)
    return {"loss_curve": [round(v, 6) for v in losses], "loss_first": losses[0], "loss_last": losses[-1],
            "loss_first_mean": statistics.fmean(losses[:tail]), "loss_last_mean": statistics.fmean(losses[-tail:]),
            "loss_mean_window": tail}


def run_cell(settings: FinetuneConfig, name: str, height: int, width: int, data: DataSplits, ctx) -> dict:
    """Fine-tune one backbone at one resolution; return what it measured (metrics before and
    after training, loss per step, speed, memory)."""
    from bench.engines import build_trainer
    from bench.measure.memory import PeakMemory, free_memory

    task = task_for(settings.task)
    checkpoint = settings.checkpoints.get(name)
    torch.manual_seed(settings.seed)  # the same initial weights on every rank and every run
    model = build_task_model(settings.task, name, data.num_classes, (height, width), checkpoint,
                             settings.fpn_channels, settings.head_norm, effective_bn_mode(settings, name))
    backbone = task.backbone_of(model)
    record = {
        "num_classes": data.num_classes, "class_names": data.class_names,
        "train_images": len(data.train), "val_images": len(data.val),
        "params": trainable_parameters(model), "backbone_params": trainable_parameters(backbone),
        "checkpoint_unused_keys": list(getattr(backbone, "checkpoint_unused_keys", [])),
        "frozen_unreached_params": list(getattr(model, "unreached_parameters", [])),
    }
    model = model.to(ctx.device)
    before = evaluate(settings.task, model, data.val, data.num_classes, ctx, settings.batch)
    trainer = build_trainer(model, ctx, train_spec(settings, settings.batch))
    batches = _infinite_batches(data.train, settings.batch, ctx, settings.seed, settings.workers)
    load_before, cpu_before, wall_before = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with PeakMemory(ctx.device, trainer.module) as memory:
        losses, step_ms, data_ms = _train(settings.steps, batches, trainer, task, ctx)
    # A shared machine slows steps several-fold: keep the load and CPU share next to the times.
    record.update({"loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0],
                   "train_cpu_s": time.process_time() - cpu_before, "train_wall_s": time.perf_counter() - wall_before})
    with trainer.whole_weights():  # FSDP2: ranks may score different numbers of batches
        after = evaluate(settings.task, trainer.module, data.val, data.num_classes, ctx, settings.batch)
    record |= loss_fields(_mean_curve_over_ranks(losses, ctx)) | step_time_fields(step_ms, data_ms, settings.batch, ctx)
    record |= {"peak_mem_mb": memory.peak_mb, "peak_mem_method": memory.method}
    record |= task.metric_fields(before, after)
    del trainer, model
    free_memory(ctx.device)
    return record


# --------------------------------------------------------------------------------------------
# The whole run


def open_splits(settings: FinetuneConfig, height: int, width: int) -> DataSplits:
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
            coco = getattr(data.val.dataset, "coco", None)
            if settings.task == "det" and coco is not None:
                kept = [data.val.dataset.image_ids[i] for i in data.val.indices]
                if not any(coco.imgToAnns.get(image_id) for image_id in kept):
                    # pycocotools would score that split mAP 0, which reads as a result.
                    raise BadInput(f"--val-images {settings.val_images}: the first {len(kept)} validation images of "
                                   f"{settings.data} hold no box to score against; give more images")
    return data


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


def training_indices(size: int, settings: FinetuneConfig) -> list[int]:
    """The training images ``--steps`` steps read, on every rank: the same DistributedSampler
    (seed, epochs, drop_last) and whole batches as ``_infinite_batches``, so checking them up front
    reads what the run reads and no more."""
    used: set[int] = set()
    ranks = max(1, settings.nproc)
    for rank in range(ranks):
        sampler = DistributedSampler(range(size), num_replicas=ranks, rank=rank, shuffle=True, seed=settings.seed,
                                     drop_last=True)
        per_epoch = len(sampler) // settings.batch * settings.batch
        wanted, epoch = settings.steps * settings.batch, 0
        while wanted > 0 and per_epoch > 0:
            sampler.set_epoch(epoch)
            order = list(sampler)[:per_epoch]
            used.update(order[:wanted])
            wanted -= len(order)
            epoch += 1
            if len(used) >= size:
                break
    return sorted(used)


def check_samples(dataset: Dataset, indices) -> None:
    """Read each sample the run will read (pixels decoded, label values checked by the dataset's
    ``__getitem__``), so bad data -- a truncated image, label values beyond the classes, a label map
    with every pixel ignored -- is one BadInput line before the run directory exists, not a failure
    after claims and the invocation log are written."""
    for index in indices:
        dataset[index]


@dataclass
class FinetuneResult:
    """A fine-tune cell: its settings (the base record), what ``run_cell`` measured (data, loss
    curve, step ``Latency`` and ``Throughput``, memory, task metrics) and how it ended."""

    settings: dict
    measured: dict = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    wall_s: float = 0.0

    def to_record(self) -> dict:
        """The cell's JSON record: the one place a fine-tune's result becomes its fields."""
        rec = self.settings | self.measured | {"status": self.status, "error": self.error}
        if self.traceback is not None:
            rec["traceback"] = self.traceback
        return rec | {"wall_s": self.wall_s}


class FinetuneScenario:
    """``bench finetune``'s cells for the shared sweep (bench.sweep)."""

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self._data: dict[tuple[int, int], DataSplits] = {}

    def cells(self) -> list[Cell]:
        c = self.config
        return make_cells(c.models, c.res, [c.task], [c.batch], c.task)

    def check_inputs(self) -> None:
        """Open the data and read every checkpoint before anything is created: rejected input
        leaves no run directory behind."""
        from models import read_state_dict
        from models.checkpoint import CheckpointError

        h, w = self.config.res[0]
        data = self._data[(h, w)] = open_splits(self.config, h, w)
        # Each rank takes len // nproc training images (DistributedSampler, drop_last) in whole
        # batches: fewer than one batch would train nothing.
        per_rank = len(data.train) // max(1, self.config.nproc)
        if per_rank < self.config.batch:
            raise BadInput(f"--batch {self.config.batch} is larger than the training split allows: "
                           f"{len(data.train)} images over {self.config.nproc} rank(s) is {per_rank} per rank; "
                           "lower --batch or use more --train-images")
        for path in self.config.checkpoints.values():
            try:
                read_state_dict(path)
            except CheckpointError as exc:
                raise BadInput(str(exc)) from None
        if self.config.data != "synthetic":
            check_samples(data.train, training_indices(len(data.train), self.config))
            check_samples(data.val, range(len(data.val)))
        for name, path in self.config.checkpoints.items():
            # A checkpoint of another model is found by loading it into the backbone, as run_cell will.
            from bench.build import build_model

            build_model(name, features_only=True, checkpoint=path)

    def prepare(self, ctx, run_dir, todo) -> None:
        pass

    def run(self, cell: Cell, ctx, history: list[dict]) -> FinetuneResult:
        result = FinetuneResult(base_record(self.config, cell, ctx))
        started = time.time()
        try:
            key = (cell.height, cell.width)
            if key not in self._data:
                self._data[key] = open_splits(self.config, cell.height, cell.width)
            result.measured = run_cell(self.config, cell.model, cell.height, cell.width, self._data[key], ctx)
        except BadInput:
            raise
        except Exception as exc:  # one failed cell (OOM, diverged loss) must not end the sweep
            if ctx.distributed:
                raise  # the other ranks may be waiting in a collective: end the job
            result.status, result.error = "error", first_line(exc, 500, with_type=True)[:500]
            result.traceback = traceback.format_exc(limit=5)
        result.wall_s = time.time() - started
        if ctx.is_main:
            print(summary_line(result.to_record()), flush=True)
        return result

    def summarize(self, records: list[dict], run_dir, ctx, console) -> None:
        print(f"records: {run_dir.records_path}", flush=True)
