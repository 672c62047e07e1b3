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


def exits() -> nn.Module:
    import sys

    sys.exit(3)  # a factory that calls sys.exit(): reported, not obeyed


def interrupts() -> nn.Module:
    raise KeyboardInterrupt  # a factory that raises KeyboardInterrupt itself


def colours() -> nn.Module:
    raise ValueError("\x1b[31mred alert\x1b[0m from a factory that prints in colour")


class _NaN(_Small):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


def nan_out() -> tuple[nn.Module, torch.Tensor]:
    return _NaN(), torch.randn(1, 3, 16, 16)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.fc(y)


def two_inputs() -> nn.Module:
    """Two inputs and no example: one --input-shape cannot describe it."""
    return _TwoInputs()
