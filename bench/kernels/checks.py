"""``archbench kernels`` without a GPU: each Triton kernel's correctness on small odd shapes under the Triton
interpreter (TRITON_INTERPRET=1, numpy on the CPU), fp32 and fp16, against its fp32 reference (forward and, for
the trainable kernels, the gradients).

``interpreter_checks`` must run in a process where TRITON_INTERPRET=1 was set before triton was first imported
(Triton fixes the interpreter mode then); archbench.bench.kernels.run starts that process. Wall times
here are the interpreter's: meaningless as kernel timings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

CHECK_TOLERANCE = {"fp32": (1e-4, 1e-4), "fp16": (1e-2, 1e-2)}  # (atol, rtol) against the fp32 reference


@dataclass
class CheckRow:
    """One interpreter correctness check (no GPU); field order is the CSV column order."""

    kernel: str
    case: str
    dtype: str
    output: str  # y, dx, dw, o, dq, ...
    status: str  # ok | failed
    max_abs_err: float | None
    atol: float
    rtol: float
    wall_ms: float  # interpreter wall time: meaningless as a kernel timing
    error: str = ""


def _check_cases(kernels: Sequence[str], quick: bool,
                 shapes: dict[str, list[Sequence[Any]]] | None = None) -> Iterator[tuple[str, str, Callable]]:
    """(kernel, case label, fn(dtype) -> {output name: (got, expected)}) on small odd shapes, or on ``shapes``
    (kernelbench_cases' tuples: rms_norm (M, N); conv_bn_act (N, C, H, W, K, ks, stride, pad); attention
    (B, H, N, d, causal))."""
    shapes = shapes or {}
    import torch

    from archbench.kernels.attention import attention, attention_reference
    from archbench.kernels.conv_bn_relu import conv_bn_act, conv_bn_act_unfused_reference, fold_bn
    from archbench.kernels.rms_norm import rms_norm, rms_norm_reference

    def leaves(*shapes, dtype, seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes]

    def grads_vs_reference(fn, ref, inputs, names, grad_seed):
        out = fn(*inputs)
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.dtype)
        out.backward(dout)
        ref_in = [t.detach().float().requires_grad_() for t in inputs]
        ref_out = ref(*ref_in)
        ref_out.backward(dout.float())
        result = {names[0]: (out, ref_out)}
        for name, t, r in zip(names[1:], inputs, ref_in, strict=True):
            result[name] = (t.grad, r.grad)
        return result

    if "rms_norm" in kernels:
        for m, n in shapes.get("rms_norm") or ([(5, 123)] if quick else [(5, 123), (3, 1000)]):
            yield "rms_norm", f"M={m} N={n} fwd+bwd", lambda dt, m=m, n=n: grads_vs_reference(
                lambda x, w: rms_norm(x, w), lambda x, w: rms_norm_reference(x, w),
                leaves((m, n), (n,), dtype=dt, seed=0), ["y", "dx", "dw"], 1)
    if "conv_bn_act" in kernels:
        convs = [(*c, 1) for c in shapes.get("conv_bn_act", [])] or (
            [(2, 3, 9, 11, 5, 3, 1, 1, 1)] if quick else [(2, 3, 9, 11, 5, 3, 1, 1, 1), (1, 20, 7, 6, 17, 1, 2, 0, 1),
                                                          (2, 5, 10, 9, 7, 3, 2, 2, 2)])
        for n, c, h, w, k, ks, s, p, d in convs:
            def conv_check(dt, n=n, c=c, h=h, w=w, k=k, ks=ks, s=s, p=p, d=d):
                g = torch.Generator().manual_seed(2)
                x = torch.randn(n, c, h, w, generator=g)
                cw, cb = torch.randn(k, c, ks, ks, generator=g), torch.randn(k, generator=g)
                gamma, beta = 1 + 0.2 * torch.randn(k, generator=g), 0.2 * torch.randn(k, generator=g)
                mean, var = 0.2 * torch.randn(k, generator=g), 0.5 + torch.rand(k, generator=g)
                with torch.no_grad():
                    want = conv_bn_act_unfused_reference(x, cw, cb, gamma, beta, mean, var, 1e-5, s, p, d)
                    fw, fb = fold_bn(cw, gamma, beta, mean, var, 1e-5, cb)
                    got = conv_bn_act(x.to(dt), fw.to(dt), fb, s, p, d, "relu")
                return {"y": (got, want)}

            yield "conv_bn_act", f"{n}x{c}x{h}x{w} k{k} {ks}x{ks} s{s} p{p} d{d}", conv_check
    if "attention" in kernels:
        attn = [(b, h, n, n, d, causal) for b, h, n, d, causal in shapes.get("attention", [])] or (
            [(1, 2, 37, 37, 64, True)] if quick else [(1, 2, 37, 37, 64, False), (1, 2, 37, 37, 64, True),
                                                      (2, 1, 20, 45, 48, False), (1, 1, 64, 64, 64, True)])
        for b, h, nq, nk, d, causal in attn:
            yield "attention", f"B={b} H={h} Nq={nq} Nk={nk} d={d}{' causal' if causal else ''} fwd+bwd", (
                lambda dt, b=b, h=h, nq=nq, nk=nk, d=d, causal=causal: grads_vs_reference(
                    lambda q, k, v: attention(q, k, v, causal=causal),
                    lambda q, k, v: attention_reference(q, k, v, causal=causal),
                    leaves((b, h, nq, d), (b, h, nk, d), (b, h, nk, d), dtype=dt, seed=3),
                    ["o", "dq", "dk", "dv"], 4))


def interpreter_checks(kernels: Sequence[str], quick: bool,
                       shapes: dict[str, list[Sequence[Any]]] | None = None) -> list[dict[str, Any]]:
    """Run in the TRITON_INTERPRET=1 child: each kernel on small odd shapes (or ``shapes``), fp32 and fp16, vs its
    reference."""
    import torch

    from archbench.kernels._common import interpreting

    if not interpreting():
        raise RuntimeError("interpreter_checks must run with TRITON_INTERPRET=1 set before triton is imported")
    rows = []
    for kernel, case, check in _check_cases(kernels, quick, shapes):
        for dt_name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
            atol, rtol = CHECK_TOLERANCE[dt_name]
            t0 = time.perf_counter()
            try:
                pairs = check(dt)
            except Exception as exc:  # recorded as a failed check row; the parent sets the exit status
                rows.append(CheckRow(kernel, case, dt_name, "*", "failed", None, atol, rtol,
                                     (time.perf_counter() - t0) * 1e3, f"{type(exc).__name__}: {exc}"))
                continue
            wall = (time.perf_counter() - t0) * 1e3
            for output, (got, want) in pairs.items():
                err = (got.detach().float() - want.detach().float()).abs()
                # dw-like outputs sum over rows: scale atol with the magnitude of the expected values
                ok = bool((err <= atol + rtol * want.detach().float().abs()).all())
                flat = int(err.argmax())
                idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))
                rows.append(CheckRow(kernel, case, dt_name, output, "ok" if ok else "failed", err.max().item(),
                                     atol, rtol, wall, "" if ok else f"max abs err at index {idx}"))
    return [dataclasses.asdict(r) for r in rows]
