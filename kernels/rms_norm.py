"""RMSNorm, forward and backward, as Triton kernels.

Math (over the last dimension, hidden size N; x is viewed as (M, N) with M = prod(leading dims))::

    r_i  = 1 / sqrt(mean_j(x_ij^2) + eps)                    # per-row reciprocal RMS, fp32
    y_ij = x_ij * r_i * w_j

    dx_ij = r_i * (dy_ij w_j - x_ij * r_i^2 * mean_k(dy_ik w_k x_ik))
    dw_j  = sum_i dy_ij * x_ij * r_i

Everything is computed in fp32 whatever the input dtype (fp32 / fp16 / bf16); y and dx are returned in x's
dtype, dw in w's dtype. This is the "fp32 all the way" variant (Gemma/T5 style); Llama's reference casts the
normalized x back to the input dtype *before* multiplying by w, which differs in the last fp16/bf16 ulp.

Sources: Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (arXiv:1910.07467); the kernel layout
(one row per program, the whole row in registers, per-program partial dW summed afterwards) follows the Triton
layer-norm tutorial (python/tutorials/05-layer-norm.py) and Liger-Kernel's ``rms_norm.py``.

Two layouts, picked by the launchers from the row size (``_fwd_launch`` / ``_bwd_launch``):

- whole row: the row lives in one program's registers (padded to the next power of two and masked) and x is
  read from memory once; used while that fits in registers without spills;
- chunked: the program loops over the row in ``BLOCK_N``-element column chunks, twice -- pass 1 reduces (sum of
  x^2 forward, sum of dy*w*x backward), pass 2 re-reads the row (just read: expected from L1/L2, not DRAM; no GPU
  has measured it yet) and writes y or dx. The backward's per-program dW partial then cannot stay in registers either: pass 2 adds each row's
  dy*x*r into the program's own fp32 row of the partial buffer (read-modify-write, L2-resident).

Limits of the Triton path: N <= 65536 (``MAX_FUSED_SIZE``, the largest size checked by the ahead-of-time resource
test, tests/test_kernels_compile.py); N need not be a power of two. Larger N raises ``ValueError``.

Dispatch: see ``kernels._common`` -- Triton on CUDA tensors or under ``TRITON_INTERPRET=1``, otherwise the torch
reference (so CPU models built with fused kernels still run, differentiably, through plain torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from archbench.kernels._common import cdiv, interpreting, lazy_jit, next_power_of_2, use_triton

if TYPE_CHECKING:  # bound for real at the first launch (kernels/_common.py: triton is imported lazily)
    import triton.language as tl

__all__ = ["RMSNorm", "rms_norm", "rms_norm_reference", "rms_norm_bytes", "MAX_FUSED_SIZE"]

MAX_FUSED_SIZE = 65536  # largest hidden size the kernels accept (checked for spills on sm_80 / sm_90)
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------- reference
def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eager torch RMSNorm in fp32, returned in x's dtype. x: (..., N), weight: (N,) -> (..., N).

    Memory traffic: the ideal (fused) kernel reads M*N + N elements and writes M*N. This eager version also
    materializes fp32 copies and temporaries (x.float(), x^2, x*r, *w): roughly 4 extra M*N fp32 reads and
    writes each, which is what the fused kernel saves.
    """
    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    return (xf * rstd * weight.float()).to(x.dtype)


def rms_norm_bytes(m: int, n: int, element_size: int, weight_element_size: int | None = None) -> int:
    """Ideal forward memory traffic in bytes: read x (M*N) and w (N), write y (M*N)."""
    w_size = element_size if weight_element_size is None else weight_element_size
    return 2 * m * n * element_size + n * w_size


# ----------------------------------------------------------------------------------------------- kernels
@lazy_jit
def _rms_norm_fwd_kernel(
    X, W, Y, RSTD,  # pointers: X, Y (M, N) row-major with row strides below; W (N,); RSTD (M,) fp32
    stride_x, stride_y,  # elements between rows
    N, eps,
    BLOCK_N: tl.constexpr,  # next power of two >= N; the row is masked to N
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride may exceed 2**31 for big activations
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    # masked lanes are 0, so they add nothing to the sum; divide by the true N, not BLOCK_N
    mean_sq = tl.sum(x * x, axis=0) / N
    rstd = 1.0 / tl.sqrt(mean_sq + eps)
    tl.store(RSTD + row, rstd)  # saved for backward: 4 bytes per row instead of recomputing from x
    y = x * rstd * w
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@lazy_jit
def _rms_norm_bwd_kernel(
    DY, X, W, RSTD, DX, DW_PARTIAL,  # DW_PARTIAL: (num_programs, N) fp32, summed over programs by the launcher
    stride_dy, stride_x, stride_dx,
    M, N, rows_per_program,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row_start = pid * rows_per_program  # int64 bounds -> an int64 loop variable, safe for row * stride
    row_end = tl.minimum(row_start + rows_per_program, M)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    # dW accumulates in registers over this program's rows: one (N,) fp32 write per program instead of
    # an atomic per row, and a deterministic sum.
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for row in range(row_start, row_end):
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        dyw = dy * w
        # dx = r * (dy*w - x * r^2 * mean(dy*w*x))
        c = tl.sum(dyw * x, axis=0) / N
        dx = rstd * (dyw - x * (rstd * rstd * c))
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw_acc += dy * x * rstd
    tl.store(DW_PARTIAL + pid * N + cols, dw_acc, mask=mask)


@lazy_jit
def _rms_norm_fwd_chunked_kernel(
    X, W, Y, RSTD, stride_x, stride_y, N, eps,
    BLOCK_N: tl.constexpr,  # columns per chunk; the row is covered by cdiv(N, BLOCK_N) chunks
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    x_row = X + row * stride_x
    y_row = Y + row * stride_y
    # pass 1: sum of squares, accumulated per lane and reduced once at the end
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        x = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
        acc += x * x
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
    tl.store(RSTD + row, rstd)
    # pass 2: the row was just read, so these loads should hit L1/L2 rather than DRAM (not yet measured on a GPU)
    for start in range(0, N, BLOCK_N):
        mask = start + cols < N
        x = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + start + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + start + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


@lazy_jit
def _rms_norm_bwd_chunked_kernel(
    DY, X, W, RSTD, DX, DW_PARTIAL,  # DW_PARTIAL: (num_programs, N) fp32, zero-initialised by the launcher
    stride_dy, stride_x, stride_dx,
    M, N, rows_per_program,
    BLOCK_N: tl.constexpr,  # columns per chunk
):
    pid = tl.program_id(0).to(tl.int64)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, M)
    cols = tl.arange(0, BLOCK_N)
    dw_row = DW_PARTIAL + pid * N  # this program's own partial: no other program touches it
    for row in range(row_start, row_end):
        x_row = X + row * stride_x
        dy_row = DY + row * stride_dy
        rstd = tl.load(RSTD + row)
        # pass 1: c = mean(dy * w * x) over the whole row
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            mask = start + cols < N
            x = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + start + cols, mask=mask, other=0.0).to(tl.float32)
            acc += dy * w * x
        c = tl.sum(acc, axis=0) / N
        # pass 2: dx per chunk (x, dy re-read from cache) and dW += dy * x * r into this program's partial row.
        # The same program (same layout, so the same thread per element) stores and later re-loads each
        # element of dw_row: no other thread's write is read, no barrier needed.
        for start in range(0, N, BLOCK_N):
            mask = start + cols < N
            x = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + start + cols, mask=mask, other=0.0).to(tl.float32)
            dx = rstd * (dy * w - x * (rstd * rstd * c))
            tl.store(DX + row * stride_dx + start + cols, dx.to(DX.dtype.element_ty), mask=mask)
            dw = tl.load(dw_row + start + cols, mask=mask, other=0.0)
            tl.store(dw_row + start + cols, dw + dy * x * rstd, mask=mask)


# ----------------------------------------------------------------------------------------------- launchers
# Whole-row limits, from ptxas's register and spill counts for sm_90 and sm_80 (kernels._aot; the ahead-of-time
# resource test in tests/test_kernels_compile.py checks every configuration below at N = MAX_FUSED_SIZE):
#   forward, whole row at 32 warps: no spills up to 64 KiB of x per row (N = 16384 fp32, 32768 fp16/bf16);
#     N = 32768 fp32 spilled 32 B/thread, N = 65536 bf16 420 B/thread.
#   backward, whole row: x, dy, w and the dW accumulator are live across the row loop: no spills up to N = 8192;
#     N = 16384 spilled 80 B/thread (bf16) and 104 B (fp32), 32768 540 B (bf16): a 1024-thread block is capped
#     at 64 registers/thread, and reloading w per row was not enough (still 56 B at 16384).
# Beyond them the chunked kernels run: pass 2 re-reads the row from L1/L2 instead of keeping it in registers.
_FWD_WHOLE_ROW_BYTES = 64 * 1024
_BWD_WHOLE_ROW = 8192
# Chunked kernels: 8192 columns per chunk. Forward at 16 warps (16 elements per thread, 32-40 registers). Backward
# at 32 warps (8 per thread; 50-61 registers): at 16 warps ptxas held fp16 to 64 registers on sm_90 and spilled
# 20 B/thread; at 32 warps one 1024-thread program per SM runs, as for the whole-row backward at N = 8192.
# Not tuned: no GPU timing has compared chunk sizes or warp counts yet.
_CHUNK, _FWD_CHUNK_WARPS, _BWD_CHUNK_WARPS = 8192, 16, 32
# Under the interpreter (numpy, ~1 ms per program) the thresholds shrink, so small test rows (N = 1000) take the
# chunked path and several chunks with a masked tail, while N <= 256 keeps the whole-row path.
_INTERPRETER_WHOLE_ROW, _INTERPRETER_CHUNK = 256, 128


def _block_and_warps(n: int, backward: bool = False) -> tuple[int, int]:
    """BLOCK_N and num_warps of the whole-row kernels for a row of n elements.

    BLOCK_N: the next power of two >= n (tl.arange needs a power of two); the tail is masked.
    num_warps: one warp per 512 row elements forward (per 256 backward, which keeps x, dy, w and the dW
    accumulator live), clamped to [4, 32], so each thread holds ~16 elements per array and loads stay 16-byte
    vectorized.
    """
    if n > MAX_FUSED_SIZE:
        raise ValueError(f"rms_norm: hidden size {n} > {MAX_FUSED_SIZE} is not supported by the fused kernel")
    block = next_power_of_2(n)
    per_warp = 256 if backward else 512
    return block, max(4, min(32, block // per_warp))


def _fwd_launch(n: int, element_size: int) -> tuple[int, int, bool]:
    """(BLOCK_N, num_warps, chunked) of the forward for rows of n elements of ``element_size`` bytes."""
    block, num_warps = _block_and_warps(n)
    if interpreting():
        return (block, num_warps, False) if block <= _INTERPRETER_WHOLE_ROW else (_INTERPRETER_CHUNK, 4, True)
    if block * element_size <= _FWD_WHOLE_ROW_BYTES:
        return block, num_warps, False
    return _CHUNK, _FWD_CHUNK_WARPS, True


def _bwd_launch(n: int) -> tuple[int, int, bool]:
    """(BLOCK_N, num_warps, chunked) of the backward for rows of n elements."""
    block, num_warps = _block_and_warps(n, backward=True)
    if interpreting():
        return (block, num_warps, False) if block <= _INTERPRETER_WHOLE_ROW else (_INTERPRETER_CHUNK, 4, True)
    if block <= _BWD_WHOLE_ROW:
        return block, num_warps, False
    return _CHUNK, _BWD_CHUNK_WARPS, True


def _as_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """(..., N) -> (M, N) with unit column stride (a view when possible)."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t.reshape(-1, n)


def _rms_norm_fwd(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[-1]
    x2 = _as_rows(x, n)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    rstd = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m == 0:
        return y, rstd
    block, num_warps, chunked = _fwd_launch(n, x.element_size())
    kernel = _rms_norm_fwd_chunked_kernel if chunked else _rms_norm_fwd_kernel
    # one program per row: rows are independent and M (tokens) is usually >> number of SMs
    kernel[(m,)](x2, weight, y, rstd, x2.stride(0), y.stride(0), n, eps, BLOCK_N=block, num_warps=num_warps)
    return y, rstd


def _rms_norm_bwd(
    dy: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = x2.shape
    dy2 = _as_rows(dy, n)
    dx = torch.empty_like(x2)
    if m == 0:
        return dx, torch.zeros_like(weight)
    block, num_warps, chunked = _bwd_launch(n)
    # Grid: two programs per SM (persistent-style) so each keeps a long dW accumulation in registers, the
    # (programs, N) partial buffer stays small, and where registers allow two blocks per SM one's loads overlap
    # the other's math. Under the interpreter every program costs ~1 ms of Python, so
    # use two (still exercises the multi-program split and the uneven last chunk).
    if interpreting() or not x2.is_cuda:
        programs = min(m, 2)
    else:
        programs = min(m, 2 * torch.cuda.get_device_properties(x2.device).multi_processor_count)
    rows_per_program = cdiv(m, programs)
    programs = cdiv(m, rows_per_program)
    # the chunked kernel adds into its partial row (read-modify-write), so it starts from zeros
    dw_partial = (torch.zeros if chunked else torch.empty)((programs, n), dtype=torch.float32, device=x2.device)
    kernel = _rms_norm_bwd_chunked_kernel if chunked else _rms_norm_bwd_kernel
    kernel[(programs,)](
        dy2, x2, weight, rstd, dx, dw_partial,
        dy2.stride(0), x2.stride(0), dx.stride(0),
        m, n, rows_per_program,
        BLOCK_N=block, num_warps=num_warps,
    )
    return dx, dw_partial.sum(dim=0).to(weight.dtype)


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = _rms_norm_fwd(x, weight, eps)
        ctx.save_for_backward(_as_rows(x, x.shape[-1]), weight, rstd)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        dx, dw = _rms_norm_bwd(dy, x2, weight, rstd)
        return dx.view(ctx.x_shape), dw, None


# ----------------------------------------------------------------------------------------------- public API
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension: ``y = x / sqrt(mean(x^2, -1) + eps) * weight``. Differentiable.

    Shapes: x (..., N) in fp32/fp16/bf16, weight (N,) of any float dtype -> y (..., N) in x's dtype.
    Runs the Triton kernels on CUDA or under TRITON_INTERPRET=1, else ``rms_norm_reference`` (plain autograd).
    """
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} does not match x's last dim {x.shape[-1]}")
    if not use_triton(x, weight):
        return rms_norm_reference(x, weight, eps)
    if x.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"rms_norm: dtype {x.dtype} not supported by the kernel (fp32, fp16, bf16)")
    return _RMSNormFunction.apply(x, weight, eps)


class RMSNorm(nn.Module):
    """Thin module over ``rms_norm``: a learned (N,) gain initialised to ones."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
