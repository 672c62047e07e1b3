"""MLP for tabular input: ``depth`` x (Linear -> ReLU), then a Linear classifier.

x: (B, in_features) float32 -> logits (B, num_classes). The baseline of the zoo: pure GEMV/GEMM, no
convolutions, no attention, so it shows the framework overhead floor of a runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from archbench.models._layers import make_divisible
from archbench.models._registry import InputSpec, register_model


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 64  # features per row of the table; sets the input spec (B, in_features)
    hidden: int = 256  # hidden units per layer before `width` scaling (then rounded to a multiple of 8)
    depth: int = 2  # number of hidden Linear+ReLU layers (>= 1); the classifier is extra
    num_classes: int = 10  # output logits
    width: float = 1.0  # multiplier on `hidden`: the knob that trades accuracy for GEMM size
    fused: bool = False  # accepted for a uniform CLI; no fused kernel applies to an MLP

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {self.depth}")


class MLP(nn.Module):
    """x: (B, in_features) -> (B, num_classes)."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = make_divisible(cfg.hidden * cfg.width)
        layers: list[nn.Module] = []
        in_f = cfg.in_features
        for _ in range(cfg.depth):
            layers += [nn.Linear(in_f, hidden), nn.ReLU(inplace=True)]
            in_f = hidden
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, cfg.num_classes)
        self.input_spec = InputSpec((1, cfg.in_features))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_features) float -> logits (B, num_classes)."""
        return self.head(self.layers(x))


@register_model
def mlp_s(width: float = 1.0, depth: int = 2, in_features: int = 64, num_classes: int = 10,
          fused: bool = False) -> MLP:
    """MLP small: 64 features -> 2 x 256 hidden -> 10 classes."""
    return MLP(MLPConfig(in_features=in_features, hidden=256, depth=depth, num_classes=num_classes,
                         width=width, fused=fused))


@register_model
def mlp_m(width: float = 1.0, depth: int = 4, in_features: int = 256, num_classes: int = 10,
          fused: bool = False) -> MLP:
    """MLP medium: 256 features -> 4 x 1024 hidden -> 10 classes."""
    return MLP(MLPConfig(in_features=in_features, hidden=1024, depth=depth, num_classes=num_classes,
                         width=width, fused=fused))
