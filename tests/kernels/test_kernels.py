"""Correctness of the Triton kernels against their torch references (kernels/*.py).

Without CUDA the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``, numpy on the CPU, ~1 ms per
program instance), so shapes are small but odd: tails of every block, non-power-of-two sizes, several blocks
per grid dimension. With CUDA the same tables run natively, plus the bf16 rows.

Interpreter mode is scoped to this module: an autouse fixture sets TRITON_INTERPRET=1 while these tests run and
restores it afterwards, so other test files are unaffected. That works because ``kernels`` imports triton only
at the first launch, and Triton fixes its mode at import. If something earlier in the same pytest process
already imported triton in compiled mode (``torch.compile`` does), the in-process tests skip and
``test_kernels_in_a_fresh_interpreter_process`` runs this file in a child process instead, so coverage never
depends on test order.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from tests_helpers import ROOT
from torch import nn

from archbench.kernels import _common
from archbench.kernels.attention import MAX_HEAD_DIM, attention, attention_reference
from archbench.kernels.conv_bn_relu import (
    ConvBNAct,
    conv_bn_act,
    conv_bn_act_reference,
    conv_bn_act_unfused_reference,
    fold_bn,
)
from archbench.kernels.rms_norm import RMSNorm, rms_norm, rms_norm_reference

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
needs_cuda = [pytest.mark.skipif(not HAS_CUDA, reason="bf16 arithmetic needs a CUDA GPU (the interpreter lacks it)"),
              pytest.mark.gpu]
needs_triton = pytest.mark.skipif(not _common.HAS_TRITON, reason="triton is not installed")

pytestmark = needs_triton


CHILD_ENV = "ARCHBENCH_KERNEL_TESTS_CHILD"  # set in the child process of the fallback test


def _in_process_ok() -> bool:
    """The kernels can run in this process: natively on CUDA, or triton not yet imported / imported to interpret."""
    return HAS_CUDA or _common.triton_import_mode() in (None, "interpret")


@pytest.fixture(autouse=True, scope="module")
def _triton_mode():
    """Interpreter on for this module when there is no GPU; fp32 matmuls/convs exact (no TF32) on a GPU."""
    with pytest.MonkeyPatch.context() as mp:
        if not HAS_CUDA:
            mp.setenv("TRITON_INTERPRET", "1")
        else:
            mp.setattr(torch.backends.cudnn, "allow_tf32", False)
            mp.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        yield


@pytest.fixture(autouse=True)
def _skip_if_triton_mode_is_frozen(request):
    if request.node.name != "test_kernels_in_a_fresh_interpreter_process" and not _in_process_ok():
        pytest.skip("triton was imported in compiled mode earlier in this process (e.g. by torch.compile); "
                    "covered by test_kernels_in_a_fresh_interpreter_process")


def _dtype_rows(fp32: tuple[float, float], fp16: tuple[float, float], bf16: tuple[float, float]):
    """(dtype, atol, rtol) rows; bf16 only on CUDA."""
    return [
        pytest.param(torch.float32, *fp32, id="fp32"),
        pytest.param(torch.float16, *fp16, id="fp16"),
        pytest.param(torch.bfloat16, *bf16, id="bf16", marks=needs_cuda),
    ]


def _rand(*shape, dtype, seed, requires_grad=False):
    """Random non-zero inputs, rounded to `dtype` once; the fp32 oracle reuses the same rounded values."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)
    return t.requires_grad_(requires_grad)


def _check(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str) -> None:
    """torch.testing.assert_close, whose message names the greatest abs/rel difference and its index."""
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------------------------- RMSNorm
# Under the interpreter rows of N <= 256 take the whole-row kernels and larger ones the chunked kernels (128-column
# chunks); natively the chunked path starts at N > 8192 backward and > 64 KiB of x per row forward, which 17000
# reaches in both directions (fp32), with a masked tail chunk.
RMS_SHAPES = [(5, 123), (2, 3, 77), (3, 1000), (1, 1), (4, 256), (1, 17000)]


@pytest.mark.parametrize("shape", RMS_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype, atol, rtol", _dtype_rows((1e-5, 1e-5), (2e-3, 2e-3), (2e-2, 2e-2)))
def test_rms_norm_forward_backward(shape, dtype, atol, rtol):
    n = shape[-1]
    x = _rand(*shape, dtype=dtype, seed=0, requires_grad=True)
    w = _rand(n, dtype=dtype, seed=1, requires_grad=True)
    dy = _rand(*shape, dtype=dtype, seed=2)

    y = rms_norm(x, w, eps=1e-6)
    y.backward(dy)
    assert y.dtype == dtype and y.shape == x.shape

    xr, wr = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    yr = rms_norm_reference(xr, wr, eps=1e-6)
    yr.backward(dy.float())
    _check(y, yr, atol, rtol, f"rms_norm y {shape} {dtype}")
    _check(x.grad, xr.grad, atol, rtol, f"rms_norm dx {shape} {dtype}")
    # dW sums over all rows: its error grows with M, so scale atol by the row count
    m = x.numel() // n
    _check(w.grad, wr.grad, atol * max(1, m), rtol, f"rms_norm dw {shape} {dtype}")


def test_rms_norm_strided_input_and_module():
    base = _rand(6, 130, dtype=torch.float32, seed=3)
    x = base[:, 3:126]  # row stride 130, 123 columns: a view the kernel reads without a copy
    mod = RMSNorm(123, eps=1e-5).to(DEVICE)
    with torch.no_grad():
        mod.weight.copy_(_rand(123, dtype=torch.float32, seed=4))
    _check(mod(x), rms_norm_reference(x, mod.weight, 1e-5), 1e-5, 1e-5, "RMSNorm on a strided view")
    assert "123" in repr(mod)


def test_rms_norm_rejects_mismatched_weight():
    with pytest.raises(ValueError, match="does not match"):
        rms_norm(torch.randn(2, 8, device=DEVICE), torch.ones(7, device=DEVICE))


# ----------------------------------------------------------------------------------------------- conv + BN + act
# (N, C, H, W, K, kernel, stride, padding, dilation, act)
CONV_CASES = [
    (2, 3, 9, 11, 5, 3, 1, 1, 1, "relu"),  # stem-like: C=3 pads to one 16-wide channel block
    (1, 20, 7, 6, 17, 1, 2, 0, 1, "relu6"),  # 1x1, stride 2, K not a multiple of BLOCK_N
    (2, 5, 10, 9, 7, 3, 2, 2, 2, None),  # dilated, stride 2, padding 2
    (1, 33, 6, 5, 18, (3, 1), (1, 2), (1, 0), 1, "relu"),  # non-square kernel, pairs, 3 channel blocks
    (1, 4, 8, 8, 3, 5, 1, 2, 1, "relu"),  # 5x5
]


def _conv_id(case):
    n, c, h, w, k, ks, s, p, d, act = case
    return f"{n}x{c}x{h}x{w}-k{k}-ks{ks}-s{s}-p{p}-d{d}-{act}".replace(" ", "")


@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
@pytest.mark.parametrize("dtype, atol, rtol", _dtype_rows((1e-4, 1e-4), (1e-2, 5e-3), (6e-2, 2e-2)))
def test_conv_bn_act_matches_reference(case, dtype, atol, rtol):
    n, c, h, w, k, ks, s, p, d, act = case
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    x = _rand(n, c, h, w, dtype=dtype, seed=10)
    wt = _rand(k, c, kh, kw, dtype=dtype, seed=11)
    b = _rand(k, dtype=torch.float32, seed=12)
    with torch.no_grad():
        y = conv_bn_act(x, wt, b, s, p, d, act)
        yr = conv_bn_act_reference(x.float(), wt.float(), b, s, p, d, act)
    assert y.dtype == dtype and y.shape == yr.shape
    _check(y, yr, atol, rtol, f"conv_bn_act {_conv_id(case)} {dtype}")


def test_conv_bn_act_channels_last_and_no_bias():
    x = _rand(2, 6, 7, 9, dtype=torch.float32, seed=13).to(memory_format=torch.channels_last)
    wt = _rand(9, 6, 3, 3, dtype=torch.float32, seed=14)
    with torch.no_grad():
        y = conv_bn_act(x, wt, None, 1, 1, 1, "relu")
    assert y.is_contiguous(memory_format=torch.channels_last)
    _check(y, conv_bn_act_reference(x, wt, None, 1, 1, 1, "relu"), 1e-4, 1e-4, "channels_last, no bias")


@pytest.mark.parametrize("dtype, atol, rtol", _dtype_rows((1e-4, 1e-4), (2e-2, 1e-2), (1e-1, 3e-2)))
def test_fold_bn_equals_unfused_conv_bn_relu(dtype, atol, rtol):
    """conv -> BatchNorm(eval, non-trivial running stats) -> ReLU == conv_bn_act(fold_bn(...))."""
    torch.manual_seed(0)
    conv = nn.Conv2d(7, 12, 3, stride=2, padding=1, bias=True)
    bn = nn.BatchNorm2d(12, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.2, 3.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    conv, bn = conv.to(DEVICE).eval(), bn.to(DEVICE).eval()
    x = _rand(2, 7, 11, 10, dtype=torch.float32, seed=15)
    with torch.no_grad():
        expected = conv_bn_act_unfused_reference(x, conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                                 bn.running_var, bn.eps, stride=2, padding=1)
        _check(expected, F.relu(bn(conv(x))), 1e-5, 1e-5, "unfused reference vs nn modules")
        w, b = fold_bn(conv.weight.to(dtype), bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps,
                       conv.bias)
        assert w.dtype == dtype and b.dtype == dtype  # the fold returns conv_weight's dtype
        y = conv_bn_act(x.to(dtype), w, b, stride=2, padding=1, act="relu")
        fused = ConvBNAct.from_modules(conv, bn, act="relu")
        y_mod = fused(x)
    _check(y, expected, atol, rtol, f"folded conv_bn_act {dtype}")
    _check(y_mod, expected, 1e-4, 1e-4, "ConvBNAct.from_modules")


def test_fold_bn_without_affine_or_conv_bias():
    w = torch.randn(4, 3, 1, 1)
    mean, var = torch.randn(4), torch.rand(4) + 0.5
    wf, bf = fold_bn(w, None, None, mean, var, 1e-5)
    scale = 1 / torch.sqrt(var + 1e-5)
    torch.testing.assert_close(wf, w * scale.view(-1, 1, 1, 1))
    torch.testing.assert_close(bf, -mean * scale)


def test_conv_bn_act_errors():
    x = torch.randn(1, 4, 5, 5, device=DEVICE)
    with pytest.raises(ValueError, match="known"):
        conv_bn_act(x, torch.randn(2, 4, 1, 1, device=DEVICE), None, act="gelu")
    with pytest.raises(ValueError, match="groups=1"):
        conv_bn_act(x, torch.randn(2, 2, 1, 1, device=DEVICE), None)


def test_conv_bn_act_packs_weights_once_and_sees_in_place_updates():
    """The (KH, KW, C, K) weight layout is built once per weight tensor, and again after an in-place update."""
    from archbench.kernels import conv_bn_relu as conv_mod

    x = _rand(1, 4, 6, 7, dtype=torch.float32, seed=18)
    w = _rand(5, 4, 3, 3, dtype=torch.float32, seed=19)
    with torch.no_grad():
        y = conv_bn_act(x, w, None, padding=1)
        packed = conv_mod._packed_weight(w, x.dtype)
        assert conv_mod._packed_weight(w, x.dtype) is packed, "same weight tensor: packed once"
        w.mul_(-0.5)  # in place: the version counter moves, the cache must not serve the old layout
        y2 = conv_bn_act(x, w, None, padding=1)
        assert conv_mod._packed_weight(w, x.dtype) is not packed
    _check(y, conv_bn_act_reference(x, w / -0.5, None, padding=1), 1e-4, 1e-4, "before the in-place update")
    _check(y2, conv_bn_act_reference(x, w, None, padding=1), 1e-4, 1e-4, "after the in-place update")


def test_conv_bn_act_with_grad_uses_differentiable_reference():
    x = _rand(1, 3, 6, 6, dtype=torch.float32, seed=16, requires_grad=True)
    w = _rand(4, 3, 3, 3, dtype=torch.float32, seed=17)
    y = conv_bn_act(x, w, None, padding=1)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------------- attention
# (B, H, N_q, N_k, d, causal)
ATTN_CASES = [
    (1, 2, 37, 37, 64, False),  # N not a multiple of the blocks
    (1, 2, 37, 37, 64, True),
    (2, 1, 20, 45, 32, False),  # N_q != N_k
    (1, 1, 45, 20, 128, True),  # causal with N_q > N_k (top-left aligned, like SDPA is_causal)
    (1, 1, 33, 33, 48, True),  # head dim padded 48 -> 64 and masked
    (1, 1, 1, 17, 16, False),  # a single query (decode-like)
    # Even sizes (N a multiple of every block: unmasked K/V and Q/dO loads) and N > 128, so that natively too
    # (BLOCK_M = 128) causal query blocks have off-diagonal key blocks (causal phase 0), as the interpreter's
    # 32-row blocks already do at N = 37.
    (1, 1, 256, 256, 64, True),
    (1, 1, 256, 256, 128, False),
    (1, 1, 200, 256, 128, True),  # even keys, odd queries: EVEN_N forward and dQ, not EVEN_M in dK/dV
]


def _attn_id(case):
    b, h, nq, nk, d, causal = case
    return f"b{b}h{h}-q{nq}-k{nk}-d{d}-{'causal' if causal else 'full'}"


@pytest.mark.parametrize("case", ATTN_CASES, ids=_attn_id)
@pytest.mark.parametrize("dtype, atol, rtol", _dtype_rows((2e-5, 1e-4), (2e-3, 2e-3), (2e-2, 2e-2)))
def test_attention_forward_backward(case, dtype, atol, rtol):
    b, h, nq, nk, d, causal = case
    q = _rand(b, h, nq, d, dtype=dtype, seed=20, requires_grad=True)
    k = _rand(b, h, nk, d, dtype=dtype, seed=21, requires_grad=True)
    v = _rand(b, h, nk, d, dtype=dtype, seed=22, requires_grad=True)
    do = _rand(b, h, nq, d, dtype=dtype, seed=23)

    o = attention(q, k, v, causal=causal)
    o.backward(do)
    assert o.dtype == dtype and o.shape == q.shape

    ref = [t.detach().float().requires_grad_() for t in (q, k, v)]
    o_ref = attention_reference(*ref, causal=causal)
    o_ref.backward(do.float())
    _check(o, o_ref, atol, rtol, f"attention o {_attn_id(case)} {dtype}")
    for name, got, want in zip(("dq", "dk", "dv"), (q, k, v), ref, strict=True):
        _check(got.grad, want.grad, 2 * atol, 2 * rtol, f"attention {name} {_attn_id(case)} {dtype}")


def test_attention_matches_sdpa_and_strided_inputs():
    """Reference == SDPA (incl. top-left causal alignment); (B, N, H, d).transpose(1, 2) views run in place."""
    b, h, nq, nk, d = 1, 2, 19, 26, 32
    q = _rand(b, nq, h, d, dtype=torch.float32, seed=24).transpose(1, 2)
    k = _rand(b, nk, h, d, dtype=torch.float32, seed=25).transpose(1, 2)
    v = _rand(b, nk, h, d, dtype=torch.float32, seed=26).transpose(1, 2)
    for causal in (False, True):
        ref = attention_reference(q, k, v, causal=causal, scale=0.3)
        _check(ref, F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.3), 1e-5, 1e-5, "vs SDPA")
        _check(attention(q, k, v, causal=causal, scale=0.3), ref, 2e-5, 1e-4, f"strided causal={causal}")


def test_attention_errors():
    q = torch.randn(1, 1, 4, 8, device=DEVICE)
    with pytest.raises(ValueError, match="do not match"):
        attention(q, torch.randn(1, 2, 4, 8, device=DEVICE), torch.randn(1, 2, 4, 8, device=DEVICE))
    big = torch.randn(1, 1, 4, MAX_HEAD_DIM + 16, device=DEVICE)
    with pytest.raises(ValueError, match="head dim"):
        attention(big, big, big)


# ----------------------------------------------------------------------------------------------- dispatch
def _forbid(monkeypatch, module, name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{module.__name__}.{name} was called on the CPU fallback path")

    monkeypatch.setattr(module, name, fail)


def test_cpu_fallback_uses_references(monkeypatch):
    """CPU tensors without TRITON_INTERPRET: no kernel launch, results equal the references, grads flow."""
    import archbench.kernels.attention as attn_mod
    import archbench.kernels.conv_bn_relu as conv_mod
    import archbench.kernels.rms_norm as rms_mod

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _forbid(monkeypatch, rms_mod, "_rms_norm_fwd")
    _forbid(monkeypatch, conv_mod, "_conv_bn_act_triton")
    _forbid(monkeypatch, attn_mod, "_attn_fwd")

    x = torch.randn(3, 10, requires_grad=True)
    w = torch.randn(10)
    y = rms_norm(x, w)
    y.sum().backward()
    torch.testing.assert_close(y, rms_norm_reference(x, w))
    assert x.grad is not None

    xc, wc, bc = torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    torch.testing.assert_close(conv_bn_act(xc, wc, bc, padding=1, act="relu6"),
                               conv_bn_act_reference(xc, wc, bc, padding=1, act="relu6"))

    q = torch.randn(1, 2, 5, 200)  # d > MAX_HEAD_DIM is fine for the reference
    torch.testing.assert_close(attention(q, q, q, causal=True), attention_reference(q, q, q, causal=True))


def _run_python(code: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr


def test_import_has_no_side_effects():
    """Importing kernels changes no env var and does not import triton (which would freeze its mode)."""
    _run_python(
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import archbench.kernels, archbench.kernels.rms_norm, archbench.kernels.attention, archbench.kernels.conv_bn_relu\n"
        "assert dict(os.environ) == before, 'import changed the environment'\n"
        "assert 'triton' not in sys.modules, 'importing kernels imported triton'\n"
        "print('ok')\n"
    )


def test_everything_falls_back_without_triton():
    """Where triton is not installed, every public function uses its reference, even with TRITON_INTERPRET=1."""
    _run_python(
        "import os, sys\n"
        "sys.modules['triton'] = None  # `import triton` now fails and find_spec('triton') is None\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "import torch, archbench.kernels.rms_norm as r, archbench.kernels.attention as a, archbench.kernels.conv_bn_relu as c\n"
        "from archbench.kernels._common import HAS_TRITON; assert not HAS_TRITON\n"
        "x = torch.randn(2, 8, requires_grad=True)\n"
        "r.rms_norm(x, torch.ones(8)).sum().backward()\n"
        "assert torch.equal(r.rms_norm(x, torch.ones(8)), r.rms_norm_reference(x, torch.ones(8)))\n"
        "q = torch.randn(1, 1, 4, 8)\n"
        "assert torch.equal(a.attention(q, q, q), a.attention_reference(q, q, q))\n"
        "xc, wc = torch.randn(1, 2, 4, 4), torch.randn(3, 2, 1, 1)\n"
        "assert torch.equal(c.conv_bn_act(xc, wc, None), c.conv_bn_act_reference(xc, wc, None))\n"
        "print('ok')\n"
    )


def test_mode_mismatch_is_a_clear_error(monkeypatch):
    """Asking for the other mode than the one triton was imported in raises a RuntimeError that says why."""
    from archbench.kernels.rms_norm import _rms_norm_fwd_kernel

    _rms_norm_fwd_kernel.get()  # imports triton in this module's mode
    other = "0" if _common.interpreting() else "1"
    monkeypatch.setenv("TRITON_INTERPRET", other)
    monkeypatch.setattr(_rms_norm_fwd_kernel, "_by_mode", {})
    with pytest.raises(RuntimeError, match="imported in"):
        _rms_norm_fwd_kernel.get()


@pytest.mark.skipif(HAS_CUDA or os.environ.get(CHILD_ENV) == "1", reason="only for a CPU run whose triton is frozen")
def test_kernels_in_a_fresh_interpreter_process():
    """Fallback when triton was imported in compiled mode before this module ran: run it in a child process."""
    if _in_process_ok():
        pytest.skip("the kernel tests ran in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1", CHILD_ENV: "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
