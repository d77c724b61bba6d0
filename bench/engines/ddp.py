"""DistributedDataParallel: gradients all-reduced in buckets, overlapped with backward."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.engines.base import (
    Engine,
    EngineOption,
    Trainer,
    TrainSpec,
    register_engine,
    single_process_group,
    torch_trainer,
    weight_dtype,
)
from bench.launch.context import DistContext
from bench.traffic import Payload, Prediction

if TYPE_CHECKING:
    import torch.nn as nn


@register_engine("ddp")
class DDP(Engine):
    # A fine-tune's SyncBatchNorm reduces its statistics over DDP's process group.
    options = (EngineOption("bn_mode", lambda v: v == "sync", "SyncBatchNorm syncs across DDP ranks"),)

    def build(self, model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
        from torch.nn.parallel import DistributedDataParallel

        if not ctx.distributed:
            single_process_group(ctx)
        model = model.to(weight_dtype(spec.dtype))
        wrapped = DistributedDataParallel(
            model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=spec.find_unused_parameters,
        )
        return torch_trainer(self, wrapped, model, ctx, spec)

    def comm_prediction(self, payload: Payload, trainer: Trainer) -> Prediction:
        """One all-reduce of every trainable gradient, plus the buffers broadcast at each forward."""
        p, e, b = payload.trainable_numel, payload.grad_bytes, payload.buffer_bytes
        return Prediction(p * e + b, f"DDP: all-reduce P x e ({p} x {e}) + buffer broadcast {b}")
