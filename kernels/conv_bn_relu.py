"""Inference Conv2d + folded BatchNorm + activation, as one implicit-GEMM Triton kernel.

Math. An eval-mode BatchNorm after a convolution is an affine map per output channel k, so it folds into the
convolution's weight and bias (done once, in fp32, by ``fold_bn``)::

    s_k        = gamma_k / sqrt(running_var_k + eps)
    W'_k       = W_k * s_k                                  # (K, C, KH, KW)
    b'_k       = (conv_bias_k - running_mean_k) * s_k + beta_k
    y          = act(conv2d(x, W') + b')                    # act in {relu, relu6, None}

Implicit GEMM (no im2col buffer in memory): the convolution is the matrix product

    Y[m, k] = sum_r A[m, r] * B[r, k]
    m = (n, oh, ow)           M = N * OH * OW output pixels                       (rows)
    k                         K output channels                                   (columns)
    r = (kh, kw, c)           R = KH * KW * C                                     (reduction)
    A[m, r] = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]    (0 where the input index falls in the padding)
    B[r, k] = W'[k, c, kh, kw]

Each program computes a (BLOCK_M pixels x BLOCK_N channels) tile of Y, gathering the A tile straight from x with
masked loads, accumulating ``tl.dot`` in fp32, and applies bias + activation in the epilogue before the single
store. Output size follows torch: OH = floor((H + 2*ph - dh*(KH - 1) - 1) / sh) + 1, likewise OW.

Shapes: x (N, C, H, W) fp32/fp16/bf16, NCHW or channels_last (NCHW is converted to channels_last first, one
extra pass over x); w (K, C, KH, KW); b (K,) or None; groups = 1 only. y (N, K, OH, OW) in x's dtype, always
in channels_last memory format (same shape and values as torch's output; keeps a chain of fused convs NHWC).

Sources: Ioffe & Szegedy 2015 (BatchNorm); the implicit-GEMM formulation of Chetlur et al. 2014 (cuDNN,
arXiv:1410.0759) and NVIDIA CUTLASS's "Implicit GEMM Convolution" notes; tile/epilogue structure from the Triton
matmul tutorial (python/tutorials/03-matrix-multiplication.py).

Inference only: when autograd needs gradients (grad mode on and any input requiring grad) the call goes through
``conv_bn_act_reference`` so gradients are still correct; the fused kernel itself has no backward.

Dispatch: see ``kernels._common`` -- Triton on CUDA tensors or under ``TRITON_INTERPRET=1``, otherwise the torch
reference (CPU models built with fused=True still run).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from archbench.kernels._common import cdiv, dot_precision, interpreting, lazy_jit, use_triton

if TYPE_CHECKING:  # bound for real at the first launch (kernels/_common.py: triton is imported lazily)
    import triton.language as tl

__all__ = [
    "ACTIVATIONS",
    "ConvBNAct",
    "conv_bn_act",
    "conv_bn_act_reference",
    "conv_bn_act_unfused_reference",
    "conv_output_size",
    "conv_flops",
    "fold_bn",
]

ACTIVATIONS = ("relu", "relu6", None)
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    raise ValueError(f"conv_bn_act: {name} must be an int or a pair of ints, got {v!r}")


def _check_act(act: str | None) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"conv_bn_act: unknown act {act!r}; known: {list(ACTIVATIONS)}")


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """torch's Conv2d output size along one spatial dim."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_flops(n: int, c: int, k: int, oh: int, ow: int, kh: int, kw: int) -> int:
    """FLOPs of the convolution, counting a multiply-add as 2: 2 * N*OH*OW * K * C*KH*KW (bias/act ignored)."""
    return 2 * n * oh * ow * k * c * kh * kw


# ----------------------------------------------------------------------------------------------- references
def fold_bn(
    conv_weight: torch.Tensor,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float = 1e-5,
    conv_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm2d into the preceding conv: returns ``(w, b)`` with ``w`` (K, C, KH, KW), ``b`` (K,).

    The fold is computed in fp32 (running_var + eps can underflow / lose digits in fp16) and both results are
    returned in ``conv_weight``'s dtype. ``bn_weight`` / ``bn_bias`` may be None (``affine=False``: 1 and 0).
    Differentiable with respect to every input; call under ``torch.no_grad()`` to get plain tensors.
    """
    k = conv_weight.shape[0]
    dev = conv_weight.device
    gamma = torch.ones(k, device=dev) if bn_weight is None else bn_weight.float()
    beta = torch.zeros(k, device=dev) if bn_bias is None else bn_bias.float()
    scale = gamma * torch.rsqrt(running_var.float() + eps)  # (K,)
    w = conv_weight.float() * scale.view(-1, 1, 1, 1)
    b0 = torch.zeros(k, device=dev) if conv_bias is None else conv_bias.float()
    b = (b0 - running_mean.float()) * scale + beta
    return w.to(conv_weight.dtype), b.to(conv_weight.dtype)


def _apply_act(y: torch.Tensor, act: str | None) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return F.relu6(y)
    return y


def conv_bn_act_reference(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    act: str | None = "relu",
) -> torch.Tensor:
    """Eager torch for the folded op: ``act(F.conv2d(x, w, b))`` in x's dtype (w, b cast to it).

    Memory traffic: the fused kernel reads x and w once (plus the x re-reads of overlapping windows, mostly
    served by L2) and writes y once. Eager reads x + w and writes y in the conv (cuDNN fuses the bias), then
    the activation reads and writes y again: 2 extra activation-sized passes.
    """
    _check_act(act)
    bias = None if b is None else b.to(x.dtype)
    y = F.conv2d(x, w.to(x.dtype), bias, _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"))
    return _apply_act(y, act)


def conv_bn_act_unfused_reference(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float = 1e-5,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    act: str | None = "relu",
) -> torch.Tensor:
    """The unfused model as written: conv -> BatchNorm (eval, running stats) -> act, in x's dtype.

    Memory traffic: conv writes y, BN reads y and writes y, act reads y and writes y: 3 activation-sized writes
    and 2 reads more than the fused kernel.
    """
    _check_act(act)
    y = F.conv2d(x, conv_weight, conv_bias, _pair(stride, "stride"), _pair(padding, "padding"),
                 _pair(dilation, "dilation"))
    y = F.batch_norm(y, running_mean, running_var, bn_weight, bn_bias, training=False, eps=eps)
    return _apply_act(y, act)


# ----------------------------------------------------------------------------------------------- kernel
@lazy_jit
def _conv_bn_act_kernel(
    X, Wt, B, Y,  # X (N, C, H, W) strided; Wt (KH, KW, C, K) contiguous; B (K,) fp32; Y (N, K, OH, OW) strided
    M, C, H, W, K, OH, OW,  # M = N * OH * OW
    sxn, sxc, sxh, sxw,
    syn, syk, syh, syw,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr,
    ACT: tl.constexpr,  # "relu" | "relu6" | "none"
    HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,  # tl.dot precision for fp32 operands ("tf32" | "ieee")
    BLOCK_M: tl.constexpr,  # output pixels per program
    BLOCK_N: tl.constexpr,  # output channels per program
    BLOCK_K: tl.constexpr,  # input channels per reduction step (>= 16 for tl.dot)
):
    # Program order: the channel-block index varies fastest, so the programs that share an A (pixel) tile run
    # back to back and hit it in L2; the weights are small and stay L2-resident anyway.
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(K, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) output pixel ids
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output channel ids
    offs_c = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < K

    ohw = OH * OW
    n_idx = offs_m // ohw
    rem = offs_m % ohw
    oh = rem // OW
    ow = rem % OW
    ih0 = oh * stride_h - pad_h  # top-left input corner of each output pixel's window
    iw0 = ow * stride_w - pad_w
    x_img = X + n_idx.to(tl.int64) * sxn  # int64: N*C*H*W may exceed 2**31 elements

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One flat reduction loop over (tap, channel block) instead of three nested loops: software pipelining
    # (num_stages) works on the innermost loop, and for 1x1 convs with few channels a nested channel loop
    # would have only 1-2 iterations to overlap.
    c_blocks = tl.cdiv(C, BLOCK_K)
    for t in range(0, KH * KW * c_blocks):
        tap = t // c_blocks
        c0 = (t % c_blocks) * BLOCK_K
        kh = tap // KW
        kw = tap % KW
        ih = ih0 + kh * dil_h
        iw = iw0 + kw * dil_w
        in_bounds = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # zero padding by masking
        cs = c0 + offs_c
        mask_c = cs < C
        # A tile (BLOCK_M, BLOCK_K): gathered from x; B tile (BLOCK_K, BLOCK_N): contiguous along K
        a_ptrs = x_img[:, None] + (ih * sxh + iw * sxw)[:, None] + cs[None, :] * sxc
        a = tl.load(a_ptrs, mask=in_bounds[:, None] & mask_c[None, :], other=0.0)
        b_ptrs = Wt + (tap * C + cs)[:, None] * K + offs_n[None, :]
        b = tl.load(b_ptrs, mask=mask_c[:, None] & mask_n[None, :], other=0.0)
        # fp16/bf16 operands -> tensor cores with fp32 accumulation; fp32 operands per INPUT_PRECISION
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    # Epilogue in fp32: folded-BN bias, activation, one cast and one store.
    if HAS_BIAS:
        bias = tl.load(B + offs_n, mask=mask_n, other=0.0)
        acc = acc + bias[None, :]
    if ACT == "relu":
        acc = tl.maximum(acc, 0.0)
    elif ACT == "relu6":
        acc = tl.minimum(tl.maximum(acc, 0.0), 6.0)
    y_ptrs = (Y + (n_idx.to(tl.int64) * syn + oh * syh + ow * syw)[:, None]
              + offs_n[None, :].to(tl.int64) * syk)
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# ----------------------------------------------------------------------------------------------- launcher
def _conv_config(m: int, c: int, k: int, dtype: torch.dtype, precision: str = "tf32") -> dict[str, int]:
    """Tile sizes and launch parameters.

    GPU (tuned for Hopper/Ampere tensor cores, no autotuning so the choice is reproducible and visible):
      BLOCK_M = 128 pixels: a full 128-row wgmma/mma tile; conv layers have M = N*OH*OW in the thousands.
      BLOCK_N = out channels rounded up to a power of two, capped at 128: CNN layers have 16..2048 channels, and
                a 128x128 fp32 accumulator is 64 registers/thread at 8 warps.
      BLOCK_K = 64 input channels (32 for fp32 operands, whose tiles are twice the bytes), smaller when C is
                small (a 3-channel stem pads to 16, the tl.dot minimum).
      num_warps = 8 for 128x128 tiles (two warpgroups), 4 otherwise.
      num_stages = 3: three A+B tiles in flight; 3 * (128*64 + 64*128) * 2 B = 96 KiB of shared memory for
                fp16 (fp32: 3 * (128*32 + 32*128) * 4 B = 96 KiB), well inside the 227 KiB per block on H100.
    Strict fp32 (``precision == "ieee"``, torch.backends.cudnn.allow_tf32 off: FMA dots, not tensor cores) holds
      more operands in registers: at 4 warps the 128 x 64 tile spilled 44 B/thread on sm_80 and the 7x7 stem 24 B
      on sm_90, and 3 stages still spilled the stem on sm_80 at 8 warps; 8 warps and 2 stages have no spills on
      either (ahead-of-time resource test, tests/test_kernels_compile.py). A correctness path, like fp32 attention.
    Interpreter: every program instance costs ~1 ms of Python, so small tiles that still exercise multi-block
      grids, the tail masks and the multi-step reduction on tiny test shapes.
    """
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1)
    block_n = min(128, max(16, 1 << (k - 1).bit_length()))
    max_k = 32 if dtype == torch.float32 else 64
    block_k = min(max_k, max(16, 1 << (c - 1).bit_length()))
    block_m = 128 if m >= 128 else 64
    if dtype == torch.float32 and precision == "ieee":
        return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=8, num_stages=2)
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=3)


# Packed weights by weight tensor: (weakref to w, w's version counter, packed). A model calls conv_bn_act with the
# same (folded) weight tensor every time; packing it once saves a cast + permute + copy kernel per call. An entry
# is used only while its tensor is alive (the weakref) and unmodified in place (the version counter).
_PACKED: dict[tuple[int, torch.dtype], tuple[weakref.ref, int, torch.Tensor]] = {}
_PACKED_MAX = 256


def _packed_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(K, C, KH, KW) -> (KH, KW, C, K) contiguous in ``dtype``, cached per live, unmodified weight tensor.

    The reduction index r = (kh*KW + kw)*C + c then walks rows of a row-major (R, K) matrix, so each B tile load
    is contiguous along the output channels."""
    key = (id(w), dtype)
    hit = _PACKED.get(key)
    if hit is not None and hit[0]() is w and hit[1] == w._version:
        return hit[2]
    packed = w.detach().to(dtype).permute(2, 3, 1, 0).contiguous()
    if len(_PACKED) >= _PACKED_MAX:  # drop entries of dead tensors, else the oldest
        dead = [k for k, v in _PACKED.items() if v[0]() is None]
        for k in dead or [next(iter(_PACKED))]:
            del _PACKED[k]
    _PACKED[key] = (weakref.ref(w), w._version, packed)
    return packed


def _conv_bn_act_triton(x, w, b, stride, padding, dilation, act) -> torch.Tensor:
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(wd, kw, sw, pw, dw)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv_bn_act: empty output {oh}x{ow} for input {h}x{wd} and kernel {kh}x{kw}")
    # The kernel takes any strides, but it is fast only channels_last (NHWC): the A tile is then contiguous along
    # the reduction (channel) dim, so its loads vectorize and are cp.async-pipelined. From NCHW the gather is
    # strided, and on sm_90 the 16-bit kernel spills registers and loses the A pipelining (checked with
    # kernels._aot). So NCHW input is converted once here (one read + write of x, like cuDNN's own transposes
    # for tensor-core convs) and y is produced channels_last, so chained fused convs never convert again.
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty((n, k, oh, ow), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    m = n * oh * ow
    if m == 0 or k == 0:
        return y
    wt = _packed_weight(w, x.dtype)
    bias = b.float().contiguous() if b is not None else wt  # dummy pointer when HAS_BIAS is False
    # fp32 convs follow torch's cuDNN flag (TF32 allowed by default), so the comparison with eager is fair
    precision = dot_precision(torch.backends.cudnn.allow_tf32)
    cfg = _conv_config(m, c, k, x.dtype, precision)
    grid = (cdiv(m, cfg["BLOCK_M"]) * cdiv(k, cfg["BLOCK_N"]),)
    _conv_bn_act_kernel[grid](
        x, wt, bias, y,
        m, c, h, wd, k, oh, ow,
        *x.stride(), *y.stride(),
        sh, sw, ph, pw, dh, dw,
        KH=kh, KW=kw, ACT=act or "none", HAS_BIAS=b is not None, INPUT_PRECISION=precision,
        **cfg,
    )
    return y


# ----------------------------------------------------------------------------------------------- public API
def conv_bn_act(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    act: str | None = "relu",
) -> torch.Tensor:
    """``act(conv2d(x, w) + b)`` with w, b from ``fold_bn``; one fused implicit-GEMM kernel on CUDA.

    x (N, C, H, W) fp32/fp16/bf16; w (K, C, KH, KW) (cast to x's dtype); b (K,) or None (added in fp32);
    stride/padding/dilation int or (h, w) pair; act in ``ACTIVATIONS``; groups=1. Returns (N, K, OH, OW) in x's
    dtype (channels_last memory format on the kernel path). Falls back to ``conv_bn_act_reference`` on CPU
    without TRITON_INTERPRET=1, without triton, or when autograd needs gradients (the kernel is inference-only).
    """
    _check_act(act)
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if x.dim() != 4 or w.dim() != 4:
        raise ValueError(f"conv_bn_act: expected 4-D x and w, got {tuple(x.shape)} and {tuple(w.shape)}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"conv_bn_act: w has {w.shape[1]} input channels, x has {x.shape[1]} (only groups=1 is supported)"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"conv_bn_act: bias shape {tuple(b.shape)} != ({w.shape[0]},)")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"conv_bn_act: bad stride {stride} / padding {padding} / dilation {dilation}")
    tensors = [t for t in (x, w, b) if t is not None]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if needs_grad or not use_triton(*tensors):
        return conv_bn_act_reference(x, w, b, stride, padding, dilation, act)
    if x.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"conv_bn_act: dtype {x.dtype} not supported by the kernel (fp32, fp16, bf16)")
    return _conv_bn_act_triton(x, w, b, stride, padding, dilation, act)


class ConvBNAct(nn.Module):
    """Thin inference module: a Conv2d (groups=1) with its BatchNorm folded in, plus activation, via ``conv_bn_act``.

    Build it from trained modules with ``ConvBNAct.from_modules(conv, bn, act)``; the folded weight and bias
    are buffers (inference only: they do not train).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride=1, padding=0, dilation=1,
                 act: str | None = "relu") -> None:
        super().__init__()
        _check_act(act)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.padding, self.dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(
            dilation, "dilation")
        self.act = act

    @classmethod
    @torch.no_grad()
    def from_modules(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: str | None = "relu") -> ConvBNAct:
        if conv.groups != 1:
            raise ValueError(f"ConvBNAct: groups={conv.groups} is not supported (groups=1 only)")
        if not isinstance(conv.padding, tuple):
            raise ValueError(f"ConvBNAct: string padding {conv.padding!r} is not supported; use ints")
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("ConvBNAct: BatchNorm without running stats cannot be folded")
        w, b = fold_bn(conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps, conv.bias)
        return cls(w, b, conv.stride, conv.padding, conv.dilation, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_bn_act(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.act)

    def extra_repr(self) -> str:
        k, c, kh, kw = self.weight.shape
        return (f"{c}, {k}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, act={self.act}")
