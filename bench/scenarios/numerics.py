"""The numerics check of one cell: the same weights and the same fixed-seed input through the fp32
eager reference (TF32 off, contiguous) and through the cell's own math mode (autocast or bf16
weights, ``torch.compile``, channels-last, TF32), outside the timed loop and the memory window.

Both sides start from one pristine copy of the cell's weights, taken before the timed steps moved
them. Stochastic layers (dropout, drop-path) are switched off in both copies, so the comparison
sees the arithmetic, not the dice. A training cell compares the first step's loss and the whole
gradient; the step itself is not taken. Engines are not built here: the cell's math mode is what
``--dtype`` / ``--compile`` / ``--channels-last`` / ``--tf32`` set, and every engine runs that same
arithmetic (DeepSpeed's and FSDP2's own reductions are not covered; the README says so).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn

from bench.build import place_model
from bench.config import RunConfig
from bench.engines.base import autocast_dtype, weight_dtype
from bench.measure.agreement import Agreement, compare_tensors, math_mode, relative_error
from bench.plan import Cell
from bench.tasks import Task

#: images the check runs (the cell's batch, up to this): enough for BatchNorm's batch statistics
#: in a training cell, small enough to cost one step
AGREEMENT_BATCH = 4
INPUT_SEED = 20261128


def cell_math_mode(cfg: RunConfig, device: torch.device) -> str | None:
    return math_mode(cfg.dtype, cfg.compile, cfg.channels_last, cfg.tf32 and device.type == "cuda")


@dataclass
class _Outputs:
    """What one side produced: the tapped outputs in order, the raw output, loss and gradient."""

    tapped: list[tuple[str, int | None, torch.Tensor]] = field(default_factory=list)
    output: Any = None
    loss: float | None = None
    grad: torch.Tensor | None = None


def check_agreement(task: Task, cell: Cell, pristine: nn.Module, batch: int, device: torch.device,
                    cfg: RunConfig) -> Agreement | None:
    """The cell's agreement with the reference (None where the cell's math is the reference's own:
    it would be compared with itself)."""
    mode = cell_math_mode(cfg, device)
    if mode is None:
        return None
    n = min(batch, AGREEMENT_BATCH)
    x, targets = _fixed_input(task, cell, n, device)
    with _reference_math():
        reference = _run(task, place_model(_copy(pristine), device), x, targets, cell.train, None)
    own_model = _cell_copy(pristine, device, cfg)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    own_x = x.to(weight_dtype(cfg.dtype)).contiguous(memory_format=memory_format)
    own = _run(task, own_model, own_x, targets, cell.train, autocast_dtype(cfg.dtype), compile=cfg.compile)
    per_output = [compare_tensors(name, stride, mine, ref)
                  for (name, stride, mine), (_, _, ref) in zip(own.tapped, reference.tapped)]
    agreement = Agreement(mode=mode, batch=n, weights="random", per_output=per_output)
    if cell.train:
        agreement.loss_rel_err = relative_error(own.loss, reference.loss)
        agreement.grad_cosine = compare_tensors("grad", None, own.grad, reference.grad).cosine
    else:
        agreement.task_agreement = task.task_agreement(own.output, reference.output)
    return agreement.judge()


def _copy(pristine: nn.Module) -> nn.Module:
    """A copy with its stochastic layers off (dropout's p, timm's DropPath ``drop_prob``)."""
    model = copy.deepcopy(pristine)
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        if isinstance(getattr(module, "drop_prob", None), float):
            module.drop_prob = 0.0
    return model


def _cell_copy(pristine: nn.Module, device: torch.device, cfg: RunConfig) -> nn.Module:
    """A copy placed as the cell placed its model: its memory format and weight dtype."""
    return place_model(_copy(pristine), device, cfg.channels_last).to(weight_dtype(cfg.dtype))


def _fixed_input(task: Task, cell: Cell, n: int, device: torch.device) -> tuple[torch.Tensor, Any]:
    """The task's own input and training targets, drawn from a fixed seed in fp32, contiguous."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(INPUT_SEED)
        x = task.input(cell, n, device, torch.float32, False)
        return x, task.train_targets(x) if cell.train else None


def fixed_input(task: Task, cell: Cell, n: int, device: torch.device) -> torch.Tensor:
    """The check's fixed-seed fp32 input of ``n`` images (a deployed cell's at its own batch)."""
    return _fixed_input(task, cell, n, device)[0]


def reference_output(task: Task, pristine: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The fp32 eager reference's whole output on ``x`` as a flat list of CPU tensors: what a deployed
    runtime, whose inner layers cannot be tapped, is compared on."""
    from bench.deploy.base import outputs_of

    with _reference_math(), torch.inference_mode():
        return outputs_of(place_model(_copy(pristine), x.device).eval()(task.feed(x)))


@contextlib.contextmanager
def _reference_math() -> Iterator[None]:
    """TF32 off for the reference, whatever the run set; restored after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def _compiled(model: nn.Module) -> nn.Module:
    """A fresh static-shape compile, as the timed cell's first compile was: the cell's graphs are
    dropped (its timing is over), so the check's other batch or its hooks do not recompile them with
    dynamic shapes (which inductor fails on for PVT at 224: 'cannot determine truth value of
    Relational')."""
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


def _expand(name: str, stride: int | None, value: Any) -> list[tuple[str, int | None, torch.Tensor]]:
    """A tapped output as named tensors: a list of four maps is the four levels (strides 4-32)."""
    from models.features import STRIDES

    if isinstance(value, torch.Tensor):
        return [(name, stride, value.detach())]
    if isinstance(value, dict):
        return [item for key, v in value.items() for item in _expand(f"{name}.{key}", stride, v)]
    if isinstance(value, (list, tuple)):
        if len(value) == len(STRIDES) and all(isinstance(v, torch.Tensor) and v.dim() == 4 for v in value):
            return [(f"stride{s}", s, v.detach()) for s, v in zip(STRIDES, value)]
        return _expand(name, stride, value[0]) if value else []  # a block's (tokens, H, W)
    return []


def _run(task: Task, model: nn.Module, x: torch.Tensor, targets: Any, train: bool, amp: torch.dtype | None,
         compile: bool = False) -> _Outputs:
    """One forward (inference) or forward + backward (training) with every tap recorded."""
    captured: dict[str, Any] = {}
    taps = task.agreement_taps(model)
    handles = [tap.module.register_forward_hook(lambda _m, _i, out, key=tap.name: captured.__setitem__(key, out))
               for tap in taps]
    handles.append(model.register_forward_hook(lambda _m, _i, out: captured.__setitem__("", out)))
    forward = _compiled(model) if compile else model
    autocast = torch.autocast(x.device.type, dtype=amp, enabled=amp is not None)
    result = _Outputs()
    try:
        if train:
            model.train()
            with autocast:
                loss = task.loss(forward, x, targets)
            loss.backward()
            result.loss = float(loss.detach().float())
            result.grad = torch.cat([p.grad.detach().float().flatten().cpu() for p in model.parameters()
                                     if p.grad is not None])
        else:
            model.eval()
            with torch.inference_mode(), autocast:
                result.output = forward(task.feed(x))
    finally:
        for handle in handles:
            handle.remove()
    for tap in taps:
        result.tapped += _expand(tap.name, tap.stride, captured.get(tap.name))
    logits = task.logits(captured.get(""))
    if isinstance(logits, torch.Tensor):
        result.tapped.insert(0, ("logits", None, logits.detach()))
    return result


# --------------------------------------------------------------------------------------------
# Against real labels (--accuracy-data)

#: MLPerf's gate: a faster mode must keep at least this share of the fp32 reference's quality
QUALITY_GATE = 0.99
GATE_FLAG = "accuracy-gate-missed"


def accuracy_against_labels(task: Task, cell: Cell, pristine: nn.Module, device: torch.device,
                            cfg: RunConfig) -> dict:
    """The first ``--accuracy-images`` validation images of ``--accuracy-data`` scored against
    their labels (mAP for det, mIoU for seg) by the reference and by the cell's math mode, with the
    task's own scorer (bench finetune's); their ratio is MLPerf's ">= 99% of fp32" gate."""
    from torch.utils.data import DataLoader, Subset

    from bench.data import collate, open_validation
    from bench.launch.context import DistContext

    height, width = task.input_hw(cell)
    dataset = open_validation(cfg.accuracy_data, cell.task, height, width)
    shard = Subset(dataset, range(min(cfg.accuracy_images, len(dataset))))
    num_classes = max(dataset.num_classes + 1, getattr(pristine, "num_classes", 0) or 0, _classes_of(pristine))
    alone = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=device, backend=None)

    def score(model: nn.Module, dtype: torch.dtype, amp: torch.dtype | None, channels_last: bool, compile: bool):
        forward = _compiled(model.eval()) if compile else model.eval()
        scorer = task.scorer(num_classes)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            for data in DataLoader(shard, batch_size=1, collate_fn=collate):
                scorer.add(forward, data["images"].to(device, dtype).contiguous(memory_format=memory_format), data)
        return scorer.result(alone)

    metric = "map" if cell.task == "det" else "miou"
    with _reference_math():
        reference = score(place_model(_copy(pristine), device), torch.float32, None, False, False)[metric]
    own_model = _cell_copy(pristine, device, cfg)
    own = score(own_model, weight_dtype(cfg.dtype), autocast_dtype(cfg.dtype), cfg.channels_last, cfg.compile)[metric]
    ratio = own / reference if reference > 0 else None
    return {"accuracy_vs_labels": {
        "data": cfg.accuracy_data, "images": len(shard), "metric": metric, "reference": round(reference, 6),
        "cell": round(own, 6), "ratio": None if ratio is None else round(ratio, 6), "gate": QUALITY_GATE,
        "passed": None if ratio is None else ratio >= QUALITY_GATE, "weights": "random",
        "note": "random weights score near 0 on real labels: the ratio is meaningful with trained weights"}}


def _classes_of(model: nn.Module) -> int:
    """A dense model's class count (RetinaNet's head, Semantic FPN's classifier)."""
    head = getattr(getattr(model, "head", None), "classification_head", None)
    if head is not None:
        return int(head.num_classes) + 1
    classifier = getattr(model, "classifier", None)
    return int(classifier.out_channels) if isinstance(classifier, nn.Conv2d) else 0


@dataclass
class NumericsCheck:
    """``--numerics``' result for one cell: the agreement with the fp32 eager reference (None when
    the cell was not checked: not rank 0, or a math mode that is the reference itself), the accuracy
    against real labels (``--accuracy-data``), the check's own failure, and how long it took. A
    check that fails is recorded and flagged, never the cell's failure: the timing stands."""

    checked: bool = False
    agreement: Agreement | None = None
    accuracy_vs_labels: dict | None = None
    error: str | None = None
    seconds: float | None = None

    @property
    def flags(self) -> list[str]:
        if self.error is not None:
            return ["numerics-unchecked"]
        flags = self.agreement.flags if self.agreement is not None else []
        if self.accuracy_vs_labels is not None and self.accuracy_vs_labels["passed"] is False:
            flags = [*flags, GATE_FLAG]
        return flags

    def to_record(self) -> dict:
        if not self.checked:
            return {"agreement": None}
        rec = self.agreement.to_record() if self.agreement is not None else {"agreement": None}
        if self.error is not None:
            rec["agreement_error"] = self.error
        if self.accuracy_vs_labels is not None:
            rec["accuracy_vs_labels"] = self.accuracy_vs_labels
        return rec | {"agreement_s": self.seconds}


def check_numerics(task: Task, cell: Cell, pristine: nn.Module | None, batch: int, device: torch.device,
                   cfg: RunConfig) -> NumericsCheck:
    """The cell's agreement with the fp32 eager reference, checked on rank 0 after the timing and
    outside the memory window (``pristine``: its weights before any step; None: not checked)."""
    import time

    from bench.errors import first_line
    from bench.measure.memory import free_memory

    if pristine is None:
        return NumericsCheck()
    t0 = time.perf_counter()
    result = NumericsCheck(checked=True)
    try:
        result.agreement = check_agreement(task, cell, pristine, batch, device, cfg)
        if cfg.accuracy_data and not cell.train:
            result.accuracy_vs_labels = accuracy_against_labels(task, cell, pristine, device, cfg)["accuracy_vs_labels"]
    except Exception as exc:  # noqa: BLE001 - the timing stands; the check's failure is said
        result.agreement, result.accuracy_vs_labels = None, None
        result.error = first_line(exc, with_type=True)
    free_memory(device)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
