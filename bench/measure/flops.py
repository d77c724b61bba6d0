"""Parameters and FLOPs, attention included, with a per-stage breakdown.

Counting is fvcore's (``FlopCountAnalysis``: one multiply-add = one "flop", i.e. MACs, the
convention of the PVT paper's "GFLOPs"). fvcore has no handle for
``aten::scaled_dot_product_attention``: without one it silently drops attention (ViT-S at 800
would read about half its real cost), so we register one. The count is cross-checked against
``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per MAC), whose CPU SDPA kernel has no
formula in this torch either: we register that too. Both handles are ours because neither library
ships them.
"""
from __future__ import annotations

import sys
import math
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

# Ops both counters score (matmul, conv, attention); the cross-check compares these only,
# because fvcore additionally counts norms, pooling and upsampling and FlopCounterMode does not.
_SHARED_OPS = {"conv", "addmm", "linear", "matmul", "bmm", "einsum", "scaled_dot_product_attention", "convolution"}
CROSS_CHECK_TOLERANCE = 0.01


@dataclass
class FlopReport:
    model: str
    res: str
    batch: int
    params: int
    gmacs: float
    gflops: float  # = 2 x gmacs
    stage_gmacs: dict[str, float] = field(default_factory=dict)
    op_gmacs: dict[str, float] = field(default_factory=dict)
    skipped_ops: list[str] = field(default_factory=list)
    crosscheck_gmacs: float | None = None  # torch.utils.flop_counter over the shared ops
    crosscheck_rel_diff: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _sdpa_macs(q_shape, k_shape, v_shape) -> int:
    """MACs of softmax(q k^T) v: B*H*Nq*Nk*d for q k^T plus B*H*Nq*Nk*dv for the product with v."""
    *batch, nq, d = q_shape
    nk, dv = k_shape[-2], v_shape[-1]
    return math.prod(batch) * nq * nk * (d + dv)


def _fvcore_sdpa_handle(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    return _sdpa_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]))


def _flop_counter_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode hands custom formulas the shapes of tensor arguments, not the tensors.
    return 2 * _sdpa_macs(query_shape, key_shape, value_shape)


def stage_groups(model: nn.Module) -> dict[str, list[str]]:
    """Module-name prefixes per stage, so per-stage FLOPs read the same across families."""
    names = {n for n, _ in model.named_children()}
    if {"patch_embed1", "block4"} <= names:  # PVT
        groups = {f"stage{i}": [f"patch_embed{i}", f"block{i}"] for i in range(1, 5)}
        groups["head"] = ["norm", "head"]
        return groups
    if {"layer1", "layer4"} <= names:  # timm ResNet
        return {
            "stage1": ["conv1", "bn1", "act1", "maxpool", "layer1"],
            "stage2": ["layer2"],
            "stage3": ["layer3"],
            "stage4": ["layer4"],
            "head": ["global_pool", "fc"],
        }
    if "blocks" in names and "patch_embed" in names:  # timm ViT: no stages; 4 equal block groups
        depth = len(model.blocks)
        groups = {"patch_embed": ["patch_embed", "pos_drop"]}
        q = depth // 4
        for g in range(4):
            lo, hi = g * q, depth if g == 3 else (g + 1) * q
            groups[f"blocks{lo}-{hi - 1}"] = [f"blocks.{j}" for j in range(lo, hi)]
        groups["head"] = ["norm", "fc_norm", "head"]
        return groups
    return {}


def count_flops(model: nn.Module, name: str, height: int, width: int, batch: int = 1, cross_check: bool = True) -> FlopReport:
    """Count params and MACs of ``model`` on one ``batch x 3 x height x width`` input (eval mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore imports torch.jit.script
        from fvcore.nn import FlopCountAnalysis

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
        by_op = analysis.by_operator()
        skipped = sorted(analysis.unsupported_ops())
    stages: dict[str, float] = {}
    assigned = 0
    for label, prefixes in stage_groups(model).items():
        macs = sum(by_module.get(p, 0) for p in prefixes)
        stages[label] = macs / 1e9
        assigned += macs
    if stages:
        stages["other"] = (total - assigned) / 1e9
    report = FlopReport(
        model=name,
        res=str(height) if height == width else f"{height}x{width}",
        batch=batch,
        params=params,
        gmacs=total / 1e9,
        gflops=2 * total / 1e9,
        stage_gmacs=stages,
        op_gmacs={op: v / 1e9 for op, v in sorted(by_op.items())},
        skipped_ops=skipped,
    )
    if cross_check:
        shared = sum(v for op, v in by_op.items() if op in _SHARED_OPS)
        report.crosscheck_gmacs = _flop_counter_macs(model, x)
        report.crosscheck_rel_diff = abs(report.crosscheck_gmacs * 1e9 - shared) / max(shared, 1)
    model.train(was_training)
    return report


def _flop_counter_macs(model: nn.Module, x: torch.Tensor) -> float:
    """torch's own counter (matmul, conv, attention) in GMACs."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    for op_name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, op_name, None)
        if op is not None:
            mapping[op] = _flop_counter_sdpa
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def print_flops_table(reports: list[FlopReport]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Parameters and FLOPs (1 multiply-add = 1 MAC; GFLOPs = 2 x GMACs)")
    for col in ("model", "res", "params (M)", "GMACs", "GFLOPs", "per stage (GMACs)", "x-check"):
        table.add_column(col, justify="left" if col in ("model", "per stage (GMACs)") else "right")
    for r in reports:
        stages = "  ".join(f"{k}={v:.2f}" for k, v in r.stage_gmacs.items() if v)
        check = "-" if r.crosscheck_rel_diff is None else f"{100 * r.crosscheck_rel_diff:.2f}%"
        table.add_row(r.model, r.res, f"{r.params / 1e6:.2f}", f"{r.gmacs:.2f}", f"{r.gflops:.2f}", stages, check)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
