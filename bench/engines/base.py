"""The engine interface: what runs a training step (plain PyTorch, DDP, DeepSpeed ZeRO, FSDP2, ...).

An engine is one module with an ``Engine`` subclass registered by ``@register_engine(name)``. It
owns everything engine-specific, so nothing outside ``bench/engines/`` tests an engine's name:
- ``build(model, ctx, spec) -> Trainer``: ``trainer.model`` is what forward is called on,
  ``trainer.module`` the bare model, and ``trainer.step(loss)`` does backward + optimizer step +
  zero-grad the way the engine wants;
- ``options``: the settings only it reads (DeepSpeed's ``zero``, ``ds_config``); given under
  another engine they are refused rather than silently ignored;
- ``validate(settings)``: the combinations it refuses (``distributed = False``: several training
  ranks would each train their own model);
- ``label(record)``: how a report names it ("deepspeed ZeRO-2"), through ``engine_label``;
- ``record_fields(trainer)``: what it adds to a cell's record (DeepSpeed's effective config);
- ``comm_prediction(payload, trainer)``: the bytes its collectives should move per step
  (bench.measure.comms holds the traced bytes against it; None: no model of its traffic);
- ``self_autocast``: whether it applies mixed precision inside its own step.
Adding an engine is one file in this folder plus its import in ``__init__``.

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
from typing import TYPE_CHECKING, Any, Callable

from bench.errors import BadInput
from bench.launch.context import DistContext
from bench.traffic import Payload, Prediction

if TYPE_CHECKING:  # torch loads when an engine builds: naming and validating engines needs none
    import torch
    import torch.nn as nn

# --dtype -> (precision recorded, autocast dtype or None, weight dtype)
# (the torch dtypes by attribute name, so that naming them imports nothing)
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "bf16-weights": "bfloat16"}
PRECISIONS = {"fp32": "fp32", "bf16": "amp-bf16", "fp16": "amp-fp16", "bf16-weights": "bf16-weights"}


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of ``--dtype`` (None for fp32 and for all-half weights)."""
    import torch

    return getattr(torch, DTYPES[dtype]) if dtype in ("bf16", "fp16") else None


def weight_dtype(dtype: str) -> torch.dtype:
    import torch

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
    input_dtype: torch.dtype | None = None  # None: float32 (set in __post_init__)
    optimizer: torch.optim.Optimizer | None = None
    optimizer_impl: str = ""
    # The engine's effective configuration where it has one (DeepSpeed's JSON), for its record_fields.
    engine_config: dict | None = None
    # Set by build_trainer from the engine: it applies mixed precision inside its own step.
    self_autocast: bool = False
    # ``with trainer.whole_weights(): evaluate(trainer.module)``: every rank holds all the weights,
    # so ranks may run different numbers of forwards (a validation split that does not divide
    # evenly). Only a sharding engine (FSDP2) has anything to do.
    whole_weights: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # Called by the engine's step between backward and the optimizer step: the moment the
    # gradients it holds are what the optimizer will read (memory_breakdown reads them there).
    after_backward: list[Callable[[], None]] = field(default_factory=list)
    # Gradient buffers an engine keeps off ``p.grad`` (DeepSpeed's partitions), for held_grads.
    grad_buffers: Callable[[], list[torch.Tensor]] = list
    # Keyword arguments of ``torch.compile(trainer.model, ...)`` under --compile, where the engine
    # needs its own (FSDP2: static shapes, see bench.engines.fsdp2).
    compile_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_dtype is None:
            import torch

            self.input_dtype = torch.float32

    def step(self, loss: torch.Tensor) -> None:
        self._step(loss)

    def held_grads(self) -> list[torch.Tensor]:
        """The gradient tensors this rank holds now: the model's ``p.grad`` and the engine's own
        buffers (views of one buffer overlap; bench.measure.memory counts each byte once)."""
        return [p.grad for p in self.module.parameters() if p.grad is not None] + list(self.grad_buffers())

    def autocast(self):
        """Mixed precision for engines that don't autocast themselves (DeepSpeed does)."""
        amp = autocast_dtype(self.dtype)
        if amp is None or self.self_autocast:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device.type, dtype=amp)


def trains(settings: Any) -> bool:
    """Whether a config trains: ``bench run`` when its modes include train, a fine-tune always."""
    return "train" in getattr(settings, "modes", ("train",))


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class EngineOption:
    """A setting only one engine reads (a config field). Given (``used(value)``) under another
    engine it is refused: it would be silently ignored yet recorded as if it had an effect.
    ``check(value)`` refuses a malformed value whatever the engine (a missing file is said as
    such, not as a wrong engine)."""

    name: str
    used: Callable[[Any], bool] = bool
    why: str = ""
    check: Callable[[Any], None] | None = None


class Engine:
    """What an engine is to the rest of bench (see the module docstring). Subclass, override what
    differs, register with ``@register_engine(name)``."""

    name: str = ""
    distributed: bool = True  # syncs gradients across ranks: several training ranks make sense
    self_autocast: bool = False  # mixed precision inside its own step (DeepSpeed's torch_autocast)
    options: tuple[EngineOption, ...] = ()
    record_keys: tuple[str, ...] = ()  # the record fields it may set (None in every other record)

    def build(self, model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
        raise NotImplementedError

    def validate(self, settings: Any) -> None:
        """Refuse what this engine cannot do with ``settings`` (a RunConfig or FinetuneConfig)."""
        nproc = getattr(settings, "nproc", 1)
        nproc = max(nproc) if isinstance(nproc, list) else nproc  # bench run's --nproc is a list (a study)
        if not self.distributed and nproc > 1 and trains(settings):
            others = " or ".join(f"--engine {e.name}" for e in _ENGINES.values() if e.distributed)
            infer = " (or --modes infer)" if hasattr(settings, "modes") else ""
            raise BadInput(f"--nproc > 1 with --engine {self.name} would train a separate model per rank with no "
                           f"gradient sync: use {others}{infer}")

    def label(self, record: dict) -> str:
        """How reports name a record's set-up (``record["engine"]`` is this engine)."""
        return self.name

    def settings_fields(self, settings: Any) -> dict[str, Any]:
        """Fields of a training cell's record known before it runs (a failed cell keeps them)."""
        return {}

    def record_fields(self, trainer: Trainer) -> dict[str, Any]:
        """Fields of a training cell's record from the built trainer (its effective configuration)."""
        return {}

    def tag(self, trainer: Trainer) -> str:
        """The engine in a file or folder name of a cell's traces ("deepspeed-z2")."""
        return self.name

    def comm_prediction(self, payload: Payload, trainer: Trainer) -> Prediction | None:
        """Bytes per step this engine's collectives should move for ``payload`` (bench.measure.comms'
        docstring has the formulas); None: no model of its traffic (a single-process engine)."""
        return None


_ENGINES: dict[str, Engine] = {}
# What a distributed launch (Slurm, several tasks) uses when no --engine is given.
DEFAULT_DISTRIBUTED = "ddp"


def register_engine(name: str):
    """Class decorator: ``@register_engine("fsdp2") class FSDP2(Engine): ...`` registers one instance."""

    def wrap(cls: type[Engine]) -> type[Engine]:
        cls.name = name
        _ENGINES[name] = cls()
        return cls

    return wrap


def engine_names() -> list[str]:
    return list(_ENGINES)


def get_engine(name: str) -> Engine:
    if name not in _ENGINES:
        raise BadInput(f"unknown engine '{name}'; choose from {', '.join(_ENGINES)}")
    return _ENGINES[name]


def validate_engine_settings(settings: Any) -> None:
    """The engine rules of a config: every engine-owned option well-formed and given only with its
    engine, then the chosen engine's own refusals."""
    chosen = get_engine(settings.engine)
    for engine in _ENGINES.values():
        for opt in engine.options:
            value = getattr(settings, opt.name, None)
            if value is None or not opt.used(value):
                continue
            if opt.check is not None:
                opt.check(value)
            if engine is not chosen:
                why = f" ({opt.why})" if opt.why else ""
                raise BadInput(f"{option_flag(opt.name)} {value} needs --engine {engine.name}{why}")
    chosen.validate(settings)


def engine_label(record: dict) -> str:
    """A record's engine as reports name it ("deepspeed ZeRO-2"); an engine no longer registered
    (an old record) by its name."""
    name = str(record.get("engine") or "none")
    return _ENGINES[name].label(record) if name in _ENGINES else name


def base_record_fields(settings: Any, train: bool) -> dict[str, Any]:
    """Every engine's record fields, None unless the engine in use sets them from ``settings``
    (so records keep one shape); an inference cell has no engine."""
    out: dict[str, Any] = {key: None for engine in _ENGINES.values() for key in engine.record_keys}
    if train:
        out.update(get_engine(settings.engine).settings_fields(settings))
    return out


def trainer_record_fields(trainer: Trainer) -> dict[str, Any]:
    return get_engine(trainer.engine).record_fields(trainer)


def comm_prediction(trainer: Trainer, world_size: int) -> tuple[str, Prediction | None]:
    """``trainer``'s engine as a trace name says it, and what it predicts its collectives move per
    step for its model."""
    engine = get_engine(trainer.engine)
    return engine.tag(trainer), engine.comm_prediction(Payload.of(trainer.module, world_size), trainer)


def build_trainer(model: nn.Module, ctx: DistContext, spec: TrainSpec) -> Trainer:
    engine = get_engine(spec.engine)
    if spec.dtype not in DTYPES:
        raise BadInput(f"unknown dtype '{spec.dtype}'; choose from {', '.join(DTYPES)}")
    model = model.to(ctx.device)
    model.train()
    trainer = engine.build(model, ctx, spec)
    trainer.self_autocast = engine.self_autocast
    return trainer


def make_optimizer(model: nn.Module, spec: TrainSpec, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """The one optimizer every engine uses: torch AdamW, fused on CUDA, foreach elsewhere."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if device.type == "cuda":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, fused=True), "torch.AdamW(fused)"
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True), "torch.AdamW(foreach)"


def torch_step(model: nn.Module, optimizer: torch.optim.Optimizer, spec: TrainSpec, device: torch.device,
               scaler_class: type | None = None, after_backward: list[Callable[[], None]] | None = None):
    """backward + (unscale, clip) + step + zero-grad, with a GradScaler for fp16 autocast on CUDA
    (``scaler_class``: FSDP2 needs its sharded one, whose inf check spans the ranks). Each of
    ``after_backward`` (the Trainer's list) is called once backward is done."""
    import torch

    hooks = after_backward if after_backward is not None else []
    scaler_class = scaler_class or torch.amp.GradScaler
    scaler = scaler_class(device.type) if spec.dtype == "fp16" and device.type == "cuda" else None

    def step(loss: torch.Tensor) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        for hook in hooks:
            hook()
        if spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def torch_trainer(engine: Engine, forward: nn.Module, model: nn.Module, ctx: DistContext, spec: TrainSpec,
                  scaler_class: type | None = None, **fields: Any) -> Trainer:
    """The Trainer of an engine whose step is torch's own (plain, DDP, FSDP2): the one AdamW over
    ``model``'s parameters (as they are now: sharded already under FSDP2), ``torch_step``, inputs in
    the weight dtype; ``forward`` is what forward is called on (DDP's wrapper), ``fields`` the
    engine's extra Trainer fields (FSDP2's ``whole_weights``)."""
    optimizer, impl = make_optimizer(model, spec, ctx.device)
    hooks: list[Callable[[], None]] = []
    return Trainer(forward, model, engine.name, spec.dtype, ctx.device,
                   torch_step(model, optimizer, spec, ctx.device, scaler_class=scaler_class, after_backward=hooks),
                   input_dtype=weight_dtype(spec.dtype), optimizer=optimizer, optimizer_impl=impl,
                   after_backward=hooks, **fields)


def single_process_group(ctx: DistContext) -> None:
    """DDP/DeepSpeed/FSDP2 at world size 1 still need a process group: make a private one."""
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
