"""Published parameter counts the built models are held against (tests/unit/models/test_families.py: within
1%), so a wrong config shows up as a wrong count before it shows up as a wrong benchmark.

Millions of parameters of the 1000-class ImageNet classification model at 224x224, with where
the figure comes from. The ``_nosr`` ablations have no published count.
"""
from __future__ import annotations

PVT_V1_PAPER = "PVT v1 paper (Wang et al., ICCV 2021), Table 2"
PVT_V2_README = "PVT v2 official repo (whai362/PVT, classification README) and timm model cards"

# PVT v1 paper, Table 2: ImageNet-1k classification at 224x224, the one copy of its figures (the
# report's "against the paper" table reads it too). The paper's "GFLOPs" count one multiply-add as
# one operation, i.e. they are GMACs.
PVT_V1_TABLE2: dict[str, tuple[str, float, float]] = {
    # our name: (paper's name, params in millions, GMACs)
    "resnet18": ("ResNet18", 11.7, 1.8),
    "pvt_tiny": ("PVT-Tiny", 13.2, 1.9),
    "resnet50": ("ResNet50", 25.6, 4.1),
    "vit_s": ("DeiT-Small/16", 22.1, 4.6),
    "pvt_small": ("PVT-Small", 24.5, 3.8),
    "resnet101": ("ResNet101", 44.7, 7.9),
    "pvt_medium": ("PVT-Medium", 44.2, 6.7),
    "vit_b": ("ViT-Base/16", 86.6, 17.6),
    "pvt_large": ("PVT-Large", 61.4, 9.8),
}
_VIT_AS_DEIT = {"vit_s": ": ViT-S/16 = DeiT-S", "vit_b": ": ViT-B/16 = DeiT-B"}

REFERENCE_PARAMS_M: dict[str, tuple[float, str]] = {
    **{name: (params, PVT_V1_PAPER + _VIT_AS_DEIT.get(name, "")) for name, (_, params, _) in PVT_V1_TABLE2.items()},
    "vit_t": (5.7, "DeiT paper (Touvron et al., ICML 2021), Table 1: DeiT-Ti"),
    "pvt_v2_b0": (3.7, PVT_V2_README),
    "pvt_v2_b1": (14.0, PVT_V2_README),
    "pvt_v2_b2": (25.4, PVT_V2_README),
    "pvt_v2_b2_li": (22.6, PVT_V2_README),
    "swin_t": (28.3, "timm model card swin_tiny_patch4_window7_224 (Swin paper, Table 1: 28M)"),
    "convnext_t": (28.6, "timm model card convnext_tiny (ConvNeXt paper, Table 1: 28M)"),
}
