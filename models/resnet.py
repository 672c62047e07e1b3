"""ResNet (He et al. 2016) with basic or bottleneck blocks and optional squeeze-excitation (Hu et al. 2018).

x: (B, 3, R, R) -> logits (B, num_classes). Layout as torchvision's ``resnet.py`` (the "v1.5" variant that
strides the bottleneck's 3x3 conv):

    stem   conv7x7/2 (3 -> C0) BN ReLU, maxpool 3x3/2          R -> R/4
    stage  blocks; the first block of stages 2-4 strides by 2 and projects the shortcut (conv1x1 + BN)
    head   global average pool, Linear(C_last * expansion -> num_classes)

``resnet18`` and ``resnet50`` reproduce torchvision's models parameter for parameter (11,689,512 and
25,557,032 at 1000 classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archbench.models._layers import ConvBNAct, make_divisible
from archbench.models._registry import InputSpec, register_model


@dataclass(frozen=True)
class ResNetConfig:
    block: str = "basic"  # "basic" (two 3x3 convs, expansion 1) or "bottleneck" (1x1-3x3-1x1, expansion 4)
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage; stages 2.. halve the resolution
    widths: tuple[int, ...] = (64, 128, 256, 512)  # block width ("planes") per stage before `width` scaling
    stem_width: int = 64  # channels of the 7x7 stem conv before `width` scaling
    se: bool = False  # add squeeze-excitation to every block (extra FC params, negligible MACs)
    se_reduction: int = 16  # SE bottleneck = channels / se_reduction, rounded to a multiple of 8 (>= 8)
    resolution: int = 224  # input height = width in pixels
    num_classes: int = 1000  # output logits
    width: float = 1.0  # channel multiplier on stem and stage widths; rounded to a multiple of 8
    fused: bool = False  # conv+BN(+ReLU) through kernels.conv_bn_relu in eval mode

    def __post_init__(self) -> None:
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"unknown ResNet block {self.block!r}; known: basic, bottleneck")
        if len(self.layers) != len(self.widths) or min(self.layers) < 1:
            raise ValueError(
                f"ResNet needs >= 1 block in each of {len(self.widths)} stages, got {self.layers}"
            )


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(avgpool(x))))), the FCs as 1x1 convs with bias. x: (B, C, H, W) -> same."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        squeeze = make_divisible(channels / reduction)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class BasicBlock(nn.Module):
    """conv3x3(stride) BN ReLU, conv3x3 BN, [SE], + shortcut, ReLU. (B, C_in, H, W) -> (B, planes, H/s, W/s)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, se_reduction: int | None, fused: bool) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_ch, planes, 3, stride, act="relu", fused=fused)
        self.conv2 = ConvBNAct(planes, planes, 3, 1, act=None, fused=fused)
        self.se = SqueezeExcite(planes, se_reduction) if se_reduction else None
        self.downsample = (
            ConvBNAct(in_ch, planes, 1, stride, act=None, fused=fused)
            if stride != 1 or in_ch != planes
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """conv1x1 BN ReLU, conv3x3(stride) BN ReLU, conv1x1 BN, [SE], + shortcut, ReLU.

    (B, C_in, H, W) -> (B, 4 * planes, H/s, W/s).
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, se_reduction: int | None, fused: bool) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = ConvBNAct(in_ch, planes, 1, 1, act="relu", fused=fused)
        self.conv2 = ConvBNAct(planes, planes, 3, stride, act="relu", fused=fused)
        self.conv3 = ConvBNAct(planes, out_ch, 1, 1, act=None, fused=fused)
        self.se = SqueezeExcite(out_ch, se_reduction) if se_reduction else None
        self.downsample = (
            ConvBNAct(in_ch, out_ch, 1, stride, act=None, fused=fused)
            if stride != 1 or in_ch != out_ch
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """x: (B, 3, R, R) -> (B, num_classes)."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        block = BasicBlock if cfg.block == "basic" else Bottleneck
        se_reduction = cfg.se_reduction if cfg.se else None
        in_ch = make_divisible(cfg.stem_width * cfg.width)
        self.stem = ConvBNAct(3, in_ch, 7, 2, act="relu", fused=cfg.fused)  # R -> R/2
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # R/2 -> R/4
        stages: list[nn.Module] = []
        for i, (n, w) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            planes = make_divisible(w * cfg.width)
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_ch, planes, stride, se_reduction, cfg.fused))
                in_ch = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, cfg.num_classes)
        self.input_spec = InputSpec((1, 3, cfg.resolution, cfg.resolution))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, R, R) float -> logits (B, num_classes)."""
        x = self.maxpool(self.stem(x))  # (B, C0, R/4, R/4)
        x = self.stages(x)  # (B, C_last, R/32, R/32)
        return self.fc(torch.flatten(self.pool(x), 1))


def _layers(depth: int | None, published: tuple[int, ...]) -> tuple[int, ...]:
    # `depth` sets every stage to `depth` blocks; None keeps the architecture's own per-stage counts.
    return published if depth is None else (depth,) * len(published)


@register_model
def resnet_s(width: float = 1.0, depth: int = 1, resolution: int = 64, num_classes: int = 10,
             fused: bool = False) -> ResNet:
    """ResNet small: basic blocks + SE, widths 32-256, 1 block per stage, 64 px."""
    return ResNet(ResNetConfig(block="basic", layers=_layers(depth, (1, 1, 1, 1)), widths=(32, 64, 128, 256),
                               stem_width=32, se=True, resolution=resolution, num_classes=num_classes,
                               width=width, fused=fused))


@register_model
def resnet_m(width: float = 1.0, depth: int = 2, resolution: int = 96, num_classes: int = 10,
             fused: bool = False) -> ResNet:
    """ResNet medium: bottleneck blocks + SE, widths 32-256 (x4 out), 2 blocks per stage, 96 px."""
    return ResNet(ResNetConfig(block="bottleneck", layers=_layers(depth, (2, 2, 2, 2)),
                               widths=(32, 64, 128, 256), stem_width=32, se=True, resolution=resolution,
                               num_classes=num_classes, width=width, fused=fused))


@register_model
def resnet18(width: float = 1.0, depth: int | None = None, resolution: int = 224, num_classes: int = 1000,
             fused: bool = False) -> ResNet:
    """ResNet-18 exactly as torchvision (11.69M params, 1.81 GMACs at 224); depth None = (2, 2, 2, 2)."""
    return ResNet(ResNetConfig(block="basic", layers=_layers(depth, (2, 2, 2, 2)), widths=(64, 128, 256, 512),
                               stem_width=64, se=False, resolution=resolution, num_classes=num_classes,
                               width=width, fused=fused))


@register_model
def resnet50(width: float = 1.0, depth: int | None = None, resolution: int = 224, num_classes: int = 1000,
             fused: bool = False) -> ResNet:
    """ResNet-50 exactly as torchvision (25.56M params, 4.09 GMACs at 224); depth None = (3, 4, 6, 3)."""
    return ResNet(ResNetConfig(block="bottleneck", layers=_layers(depth, (3, 4, 6, 3)),
                               widths=(64, 128, 256, 512), stem_width=64, se=False, resolution=resolution,
                               num_classes=num_classes, width=width, fused=fused))
