"""The kernels compile for an H100 (sm_90) exactly as their launchers would launch them -- without a GPU.

``kernels._aot.compile_launches`` runs the real launchers with CPU tensors; every launch is compiled by Triton's
full pipeline for cuda:sm_90 (down to a cubin with the ptxas shipped in the triton wheel) and then skipped.
This catches what the interpreter cannot: compiled-frontend type errors, bf16 tl.dot, shared memory over the
per-block limit, register spills (ptxas -v), loads that are not software-pipelined (no cp.async), and
fp16/bf16 dots that did not become Hopper wgmma instructions. It says nothing about speed or device numerics (that needs a GPU session).

The compile runs in a child process: Triton fixes interpreter/compiled mode at ``import triton``, and
test_kernels.py may have imported it to interpret in this process. ``python tests/test_kernels_compile.py``
prints the same summary as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCH = 90


def _launches() -> dict:
    """case id -> (callable running the launcher with CPU tensors, uses tl.dot). Shapes are GPU-realistic."""
    import torch

    from archbench.kernels import attention as A
    from archbench.kernels import conv_bn_relu as C
    from archbench.kernels import rms_norm as R

    def attn(dtype, d, causal, backward):
        def run():
            q = torch.randn(2, 4, 300, d, dtype=dtype)  # 300: not a multiple of any block -> tail masks
            o, lse = A._attn_fwd(q, q, q, causal, d**-0.5)
            if backward:
                A._attn_bwd(q, q, q, q, q, lse, causal, d**-0.5)

        return run

    def conv(dtype, c, k, ks, channels_last):
        def run():
            x = torch.randn(2, c, 28, 28, dtype=dtype)
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            C._conv_bn_act_triton(x, torch.randn(k, c, ks, ks, dtype=dtype), torch.randn(k), (1, 1),
                                  (ks // 2, ks // 2), (1, 1), "relu")

        return run

    def rms(dtype, n):
        def run():
            x = torch.randn(64, n, dtype=dtype)
            y, rstd = R._rms_norm_fwd(x, torch.randn(n, dtype=dtype), 1e-6)
            R._rms_norm_bwd(torch.randn_like(x), x, torch.randn(n, dtype=dtype), rstd)

        return run

    f16, bf16 = torch.float16, torch.bfloat16
    return {
        "attn-fp16-d64-causal-fwd+bwd": (attn(f16, 64, True, True), True),
        "attn-bf16-d128-full-fwd+bwd": (attn(bf16, 128, False, True), True),
        "attn-fp16-d80-causal-fwd": (attn(f16, 80, True, False), True),
        "conv-bf16-3x3-c64-k128-nchw": (conv(bf16, 64, 128, 3, False), True),
        "conv-fp16-1x1-c256-k64-nhwc": (conv(f16, 256, 64, 1, True), True),
        "rms-bf16-n4096": (rms(bf16, 4096), False),
        "rms-fp16-n5120": (rms(f16, 5120), False),
    }


def _compile_all() -> dict:
    """Child-process side: compile every case, record per-launch facts (or the error) as plain data."""
    from archbench.kernels._aot import SHARED_MEMORY_LIMIT, compile_launches

    results = {}
    for case, (run, uses_dot) in _launches().items():
        try:
            with compile_launches(ARCH) as launches:
                run()
            results[case] = {
                "uses_dot": uses_dot,
                "launches": [
                    {"name": c.name, "shared": c.shared_bytes, "num_warps": c.num_warps,
                     "async_copies": c.ttgir_count("async_copy_global_to_local"),
                     "wgmma": c.ttgir_count("warp_group_dot"),
                     "tl_dot": "tt.dot" in c.kernel.asm["ttir"], **c.ptxas_usage(ARCH)}
                    for c in launches
                ],
            }
        except Exception as exc:  # recorded and asserted on by the parent test, which prints it
            results[case] = {"error": f"{type(exc).__name__}: {exc}"}
    results["_limit"] = SHARED_MEMORY_LIMIT[ARCH]
    return results


@pytest.fixture(scope="module")
def compiled():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences Triton 3.9's deprecation warning in the child
    out = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=570)
    if out.returncode != 0:
        pytest.fail(f"AOT compile child failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


CASE_IDS = [
    "attn-fp16-d64-causal-fwd+bwd",
    "attn-bf16-d128-full-fwd+bwd",
    "attn-fp16-d80-causal-fwd",
    "conv-bf16-3x3-c64-k128-nchw",
    "conv-fp16-1x1-c256-k64-nhwc",
    "rms-bf16-n4096",
    "rms-fp16-n5120",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASE_IDS)
def test_compiles_for_sm90(compiled, case):
    result = compiled[case]
    assert "error" not in result, f"{case}: {result.get('error')}"
    assert result["launches"], f"{case}: no kernel was launched"
    limit = compiled["_limit"]
    for launch in result["launches"]:
        where = f"{case} / {launch['name']}"
        assert launch["shared"] <= limit, f"{where}: {launch['shared']} B shared memory > {limit} B on sm_{ARCH}"
        # these are the configurations that matter for speed: ptxas must fit them in registers
        assert launch["spill_stores"] == 0, f"{where}: {launch['spill_stores']} B of register spills " \
                                            f"({launch['registers']} registers/thread, {launch['num_warps']} warps)"
        if launch["tl_dot"]:
            # fp16/bf16 operands: Hopper warpgroup MMA, fed by cp.async-pipelined loads (num_stages > 1)
            assert launch["wgmma"] > 0, f"{where}: tl.dot did not lower to wgmma"
            assert launch["async_copies"] > 0, f"{where}: loads were not software-pipelined"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(_compile_all()))
