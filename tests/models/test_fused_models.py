"""Zoo models built with fused=True run the real Triton kernels (under the interpreter on CPU) and match the
unfused model. Run in a child process: TRITON_INTERPRET is fixed when triton is first imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests_helpers import ROOT

CHILD = r"""
import json, sys, torch
from torch import nn
from archbench.models import create_model
import archbench.kernels.attention, archbench.kernels.conv_bn_relu, archbench.kernels.rms_norm

def _no_fallback(*a, **k):
    raise AssertionError("the torch reference ran instead of the Triton kernel")

# The fused path must launch Triton: make every reference fallback an error.
archbench.kernels.attention.attention_reference = _no_fallback
archbench.kernels.conv_bn_relu.conv_bn_act_reference = _no_fallback
archbench.kernels.rms_norm.rms_norm_reference = _no_fallback

torch.manual_seed(0)
name, knobs = sys.argv[1], json.loads(sys.argv[2])
plain = create_model(name, **knobs).eval()
for m in plain.modules():  # non-trivial BN statistics, so a wrong fold shows
    if isinstance(m, nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
fused = create_model(name, fused=True, **knobs).eval()
fused.load_state_dict(plain.state_dict())
x = plain.input_spec.make(batch=2, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    a, b = plain(x), fused(x)
print(json.dumps({"max_abs_err": float((a - b).abs().max()), "scale": float(a.abs().max())}))
"""


@pytest.mark.parametrize(
    "name, knobs",
    [
        ("resnet_s", {"width": 0.25, "resolution": 24}),  # conv+BN+ReLU kernel (and the BN fold)
        ("llama_tiny", {"width": 0.5, "seq_len": 19}),  # RMSNorm + causal attention kernels, odd length
        ("vit_s", {"width": 0.5, "resolution": 24, "depth": 1}),  # non-causal attention, 10 tokens
    ],
)
def test_fused_zoo_model_matches_unfused_with_real_kernels(name: str, knobs: dict) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD, name, json.dumps(knobs)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["max_abs_err"] <= 1e-4 * max(1.0, out["scale"]), out
