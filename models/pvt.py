"""Pyramid Vision Transformer v1 (Wang et al., ICCV 2021), written from the paper.

Four stages; stage i embeds patches of size P_i into C_i channels, adds a position embedding and
runs L_i encoder blocks. Each block's attention shrinks K/V spatially by R_i with a strided conv
(kernel = stride = R_i) followed by LayerNorm ("spatial-reduction attention"), and its MLP widens
by E_i. Parameter names and LayerNorm eps follow the official release so that its checkpoints load
unchanged (block/final norms eps 1e-6, patch-embedding and reduction norms PyTorch's 1e-5).

Speed notes (a slow PVT makes PVT look bad): attention runs through
``F.scaled_dot_product_attention``; tokens are reshaped to NCHW as strided views (channels-last
memory, no ``.contiguous()`` copy), and the convs downstream keep that layout.

``pvt_tiny_nosr`` / ``pvt_small_nosr`` are the ablation without spatial reduction (R_i = 1 in
every stage: full attention, no ``sr`` conv, no reduction norm). They load their parent's
official checkpoint: strictly but for the ``attn.sr`` / ``attn.norm`` keys, which are reported
in ``checkpoint_unused_keys``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from models.features import describe_stages
from models.registry import register_model

BLOCK_NORM = partial(nn.LayerNorm, eps=1e-6)  # norm1, norm2, final norm (official release)


@dataclass(frozen=True)
class PvtConfig:
    """The paper's hyper-parameters, one tuple entry per stage (Table 1)."""

    depths: tuple[int, int, int, int]  # L_i
    patch_sizes: tuple[int, ...] = (4, 2, 2, 2)  # P_i
    embed_dims: tuple[int, ...] = (64, 128, 320, 512)  # C_i
    num_heads: tuple[int, ...] = (1, 2, 5, 8)  # N_i
    mlp_ratios: tuple[int, ...] = (8, 8, 4, 4)  # E_i
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)  # R_i
    qkv_bias: bool = True
    pretrain_img_size: int = 224  # position embeddings are stored on this grid


PVT_CONFIGS = {
    "pvt_tiny": PvtConfig(depths=(2, 2, 2, 2)),
    "pvt_small": PvtConfig(depths=(3, 4, 6, 3)),
    "pvt_medium": PvtConfig(depths=(3, 4, 18, 3)),
    "pvt_large": PvtConfig(depths=(3, 8, 27, 3)),
}
NO_SR = (1, 1, 1, 1)
PVT_CONFIGS["pvt_tiny_nosr"] = replace(PVT_CONFIGS["pvt_tiny"], sr_ratios=NO_SR)
PVT_CONFIGS["pvt_small_nosr"] = replace(PVT_CONFIGS["pvt_small"], sr_ratios=NO_SR)
SR_KEYS = r"block\d+\.\d+\.attn\.(sr|norm)\.(weight|bias)$"  # what a no-SR model leaves of a checkpoint


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from a map shrunk R times per side."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        # Like timm's ``fused_attn``: False computes softmax(q k^T / sqrt(d)) v with explicit
        # matmuls, the path an independent FLOP counter can see without a formula of ours.
        self.fused_attn = True
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            # (B, N, C) -> NCHW view in channels-last memory; the conv reads it without a copy.
            x = self.sr(x.view(B, H, W, C).permute(0, 3, 1, 2))
            x = self.norm(x.flatten(2).transpose(1, 2))
        kv = self.kv(x).view(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = (q * self.head_dim**-0.5 @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer encoder block with spatial-reduction attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int, qkv_bias: bool):
        super().__init__()
        self.norm1 = BLOCK_NORM(dim)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias)
        self.norm2 = BLOCK_NORM(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches -> C channels, then LayerNorm (eps 1e-5 as released)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class PyramidVisionTransformer(nn.Module):
    """PVT v1. ``features_only`` drops the class token, final norm and head (as the official
    detection backbone does) and returns the four stage maps; parameter names stay those of the
    classification model so an ImageNet checkpoint fills every parameter."""

    feature_strides = [4, 8, 16, 32]

    def __init__(self, cfg: PvtConfig, num_classes: int = 1000, features_only: bool = False):
        super().__init__()
        self.cfg = cfg
        self.features_only = features_only
        self.feature_channels = list(cfg.embed_dims)
        self.num_stages = len(cfg.depths)
        stride, in_chans = 1, 3
        self.pos_grids: list[int] = []
        for i in range(self.num_stages):
            stride *= cfg.patch_sizes[i]
            grid = cfg.pretrain_img_size // stride
            self.pos_grids.append(grid)
            num_pos = grid * grid + (1 if i == self.num_stages - 1 else 0)  # + class-token slot
            dim = cfg.embed_dims[i]
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(cfg.patch_sizes[i], in_chans, dim))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, num_pos, dim)))
            setattr(
                self,
                f"block{i + 1}",
                nn.ModuleList(
                    Block(dim, cfg.num_heads[i], cfg.mlp_ratios[i], cfg.sr_ratios[i], cfg.qkv_bias)
                    for _ in range(cfg.depths[i])
                ),
            )
            in_chans = dim
        if not features_only:
            self.norm = BLOCK_NORM(cfg.embed_dims[-1])
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dims[-1]))
            self.head = nn.Linear(cfg.embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
            trunc_normal_(self.cls_token, std=0.02)
        for i in range(self.num_stages):
            trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        self.apply(self._init_weights)
        # pos_embed{i} is a parameter of this module, listed by its own name (see stage_prefixes).
        describe_stages(
            self,
            [[f"patch_embed{i}", f"pos_embed{i}", f"block{i}"] for i in range(1, self.num_stages + 1)],
            head=[] if features_only else ["cls_token", "norm", "head"],
        )

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _pos_embed(self, stage: int, H: int, W: int) -> torch.Tensor:
        """Stage position embedding for an H x W grid: bilinear from the stored 224 grid."""
        pos = getattr(self, f"pos_embed{stage + 1}")
        if stage == self.num_stages - 1:
            pos = pos[:, 1:]  # slot 0 belongs to the class token
        grid = self.pos_grids[stage]
        if (H, W) == (grid, grid):
            return pos
        pos = pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(H, W), mode="bilinear")
        return pos.flatten(2).transpose(1, 2)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        B = x.shape[0]
        maps: list[torch.Tensor] = []
        last = self.num_stages - 1
        for i in range(self.num_stages):
            x, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            pos = self._pos_embed(i, H, W)
            if i == last and not self.features_only:
                pos4 = getattr(self, f"pos_embed{i + 1}")
                x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
                pos = torch.cat((pos4[:, :1], pos), dim=1)
            x = x + pos
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, H, W)
            if i == last and not self.features_only:
                return self.norm(x)[:, 0]
            # NCHW view in channels-last memory; the next patch-embedding conv reads it directly.
            x = x.view(B, H, W, -1).permute(0, 3, 1, 2)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        out = self.forward_features(x)
        return out if self.features_only else self.head(out)


def _build(name: str, num_classes: int, features_only: bool) -> PyramidVisionTransformer:
    return PyramidVisionTransformer(PVT_CONFIGS[name], num_classes, features_only)


def _build_nosr(name: str, num_classes: int, features_only: bool) -> PyramidVisionTransformer:
    model = _build(name, num_classes, features_only)
    model.checkpoint_skippable = SR_KEYS  # its checkpoints are its parent's, sr/norm keys unused
    return model


@register_model("pvt")
def pvt_tiny(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _build("pvt_tiny", num_classes, features_only)


@register_model("pvt")
def pvt_small(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _build("pvt_small", num_classes, features_only)


@register_model("pvt")
def pvt_medium(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _build("pvt_medium", num_classes, features_only)


@register_model("pvt")
def pvt_large(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _build("pvt_large", num_classes, features_only)


@register_model("pvt")
def pvt_tiny_nosr(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _build_nosr("pvt_tiny_nosr", num_classes, features_only)


@register_model("pvt")
def pvt_small_nosr(num_classes: int = 1000, features_only: bool = False) -> nn.Module:
    return _build_nosr("pvt_small_nosr", num_classes, features_only)
