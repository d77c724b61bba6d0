"""DeepSpeed ZeRO (stages 0-3) with a generated config that a user's ``--ds-config`` deep-merges into.

The generated config makes DeepSpeed train the same model as the other engines: the same torch
AdamW instance (no FusedAdam op is compiled on CPU), clipping as ``--grad-clip``, ``overlap_comm``
for ZeRO-1/2 (DDP overlaps its buckets too), and autocast mixed precision through the
``torch_autocast`` section (fp32 weights), or the ``bf16`` section for ``--dtype bf16-weights``.

Gradient communication in the weights' dtype, like DDP and FSDP2: DeepSpeed's ``torch_autocast``
marks the parameters of Linear and Conv layers by default (``lower_precision_safe_modules``) to be
reduced in the autocast dtype, so ZeRO would reduce bf16 gradients where DDP and FSDP2 reduce fp32
ones -- half the bytes, other rounding, not like for like, and not the 4 bytes a gradient element
that ``bench.measure.comms.predict`` assumes. The generated config sets that list empty; a
``--ds-config`` may set it again. Either way the record says what was reduced:
``grad_comm_dtype``, read from the parameters after ``deepspeed.initialize``.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.engines.base import (
    Engine,
    EngineOption,
    Trainer,
    TrainSpec,
    autocast_dtype,
    make_optimizer,
    register_engine,
    single_process_group,
    trains,
    weight_dtype,
)
from bench.errors import BadInput, first_line
from bench.launch.context import DistContext
from bench.traffic import Payload, Prediction, gather_scatter_range

if TYPE_CHECKING:  # torch (and DeepSpeed) load when the engine builds or checks a config
    import torch
    import torch.nn as nn


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


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` into a copy of ``base``, nested dicts merged key by key (a user's
    ``zero_optimization: {offload_optimizer: ...}`` keeps the generated ``stage``)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def deepspeed_config(spec: TrainSpec, world_size: int, user: dict | None = None) -> dict:
    """The effective config: ours, deep-merged with the user's; the batch keys follow the cell."""
    amp = autocast_dtype(spec.dtype)
    amp_name = str(amp).removeprefix("torch.")  # DeepSpeed's name of the dtype: "bfloat16"
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": spec.micro_batch,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": spec.zero, **({"overlap_comm": True} if spec.zero in (1, 2) else {})},
        "gradient_clipping": spec.grad_clip,
        "bf16": {"enabled": spec.dtype == "bf16-weights"},
        "fp16": {"enabled": False},
        # An empty list: no parameter is reduced in the autocast dtype (module docstring).
        "torch_autocast": {"enabled": amp is not None,
                           **({"dtype": amp_name, "lower_precision_safe_modules": []} if amp else {})},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if user:
        cfg = deep_merge(cfg, user)
    cfg["train_batch_size"] = (
        cfg["train_micro_batch_size_per_gpu"] * cfg.get("gradient_accumulation_steps", 1) * world_size
    )
    return cfg


def check_config(spec: TrainSpec) -> dict:
    """Parse the effective config with DeepSpeed's own validation (its pydantic models) before
    anything runs: a value of the wrong type is bad input (exit 2), not an error cell. Checked as
    for one rank: outside a process group DeepSpeed takes the world size to be 1, and the batch
    keys are derived from the world size anyway when the ranks start."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    user = load_ds_config(spec.ds_config) if spec.ds_config else None
    cfg = deepspeed_config(spec, 1, user)
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig(copy.deepcopy(cfg))
    except Exception as exc:  # noqa: BLE001 - pydantic, TypeError, ValueError, AssertionError...
        text = " ".join(str(exc).split())
        raise BadInput(f"DeepSpeed rejects the config{f' {spec.ds_config}' if spec.ds_config else ''}: "
                       f"{type(exc).__name__}: {text[:240]}") from None
    return cfg


def effective_zero_stage(cfg: dict) -> int:
    return int((cfg.get("zero_optimization") or {}).get("stage", 0))


def _check_ds_config_file(path: str) -> None:
    if not Path(path).is_file():
        raise BadInput(f"DeepSpeed config not found: {path}")
    load_ds_config(path)  # malformed JSON fails here, before anything runs


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@register_engine("deepspeed")
class DeepSpeed(Engine):
    self_autocast = True  # through the config's torch_autocast section
    options = (EngineOption("zero"), EngineOption("ds_config", lambda v: v is not None, check=_check_ds_config_file))
    record_keys = ("zero", "ds_config")

    def validate(self, settings: Any) -> None:
        super().validate(settings)
        if trains(settings):
            batches = getattr(settings, "batches", None) or [getattr(settings, "batch", 1)]
            micro = next((b for b in batches if isinstance(b, int)), 1)
            check_config(TrainSpec(engine=self.name, zero=settings.zero, dtype=settings.dtype,
                                   grad_clip=settings.grad_clip, micro_batch=micro,
                                   ds_config=getattr(settings, "ds_config", None)))

    def label(self, record: dict) -> str:
        zero = record.get("zero")
        return self.name if _missing(zero) else f"{self.name} ZeRO-{int(zero)}"

    def settings_fields(self, settings: Any) -> dict[str, Any]:
        return {"zero": settings.zero}

    def record_fields(self, trainer: Trainer) -> dict[str, Any]:
        cfg = trainer.engine_config or {}
        return {"ds_config": cfg, "zero": effective_zero_stage(cfg), "grad_comm_dtype": grad_comm_dtype(trainer.module)}

    def tag(self, trainer: Trainer) -> str:
        return f"{self.name}-z{effective_zero_stage(trainer.engine_config or {})}"

    def comm_prediction(self, payload: Payload, trainer: Trainer) -> Prediction:
        """ZeRO-0: the gradients all-reduced; ZeRO-1/2: reduced, then the updated parameters
        all-gathered (padded to a multiple of n); ZeRO-3: the gather / scatter range."""
        zero = effective_zero_stage(trainer.engine_config or {})
        p, e, n = payload.trainable_numel, payload.grad_bytes, payload.world_size
        if zero == 3:
            return gather_scatter_range("ZeRO-3", payload)
        if zero == 0:
            return Prediction(p * e, f"ZeRO-0: all-reduce P x e (P={p}, e={e})")
        return Prediction((p + math.ceil(p / n) * n) * e,
                          f"ZeRO-{zero}: grad reduce P x e + param all-gather ceil(P/n) x n x e (P={p}, e={e}, n={n})")

    def build(self, model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
        if ctx.device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        user = load_ds_config(spec.ds_config) if spec.ds_config else None
        if not ctx.distributed:
            single_process_group(ctx)
        import deepspeed
        import torch

        cfg = deepspeed_config(spec, ctx.world_size, user)
        optimizer, impl = make_optimizer(model, spec, ctx.device)
        try:
            engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
        except (ValueError, AssertionError, KeyError, TypeError) as exc:
            raise BadInput(f"DeepSpeed rejected the config: {first_line(exc)}") from None

        hooks: list = []

        def step(loss: torch.Tensor) -> None:
            engine.backward(loss)
            for hook in hooks:
                hook()
            engine.step()

        # Inputs must match the weights: bf16 when the config's bf16 (or fp16) section casts the model.
        input_dtype = weight_dtype(spec.dtype)
        for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            if (cfg.get(name) or {}).get("enabled"):
                input_dtype = dt
        return Trainer(engine, model, self.name, spec.dtype, ctx.device, step, input_dtype=input_dtype,
                       optimizer=optimizer, optimizer_impl=impl, engine_config=cfg, after_backward=hooks,
                       grad_buffers=lambda: _zero_grad_buffers(engine.optimizer))


def grad_comm_dtype(module: nn.Module) -> str | None:
    """The dtype(s) ZeRO reduces the trainable parameters' gradients in: the one DeepSpeed's
    ``torch_autocast`` attached to a parameter (``comm_dtype``), else the parameter's own; several
    joined by '+' (sorted), None without trainable parameters."""
    from deepspeed.runtime.torch_autocast import get_comm_dtype

    names = {str(get_comm_dtype(p)).removeprefix("torch.") for p in module.parameters() if p.requires_grad}
    return "+".join(sorted(names)) or None


def _zero_grad_buffers(zero_optimizer: Any) -> list[torch.Tensor]:
    """The gradient tensors a ZeRO optimizer holds off ``p.grad``: ZeRO-1/2's partition
    (``grads_in_partition``, ``averaged_gradients``) and the params' ``grad_accum``, ZeRO-3's
    flat partition buffer. Communication staging (the reduce buckets) is not a gradient."""
    import torch

    out: list[torch.Tensor] = []
    for name in ("grads_in_partition", "grad_partitions_flat_buffer"):
        t = getattr(zero_optimizer, name, None)
        if isinstance(t, torch.Tensor):
            out.append(t)
    averaged = getattr(zero_optimizer, "averaged_gradients", None)
    for group in (averaged.values() if isinstance(averaged, dict) else averaged or []):
        out += [t for t in group or [] if isinstance(t, torch.Tensor)]
    for group in getattr(zero_optimizer, "bit16_groups", None) or []:
        out += [p.grad_accum for p in group if isinstance(getattr(p, "grad_accum", None), torch.Tensor)]
    return out
