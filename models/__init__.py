"""Backbones (PVT v1 ours; PVT v2, Swin, ConvNeXt, ViT and ResNet from timm) behind one
timm-style registry.

The family modules register their variants with ``@register_model`` as they are imported, and
the registry imports them on the first question asked of it (``models.registry.FAMILIES``). The
names below load on first use (PEP 562), not on ``import models``: ``models.catalog`` (the names,
no torch) is then importable alone, which is what lets ``bench run`` refuse a bad ``--models``
before it imports torch and timm.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "models.checkpoint",
    "read_state_dict": "models.checkpoint",
    "stage_prefixes": "models.features",
    "UnknownModelError": "models.registry",
    "create_model": "models.registry",
    "list_models": "models.registry",
    "model_family": "models.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
