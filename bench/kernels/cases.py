"""The benchmark definitions of ``archbench kernels``: per kernel, the shapes (default sweeps, the review's targets,
or parsed from ``--shapes``) and the implementations timed against each other (our Triton kernel and its
baselines), with the work one call does and its formula.

``plan(kernels, shapes, quick, directions)`` lists what a run measures as ``BenchSpec`` s, in order;
``build_bench(spec, dtype, device, compile_baselines)`` allocates one bench's tensors (random, non-zero) on
``device`` and returns a ``Bench``; archbench.bench.kernels.sweep times it. Everything here imports
torch and the kernels lazily (``archbench --help`` must stay fast).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from archbench.bench.machine.peaks import TORCH_DTYPES

KERNELS = ("rms_norm", "conv_bn_act", "attention")
DIRECTIONS = ("fwd", "fwd+bwd")
INFERENCE_ONLY = ("conv_bn_act",)  # no backward kernel: always timed forward only

# Shapes: rms_norm (M tokens, N hidden); conv_bn_act (N, C, H, W, K, kernel, stride, padding);
# attention (B, H, N, d, causal) with N_q = N_k = N.
Shape = tuple

DEFAULT_SHAPES: dict[str, dict[str, list[Shape]]] = {
    # LLM-like rows; 5120 is not a power of two (masked tail); 32768 takes the chunked path
    "rms_norm": {
        "quick": [(4096, 4096), (8192, 5120)],
        "full": [(4096, 2048), (4096, 4096), (16384, 4096), (8192, 5120), (4096, 8192), (2048, 16384),
                 (1024, 32768)],
    },
    # ResNet-50-like layers at batch 32
    "conv_bn_act": {
        "quick": [(32, 64, 56, 56, 64, 3, 1, 1), (32, 256, 14, 14, 256, 3, 1, 1)],
        "full": [(32, 3, 224, 224, 64, 7, 2, 3), (32, 64, 56, 56, 64, 3, 1, 1), (32, 256, 56, 56, 64, 1, 1, 0),
                 (32, 128, 28, 28, 128, 3, 1, 1), (32, 256, 14, 14, 256, 3, 1, 1), (32, 512, 7, 7, 2048, 1, 1, 0)],
    },
    # 16k tokens per batch, GPT-like heads, causal and not
    "attention": {
        "quick": [(4, 16, 1024, 64, False), (2, 16, 4096, 128, True)],
        "full": [(*s, causal) for s in [(16, 16, 1024, 64), (8, 16, 2048, 64), (4, 16, 4096, 64), (2, 16, 8192, 64),
                                        (16, 16, 1024, 128), (8, 16, 2048, 128), (4, 16, 4096, 128),
                                        (2, 16, 8192, 128)] for causal in (False, True)],
    },
}

# The review (archbench.bench.kernels.review): issue 20's target shapes first, so a time budget that runs
# out cuts the least important rows. Targets: RMSNorm fwd >= 85% of the measured copy bandwidth; attention fwd
# >= 0.9x SDPA flash at d = 128 bf16, causal and not; conv+BN+ReLU faster than eager conv->BN->ReLU and within
# 1.25x of cuDNN conv alone at batch >= 8.
REVIEW_SHAPES: dict[str, list[Shape]] = {
    "attention": [(4, 32, 8192, 128, False), (4, 32, 8192, 128, True), (8, 16, 2048, 128, False),
                  (8, 16, 2048, 128, True), (8, 16, 2048, 64, False), (8, 16, 2048, 64, True)],
    "rms_norm": [(16384, 4096), (4096, 4096), (8192, 5120), (2048, 16384), (1024, 32768)],
    "conv_bn_act": [(32, 256, 14, 14, 256, 3, 1, 1), (32, 64, 56, 56, 64, 3, 1, 1), (8, 64, 56, 56, 64, 3, 1, 1),
                    (1, 64, 56, 56, 64, 3, 1, 1), (32, 256, 56, 56, 64, 1, 1, 0), (32, 3, 224, 224, 64, 7, 2, 3)],
}

SHAPE_SYNTAX = {
    "rms_norm": "MxN (tokens x hidden), e.g. 16384x4096",
    "conv_bn_act": "NxCxHxWxKxKS[xSTRIDE[xPAD]] (default stride 1, padding KS//2), e.g. 32x64x56x56x64x3",
    "attention": "BxHxNxD[:causal] (N queries = N keys), e.g. 4x32x8192x128:causal",
}


class ShapeError(ValueError):
    """A --shapes value that does not parse; the message names the expected syntax."""


def parse_shape(kernel: str, text: str) -> Shape:
    """One shape of ``kernel`` from its ``SHAPE_SYNTAX`` form: "16384x4096" -> (16384, 4096)."""
    if kernel not in KERNELS:
        raise ShapeError(f"unknown kernel {kernel!r} (known: {', '.join(KERNELS)})")
    body, _, flag = text.strip().partition(":")
    try:
        dims = tuple(int(p) for p in body.split("x"))
    except ValueError:
        dims = ()
    bad = ShapeError(f"{kernel} shape {text!r}: expected {SHAPE_SYNTAX[kernel]}")
    # every dimension >= 1, except a conv's padding (the 8th number), which may be 0
    if not dims or min(dims[:7]) < 1 or min(dims) < 0 or (flag and (kernel != "attention" or flag not in ("causal", "full"))):
        raise bad
    if kernel == "rms_norm" and len(dims) == 2:
        return dims
    if kernel == "conv_bn_act" and 6 <= len(dims) <= 8:
        n, c, h, w, k, ks = dims[:6]
        stride = dims[6] if len(dims) > 6 else 1
        return (n, c, h, w, k, ks, stride, dims[7] if len(dims) > 7 else ks // 2)
    if kernel == "attention" and len(dims) == 4:
        return (*dims, flag == "causal")
    raise bad


def parse_shapes(specs: Sequence[str]) -> dict[str, list[Shape]]:
    """``["rms_norm=16384x4096,2048x16384", "attention=4x32x8192x128:causal"]`` -> shapes per kernel, in order.
    A kernel named twice gets both lists, concatenated."""
    shapes: dict[str, list[Shape]] = {}
    for spec in specs:
        kernel, sep, rest = spec.partition("=")
        kernel = kernel.strip()
        if not sep or not rest.strip():
            raise ShapeError(f"--shapes {spec!r}: expected KERNEL=SHAPE[,SHAPE...], e.g. rms_norm=16384x4096")
        shapes.setdefault(kernel, []).extend(parse_shape(kernel, s) for s in rest.split(",") if s.strip())
    return shapes


def format_shape(kernel: str, shape: Shape) -> str:
    """The ``SHAPE_SYNTAX`` form of a shape (``parse_shape``'s inverse)."""
    if kernel == "attention":
        return "x".join(map(str, shape[:4])) + (":causal" if shape[4] else "")
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class BenchSpec:
    """One bench of a run, before its tensors exist: which kernel, shape and direction."""

    kernel: str
    shape: Shape
    direction: str  # "fwd" | "fwd+bwd"


def plan(kernels: Sequence[str], shapes: dict[str, list[Shape]] | None, quick: bool,
         directions: Sequence[str] = ("fwd",)) -> list[BenchSpec]:
    """The benches of a run, in measuring order: per kernel (in ``kernels`` order), per shape (``shapes[kernel]``
    or the default sweep), each direction. Inference-only kernels are measured forward only, once."""
    out = []
    for kernel in kernels:
        kernel_shapes = (shapes or {}).get(kernel) or DEFAULT_SHAPES[kernel]["quick" if quick else "full"]
        dirs = ("fwd",) if kernel in INFERENCE_ONLY else tuple(d for d in DIRECTIONS if d in directions)
        out += [BenchSpec(kernel, tuple(shape), d) for shape in kernel_shapes for d in dirs]
    return out


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
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # entered around each call
    skip_reason: str = ""  # non-empty: not run, a skipped row
    expected: Callable[[], Any] | None = None  # its own fp32 reference when it computes something else
    compiles: bool = False  # torch.compile: the first call compiles (seconds), which the time budget accounts for


@dataclass
class Bench:
    """One (kernel, case, direction): inputs allocated, the fp32 reference, and the implementations to time."""

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


def rms_norm_bench(shape: Shape, backward: bool, dtype: str, device: str, compile_baselines: bool) -> Bench:
    import torch
    import torch.nn.functional as F

    from archbench.kernels.rms_norm import rms_norm, rms_norm_bytes, rms_norm_reference

    m, n = shape
    td = _tdtype(dtype)
    x = torch.randn(m, n, device=device, dtype=td, requires_grad=backward)
    w = (1 + 0.1 * torch.randn(n, device=device)).to(td).requires_grad_(backward)
    size = x.element_size()
    if backward:
        work = Work("GB/s", rms_norm_bytes(m, n, size) + (3 * m * n + n) * size,
                    "fwd (2*M*N + N)*s + bwd (read x, dy, w; write dx: 3*M*N + N)*s")
    else:
        work = Work("GB/s", rms_norm_bytes(m, n, size), "(read M*N + N, write M*N) * elem_size")
    fns: dict[str, Callable[[], Any]] = {
        "triton": lambda: rms_norm(x, w, 1e-6),
        "eager": lambda: rms_norm_reference(x, w, 1e-6),
        "eager-F.rms_norm": lambda: F.rms_norm(x, (n,), w, 1e-6),
    }
    if compile_baselines:
        compiled = _compiled(rms_norm_reference)
        fns["compile"] = lambda: compiled(x, w, 1e-6)
    if backward:
        dy = torch.randn_like(x)
        fns = {k: _with_backward(f, (x, w), dy) for k, f in fns.items()}
    bench = Bench("rms_norm", f"M={m} N={n}", "fwd+bwd" if backward else "fwd", work,
                  lambda: rms_norm_reference(x.detach().float(), w.detach().float(), 1e-6))
    bench.impls = {k: Impl(f, ours=k == "triton", compiles=k == "compile") for k, f in fns.items()}
    return bench


def conv_bench(shape: Shape, backward: bool, dtype: str, device: str, compile_baselines: bool) -> Bench:
    """Forward only whatever ``backward`` says: the fused kernel is inference-only."""
    import torch
    import torch.nn.functional as F

    from archbench.kernels.conv_bn_relu import (
        conv_bn_act,
        conv_bn_act_reference,
        conv_bn_act_unfused_reference,
        conv_flops,
        conv_output_size,
        fold_bn,
    )

    n, c, h, w, k, ks, s, p = shape
    td = _tdtype(dtype)
    # channels_last for every impl: the layout cuDNN prefers for fp16/bf16 and that makes our A-tile loads
    # contiguous along the reduction (channel) dim
    x = torch.randn(n, c, h, w, device=device, dtype=td).to(memory_format=torch.channels_last)
    cw = (torch.randn(k, c, ks, ks, device=device) / math.sqrt(c * ks * ks)).to(td)
    gamma, beta = 1 + 0.1 * torch.randn(k, device=device), 0.1 * torch.randn(k, device=device)
    mean, var = 0.1 * torch.randn(k, device=device), 0.5 + torch.rand(k, device=device)
    bn = [gamma, beta, mean, var]  # fp32 BN parameters with fp16/bf16 activations, as cuDNN expects
    fw, fb = fold_bn(cw, gamma, beta, mean, var, 1e-5, None)
    oh, ow = conv_output_size(h, ks, s, p, 1), conv_output_size(w, ks, s, p, 1)
    work = Work("TFLOP/s", conv_flops(n, c, k, oh, ow, ks, ks), "2*N*OH*OW*K*C*KH*KW")

    def unfused():
        return conv_bn_act_unfused_reference(x, cw, None, *bn, 1e-5, stride=s, padding=p)

    fns: dict[str, Callable[[], Any]] = {
        "triton": lambda: conv_bn_act(x, fw, fb, s, p, 1, "relu"),
        "eager-unfused": unfused,  # conv -> BatchNorm -> ReLU, as the model is written
        "eager-folded": lambda: conv_bn_act_reference(x, fw, fb, s, p, 1, "relu"),  # conv(+bias) -> ReLU
        "cudnn-conv": lambda: F.conv2d(x, fw, None, s, p),  # the convolution alone: the floor to compare with
    }
    if compile_baselines:
        fns["compile-unfused"] = _compiled(unfused)
    bench = Bench("conv_bn_act", f"{n}x{c}x{h}x{w} k{k} {ks}x{ks}/{s}", "fwd", work,
                  lambda: conv_bn_act_reference(x.float(), fw.float(), fb.float(), s, p, 1, "relu"))
    bench.impls = {name: Impl(f, ours=name == "triton", compiles=name.startswith("compile"))
                   for name, f in fns.items()}
    bench.impls["cudnn-conv"].expected = lambda: F.conv2d(x.float(), fw.float(), None, s, p)  # no bias, no ReLU
    return bench


# Candidate tiles timed beside ours (impl "triton[...]") on sm_90 with fp16/bf16: the tuning leads of issue 20, so
# that one GPU run has the numbers to decide them. Each compiles without spills for sm_90 (the "cand-" cases of
# tests/test_kernels_compile.py, run with ARCHBENCH_AOT_FULL=1); BLOCK_N = 128 at d = 128 spills when causal
# (204 B/thread), so it is timed non-causal only. (name, applies(d, causal, backward), kernels.attention.tile_config arguments)
ATTENTION_CANDIDATES: list[tuple[str, Callable[[int, bool, bool], bool], dict[str, dict[str, int]]]] = [
    ("triton[fwd BLOCK_N=128]", lambda d, causal, backward: d == 128 and not causal, {"fwd": {"BLOCK_N": 128}}),
    ("triton[bwd 128-tall, 8 warps]", lambda d, causal, backward: d == 128 and backward,
     {"bwd": {"BLOCK_N1": 128, "BLOCK_M2": 128, "num_warps": 8}}),
]


def _candidates_apply(device: str, dtype: str) -> bool:
    """Tile candidates are Hopper (sm_90+) fp16/bf16 tiles: elsewhere they would not be the kernels' tiles."""
    import torch

    return device == "cuda" and dtype != "fp32" and torch.cuda.get_device_capability()[0] >= 9


SCORES_LIMIT_BYTES = 8 << 30  # explicit-softmax baselines materialize (B, H, N, N) scores: skipped beyond this
UNFUSED_ATTENTION = ("eager", "compile", "sdpa-math")  # the baselines that materialize the scores


def attention_bench(shape: Shape, backward: bool, dtype: str, device: str, compile_baselines: bool) -> Bench:
    import torch
    import torch.nn.functional as F

    from archbench.kernels.attention import attention, attention_flops, attention_reference, tile_config

    b, h, n, d, causal = shape
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = {f"sdpa-{name}": getattr(SDPBackend, attr, None) for name, attr in (
            ("flash", "FLASH_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"),
            ("math", "MATH"))}
    except ImportError:  # torch < 2.3
        sdpa_kernel, backends = None, {}
    td = _tdtype(dtype)
    q, k, v = (torch.randn(b, h, n, d, device=device, dtype=td, requires_grad=backward) for _ in range(3))
    flops = attention_flops(b, h, n, n, d, causal, backward=backward)
    formula = "4*B*H*N^2*d" + (" / 2 (causal)" if causal else "") + (" * 3.5 (fwd+bwd)" if backward else "")
    fns: dict[str, Callable[[], Any]] = {
        "triton": lambda: attention(q, k, v, causal=causal),
        "eager": lambda: attention_reference(q, k, v, causal=causal),
    }
    if compile_baselines:
        compiled = _compiled(attention_reference)
        fns["compile"] = lambda: compiled(q, k, v, causal=causal)
    for name in backends:
        fns[name] = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    candidates = {name: tiles for name, applies, tiles in ATTENTION_CANDIDATES if applies(d, causal, backward)}
    if candidates and _candidates_apply(device, dtype):
        fns.update({name: fns["triton"] for name in candidates})  # the same call, under tile_config (below)
    else:
        candidates = {}
    if backward:
        do = torch.randn_like(q)
        fns = {key: _with_backward(f, (q, k, v), do) for key, f in fns.items()}
    bench = Bench("attention", f"B={b} H={h} N={n} d={d}" + (" causal" if causal else ""),
                  "fwd+bwd" if backward else "fwd", Work("TFLOP/s", flops, formula),
                  lambda: attention_reference(q.detach().float(), k.detach().float(), v.detach().float(),
                                              causal=causal))
    impls = {key: Impl(f, ours=key == "triton", compiles=key == "compile") for key, f in fns.items()}
    for name, backend in backends.items():
        if backend is None:
            impls[name].skip_reason = f"this torch has no SDPBackend for {name}"
        else:
            impls[name].context = lambda backend=backend: sdpa_kernel(backend)
    for name, tiles in candidates.items():
        impls[name].context = lambda tiles=tiles: tile_config(**tiles)
    scores = b * h * n * n * 4
    if scores > SCORES_LIMIT_BYTES:
        for key in UNFUSED_ATTENTION:
            if key in impls and not impls[key].skip_reason:
                impls[key].skip_reason = (f"(B,H,N,N) scores need {scores / 2**30:.0f} GiB in fp32 "
                                          f"> {SCORES_LIMIT_BYTES >> 30} GiB")
    bench.impls = impls
    return bench


BUILDERS: dict[str, Callable[..., Bench]] = {
    "rms_norm": rms_norm_bench, "conv_bn_act": conv_bench, "attention": attention_bench}


def build_bench(spec: BenchSpec, dtype: str, device: str, compile_baselines: bool) -> Bench:
    """Allocate ``spec``'s inputs on ``device`` and return its Bench (implementations not yet called)."""
    return BUILDERS[spec.kernel](spec.shape, spec.direction == "fwd+bwd", dtype, device, compile_baselines)

