"""The bytes a training step's collectives should move: what each engine predicts for its own
traffic (``Engine.comm_prediction``), and what bench.measure.comms holds the traced bytes against.
A leaf, so that engines (which predict) and measure (which compares) share it without importing
each other; the formulas and their sources are in bench.measure.comms' docstring."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass
class Prediction:
    bytes: float  # the payload, or the upper bound of a range
    formula: str
    low: float | None = None  # the lower bound where the engine's policy sets the amount (ZeRO-3, FSDP2)


@dataclass(frozen=True)
class Payload:
    """What a step's traffic is a function of: the trainable parameters P (DeepSpeed ZeRO-3's full
    size, kept aside as ``ds_numel``), their gradient element size e, the ranks n and the model's
    buffers B in bytes (DDP broadcasts them at each forward)."""

    trainable_numel: int
    grad_bytes: int
    world_size: int
    buffer_bytes: int = 0

    @classmethod
    def of(cls, model: nn.Module, world_size: int) -> "Payload":
        params = [p for p in model.parameters() if p.requires_grad]
        numel = sum(int(getattr(p, "ds_numel", 0) or p.numel()) for p in params)
        return cls(numel, params[0].element_size() if params else 4, world_size,
                   sum(b.numel() * b.element_size() for b in model.buffers()))


def gather_scatter_range(engine: str, payload: Payload) -> Prediction:
    """Parameters all-gathered in forward (and again in backward for the units freed after it) and
    gradients reduce-scattered: 2..3 x P x e, the engine's re-gather policy sets where (ZeRO-3, FSDP2)."""
    p, e = payload.trainable_numel, payload.grad_bytes
    return Prediction(3 * p * e, f"{engine}: all-gather fwd (+ bwd for units freed after fwd) + reduce-scatter: "
                      f"2..3 x P x e (P={p}, e={e})", low=2 * p * e)
