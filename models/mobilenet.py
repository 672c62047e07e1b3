"""MobileNetV2 (Sandler et al. 2018): inverted residuals with depthwise 3x3 convs and linear bottlenecks.

x: (B, 3, R, R) -> logits (B, num_classes). Layout as torchvision's ``mobilenetv2.py``:

    stem   conv3x3/2 (3 -> 32w) BN ReLU6                                        R -> R/2
    blocks stages of (t, c, n, s): n inverted residuals expanding by t to c channels, first one strided by s
           block = [conv1x1 expand BN ReLU6] -> dw conv3x3(stride) BN ReLU6 -> conv1x1 project BN (linear)
           + identity when stride == 1 and C_in == C_out
    last   conv1x1 -> 1280 * max(1, width) BN ReLU6, global average pool, Dropout(0.2), Linear

``mobilenetv2`` reproduces torchvision's width-1.0 model parameter for parameter (3,504,872 at 1000 classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from archbench.models._layers import ConvBNAct, make_divisible
from archbench.models._registry import InputSpec, register_model

# (expansion t, output channels c, repeats n, first stride s) per stage, from Table 2 of the paper.
MOBILENETV2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass(frozen=True)
class MobileNetConfig:
    stages: tuple[tuple[int, int, int, int], ...] = MOBILENETV2_STAGES  # (t, c, n, s) per stage, see above
    depth: int | None = None  # blocks per stage (every stage); None keeps each stage's own `n`
    stem_width: int = 32  # stem conv channels before `width` scaling
    last_width: int = 1280  # final 1x1 conv channels; scaled by max(1, width) (never shrunk, as in the paper)
    dropout: float = 0.2  # before the classifier, as torchvision (no params; inactive in eval mode)
    resolution: int = 224  # input height = width in pixels
    num_classes: int = 1000  # output logits
    width: float = 1.0  # channel multiplier ("width_mult"); channels rounded to a multiple of 8
    fused: bool = False  # non-depthwise conv+BN(+ReLU6) through kernels.conv_bn_relu in eval mode

    def __post_init__(self) -> None:
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"MobileNet depth must be >= 1 or None, got {self.depth}")


class InvertedResidual(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H/s, W/s); hidden width = round(C_in * t)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int, fused: bool) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand))
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act="relu6", fused=fused))  # pointwise expand
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act="relu6", fused=fused),  # depthwise
            ConvBNAct(hidden, out_ch, 1, act=None, fused=fused),  # pointwise project, linear bottleneck
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """x: (B, 3, R, R) -> (B, num_classes)."""

    def __init__(self, cfg: MobileNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        in_ch = make_divisible(cfg.stem_width * cfg.width)
        last_ch = make_divisible(cfg.last_width * max(1.0, cfg.width))
        layers: list[nn.Module] = [ConvBNAct(3, in_ch, 3, 2, act="relu6", fused=cfg.fused)]
        for t, c, n, s in cfg.stages:
            out_ch = make_divisible(c * cfg.width)
            for i in range(n if cfg.depth is None else cfg.depth):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, cfg.fused))
                in_ch = out_ch
        layers.append(ConvBNAct(in_ch, last_ch, 1, act="relu6", fused=cfg.fused))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(last_ch, cfg.num_classes))
        self.input_spec = InputSpec((1, 3, cfg.resolution, cfg.resolution))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # fan_in, not torchvision's fan_out: torch counts a depthwise conv's fan_out as C*k*k (not k*k), which
                # shrinks activations to ~1e-9 at init and underflows fp16 benchmarks to zeros.
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, R, R) float -> logits (B, num_classes)."""
        x = self.features(x)  # (B, last_ch, R/32, R/32)
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model
def mobilenet_s(width: float = 0.5, depth: int | None = 2, resolution: int = 96, num_classes: int = 10,
                fused: bool = False) -> MobileNetV2:
    """MobileNetV2 small: width 0.5, 2 blocks in each of the 7 stages, 96 px."""
    return MobileNetV2(MobileNetConfig(depth=depth, resolution=resolution, num_classes=num_classes,
                                       width=width, fused=fused))


@register_model
def mobilenetv2(width: float = 1.0, depth: int | None = None, resolution: int = 224, num_classes: int = 1000,
                fused: bool = False) -> MobileNetV2:
    """MobileNetV2 exactly as torchvision (3.50M params, 0.30 GMACs at 224); depth None = (1,2,3,4,3,3,1)."""
    return MobileNetV2(MobileNetConfig(depth=depth, resolution=resolution, num_classes=num_classes,
                                       width=width, fused=fused))
