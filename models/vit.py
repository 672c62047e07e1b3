"""Vision Transformer (Dosovitskiy et al. 2021) in the DeiT / timm layout.

x: (B, 3, R, R) -> logits (B, num_classes).

    patch embed  conv P x P / P (3 -> D, with bias)              (B, 3, R, R) -> (B, N-1, D), N-1 = (R/P)^2
    tokens       prepend a learned CLS token, add learned positions (B, N, D)
    blocks       depth x pre-norm [x + MHA(LN(x)), x + MLP(LN(x))], MLP = Linear(D, 4D) GELU Linear(4D, D)
    head         LN, Linear(D -> num_classes) on the CLS token

``vit_tiny`` is DeiT-Ti (D 192, 12 layers, 3 heads, patch 16, 224 px): 5,717,416 params at 1000 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archbench.models._layers import attention, make_divisible
from archbench.models._registry import InputSpec, register_model


@dataclass(frozen=True)
class ViTConfig:
    dim: int = 192  # embedding width D before `width` scaling
    depth: int = 12  # transformer blocks
    heads: int = 3  # attention heads; head dim = D / heads
    patch_size: int = 16  # pixels per patch side; tokens = (resolution / patch_size)^2 + 1 (CLS)
    mlp_ratio: int = 4  # MLP hidden = mlp_ratio * D
    eps: float = 1e-6  # LayerNorm epsilon (timm's ViT value)
    resolution: int = 224  # input height = width in pixels; must be a multiple of patch_size
    num_classes: int = 1000  # output logits
    width: float = 1.0  # multiplier on D, rounded to a multiple of 8 * heads so the head dim stays 8-aligned
    fused: bool = False  # attention through kernels.attention

    def __post_init__(self) -> None:
        if self.resolution % self.patch_size:
            raise ValueError(f"ViT resolution {self.resolution} is not a multiple of patch {self.patch_size}")
        if self.depth < 1:
            raise ValueError(f"ViT depth must be >= 1, got {self.depth}")


class MultiHeadAttention(nn.Module):
    """Bidirectional MHA with a fused qkv projection. x: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads = heads
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        # (B, N, 3D) -> (B, N, 3, H, d) -> (3, B, H, N, d)
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = attention(q, k, v, causal=False, fused=self.fused)  # (B, H, N, d)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """Pre-norm transformer block. x: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, eps: float, fused: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, heads, fused)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """x: (B, 3, R, R) -> (B, num_classes)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = make_divisible(cfg.dim * cfg.width, 8 * cfg.heads)
        num_tokens = (cfg.resolution // cfg.patch_size) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, dim, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.blocks = nn.Sequential(
            *(Block(dim, cfg.heads, cfg.mlp_ratio, cfg.eps, cfg.fused) for _ in range(cfg.depth))
        )
        self.norm = nn.LayerNorm(dim, eps=cfg.eps)
        self.head = nn.Linear(dim, cfg.num_classes)
        self.input_spec = InputSpec((1, 3, cfg.resolution, cfg.resolution))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, R, R) float -> logits (B, num_classes)."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, D, R/P, R/P) -> (B, N-1, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, N, D)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])  # CLS token -> (B, num_classes)


@register_model
def vit_s(width: float = 1.0, depth: int = 6, resolution: int = 64, patch_size: int = 8,
          num_classes: int = 10, fused: bool = False) -> ViT:
    """ViT small: DeiT-Ti width (D 192, 3 heads), 6 layers, patch 8 on 64 px (65 tokens)."""
    return ViT(ViTConfig(dim=192, depth=depth, heads=3, patch_size=patch_size, resolution=resolution,
                         num_classes=num_classes, width=width, fused=fused))


@register_model
def vit_tiny(width: float = 1.0, depth: int = 12, resolution: int = 224, patch_size: int = 16,
             num_classes: int = 1000, fused: bool = False) -> ViT:
    """ViT-Tiny / DeiT-Ti exactly (5.72M params, 1.26 GMACs at 224, 197 tokens)."""
    return ViT(ViTConfig(dim=192, depth=depth, heads=3, patch_size=patch_size, resolution=resolution,
                         num_classes=num_classes, width=width, fused=fused))
