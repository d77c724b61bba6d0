"""The features-only contract, and each model's own description of its stages.

Features-only backbones return four NCHW maps at strides 4, 8, 16, 32 and expose
``feature_channels`` / ``feature_strides``. Every model, classification or features-only, also
carries ``stage_modules``: which of its modules make up each stage, set when it is built (the
family knows its own layout, as timm's ``feature_info`` / ``group_matcher`` do). Per-stage FLOPs
or parameters then read the same across families and never guess child-module names.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn

STAGES = ("stage1", "stage2", "stage3", "stage4")
STRIDES = [4, 8, 16, 32]


def describe_stages(
    model: nn.Module,
    stages: Sequence[Iterable[str]],
    head: Iterable[str] = (),
    neck: Iterable[str] | None = None,
) -> nn.Module:
    """Attach the stage description to ``model`` (called by each family's builder).

    ``stages`` holds four lists of names (what runs before stage 1, the stem, goes with stage
    1); ``neck`` is for modules a features-only wrapper adds after the trunk; ``head`` is what
    runs after the last stage (empty for features-only models)."""
    if len(stages) != len(STAGES):
        raise ValueError(f"expected {len(STAGES)} stages, got {len(stages)}")
    desc = {key: list(names) for key, names in zip(STAGES, stages)}
    if neck is not None:
        desc["neck"] = list(neck)
    desc["head"] = list(head)
    model.stage_modules = desc
    return model


def stage_prefixes(model: nn.Module) -> dict[str, list[str]]:
    """``{"stage1": [...], ..., "stage4": [...], ("neck": [...],) "head": [...]}``: the name
    prefixes of each stage, in forward order, as ``model.named_modules()`` spells them.

    A prefix covers the name itself and everything under ``prefix + "."``. It names a module
    (``block1``, ``layer2``, ``trunk.blocks.0``) or a parameter registered directly on the model
    (PVT's ``pos_embed{i}``, ViT's ``pos_embed`` / ``cls_token``): such a parameter is listed by
    its own name, so it counts towards its stage's parameters; a per-module FLOP counter has no
    entry for it, and the addition it takes part in stays with the module that performs it.

    Conventions: the stem (ResNet's conv1/bn1/act1/maxpool, a patch embedding, ViT's position
    embedding and class token) is stage 1; ViT has no stages, so its blocks split into four
    equal groups; PVT v1's class token joins in stage 4 but is listed with the head, as the
    classifier is what needs it. Features-only ViT (``SimpleFeaturePyramid``) has a ``neck``
    key for the pyramid it adds (up4, up8, down32) so that stage FLOPs stay the trunk's; the
    trunk's final norm, applied to the stride-16 map every level comes from, is in stage 4.
    Features-only models have an empty head.

    Raises ValueError when the model carries no description, or one naming a module or
    parameter it does not have (a stale description is worse than none).
    """
    desc = getattr(model, "stage_modules", None)
    if desc is None:
        raise ValueError(
            f"{type(model).__name__} carries no stage description (stage_modules); "
            "build it with models.create_model"
        )
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    stale = [p for prefixes in desc.values() for p in prefixes if p not in names]
    if stale:
        raise ValueError(f"{type(model).__name__}'s stage description names what it lacks: {stale[:3]}")
    return {key: list(prefixes) for key, prefixes in desc.items()}


def under(prefix: str, names: Iterable[str]) -> list[str]:
    """``names`` as seen from a wrapper that holds their model as ``prefix``."""
    return [f"{prefix}.{n}" for n in names]


def timm_stage_names(model: nn.Module) -> list[str]:
    """The modules timm's ``feature_info`` names for strides 4, 8, 16 and 32."""
    info = model.feature_info
    if isinstance(info, list):  # a classification model: a list of dicts
        by_stride = {fi["reduction"]: fi["module"] for fi in info}
    else:  # a timm features wrapper: a FeatureInfo
        by_stride = dict(zip(info.reduction(), info.module_name()))
    return [by_stride[s] for s in STRIDES]


def timm_stages(model: nn.Module, stem: Sequence[str]) -> list[list[str]]:
    """Four stages from timm's ``feature_info``, the ``stem`` modules joining the first."""
    stages = [[name] for name in timm_stage_names(model)]
    stages[0] = [*stem, *stages[0]]
    return stages


class TimmStageFeatures(nn.Module):
    """A timm trunk's four stage outputs (strides 4-32, NCHW) through ``forward_intermediates``.

    The trunk keeps the classification model's parameter names, so a classification checkpoint
    fills it (its head and final norm are reported unused). ``prune_intermediate_layers`` drops
    the head and the final norm, which no stage output passes through, so that no parameter
    sits idle (DDP without find_unused_parameters would stop on one)."""

    feature_strides = [4, 8, 16, 32]

    def __init__(self, trunk: nn.Module, stem: Sequence[str]):
        super().__init__()
        self.trunk = trunk
        trunk.prune_intermediate_layers(indices=len(STRIDES), prune_norm=True, prune_head=True)
        info = {fi["reduction"]: fi["num_chs"] for fi in trunk.feature_info}
        self.feature_channels = [info[s] for s in self.feature_strides]
        describe_stages(self, [under("trunk", names) for names in timm_stages(trunk, stem)])

    @property
    def checkpoint_target(self) -> nn.Module:
        """Classification checkpoints fit the trunk (a property, so state_dict() has each key once)."""
        return self.trunk

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward_intermediates(
            x, indices=len(STRIDES), output_fmt="NCHW", intermediates_only=True
        )
