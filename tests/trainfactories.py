"""Models for tests/test_train.py, named as ``trainfactories:NAME`` (the tests run archbench from this folder)."""

from __future__ import annotations

import torch
from torch import nn

from archbench.models import InputSpec

MIB_PER_SAMPLE = 64  # BigActivation's forward touches this much memory per sample


class BigActivation(nn.Module):
    """x: (B, 8) -> (B, 4). The forward fills a (B, MIB_PER_SAMPLE MiB) fp32 buffer and reduces it, so the peak
    memory of a step is (fixed) + B x MIB_PER_SAMPLE MiB: a model whose memory per sample is known and large."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)
        self.input_spec = InputSpec((1, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buf = torch.ones(x.shape[0], MIB_PER_SAMPLE * 2**20 // 4)  # (B, 16 Mi) fp32: every page touched
        return self.lin(x) + buf.sum(dim=1, keepdim=True) * 0.0


def big_activation() -> nn.Module:
    return BigActivation()


class Regressor(nn.Module):
    """x: (B, 6) -> (B, 3, 2): an output no classification rule fits, so training uses MSE."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.input_spec = InputSpec((1, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).view(-1, 3, 2)


def regressor() -> nn.Module:
    return Regressor()
