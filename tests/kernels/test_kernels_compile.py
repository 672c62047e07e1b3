"""Ahead-of-time resource test: every launcher configuration compiles for sm_80 (A100) and sm_90 (H100/H200) at the
supported shape limits without register spills, within the shared-memory limit, with tl.dot on tensor cores and
pipelined loads -- without a GPU.

``kernels._aot.compile_launches`` runs the real launchers with CPU tensors; every launch is compiled by Triton's
full pipeline for cuda:sm_<arch> (down to a cubin with the ptxas shipped in the triton wheel) and then skipped.
This catches what the interpreter cannot: compiled-frontend type errors, bf16 tl.dot, shared memory over the
per-block limit, register spills (ptxas -v), loads that are not software-pipelined (no cp.async), fp16/bf16 dots
that did not become tensor-core instructions (wgmma on sm_90, mma.sync on sm_80), and bounds masks left on the
loads of the even-size attention path. It says nothing about speed or device numerics (that needs a GPU).

Configurations (``_cases``): each launcher heuristic's branches, each at its largest shape, where registers are
tightest:

    rms_norm     fp32 / bf16 x N in {2048 (4 warps), 4096 (8), 8192 (16), 16384 (32), 32768, 65536
                 (= MAX_FUSED_SIZE)}: every whole-row block size at its largest per num_warps, and the chunked
                 path; forward and backward
    attention    forward + backward of bf16 and fp32 at d = 64 and 128 (the two tile classes at their largest head
                 dim), causal with N = 300 (both causal phases, key and query tails); bf16 d = 128 non-causal with
                 N = 256 (the unmasked even-size path); bf16 d = 80 forward (padded, masked head dim)
    conv_bn_act  fp32 (TF32, torch's cuDNN default) / bf16 x {128x128 tile at 8 warps (3x3, C=K=256), 128x64 at
                 4 warps (1x1, K=64), 64x128 at 4 warps (49 pixels, K=2048), the 16-channel stem (7x7/2, C=3)}

``ARCHBENCH_AOT_FULL=1`` adds fp16 everywhere, every (causal, even) pair for every attention dtype and head dim,
strict fp32 next to TF32, and on sm_90 the attention tile candidates that ``archbench kernels`` times beside ours
(``cand-``: kernelbench_cases.ATTENTION_CANDIDATES): about 3x the compile time (minutes on 2 CPUs). Both architectures compile in
parallel child processes (Triton fixes interpreter/compiled mode at ``import triton``, and test_kernels.py may
have imported it to interpret).

``python tests/test_kernels_compile.py --table [--full]`` prints the resource table as markdown;
``--arch 90 [--full]`` prints one architecture's results as JSON (what the fixture reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository (this file also runs as a script: no test helpers)

ARCHS = (80, 90)
FULL = os.environ.get("ARCHBENCH_AOT_FULL", "") == "1"
# Launch constants worth showing in the table (the tile sizes and the specializations that change the code).
SHOWN_CONSTANTS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_D", "HEAD_DIM", "NUM_PHASES", "CAUSAL", "EVEN_N",
                   "EVEN_M", "INPUT_PRECISION", "KH", "KW")


def _cases(full: bool) -> dict[str, tuple[Callable[[], None], bool]]:
    """case id -> (callable running the launchers with CPU tensors, expect unmasked K/V/Q loads (even path))."""
    import torch

    from archbench.kernels import attention as A
    from archbench.kernels import conv_bn_relu as C
    from archbench.kernels import rms_norm as R

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    cases: dict[str, tuple[Callable[[], None], bool]] = {}

    def rms(dtype, n):
        def run():
            x = torch.randn(4, n, dtype=dtype)
            w = torch.randn(n, dtype=dtype)
            y, rstd = R._rms_norm_fwd(x, w, 1e-6)
            R._rms_norm_bwd(torch.randn_like(x), x, w, rstd)

        return run

    for name in ("fp32", "bf16", "fp16") if full else ("fp32", "bf16"):
        for n in (2048, 4096, 8192, 16384, 32768, R.MAX_FUSED_SIZE):
            cases[f"rms-{name}-n{n}"] = (rms(dtypes[name], n), False)

    def attn(dtype, d, n, causal, tf32, backward=True):
        def run():
            saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                q = torch.randn(1, 2, n, d, dtype=dtype)
                o, lse = A._attn_fwd(q, q, q, causal, d**-0.5)
                if backward:
                    A._attn_bwd(q, q, q, q, q, lse, causal, d**-0.5)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = saved

        return run

    # N = 256: a multiple of every key/query block (the even path) and > BLOCK_M = 128, so causal query blocks
    # have off-diagonal key blocks (phase 0); N = 300: tails everywhere. (dtype, tf32, d, causal, N):
    attn_cases = [("bf16", False, 64, True, 300), ("bf16", False, 128, True, 300), ("bf16", False, 128, False, 256),
                  ("fp32", False, 64, True, 300), ("fp32", False, 128, True, 300)]
    if full:
        attn_cases = [(name, tf32, d, causal, n) for name in ("bf16", "fp16", "fp32")
                      for tf32 in ((False, True) if name == "fp32" else (False,)) for d in (64, 128)
                      for causal in (True, False) for n in (300, 256)]
    for name, tf32, d, causal, n in attn_cases:
        prec = ("-tf32" if tf32 else "-ieee") if name == "fp32" else ""
        cases[f"attn-{name}{prec}-d{d}-{'causal' if causal else 'full'}-n{n}"] = (
            attn(dtypes[name], d, n, causal, tf32), n % 128 == 0)
    # archbench kernels' tile candidates (kernelbench_cases.ATTENTION_CANDIDATES), timed on sm_90 only
    def candidates(causal, n):
        def run():
            from archbench.bench.kernels.cases import ATTENTION_CANDIDATES

            q = torch.randn(1, 2, n, 128, dtype=torch.bfloat16)
            for _, applies, tiles in ATTENTION_CANDIDATES:
                if applies(128, causal, True):
                    with A.tile_config(**tiles):
                        o, lse = A._attn_fwd(q, q, q, causal, 128**-0.5)
                        A._attn_bwd(q, q, q, q, q, lse, causal, 128**-0.5, tiles.get("bwd"))

        return run

    if full:
        cases["cand-attn-bf16-d128-full-n256"] = (candidates(False, 256), True)
        cases["cand-attn-bf16-d128-causal-n300"] = (candidates(True, 300), False)
    # a head dim that is not a power of two: padded to 128 and masked (same tiles as d = 128; forward only)
    cases["attn-bf16-d80-causal-n300-fwd"] = (attn(torch.bfloat16, 80, 300, True, False, backward=False), False)

    def conv(dtype, n, c, hw, k, ks, stride, tf32):
        def run():
            saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                x = torch.randn(n, c, hw, hw, dtype=dtype)
                C._conv_bn_act_triton(x, torch.randn(k, c, ks, ks, dtype=dtype), torch.randn(k), (stride, stride),
                                      (ks // 2, ks // 2), (1, 1), "relu")
            finally:
                torch.backends.cudnn.allow_tf32 = saved

        return run

    convs = {
        "3x3-c256-k256": (2, 256, 14, 256, 3, 1),  # BLOCK 128 x 128 x 64 (fp32: x 32), 8 warps
        "1x1-c256-k64": (2, 256, 14, 64, 1, 1),  # 128 x 64, 4 warps
        "1x1-c512-k2048-m49": (1, 512, 7, 2048, 1, 1),  # M = 49 < 128 pixels: 64 x 128, 4 warps
        "7x7s2-c3-k64": (1, 3, 32, 64, 7, 2),  # stem: BLOCK_K = 16 (C = 3 padded)
    }
    for name in ("fp32", "bf16", "fp16") if full else ("fp32", "bf16"):
        dt = dtypes[name]
        for tf32 in ([True, False] if name == "fp32" and full else [True]):
            prec = ("-tf32" if tf32 else "-ieee") if name == "fp32" else ""
            for label, shape in convs.items():
                cases[f"conv-{name}{prec}-{label}"] = (conv(dt, *shape, tf32), False)
    return cases


def _compile_all(arch: int, full: bool) -> dict:
    """Child-process side: compile every case for ``arch``, record per-launch facts (or the error) as plain data."""
    from archbench.kernels._aot import SHARED_MEMORY_LIMIT, compile_launches

    results: dict = {}
    for case, (run, even) in _cases(full).items():
        if case.startswith("cand-") and arch < 90:
            results[case] = {"skip": "tile candidates are timed on sm_90 only"}
            continue
        t0 = time.perf_counter()
        try:
            with compile_launches(arch) as launches:
                run()
            results[case] = {
                "even": even,
                "compile_s": round(time.perf_counter() - t0, 2),
                "launches": [
                    {"name": c.name, "shared": c.shared_bytes, "num_warps": c.num_warps, "num_stages": c.num_stages,
                     "constants": {k: v for k, v in c.constants.items() if k in SHOWN_CONSTANTS},
                     "async_copies": c.ttgir_count("async_copy_global_to_local"),
                     "masked_copies": c.elementwise_masked_copies(), "mma": c.mma(), **c.ptxas_usage(arch)}
                    for c in launches
                ],
            }
        except Exception as exc:  # recorded and asserted on by the parent test, which prints it
            results[case] = {"error": f"{type(exc).__name__}: {exc}"}
    results["_limit"] = SHARED_MEMORY_LIMIT[arch]
    return results


def _run_children(full: bool) -> dict[int, dict]:
    """Both architectures at once, each in a fresh process (compiled mode, whatever this process imported)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences Triton 3.9's deprecation warning in the child
    procs = {arch: subprocess.Popen([sys.executable, __file__, "--arch", str(arch)] + (["--full"] if full else []),
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for arch in ARCHS}
    out = {}
    for arch, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"AOT compile child for sm_{arch} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
        out[arch] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope="module")
def compiled() -> dict[int, dict]:
    pytest.importorskip("triton")
    try:
        return _run_children(FULL)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _case_ids() -> list[str]:
    """The case ids without importing torch at collection time beyond what pytest already did."""
    return list(_cases(FULL))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("case", _case_ids())
def test_resources(compiled: dict[int, dict], arch: int, case: str) -> None:
    result = compiled[arch][case]
    if "skip" in result:
        pytest.skip(result["skip"])
    assert "error" not in result, f"sm_{arch} {case}: {result.get('error')}"
    assert result["launches"], f"sm_{arch} {case}: no kernel was launched"
    limit = compiled[arch]["_limit"]
    for launch in result["launches"]:
        where = f"sm_{arch} {case} / {launch['name']} ({launch['num_warps']} warps, {launch['constants']})"
        assert launch["shared"] <= limit, f"{where}: {launch['shared']} B shared memory > {limit} B"
        # the configurations that matter for speed: ptxas must fit them in registers
        assert launch["spill_stores"] == 0 and launch["spill_loads"] == 0, (
            f"{where}: {launch['spill_stores']} B of register spills ({launch['registers']} registers/thread)")
        if launch["mma"]:
            # fp16/bf16: tensor cores, Hopper's wgmma on sm_90; TF32: tensor cores (mma.sync where a tile is under
            # wgmma's 64 rows, e.g. fp32 attention at d = 128); strict fp32: FMA dots
            fp32 = "fp32" in case
            if fp32 and launch["constants"].get("INPUT_PRECISION") == "ieee":
                expected = ("fma",)
            elif fp32:
                expected = ("wgmma", "mma") if arch >= 90 else ("mma",)
            else:
                expected = ("wgmma",) if arch >= 90 else ("mma",)
            assert launch["mma"] in expected, f"{where}: tl.dot lowered to {launch['mma']}, expected {expected}"
            if launch["num_stages"] > 1:
                assert launch["async_copies"] > 0, f"{where}: loads were not software-pipelined (no cp.async)"
        if result["even"] and launch["name"] != "_attn_bwd_preprocess_kernel":
            # even-size attention: the only masks left on the pipelined copies are the pipeliner's own
            assert launch["masked_copies"] == 0, f"{where}: {launch['masked_copies']} copies still bounds-masked"


def test_the_even_check_can_fail(compiled: dict[int, dict]) -> None:
    """The odd-size attention path keeps its bounds masks: what the even-path assertion above would catch."""
    odd = compiled[90]["attn-bf16-d128-causal-n300"]["launches"]
    assert any(launch["masked_copies"] > 0 for launch in odd if launch["name"] == "_attn_fwd_kernel")


def resource_table(results: dict[int, dict]) -> str:
    """Markdown: one row per (arch, case, kernel launch) with registers, spills and shared memory."""
    lines = ["| arch | case | kernel | warps | stages | tiles / specialization | regs | spill B | smem KiB | dot |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---|"]
    for arch, res in sorted(results.items()):
        for case, result in res.items():
            if case.startswith("_"):
                continue
            if "error" in result:
                lines.append(f"| sm_{arch} | {case} | ERROR: {result['error'][:80]} |||||||")
                continue
            if "skip" in result:
                continue
            for launch in result["launches"]:
                consts = " ".join(f"{k}={v}" for k, v in launch["constants"].items())
                lines.append(f"| sm_{arch} | {case} | {launch['name'].strip('_')} | {launch['num_warps']} | "
                             f"{launch['num_stages']} | {consts} | {launch['registers']} | {launch['spill_stores']} | "
                             f"{launch['shared'] / 1024:.1f} | {launch['mma']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    full = "--full" in args
    if "--table" in args:
        print(resource_table(_run_children(full)))
    else:
        print(json.dumps(_compile_all(int(args[args.index("--arch") + 1]), full)))
