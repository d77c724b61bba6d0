"""Published parameter counts the built models are held against (tests/unit/models/test_families.py: within
1%), so a wrong config shows up as a wrong count before it shows up as a wrong benchmark.

Millions of parameters of the 1000-class ImageNet classification model at 224x224, with where
the figure comes from. The ``_nosr`` ablations have no published count.
"""
from __future__ import annotations

PVT_V1_PAPER = "PVT v1 paper (Wang et al., ICCV 2021), Table 2"
PVT_V2_README = "PVT v2 official repo (whai362/PVT, classification README) and timm model cards"

REFERENCE_PARAMS_M: dict[str, tuple[float, str]] = {
    "resnet18": (11.7, PVT_V1_PAPER),
    "resnet50": (25.6, PVT_V1_PAPER),
    "resnet101": (44.7, PVT_V1_PAPER),
    "vit_t": (5.7, "DeiT paper (Touvron et al., ICML 2021), Table 1: DeiT-Ti"),
    "vit_s": (22.1, PVT_V1_PAPER + ": ViT-S/16 = DeiT-S"),
    "vit_b": (86.6, PVT_V1_PAPER + ": ViT-B/16 = DeiT-B"),
    "pvt_tiny": (13.2, PVT_V1_PAPER),
    "pvt_small": (24.5, PVT_V1_PAPER),
    "pvt_medium": (44.2, PVT_V1_PAPER),
    "pvt_large": (61.4, PVT_V1_PAPER),
    "pvt_v2_b0": (3.7, PVT_V2_README),
    "pvt_v2_b1": (14.0, PVT_V2_README),
    "pvt_v2_b2": (25.4, PVT_V2_README),
    "pvt_v2_b2_li": (22.6, PVT_V2_README),
    "swin_t": (28.3, "timm model card swin_tiny_patch4_window7_224 (Swin paper, Table 1: 28M)"),
    "convnext_t": (28.6, "timm model card convnext_tiny (ConvNeXt paper, Table 1: 28M)"),
}
