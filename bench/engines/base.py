"""The engine interface: what runs a training step (plain PyTorch, DDP, DeepSpeed ZeRO, ...).

An engine is one module that registers a builder with ``@register_engine(name)``; the builder
takes the bare model, the rank context and a ``TrainSpec`` and returns a ``Trainer``:
``trainer.model`` is what forward is called on, ``trainer.module`` the bare model, and
``trainer.step(loss)`` does backward + optimizer step + zero-grad the way the engine wants.
Adding an engine (FSDP2, say) is one file in this folder plus its import in ``__init__``.

Like for like across engines (so a difference in a figure is the engine's, not the set-up's):
- the same optimizer implementation (torch AdamW, ``fused`` where the device has it, else
  ``foreach``), recorded as ``optimizer_impl``;
- gradient clipping set explicitly and identically (DeepSpeed's default of 1.0 is overridden);
- ``precision``: ``fp32``; ``amp-bf16`` / ``amp-fp16`` = autocast with fp32 weights on every
  engine (DeepSpeed through its ``torch_autocast`` section); ``bf16-weights`` = the whole model
  cast to bf16 (DeepSpeed through its ``bf16`` section).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from bench.errors import BadInput
from bench.launch.context import DistContext

# --dtype -> (precision recorded, autocast dtype or None, weight dtype)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "bf16-weights": torch.bfloat16}
PRECISIONS = {"fp32": "fp32", "bf16": "amp-bf16", "fp16": "amp-fp16", "bf16-weights": "bf16-weights"}


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of ``--dtype`` (None for fp32 and for all-half weights)."""
    return DTYPES[dtype] if dtype in ("bf16", "fp16") else None


def weight_dtype(dtype: str) -> torch.dtype:
    return torch.bfloat16 if dtype == "bf16-weights" else torch.float32


@dataclass(frozen=True)
class TrainSpec:
    """Everything an engine needs to know about the training step, set once per run."""

    engine: str = "none"
    zero: int = 0
    dtype: str = "fp32"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 0.0
    micro_batch: int = 1
    ds_config: str | None = None
    find_unused_parameters: bool = False


@dataclass
class Trainer:
    model: nn.Module
    module: nn.Module
    engine: str
    dtype: str
    device: torch.device
    _step: Callable[[torch.Tensor], None]
    input_dtype: torch.dtype = torch.float32
    optimizer: torch.optim.Optimizer | None = None
    optimizer_impl: str = ""
    ds_config: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def step(self, loss: torch.Tensor) -> None:
        self._step(loss)

    def autocast(self):
        """Mixed precision for engines that don't autocast themselves (DeepSpeed does)."""
        amp = autocast_dtype(self.dtype)
        if amp is None or self.engine == "deepspeed":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=amp)


EngineBuilder = Callable[[nn.Module, DistContext, TrainSpec], Trainer]
_ENGINES: dict[str, EngineBuilder] = {}


def register_engine(name: str):
    def wrap(fn: EngineBuilder) -> EngineBuilder:
        _ENGINES[name] = fn
        return fn

    return wrap


def engine_names() -> list[str]:
    return list(_ENGINES)


def build_trainer(model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
    if spec.engine not in _ENGINES:
        raise BadInput(f"unknown engine '{spec.engine}'; choose from {', '.join(_ENGINES)}")
    if spec.dtype not in DTYPES:
        raise BadInput(f"unknown dtype '{spec.dtype}'; choose from {', '.join(DTYPES)}")
    model = model.to(ctx.device)
    model.train()
    return _ENGINES[spec.engine](model, ctx, spec)


def make_optimizer(model: nn.Module, spec: TrainSpec, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """The one optimizer every engine uses: torch AdamW, fused on CUDA, foreach elsewhere."""
    params = [p for p in model.parameters() if p.requires_grad]
    if device.type == "cuda":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, fused=True), "torch.AdamW(fused)"
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True), "torch.AdamW(foreach)"


def torch_step(model: nn.Module, optimizer: torch.optim.Optimizer, spec: TrainSpec, device: torch.device):
    """backward + (unscale, clip) + step + zero-grad, with a GradScaler for fp16 autocast on CUDA."""
    scaler = torch.amp.GradScaler(device.type) if spec.dtype == "fp16" and device.type == "cuda" else None

    def step(loss: torch.Tensor) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def single_process_group(ctx: DistContext) -> None:
    """DDP/DeepSpeed at world size 1 still need a process group: make a private one."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    from bench.launch.context import free_port

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    dist.init_process_group("nccl" if ctx.device.type == "cuda" else "gloo", rank=0, world_size=1)
