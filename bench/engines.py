"""Training engines behind one small interface: plain PyTorch, DDP and DeepSpeed ZeRO.

``trainer.model`` is what forward is called on, ``trainer.module`` the bare model, and
``trainer.step(loss)`` does backward + optimizer step + zero-grad the way each engine wants.
Gradient clipping is set explicitly and identically for every engine (DeepSpeed's default of 1.0
would otherwise make it train a different model than DDP). DeepSpeed gets a torch AdamW instance,
so no FusedAdam op is compiled on CPU.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from bench.distributed import DistContext
from bench.errors import BadInput

ENGINES = ("none", "ddp", "deepspeed")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Trainer:
    model: nn.Module
    module: nn.Module
    engine: str
    dtype: str
    device: torch.device
    _step: Callable[[torch.Tensor], None]
    input_dtype: torch.dtype = torch.float32
    ds_config: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def step(self, loss: torch.Tensor) -> None:
        self._step(loss)

    def autocast(self):
        """Mixed precision for engines that don't cast the model themselves (DeepSpeed does)."""
        if self.dtype == "fp32" or self.engine == "deepspeed":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.dtype])


def build_trainer(
    model: nn.Module,
    ctx: DistContext,
    engine: str = "none",
    zero: int = 0,
    dtype: str = "fp32",
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    grad_clip: float = 0.0,
    micro_batch: int = 1,
    ds_config: str | None = None,
    find_unused_parameters: bool = False,
) -> Trainer:
    if engine not in ENGINES:
        raise BadInput(f"unknown engine '{engine}'; choose from {', '.join(ENGINES)}")
    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    model = model.to(ctx.device)
    model.train()
    if engine == "deepspeed":
        return _deepspeed_trainer(model, ctx, zero, dtype, lr, weight_decay, grad_clip, micro_batch, ds_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    wrapped = model
    if engine == "ddp":
        if not ctx.distributed:
            torch_dist_single_process(ctx)
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    scaler = torch.amp.GradScaler(ctx.device.type) if dtype == "fp16" and ctx.device.type == "cuda" else None

    def step(loss: torch.Tensor) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return Trainer(wrapped, model, engine, dtype, ctx.device, step, extra={"optimizer": optimizer})


def torch_dist_single_process(ctx: DistContext) -> None:
    """DDP/DeepSpeed at world size 1 still need a process group: make a private one."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    from bench.launch import free_port

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    dist.init_process_group("nccl" if ctx.device.type == "cuda" else "gloo", rank=0, world_size=1)


def load_ds_config(path: str) -> dict:
    try:
        with open(path) as fh:
            cfg = json.load(fh)
    except OSError as exc:
        raise BadInput(f"cannot read DeepSpeed config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"malformed DeepSpeed config {path}: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(cfg, dict):
        raise BadInput(f"malformed DeepSpeed config {path}: expected a JSON object")
    return cfg


def deepspeed_config(
    zero: int, dtype: str, grad_clip: float, micro_batch: int, world_size: int, user: dict | None = None
) -> dict:
    """Our generated config; a user's ``--ds-config`` overrides any key it sets, but the batch
    keys are filled from the cell when it leaves them out."""
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": zero},
        "gradient_clipping": grad_clip,
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if user:
        cfg.update(user)
        cfg.setdefault("train_micro_batch_size_per_gpu", micro_batch)
    cfg["train_batch_size"] = (
        cfg["train_micro_batch_size_per_gpu"] * cfg.get("gradient_accumulation_steps", 1) * world_size
    )
    return cfg


def _deepspeed_trainer(model, ctx, zero, dtype, lr, weight_decay, grad_clip, micro_batch, ds_config_path) -> Trainer:
    if ctx.device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if zero not in (0, 1, 2, 3):
        raise BadInput(f"bad ZeRO stage {zero}; choose 0, 1, 2 or 3")
    user = load_ds_config(ds_config_path) if ds_config_path else None
    if not ctx.distributed:
        torch_dist_single_process(ctx)
    import deepspeed

    cfg = deepspeed_config(zero, dtype, grad_clip, micro_batch, ctx.world_size, user)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    try:
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
    except (ValueError, AssertionError, KeyError) as exc:
        raise BadInput(f"DeepSpeed rejected the config: {str(exc).splitlines()[0][:300]}") from None

    def step(loss: torch.Tensor) -> None:
        engine.backward(loss)
        engine.step()

    # DeepSpeed casts the model to the half type its config enables; inputs must match it.
    input_dtype = torch.float32
    for name in ("bf16", "fp16"):
        if cfg.get(name, {}).get("enabled"):
            input_dtype = DTYPES[name]
    return Trainer(engine, model, "deepspeed", dtype, ctx.device, step, input_dtype=input_dtype, ds_config=cfg)
