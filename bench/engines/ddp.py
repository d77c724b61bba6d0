"""DistributedDataParallel: gradients all-reduced in buckets, overlapped with backward."""
from __future__ import annotations

import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from bench.engines.base import (
    Engine,
    EngineOption,
    Trainer,
    TrainSpec,
    make_optimizer,
    register_engine,
    single_process_group,
    torch_step,
    weight_dtype,
)
from bench.launch.context import DistContext


@register_engine("ddp")
class DDP(Engine):
    # A fine-tune's SyncBatchNorm reduces its statistics over DDP's process group.
    options = (EngineOption("bn_mode", lambda v: v == "sync", "SyncBatchNorm syncs across DDP ranks"),)

    def build(self, model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
        if not ctx.distributed:
            single_process_group(ctx)
        model = model.to(weight_dtype(spec.dtype))
        wrapped = DistributedDataParallel(
            model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=spec.find_unused_parameters,
        )
        optimizer, impl = make_optimizer(model, spec, ctx.device)
        hooks: list = []
        return Trainer(wrapped, model, self.name, spec.dtype, ctx.device,
                       torch_step(model, optimizer, spec, ctx.device, after_backward=hooks),
                       input_dtype=weight_dtype(spec.dtype), optimizer=optimizer, optimizer_impl=impl,
                       after_backward=hooks)
