"""The plain engine: one process's model and optimizer, nothing in between."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.engines.base import Engine, Trainer, TrainSpec, register_engine, torch_trainer, weight_dtype
from bench.launch.context import DistContext

if TYPE_CHECKING:
    import torch.nn as nn


@register_engine("none")
class Plain(Engine):
    distributed = False  # no gradient sync: several training ranks would be several models

    def build(self, model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
        model = model.to(weight_dtype(spec.dtype))
        return torch_trainer(self, model, model, ctx, spec)
