"""ViT and ResNet from timm, with the same features-only contract as our PVT.

ViT runs at any input size that is a multiple of its patch (``dynamic_img_size=True``: the
position embedding is resized per forward, parameters stay those of the 224 model). Its four maps
come from a simple feature pyramid over the last block's stride-16 map (Li et al., "Exploring
Plain Vision Transformer Backbones for Object Detection", 2022): two 2x deconvs for stride 4, one
for stride 8, identity for 16, max-pool for 32. timm has no such module, hence ours.

Stage descriptions (see ``models.features.stage_prefixes``): ViT has no stages, so its blocks
split into four equal groups, the patch embedding, class token and position embedding going
with the first; ResNet's stem goes with layer1, and layer1..layer4 are the stages.
"""
from __future__ import annotations

import timm
import torch
import torch.nn as nn

from models.features import describe_stages, timm_stages, under
from models.registry import register_model

VIT_VARIANTS = {
    "vit_t": "vit_tiny_patch16_224",
    "vit_s": "vit_small_patch16_224",
    "vit_b": "vit_base_patch16_224",
}
RESNET_VARIANTS = {"resnet18": "resnet18", "resnet50": "resnet50", "resnet101": "resnet101"}


class SimpleFeaturePyramid(nn.Module):
    """ViT trunk + ViTDet's simple pyramid -> maps at strides 4, 8, 16, 32."""

    feature_strides = [4, 8, 16, 32]

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        dim = trunk.embed_dim
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            nn.GroupNorm(1, dim // 2),  # LayerNorm over channels, as ViTDet's LayerNorm2d
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        )
        self.up8 = nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)
        self.down32 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.feature_channels = [dim // 4, dim // 2, dim, dim]
        stages = [under("trunk", names) for names in _vit_stages(trunk)]
        stages[3].append("trunk.norm")  # the stride-16 map every level comes from is normed
        describe_stages(self, stages, neck=["up4", "up8", "down32"])

    @property
    def checkpoint_target(self) -> nn.Module:
        """timm ViT checkpoints fit the trunk (a property, so state_dict() has each key once)."""
        return self.trunk

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        (c16,) = self.trunk.forward_intermediates(
            x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        # A head that reads only some levels (RetinaNet: strides 8-32) sets ``compute_levels``
        # so the stride-4 deconvolutions are not run for nothing.
        levels = getattr(self, "compute_levels", (0, 1, 2, 3))
        return [self.up4(c16) if 0 in levels else None, self.up8(c16) if 1 in levels else None, c16,
                self.down32(c16)]


class ResNetFeatures(nn.Module):
    """timm ResNet's four stages (strides 4-32) as a list; parameter names are timm's."""

    feature_strides = [4, 8, 16, 32]

    def __init__(self, timm_name: str):
        super().__init__()
        self.body = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
        self.feature_channels = list(self.body.feature_info.channels())
        assert list(self.body.feature_info.reduction()) == self.feature_strides
        describe_stages(self, [under("body", names) for names in _resnet_stages(self.body)])

    @property
    def checkpoint_target(self) -> nn.Module:
        """timm ResNet checkpoints fit the body (a property, so state_dict() has each key once)."""
        return self.body

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


def _present(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if getattr(model, n, None) is not None]


def _vit_stages(vit: nn.Module) -> list[list[str]]:
    """Four equal block groups (the last takes any remainder); the embedding joins the first."""
    depth, q = len(vit.blocks), len(vit.blocks) // 4
    bounds = [0, q, 2 * q, 3 * q, depth]
    groups = [[f"blocks.{j}" for j in range(bounds[g], bounds[g + 1])] for g in range(4)]
    embed = ("patch_embed", "cls_token", "reg_token", "pos_embed", "pos_drop", "patch_drop", "norm_pre")
    groups[0] = _present(vit, embed) + groups[0]
    return groups


def _resnet_stages(resnet: nn.Module) -> list[list[str]]:
    return timm_stages(resnet, stem=["conv1", "bn1", "act1", "maxpool"])


def _vit(name: str, num_classes: int, features_only: bool) -> nn.Module:
    trunk = timm.create_model(
        VIT_VARIANTS[name], pretrained=False, num_classes=0 if features_only else num_classes, dynamic_img_size=True
    )
    if features_only:
        return SimpleFeaturePyramid(trunk)
    head = _present(trunk, ("norm", "fc_norm", "attn_pool", "head_drop", "head"))
    return describe_stages(trunk, _vit_stages(trunk), head=head)


def _resnet(name: str, num_classes: int, features_only: bool) -> nn.Module:
    if features_only:
        return ResNetFeatures(RESNET_VARIANTS[name])
    model = timm.create_model(RESNET_VARIANTS[name], pretrained=False, num_classes=num_classes)
    return describe_stages(model, _resnet_stages(model), head=["global_pool", "fc"])


@register_model("vit")
def vit_t(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _vit("vit_t", num_classes, features_only)


@register_model("vit")
def vit_s(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _vit("vit_s", num_classes, features_only)


@register_model("vit")
def vit_b(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _vit("vit_b", num_classes, features_only)


@register_model("resnet")
def resnet18(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _resnet("resnet18", num_classes, features_only)


@register_model("resnet")
def resnet50(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _resnet("resnet50", num_classes, features_only)


@register_model("resnet")
def resnet101(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _resnet("resnet101", num_classes, features_only)
