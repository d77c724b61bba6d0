"""The plain engine: one process's model and optimizer, nothing in between."""
from __future__ import annotations

import torch.nn as nn

from bench.engines.base import Engine, Trainer, TrainSpec, make_optimizer, register_engine, torch_step, weight_dtype
from bench.launch.context import DistContext


@register_engine("none")
class Plain(Engine):
    distributed = False  # no gradient sync: several training ranks would be several models

    def build(self, model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
        model = model.to(weight_dtype(spec.dtype))
        optimizer, impl = make_optimizer(model, spec, ctx.device)
        hooks: list = []
        return Trainer(model, model, self.name, spec.dtype, ctx.device,
                       torch_step(model, optimizer, spec, ctx.device, after_backward=hooks),
                       input_dtype=weight_dtype(spec.dtype), optimizer=optimizer, optimizer_impl=impl,
                       after_backward=hooks)
