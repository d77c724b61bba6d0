"""Every backbone name and its family, known without importing a family (torch, timm).

``bench run --models`` is checked against this before anything heavy loads, so a typo is refused
in a fraction of a second rather than after the 4 s it takes to import torch and timm. The
registry (``models.registry``, filled by the family modules' ``@register_model``) stays the one
that builds; ``tests/unit/models/test_catalog.py`` keeps the two equal.
"""
from __future__ import annotations

MODEL_FAMILIES: dict[str, str] = {
    "convnext_t": "convnext",
    "pvt_large": "pvt",
    "pvt_medium": "pvt",
    "pvt_small": "pvt",
    "pvt_small_nosr": "pvt",
    "pvt_tiny": "pvt",
    "pvt_tiny_nosr": "pvt",
    "pvt_v2_b0": "pvt_v2",
    "pvt_v2_b1": "pvt_v2",
    "pvt_v2_b2": "pvt_v2",
    "pvt_v2_b2_li": "pvt_v2",
    "resnet101": "resnet",
    "resnet18": "resnet",
    "resnet50": "resnet",
    "swin_t": "swin",
    "vit_b": "vit",
    "vit_s": "vit",
    "vit_t": "vit",
}


def model_names() -> list[str]:
    """The names ``models.create_model`` builds, sorted (as ``models.list_models``)."""
    return sorted(MODEL_FAMILIES)
