"""What every scenario's cell shares: the base of its record and the engine's view of its config."""
from __future__ import annotations

from typing import Any

import torch

from bench.engines import PRECISIONS, TrainSpec, base_record_fields
from bench.launch.context import DistContext
from bench.plan import Cell


def base_record(cell: Cell, ctx: DistContext, settings: Any, *, kind: str, train: bool) -> dict[str, Any]:
    """What a cell's record says before it runs, in every scenario: the cell, where it runs
    (device, world size, threads) and the training set-up the engine is given, with every
    engine's own fields (DeepSpeed: zero); an inference cell has no engine and no clipping."""
    from bench.environment import device_name
    from models import model_family

    return {
        **cell.as_dict(), "kind": kind, "family": model_family(cell.model),
        "device": ctx.device.type, "device_name": device_name(ctx.device),
        "dtype": settings.dtype, "precision": PRECISIONS[settings.dtype],
        "engine": settings.engine if train else "none", "grad_clip": settings.grad_clip if train else None,
        "world_size": ctx.world_size, "nodes": ctx.nodes, "threads": torch.get_num_threads(),
        **base_record_fields(settings, train),
    }


def train_spec(config: Any, micro_batch: int) -> TrainSpec:
    """The one ``TrainSpec`` of a ``RunConfig`` or ``FinetuneConfig`` (a setting the config lacks,
    e.g. ``bench run``'s learning rate, keeps the engine's default)."""
    default = TrainSpec()
    return TrainSpec(engine=config.engine, zero=config.zero, dtype=config.dtype, grad_clip=config.grad_clip,
                     lr=getattr(config, "lr", default.lr), weight_decay=getattr(config, "weight_decay",
                                                                                 default.weight_decay),
                     micro_batch=micro_batch, ds_config=getattr(config, "ds_config", default.ds_config))
