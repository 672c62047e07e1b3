"""The benchmark definitions of ``archbench kernels``: per kernel, the shape sweep and the implementations timed
against each other (our Triton kernel and its baselines), with the work one call does and its formula.

Each ``*_benches(quick, dtype, device, backward, compile_baselines, shapes)`` yields ``Bench`` objects whose tensors
are already allocated (random, non-zero) on ``device``; archbench.bench.measure.kernelbench_sweep times them.
Everything here imports torch and the kernels lazily (``archbench --help`` must stay fast).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from archbench.bench.measure.peaks import TORCH_DTYPES

KERNELS = ("rms_norm", "conv_bn_act", "attention")


@dataclass(frozen=True)
class Work:
    """What one call moves or computes; ``rate(ms)`` is the metric reported beside its formula."""

    unit: str  # "GB/s" (amount in bytes) | "TFLOP/s" (amount in FLOPs)
    amount: float
    formula: str

    def per_second(self, ms: float) -> float:
        """Bytes/s or FLOP/s of one call taking ``ms``: amount / (ms / 1000)."""
        return self.amount / (ms * 1e-3)

    def rate(self, ms: float) -> float:
        """The reported metric: GB/s = bytes/s / 1e9, TFLOP/s = FLOP/s / 1e12."""
        return self.per_second(ms) / (1e9 if self.unit == "GB/s" else 1e12)


@dataclass
class Impl:
    """One implementation in a Bench: ours (Triton) or a baseline."""

    fn: Callable[[], Any]  # returns the forward output (for the error check)
    ours: bool = False  # one of our Triton kernels (its failure makes the exit status 1)
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # entered around timing
    skip_reason: str = ""  # non-empty: not run, a skipped row


@dataclass
class Bench:
    """One (kernel, case): inputs allocated, the fp32 reference, and the implementations to time on them."""

    kernel: str
    case: str
    direction: str
    work: Work
    expected: Callable[[], Any]  # fp32 reference of the forward output
    impls: dict[str, Impl] = field(default_factory=dict)


def _tdtype(name: str) -> Any:
    import torch

    return getattr(torch, TORCH_DTYPES[name])


def _compiled(fn: Callable) -> Callable:
    """torch.compile after a dynamo reset, so each shape compiles fresh instead of hitting the recompile limit."""
    import torch

    torch._dynamo.reset()
    return torch.compile(fn)


def _with_backward(forward: Callable[[], Any], leaves: Sequence[Any], grad_out: Any) -> Callable[[], Any]:
    """Forward + backward; grads are cleared each call so no accumulate kernel is timed."""

    def fn():
        for t in leaves:
            t.grad = None
        out = forward()
        out.backward(grad_out)
        return out.detach()

    return fn


def rms_norm_benches(quick: bool, dtype: str, device: str, backward: bool, compile_baselines: bool,
                     shapes: Sequence[tuple[int, int]] | None = None) -> Iterator[Bench]:
    import torch
    import torch.nn.functional as F

    from archbench.kernels.rms_norm import rms_norm, rms_norm_bytes, rms_norm_reference

    if shapes is None:  # (tokens M, hidden N): LLM-like; 5120 is not a power of two (masked tail)
        shapes = [(4096, 4096), (8192, 5120)] if quick else [
            (4096, 2048), (4096, 4096), (16384, 4096), (8192, 5120), (4096, 8192), (2048, 16384)]
    td = _tdtype(dtype)
    for m, n in shapes:
        x = torch.randn(m, n, device=device, dtype=td, requires_grad=backward)
        w = (1 + 0.1 * torch.randn(n, device=device)).to(td).requires_grad_(backward)
        size = x.element_size()
        if backward:
            work = Work("GB/s", rms_norm_bytes(m, n, size) + (3 * m * n + n) * size,
                        "fwd (2*M*N + N)*s + bwd (read x, dy, w; write dx: 3*M*N + N)*s")
        else:
            work = Work("GB/s", rms_norm_bytes(m, n, size), "(read M*N + N, write M*N) * elem_size")
        fns: dict[str, Callable[[], Any]] = {
            "triton": lambda x=x, w=w: rms_norm(x, w, 1e-6),
            "eager": lambda x=x, w=w: rms_norm_reference(x, w, 1e-6),
            "eager-F.rms_norm": lambda x=x, w=w, n=n: F.rms_norm(x, (n,), w, 1e-6),
        }
        if compile_baselines:
            compiled = _compiled(rms_norm_reference)
            fns["compile"] = lambda x=x, w=w, f=compiled: f(x, w, 1e-6)
        if backward:
            dy = torch.randn_like(x)
            fns = {k: _with_backward(f, (x, w), dy) for k, f in fns.items()}
        bench = Bench("rms_norm", f"M={m} N={n}", "fwd+bwd" if backward else "fwd", work,
                      lambda x=x, w=w: rms_norm_reference(x.detach().float(), w.detach().float(), 1e-6))
        bench.impls = {k: Impl(f, ours=k == "triton") for k, f in fns.items()}
        yield bench


def conv_benches(quick: bool, dtype: str, device: str, backward: bool, compile_baselines: bool,
                 shapes: Sequence[tuple[int, ...]] | None = None) -> Iterator[Bench]:
    import torch

    from archbench.kernels.conv_bn_relu import (
        conv_bn_act,
        conv_bn_act_reference,
        conv_bn_act_unfused_reference,
        conv_flops,
        conv_output_size,
        fold_bn,
    )

    if shapes is None:  # (N, C, H, W, K, kernel, stride, padding): ResNet-50-like layers at batch 32
        shapes = [(32, 64, 56, 56, 64, 3, 1, 1), (32, 256, 14, 14, 256, 3, 1, 1)] if quick else [
            (32, 3, 224, 224, 64, 7, 2, 3), (32, 64, 56, 56, 64, 3, 1, 1), (32, 256, 56, 56, 64, 1, 1, 0),
            (32, 128, 28, 28, 128, 3, 1, 1), (32, 256, 14, 14, 256, 3, 1, 1), (32, 512, 7, 7, 2048, 1, 1, 0)]
    td = _tdtype(dtype)
    for n, c, h, w, k, ks, s, p in shapes:
        # channels_last for every impl: the layout cuDNN prefers for fp16/bf16 and that makes our A-tile
        # loads contiguous along the reduction (channel) dim
        x = torch.randn(n, c, h, w, device=device, dtype=td).to(memory_format=torch.channels_last)
        cw = (torch.randn(k, c, ks, ks, device=device) / math.sqrt(c * ks * ks)).to(td)
        cb = None
        gamma, beta = 1 + 0.1 * torch.randn(k, device=device), 0.1 * torch.randn(k, device=device)
        mean, var = 0.1 * torch.randn(k, device=device), 0.5 + torch.rand(k, device=device)
        bn = [gamma, beta, mean, var]  # fp32 BN parameters with fp16/bf16 activations, as cuDNN expects
        fw, fb = fold_bn(cw, gamma, beta, mean, var, 1e-5, cb)
        oh, ow = conv_output_size(h, ks, s, p, 1), conv_output_size(w, ks, s, p, 1)
        work = Work("TFLOP/s", conv_flops(n, c, k, oh, ow, ks, ks), "2*N*OH*OW*K*C*KH*KW")

        def unfused(x=x, cw=cw, bn=bn, s=s, p=p):
            return conv_bn_act_unfused_reference(x, cw, None, *bn, 1e-5, stride=s, padding=p)

        fns: dict[str, Callable[[], Any]] = {
            "triton": lambda x=x, fw=fw, fb=fb, s=s, p=p: conv_bn_act(x, fw, fb, s, p, 1, "relu"),
            "eager-unfused": unfused,
            "eager-folded": lambda x=x, fw=fw, fb=fb, s=s, p=p: conv_bn_act_reference(x, fw, fb, s, p, 1, "relu"),
        }
        if compile_baselines:
            fns["compile-unfused"] = _compiled(unfused)
        bench = Bench("conv_bn_act", f"{n}x{c}x{h}x{w} k{k} {ks}x{ks}/{s}", "fwd", work,
                      lambda x=x, fw=fw, fb=fb, s=s, p=p: conv_bn_act_reference(
                          x.float(), fw.float(), fb.float(), s, p, 1, "relu"))
        bench.impls = {k_: Impl(f, ours=k_ == "triton") for k_, f in fns.items()}
        if backward:
            bench.case += " (fwd only: inference kernel)"
        yield bench


SCORES_LIMIT_BYTES = 8 << 30  # eager attention materializes (B, H, N, N) fp32 scores: skip it beyond this


def attention_benches(quick: bool, dtype: str, device: str, backward: bool, compile_baselines: bool,
                      shapes: Sequence[tuple[int, int, int, int, bool]] | None = None) -> Iterator[Bench]:
    import torch
    import torch.nn.functional as F

    from archbench.kernels.attention import attention, attention_flops, attention_reference

    if shapes is None:  # (B, H, N, d, causal): 16k tokens per batch, GPT-like heads
        seqs = [(4, 16, 1024, 64), (2, 16, 4096, 128)] if quick else [
            (16, 16, 1024, 64), (8, 16, 2048, 64), (4, 16, 4096, 64), (2, 16, 8192, 64),
            (16, 16, 1024, 128), (8, 16, 2048, 128), (4, 16, 4096, 128), (2, 16, 8192, 128)]
        shapes = [(*s, causal) for s in seqs for causal in (False, True)]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = {f"sdpa-{name}": getattr(SDPBackend, attr, None) for name, attr in (
            ("flash", "FLASH_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"),
            ("math", "MATH"))}
    except ImportError:  # torch < 2.3
        sdpa_kernel, backends = None, {}
    td = _tdtype(dtype)
    for b, h, n, d, causal in shapes:
        q, k, v = (torch.randn(b, h, n, d, device=device, dtype=td, requires_grad=backward) for _ in range(3))
        flops = attention_flops(b, h, n, n, d, causal, backward=backward)
        formula = "4*B*H*N^2*d" + (" / 2 (causal)" if causal else "") + (" * 3.5 (fwd+bwd)" if backward else "")
        work = Work("TFLOP/s", flops, formula)
        fns: dict[str, Callable[[], Any]] = {
            "triton": lambda q=q, k=k, v=v, c=causal: attention(q, k, v, causal=c),
            "eager": lambda q=q, k=k, v=v, c=causal: attention_reference(q, k, v, causal=c),
        }
        if compile_baselines:
            compiled = _compiled(attention_reference)
            fns["compile"] = lambda q=q, k=k, v=v, c=causal, f=compiled: f(q, k, v, causal=c)
        for name in backends:
            fns[name] = lambda q=q, k=k, v=v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)
        if backward:
            do = torch.randn_like(q)
            fns = {key: _with_backward(f, (q, k, v), do) for key, f in fns.items()}
        bench = Bench("attention", f"B={b} H={h} N={n} d={d}" + (" causal" if causal else ""),
                      "fwd+bwd" if backward else "fwd", work,
                      lambda q=q, k=k, v=v, c=causal: attention_reference(
                          q.detach().float(), k.detach().float(), v.detach().float(), causal=c))
        impls = {key: Impl(f, ours=key == "triton") for key, f in fns.items()}
        for name, backend in backends.items():
            if backend is None:
                impls[name].skip_reason = f"this torch has no SDPBackend for {name}"
            else:
                impls[name].context = lambda backend=backend: sdpa_kernel(backend)
        scores = b * h * n * n * 4
        if scores > SCORES_LIMIT_BYTES:
            for key in ("eager", "compile"):
                if key in impls:
                    impls[key].skip_reason = (f"(B,H,N,N) fp32 scores need {scores / 2**30:.0f} GiB "
                                              f"> {SCORES_LIMIT_BYTES >> 30} GiB")
        bench.impls = impls
        yield bench


BENCHES = {"rms_norm": rms_norm_benches, "conv_bn_act": conv_benches, "attention": attention_benches}
