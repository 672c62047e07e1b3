"""VGG-style CNN (Simonyan & Zisserman 2015, with BatchNorm): stacks of 3x3 conv-BN-ReLU and 2x2 max pools.

x: (B, 3, R, R) -> logits (B, num_classes). Stage i runs ``depth`` convs at ``channels[i]`` and is followed by
a 2x2/2 max pool, except the last stage, which is followed by global average pooling and one Linear head
(instead of VGG's 4096-wide FC layers, which would dwarf the convs at small resolutions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from archbench.models._layers import ConvBNAct, make_divisible
from archbench.models._registry import InputSpec, register_model


@dataclass(frozen=True)
class VGGConfig:
    channels: tuple[int, ...] = (32, 64, 128, 256)  # output channels per stage before `width` scaling
    depth: int = 2  # 3x3 convs per stage (every stage); VGG-11..19 use 1-4
    resolution: int = 64  # input height = width in pixels; activations halve per stage
    num_classes: int = 10  # output logits
    width: float = 1.0  # channel multiplier; channels are rounded to a multiple of 8
    fused: bool = False  # conv+BN+ReLU through kernels.conv_bn_relu in eval mode

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"VGG depth must be >= 1, got {self.depth}")


class VGG(nn.Module):
    """x: (B, 3, R, R) -> (B, num_classes)."""

    def __init__(self, cfg: VGGConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        in_ch = 3
        for i, c in enumerate(cfg.channels):
            out_ch = make_divisible(c * cfg.width)
            for _ in range(cfg.depth):
                layers.append(ConvBNAct(in_ch, out_ch, 3, act="relu", fused=cfg.fused))
                in_ch = out_ch
            if i < len(cfg.channels) - 1:
                layers.append(nn.MaxPool2d(2, 2))  # (B, C, H, W) -> (B, C, H//2, W//2)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_ch, cfg.num_classes)
        self.input_spec = InputSpec((1, 3, cfg.resolution, cfg.resolution))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, R, R) float -> logits (B, num_classes)."""
        x = self.features(x)  # (B, C_last, R / 2^(stages-1), same)
        return self.head(torch.flatten(self.pool(x), 1))


@register_model
def vgg_s(width: float = 1.0, depth: int = 2, resolution: int = 64, num_classes: int = 10,
          fused: bool = False) -> VGG:
    """VGG small: 4 stages of 2 convs, 32-256 channels, 64 px."""
    return VGG(VGGConfig(channels=(32, 64, 128, 256), depth=depth, resolution=resolution,
                         num_classes=num_classes, width=width, fused=fused))


@register_model
def vgg_m(width: float = 1.0, depth: int = 2, resolution: int = 96, num_classes: int = 10,
          fused: bool = False) -> VGG:
    """VGG medium: 5 stages of 2 convs, 32-512 channels, 96 px."""
    return VGG(VGGConfig(channels=(32, 64, 128, 256, 512), depth=depth, resolution=resolution,
                         num_classes=num_classes, width=width, fused=fused))
