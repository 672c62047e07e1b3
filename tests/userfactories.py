"""Factories a user could name as ``userfactories:NAME`` (tests run archbench with this folder as cwd)."""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def good() -> nn.Module:
    """No input_spec: needs --input-shape."""
    return _Small()


def good_with_inputs() -> tuple[nn.Module, torch.Tensor]:
    return _Small(), torch.randn(1, 3, 20, 20)


def raises() -> nn.Module:
    raise RuntimeError("factory exploded on purpose")


def not_a_module() -> int:
    return 42


class _Raises(_Small):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:  # batch 1 works (so the static counts pass), batch 2 raises
            raise ValueError("forward refuses batch > 1")
        return super().forward(x)


class _Sleeps(_Small):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            time.sleep(3600)
        return super().forward(x)


class _Dies(_Small):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return super().forward(x)


def forward_raises() -> tuple[nn.Module, torch.Tensor]:
    return _Raises(), torch.randn(1, 3, 16, 16)


def forward_sleeps() -> tuple[nn.Module, torch.Tensor]:
    return _Sleeps(), torch.randn(1, 3, 16, 16)


def forward_dies() -> tuple[nn.Module, torch.Tensor]:
    return _Dies(), torch.randn(1, 3, 16, 16)
