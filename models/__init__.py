"""Backbones (PVT v1 ours; PVT v2, Swin, ConvNeXt, ViT and ResNet from timm) behind one
timm-style registry.

The registry is imported first and imports no family; the family modules below register their
variants with ``@register_model`` as they are imported, so ``import models`` knows them all.
"""
from models import convnext, pvt, pvt_v2, swin, timm_backbones  # noqa: E402,F401  (registers the families)
from models.checkpoint import CheckpointError, read_state_dict
from models.features import stage_prefixes
from models.registry import UnknownModelError, create_model, list_models, model_family

__all__ = [
    "CheckpointError",
    "UnknownModelError",
    "create_model",
    "list_models",
    "model_family",
    "read_state_dict",
    "stage_prefixes",
]
