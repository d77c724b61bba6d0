"""FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and optimizer state
sharded 1/N per rank, each block's parameters all-gathered just before it runs.

Wrapping as torchtitan's ``parallelize`` does: ``fully_shard`` on each block, then on the root,
which takes what no block holds (stem, position embeddings, final norm, head). A block is found
without knowing the model: an element of an ``nn.ModuleList`` / ``nn.Sequential`` that is a
composite module holding parameters (ResNet's bottlenecks, PVT's and ViT's transformer blocks,
a detector's repeated heads), outermost first; a container of plain layers (a stem's
conv-norm-act) stays with its parent. Every block but the last reshards after forward (the last
one's parameters are needed at once by backward, torchtitan's rule); the root never does.

Like for like with the other engines (bench.engines.base):
- the same torch AdamW, created after sharding so its state is DTensors holding 1/N each;
- ``--dtype bf16/fp16`` is autocast over fp32 sharded weights, not a ``MixedPrecisionPolicy``:
  a policy's ``param_dtype`` would all-gather and compute with half weights, a different numeric
  recipe from every other engine's ``amp-*`` (and the recorded ``precision`` would lie). The
  policy halves all-gather traffic; it would be an FSDP2 option of its own, not ``--dtype``.
- ``bf16-weights``: the model cast to bf16 before sharding;
- clipping with ``clip_grad_norm_``, which reduces the norm over the shards (DTensor);
- fp16 on CUDA steps through the sharded GradScaler, whose inf check spans the ranks (each rank
  holds only its shard of the gradients).

``--compile``: FSDP2's hooks break the graph at every block, so each block's ``forward`` is its
own frame, compiled once per block shape (ResNet's stages differ in width). Left to itself
dynamo then recompiles that frame with dynamic shapes, and inductor (torch 2.14, CPU) fails on
the dynamic backward of a ResNet block ("InductorError: TypeError: Cannot convert expression to
float", after minutes of compiling). The model is compiled with static shapes instead, as
torchtitan compiles its blocks: one graph per distinct block shape (issue 27 group 6).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from bench.engines.base import (
    Engine,
    Trainer,
    TrainSpec,
    register_engine,
    single_process_group,
    torch_trainer,
    weight_dtype,
)
from bench.launch.context import DistContext
from bench.traffic import Payload, Prediction, gather_scatter_range

if TYPE_CHECKING:
    import torch.nn as nn


def even_shard_placement(world_size: int):
    """FSDP2 shards dim 0 by default, so a parameter whose dim 0 is shorter than the world (PVT's
    and ViT's ``(1, tokens, C)`` position embeddings, a class token) sits whole on rank 0 and
    breaks the 1/N promise; shard such a parameter along its longest dimension that divides
    evenly (else its longest) instead."""
    from torch.distributed.tensor import Shard

    def placement(param: nn.Parameter):
        shape = param.shape
        if not shape or shape[0] % world_size == 0:
            return None  # FSDP2's default, Shard(0)
        even = [d for d in range(len(shape)) if shape[d] % world_size == 0]
        return Shard(max(even or range(len(shape)), key=lambda d: shape[d]))

    return placement


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks to shard one by one, in forward (registration) order (module docstring)."""
    import torch.nn as nn

    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        container = isinstance(module, (nn.ModuleList, nn.Sequential))
        for child in module.children():
            block = container and next(child.children(), None) is not None
            if block and next(child.parameters(), None) is not None:
                units.append(child)
            else:
                visit(child)

    visit(model)
    return units


@register_engine("fsdp2")
class FSDP2(Engine):
    def build(self, model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        if not ctx.distributed:
            single_process_group(ctx)
        model = model.to(weight_dtype(spec.dtype))
        mesh = init_device_mesh(ctx.device.type, (dist.get_world_size(),))
        units = shard_units(model)
        placement = even_shard_placement(mesh.size())
        reshard = [i < len(units) - 1 for i in range(len(units))]
        for unit, after_forward in zip(units, reshard):
            fully_shard(unit, mesh=mesh, reshard_after_forward=after_forward, shard_placement_fn=placement)
        fully_shard(model, mesh=mesh, shard_placement_fn=placement)

        @contextlib.contextmanager
        def whole_weights():
            """All-gather every block once and keep it: forwards then run no collective, so each
            rank may run its own number of them (evaluation on an uneven split)."""
            for unit in [*units, model]:
                unit.unshard()
                unit.set_reshard_after_forward(False, recurse=False)
            try:
                yield
            finally:
                # The root keeps what FSDP2 set at its first forward (never reshard: backward
                # needs its parameters at once).
                for unit, after_forward in [*zip(units, reshard), (model, False)]:
                    unit.set_reshard_after_forward(after_forward, recurse=False)
                    unit.reshard()

        # The optimizer after sharding: DTensor state, 1/N. Compiled with static shapes: FSDP2 breaks
        # the graph at every block and inductor fails on dynamic-shape recompiles of the backward.
        return torch_trainer(self, model, model, ctx, spec, scaler_class=ShardedGradScaler,
                             whole_weights=whole_weights, compile_options={"dynamic": False})

    def comm_prediction(self, payload: Payload, trainer: Trainer) -> Prediction:
        return gather_scatter_range("FSDP2", payload)
