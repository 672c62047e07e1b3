"""Measured MACs (archbench.bench.measure.profile.count_macs) of every zoo model against the closed forms in tests/_analytic.py.

The MAC convention is stated in tests/_analytic.py and bench/profile.py: conv, linear, attention (QK^T + AV,
full square) and RNN gate matmuls; no norms, activations, pooling or elementwise ops.
"""

from __future__ import annotations

from typing import Any

import _analytic
import pytest
import torch

from archbench.bench.measure.profile import count_macs
from archbench.models import create_model, list_models


def _measured(name: str, batch: int = 1, **knobs: Any) -> int:
    model = create_model(name, **knobs).eval()
    x = model.input_spec.make(batch=batch, generator=torch.Generator().manual_seed(0))
    return count_macs(model, (x,))


def _check(name: str, got: int, expected: int) -> None:
    assert got == pytest.approx(expected, rel=0.01), (
        f"{name}: counted {got:,} MACs, formula {expected:,} ({got / expected - 1:+.3%})"
    )


@pytest.mark.parametrize("name", list_models())
def test_macs_match_formula(name: str) -> None:
    _check(name, _measured(name), _analytic.macs(name))


@pytest.mark.parametrize("name, knobs", _analytic.KNOB_CASES, ids=lambda v: str(v))
def test_knob_variation_macs_match_formula(name: str, knobs: dict[str, Any]) -> None:
    _check(name, _measured(name, **knobs), _analytic.macs(name, **knobs))


@pytest.mark.parametrize("name", ["resnet_s", "vit_s", "llama_tiny", "gru_s"])
def test_macs_scale_linearly_with_batch(name: str) -> None:
    assert _measured(name, batch=3) == 3 * _measured(name, batch=1)


@pytest.mark.parametrize("name, n", [("llama_tiny", 32), ("llama_tiny", 45), ("llama_s", 64)])
def test_llama_macs_quadratic_in_seq_len(name: str, n: int) -> None:
    # Everything but attention is linear in N, so macs(2N) - 2 macs(N) is exactly the attention excess:
    # depth * 2 * D * ((2N)^2 - 2 N^2) = depth * 4 * N^2 * D.
    attn_excess = _analytic.attention_macs(name, seq_len=2 * n) - 2 * _analytic.attention_macs(
        name, seq_len=n
    )
    kw = _analytic.arch(name)
    assert attn_excess == kw["depth"] * 4 * n * n * kw["dim"]  # width 1.0: D = dim
    assert _analytic.macs(name, seq_len=2 * n) - 2 * _analytic.macs(name, seq_len=n) == attn_excess
    assert _measured(name, seq_len=2 * n) - 2 * _measured(name, seq_len=n) == attn_excess
