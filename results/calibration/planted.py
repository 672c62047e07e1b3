"""A model with a planted, calibrated slowdown, for results/calibration/calibrate.py's power trials.

``planted:model`` builds an MLP whose forward runs its layers ``BASE_PASSES`` times, plus a fraction more when
ARCHBENCH_PLANTED_SLOWDOWN is set (0.10 -> 10% more passes: 10% more work). The env var, not a knob, so that the
slowed model is the *same cell* (same name, same knobs) that compare pairs with the baseline run.
``planted:unchanged`` is the same model that ignores the env var: the baseline of an in-run comparison
(``archbench run planted:unchanged planted:model --baseline planted:unchanged``).
"""

from __future__ import annotations

import os

import torch
from torch import nn

BASE_PASSES = 40


class Planted(nn.Module):
    def __init__(self, passes: int) -> None:
        super().__init__()
        self.passes = passes
        self.body = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.passes):
            x = self.body(x) * 0.5
        return x


def model() -> tuple[nn.Module, torch.Tensor]:
    extra = float(os.environ.get("ARCHBENCH_PLANTED_SLOWDOWN", "0"))
    return Planted(round(BASE_PASSES * (1 + extra))), torch.randn(1, 256)


def unchanged() -> tuple[nn.Module, torch.Tensor]:
    return Planted(BASE_PASSES), torch.randn(1, 256)
