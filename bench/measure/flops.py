"""Parameters and FLOPs, attention included, per stage and per part of a dense model.

Counting is fvcore's (``FlopCountAnalysis``: one multiply-add = one "flop", i.e. MACs, the
convention of the PVT paper's "GFLOPs"). fvcore has no handle for
``aten::scaled_dot_product_attention``: without one it silently drops attention (ViT-S at 800
would read about half its real cost), so we register one (ours: fvcore ships none):
B·H·Nq·Nk·(d + dv) MACs, i.e. the products q kᵀ and (softmax) v.

Per stage: the model describes its own stages (``models.stage_prefixes``); a stage's GMACs are
fvcore's per-module counts of its prefixes, and ``attention_gmacs_per_stage`` the attention
products alone (q kᵀ and the product with v; projections excluded). Per part (``parts``:
backbone / neck / head of a detector or segmentor): each part's own module count, so
``sum(part_gmacs) == gmacs`` is a check, not a definition.

Cross-check that can disagree: an independent count by ``torch.utils.flop_counter`` with no formula
of ours, on a copy of the model whose attention runs as explicit matmuls (every module's
``fused_attn`` set False: timm's attention layers and our PVT have that switch). It is compared
with fvcore's matmul/conv/attention total; a model whose attention cannot be switched shows up as
a disagreement rather than hiding behind our own formula on both sides.

Ops fvcore does not know are kept with their counts (``skipped_ops``). Most are the element-wise,
shape, pooling and resampling ops whose cost fvcore leaves out by convention (O(elements), no
contraction); those are ``trivial`` (one list: ``TRIVIAL_OPS``). Any other skipped op may hide
real multiply-adds (a conv or matmul variant, a custom kernel): the cell is ``incomplete`` and
``bench run`` flags it ``flops-incomplete``.

Frozen parameters (``requires_grad=False``, e.g. the backbone branches a dense head does not
read) need no weight gradient: ``trainable_fraction`` is the share of the MACs of parametrised
modules whose own parameters are trainable, which the 3x training rule of bench.measure.derived
scales the weight-gradient third by.
"""
from __future__ import annotations

import copy
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

# Ops both counters score (matmul, conv, attention); the cross-check compares these only,
# because fvcore additionally counts norms, pooling and upsampling and FlopCounterMode does not.
_SHARED_OPS = {"conv", "addmm", "linear", "matmul", "bmm", "einsum", "scaled_dot_product_attention", "convolution",
               "baddbmm", "mm"}
# The attention products: SDPA, or the explicit q kᵀ and (softmax) v matmuls of an attention
# layer that does not use SDPA (Swin's windows with their bias). Linear layers trace as
# aten::linear / addmm, so in these backbones a bare matmul is an attention product.
_ATTENTION_OPS = ("scaled_dot_product_attention", "matmul", "bmm", "einsum", "baddbmm")
CROSS_CHECK_TOLERANCE = 0.01
# Ops whose cost is left out of a MAC count by convention: element-wise arithmetic and
# activations, shape / view / padding / fill, reductions, pooling and resampling: O(elements), no
# contraction. Names without the "aten::" prefix or an in-place "_" suffix.
TRIVIAL_OPS = frozenset({
    "add", "sub", "rsub", "mul", "div", "neg", "pow", "sqrt", "rsqrt", "exp", "log", "abs", "clamp", "where",
    "eq", "ne", "lt", "le", "gt", "ge", "fill", "zero", "copy", "clone", "contiguous", "to", "type_as",
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "softmax",
    "log_softmax", "dropout", "feature_dropout", "dropout2d", "alpha_dropout", "erf", "mean", "sum", "amax",
    "max", "min", "cumsum", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "adaptive_max_pool2d", "pad", "constant_pad_nd", "reflection_pad2d", "roll", "flip",
    "cat", "stack", "split", "chunk", "view", "reshape", "flatten", "permute", "transpose", "expand", "repeat",
    "unsqueeze", "squeeze", "slice", "select", "index", "gather", "narrow", "unbind", "zeros", "ones", "full",
    "zeros_like", "ones_like", "full_like", "arange", "linspace", "meshgrid", "masked_fill", "topk", "sort",
    "argmax", "floor", "ceil", "round", "floor_divide", "remainder", "mish",
})
TRIVIAL_OP_PREFIXES = ("upsample_", "_upsample_", "grid_sampler")


def is_trivial_op(op: str) -> bool:
    """Whether a skipped op costs O(elements) with no contraction (see ``TRIVIAL_OPS``)."""
    name = op.removeprefix("aten::")
    if name.endswith("_") and not name.startswith("_"):
        name = name[:-1]
    return name in TRIVIAL_OPS or name.startswith(TRIVIAL_OP_PREFIXES)


@dataclass
class Flops:
    """The FLOP tracker's result: one count of one model at one size."""

    model: str
    res: str
    batch: int
    params: int
    gmacs: float
    gflops: float  # = 2 x gmacs
    task: str = "cls"
    input_hw: list[int] = field(default_factory=list)
    stage_gmacs: dict[str, float] = field(default_factory=dict)
    attention_gmacs_per_stage: dict[str, float] = field(default_factory=dict)
    part_gmacs: dict[str, float] = field(default_factory=dict)
    part_params: dict[str, int] = field(default_factory=dict)
    op_gmacs: dict[str, float] = field(default_factory=dict)
    skipped_ops: dict[str, int] = field(default_factory=dict)  # op -> calls fvcore could not count
    trainable_fraction: float = 1.0  # MAC share of parametrised modules whose own parameters train
    crosscheck_gmacs: float | None = None  # torch.utils.flop_counter, explicit attention path
    crosscheck_rel_diff: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def nontrivial_skipped(self) -> dict[str, int]:
        """Skipped ops that may hide multiply-adds (not in ``TRIVIAL_OPS``)."""
        return {op: n for op, n in self.skipped_ops.items() if not is_trivial_op(op)}

    @property
    def flags(self) -> list[str]:
        """``flops-incomplete``: a non-trivial op went uncounted; ``flops-crosscheck-disagree``: the
        independent count differs by more than ``CROSS_CHECK_TOLERANCE``."""
        out = ["flops-incomplete"] if self.nontrivial_skipped else []
        if self.crosscheck_rel_diff is not None and self.crosscheck_rel_diff > CROSS_CHECK_TOLERANCE:
            out.append("flops-crosscheck-disagree")
        return out

    def to_record(self) -> dict:
        """The record fields of a counted cell (empty per-stage / per-part counts are None)."""
        return {"params": self.params, "gmacs": self.gmacs, "gflops": self.gflops, "stage_gmacs": self.stage_gmacs,
                "attention_gmacs_per_stage": self.attention_gmacs_per_stage or None,
                "part_gmacs": self.part_gmacs or None, "part_params": self.part_params or None,
                "flops_skipped_ops": dict(self.skipped_ops), "flops_trainable_fraction": self.trainable_fraction,
                "flops_crosscheck_gmacs": self.crosscheck_gmacs, "flops_crosscheck_rel_diff": self.crosscheck_rel_diff}


def _sdpa_macs(q_shape, k_shape, v_shape) -> int:
    """MACs of softmax(q k^T) v: B*H*Nq*Nk*d for q k^T plus B*H*Nq*Nk*dv for the product with v."""
    *batch, nq, d = q_shape
    nk, dv = k_shape[-2], v_shape[-1]
    return math.prod(batch) * nq * nk * (d + dv)


def _fvcore_sdpa_handle(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    return _sdpa_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]))


def _covered(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _sum_prefixes(counts: dict[str, float], prefixes: list[str]) -> float:
    """Sum of per-module counts over ``prefixes`` (fvcore's counts of a module include its
    children, so only the prefixes themselves are read)."""
    return float(sum(counts.get(p, 0) for p in prefixes))


def count_flops(model: nn.Module, name: str, height: int, width: int, batch: int = 1, cross_check: bool = True,
                parts: dict[str, list[str]] | None = None, task: str = "cls",
                stage_root: str = "") -> Flops:
    """Count params and MACs of ``model`` on one ``batch x 3 x height x width`` input (eval mode).

    ``parts``: name prefixes of a dense model's parts; ``stage_root``: where the backbone sits
    in ``model`` (e.g. "backbone.body"), so its stages are reported for dense models too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore imports torch.jit.script
        from fvcore.nn import FlopCountAnalysis

    from models import stage_prefixes

    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, height, width)
    params = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes
        analysis = FlopCountAnalysis(model, x)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _fvcore_sdpa_handle)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analysis.total()
        by_module = analysis.by_module()
        by_module_op = analysis.by_module_and_operator()
        by_op = analysis.by_operator()
        skipped = {op: int(n) for op, n in sorted(analysis.unsupported_ops().items())}
    attention = {m: sum(ops.get(op, 0) for op in _ATTENTION_OPS) for m, ops in by_module_op.items()}
    stages: dict[str, float] = {}
    stage_attention: dict[str, float] = {}
    backbone = model.get_submodule(stage_root) if stage_root else model
    root = f"{stage_root}." if stage_root else ""
    try:
        described = stage_prefixes(backbone)
    except ValueError:
        described = {}
    for label, prefixes in described.items():
        full = [root + p for p in prefixes]
        stages[label] = _sum_prefixes(by_module, full) / 1e9
        if label.startswith("stage"):
            stage_attention[label] = _sum_prefixes(attention, full) / 1e9
    part_gmacs: dict[str, float] = {}
    part_params: dict[str, int] = {}
    for label, prefixes in (parts or {}).items():
        part_gmacs[label] = _sum_prefixes(by_module, prefixes) / 1e9
        part_params[label] = sum(p.numel() for n, p in model.named_parameters() if _covered(n, prefixes))
    report = Flops(
        model=name,
        res=str(height) if height == width else f"{height}x{width}",
        batch=batch,
        params=params,
        gmacs=total / 1e9,
        gflops=2 * total / 1e9,
        task=task,
        input_hw=[height, width],
        stage_gmacs=stages,
        attention_gmacs_per_stage=stage_attention,
        part_gmacs=part_gmacs,
        part_params=part_params,
        op_gmacs={op: v / 1e9 for op, v in sorted(by_op.items())},
        skipped_ops=skipped,
        trainable_fraction=trainable_fraction(model, by_module),
    )
    if cross_check:
        shared = sum(v for op, v in by_op.items() if op in _SHARED_OPS)
        report.crosscheck_gmacs = explicit_path_gmacs(model, x)
        report.crosscheck_rel_diff = abs(report.crosscheck_gmacs * 1e9 - shared) / max(shared, 1)
    model.train(was_training)
    return report


def trainable_fraction(model: nn.Module, by_module: dict[str, float]) -> float:
    """The MAC share of modules with parameters of their own whose parameters all train: the
    weight-gradient share of the backward pass (1.0 when nothing is frozen or nothing has MACs)."""
    total = trained = 0.0
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        macs = float(by_module.get(name, 0))
        # a module's count includes its children's: take only modules whose children hold no parameters
        if any(True for child in module.children() for _ in child.parameters()):
            continue
        total += macs
        trained += macs if all(p.requires_grad for p in own) else 0.0
    return trained / total if total > 0 else 1.0


def explicit_path_gmacs(model: nn.Module, x: torch.Tensor) -> float:
    """torch's own counter, with no formula of ours, over a copy of ``model`` whose attention
    runs as explicit matmuls: GMACs of matmul, conv and attention."""
    from torch.utils.flop_counter import FlopCounterMode

    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        twin(x)
    return counter.get_total_flops() / 2 / 1e9


def print_flops_table(reports: list[Flops]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Parameters and FLOPs (1 multiply-add = 1 MAC; GFLOPs = 2 x GMACs)")
    dense = any(r.part_gmacs for r in reports)
    columns = ["model", "task", "res", "params (M)", "GMACs", "GFLOPs", "per stage (GMACs)"]
    columns += ["parts (GMACs)"] if dense else []
    columns += ["x-check"]
    for col in columns:
        left = col in ("model", "task", "per stage (GMACs)", "parts (GMACs)")
        table.add_column(col, justify="left" if left else "right")
    for r in reports:
        stages = "  ".join(f"{k}={v:.2f}" for k, v in r.stage_gmacs.items() if v)
        check = "-" if r.crosscheck_rel_diff is None else f"{100 * r.crosscheck_rel_diff:.2f}%"
        row = [r.model, r.task, r.res, f"{r.params / 1e6:.2f}", f"{r.gmacs:.2f}", f"{r.gflops:.2f}", stages]
        if dense:
            row.append("  ".join(f"{k}={v:.2f}" for k, v in r.part_gmacs.items()))
        table.add_row(*row, check)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
