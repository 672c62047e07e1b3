"""Tiled attention with an online softmax (FlashAttention-2 style), forward and backward, as Triton kernels.

Math, per batch b and head h (q: (N_q, d), k and v: (N_k, d))::

    S = scale * Q K^T                      (N_q, N_k), scale = 1/sqrt(d) by default
    P = softmax(S) row-wise, with S_ij = -inf where causal and j > i
    O = P V                                (N_q, d)

Causal masking is top-left aligned (query i sees keys j <= i), the convention of
``F.scaled_dot_product_attention(is_causal=True)``; with N_q != N_k this differs from FlashAttention >= 2.1,
which aligns the mask bottom-right.

Forward (Dao 2023, Algorithm 1): each program owns BLOCK_M query rows, streams K/V in BLOCK_N blocks and keeps a
running row max m, running denominator l and unnormalized accumulator in registers (all fp32); S and P never
touch global memory. Exponentials use exp2 with log2(e) folded into the scale. It saves the per-row
log-sum-exp L = m + log2(l) (base 2, fp32, (B, H, N_q)) for the backward. Causal programs run two phases: key
blocks entirely below the diagonal without any mask, then the diagonal blocks with the mask.

Backward (Dao 2023, Algorithm 2): Delta_i = sum_d dO_id O_id (a small preprocessing kernel); then
  - one kernel per BLOCK_N1 key block recomputes P^T = exp2(scale*log2e * K Q^T - L) for every query block and
    accumulates dV = P^T dO and dK = scale * dS^T Q with dS = P * (dO V^T - Delta);
  - one kernel per BLOCK_M2 query block accumulates dQ = scale * dS K.
Both recompute P from L instead of storing it (O(N) memory), and write each gradient once (no atomics).

Shapes: q (B, H, N_q, d), k and v (B, H, N_k, d), any strides, fp32/fp16/bf16 (all three the same dtype);
d <= 128, any value (padded to the next power of two >= 16 and masked); N_q, N_k any (tail blocks masked); for
causal attention N_q and N_k may also differ (top-left alignment, see above). Returns o (B, H, N_q, d) in q's
dtype. Matmuls take fp16/bf16 operands on tensor cores with fp32 accumulation; P is cast to the input dtype
before P V (as FlashAttention does). fp32 inputs use TF32 when ``torch.backends.cuda.matmul.allow_tf32``.

Sources: Dao et al. 2022, "FlashAttention" (arXiv:2205.14135); Dao 2023, "FlashAttention-2" (arXiv:2307.08691);
the Triton fused-attention tutorial (python/tutorials/06-fused-attention.py), whose two-phase causal loop and
backward split this follows (without its TMA / warp-specialization paths).

Dispatch: see ``kernels._common`` -- Triton on CUDA tensors or under ``TRITON_INTERPRET=1``, otherwise
``attention_reference`` (differentiable through plain autograd).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from archbench.kernels._common import (
    cdiv,
    dot_precision,
    interpreting,
    lazy_jit,
    next_power_of_2,
    target_arch,
    use_triton,
)

if TYPE_CHECKING:  # bound for real at the first launch (kernels/_common.py: triton is imported lazily)
    import triton.language as tl

__all__ = ["attention", "attention_reference", "attention_flops", "tile_config", "MAX_HEAD_DIM"]

MAX_HEAD_DIM = 128
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_LOG2E = 1.4426950408889634  # log2(e): exp(x) = exp2(x * log2(e))


# ----------------------------------------------------------------------------------------------- reference
def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """Explicit ``softmax(Q K^T * scale) V`` in fp32, returned in q's dtype. (B, H, N_q, d) -> (B, H, N_q, d).

    Memory traffic: it materializes the (B, H, N_q, N_k) score matrix in fp32 and passes over it ~4 times
    (write S, read S / write P in softmax, read P in P V, plus the mask): O(N_q * N_k) bytes, against the
    O((N_q + N_k) * d) of the tiled kernel, which reads Q once and K, V once per query block and writes O once.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    n_q, n_k = q.shape[-2], k.shape[-2]
    s = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale  # (B,H,Nq,d) @ (B,H,d,Nk) -> (B,H,Nq,Nk)
    if causal:
        visible = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()  # top-left: j <= i
        s = s.masked_fill(~visible, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.matmul(p, v.float()).to(q.dtype)  # (B,H,Nq,Nk) @ (B,H,Nk,d) -> (B,H,Nq,d)


def attention_flops(b: int, h: int, n_q: int, n_k: int, d: int, causal: bool = False, backward: bool = False) -> int:
    """Matmul FLOPs (multiply-add = 2): forward 2 matmuls of 2*N_q*N_k*d each -> 4*B*H*N_q*N_k*d, halved when
    causal (about half the scores are masked; FlashAttention's convention). Backward does 5 such matmuls
    (2.5x the forward); ``backward=True`` returns forward + backward (3.5x)."""
    flops = 4 * b * h * n_q * n_k * d
    if causal:
        flops //= 2
    return flops * 7 // 2 if backward else flops


# ----------------------------------------------------------------------------------------------- kernels
@lazy_jit
def _attn_fwd_kernel(
    Q, K, V, Out, LSE,  # LSE: (B*H, N_Q) fp32, base-2 log-sum-exp of the scaled scores
    sqb, sqh, sqn, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    sob, soh, son, sod,
    H, N_Q, N_K,
    qk_scale,  # scale * log2(e)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,  # next power of two >= max(HEAD_DIM, 16)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,  # BLOCK_M % BLOCK_N == 0, so the diagonal phase starts on a block boundary
    NUM_PHASES: tl.constexpr,  # 1: non-causal; 2: causal (off-diagonal blocks, then diagonal blocks)
    EVEN_N: tl.constexpr,  # N_K % BLOCK_N == 0: no key tail (with HEAD_DIM == BLOCK_D, K/V loads are unmasked)
    INPUT_PRECISION: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    q_base = Q + off_b * sqb + off_h * sqh
    k_base = K + off_b * skb + off_h * skh
    v_base = V + off_b * svb + off_h * svh

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM  # all-true (folded away) when HEAD_DIM is a power of two >= 16
    mask_m = offs_m < N_Q
    q = tl.load(q_base + offs_m[:, None] * sqn + offs_d[None, :] * sqd,
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_M, BLOCK_D), stays in registers

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (base-2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running unnormalized P V

    for phase in tl.static_range(NUM_PHASES):
        if phase == 0:
            # every key block for non-causal; for causal the blocks left of this query block (j < i always)
            lo = 0
            if NUM_PHASES == 2:
                hi = tl.minimum(start_m * BLOCK_M, N_K)
            else:
                hi = N_K
        else:
            # causal diagonal: keys [start_m*BLOCK_M, (start_m+1)*BLOCK_M), masked to j <= i
            lo = start_m * BLOCK_M
            hi = tl.minimum(lo + BLOCK_M, N_K)
        for start_n in range(lo, hi, BLOCK_N):
            cur_n = start_n + offs_n
            mask_n = cur_n < N_K
            # K^T tile loaded directly as (BLOCK_D, BLOCK_N). With no key tail and no padded head dim nothing needs
            # masking: the pipelined cp.async copies then carry no per-element bounds check (only the pipeliner's
            # per-stage predicate; tests/test_kernels_compile.py checks this in the compiled TTGIR)
            kt_ptrs = k_base + cur_n[None, :] * skn + offs_d[:, None] * skd
            if EVEN_N and HEAD_DIM == BLOCK_D:
                kt = tl.load(kt_ptrs)
            else:
                kt = tl.load(kt_ptrs, mask=mask_n[None, :] & mask_d[:, None], other=0.0)
            qk = tl.dot(q, kt, input_precision=INPUT_PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N) fp32
            if not EVEN_N:
                qk = tl.where(mask_n[None, :], qk, float("-inf"))
            if phase == 1:
                qk = tl.where(offs_m[:, None] >= cur_n[None, :], qk, float("-inf"))
            # online softmax: rescale the old sums by 2^(m_old - m_new). Every row has seen key 0 (visible
            # to all rows) in its first block, so m_new is finite and fully masked rows of a block give p = 0.
            m_new = tl.maximum(m_i, tl.max(qk, axis=1))
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None]
            v_ptrs = v_base + cur_n[:, None] * svn + offs_d[None, :] * svd  # (BLOCK_N, BLOCK_D)
            if EVEN_N and HEAD_DIM == BLOCK_D:
                v = tl.load(v_ptrs)
            else:
                v = tl.load(v_ptrs, mask=mask_n[:, None] & mask_d[None, :], other=0.0)
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
            m_i = m_new

    acc = acc / l_i[:, None]
    o_base = Out + off_b * sob + off_h * soh
    tl.store(o_base + offs_m[:, None] * son + offs_d[None, :] * sod, acc.to(Out.dtype.element_ty),
             mask=mask_m[:, None] & mask_d[None, :])
    tl.store(LSE + off_bh.to(tl.int64) * N_Q + offs_m, m_i + tl.math.log2(l_i), mask=mask_m)


@lazy_jit
def _attn_bwd_preprocess_kernel(
    Out, DO, DELTA,  # DELTA: (B*H, N_Q) fp32
    sob, soh, son, sod,
    sdob, sdoh, sdon, sdod,
    H, N_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < N_Q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(Out + off_b * sob + off_h * soh + offs_m[:, None] * son + offs_d[None, :] * sod,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + off_b * sdob + off_h * sdoh + offs_m[:, None] * sdon + offs_d[None, :] * sdod,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + off_bh.to(tl.int64) * N_Q + offs_m, tl.sum(o * do, axis=1), mask=offs_m < N_Q)


@lazy_jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,  # DK, DV have the strides of K, V (allocated with empty_like)
    sqb, sqh, sqn, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    sdob, sdoh, sdon, sdod,
    H, N_Q, N_K,
    sm_scale, qk_scale,  # scale and scale * log2(e)
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows per inner step (BLOCK_M1)
    BLOCK_N: tl.constexpr,  # keys owned by this program (BLOCK_N1)
    CAUSAL: tl.constexpr,
    EVEN_M: tl.constexpr,  # N_Q % BLOCK_M == 0: no query tail (with HEAD_DIM == BLOCK_D, Q/dO loads are unmasked)
    INPUT_PRECISION: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    q_base = Q + off_b * sqb + off_h * sqh
    do_base = DO + off_b * sdob + off_h * sdoh
    lse_base = LSE + off_bh.to(tl.int64) * N_Q
    delta_base = DELTA + off_bh.to(tl.int64) * N_Q

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    kv_mask = (offs_n < N_K)[:, None] & mask_d[None, :]
    k = tl.load(K + off_b * skb + off_h * skh + offs_n[:, None] * skn + offs_d[None, :] * skd,
                mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
    v = tl.load(V + off_b * svb + off_h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd,
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # causal: query rows i < start_n see none of these keys; start at the query block holding row start_n
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
    else:
        lo = 0
    for start_m in range(lo, N_Q, BLOCK_M):
        offs_m = start_m + offs_m0
        mask_m = offs_m < N_Q
        qt_ptrs = q_base + offs_m[None, :] * sqn + offs_d[:, None] * sqd  # Q^T (BLOCK_D, BLOCK_M)
        do_ptrs = do_base + offs_m[:, None] * sdon + offs_d[None, :] * sdod  # (BLOCK_M, BLOCK_D)
        if EVEN_M and HEAD_DIM == BLOCK_D:  # every query block is full: unmasked loads (as in the forward)
            qt = tl.load(qt_ptrs)
            do = tl.load(do_ptrs)
        else:
            qt = tl.load(qt_ptrs, mask=mask_m[None, :] & mask_d[:, None], other=0.0)
            do = tl.load(do_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        if EVEN_M:
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        else:
            lse = tl.load(lse_base + offs_m, mask=mask_m, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=mask_m, other=0.0)
        # P^T = exp2(scale*log2e * K Q^T - L): (BLOCK_N, BLOCK_D) @ (BLOCK_D, BLOCK_M) -> (BLOCK_N, BLOCK_M)
        pt = tl.math.exp2(tl.dot(k, qt, input_precision=INPUT_PRECISION) * qk_scale - lse[None, :])
        valid = mask_m[None, :] & (offs_n < N_K)[:, None]
        if CAUSAL:
            valid = valid & (offs_m[None, :] >= offs_n[:, None])
        pt = tl.where(valid, pt, 0.0)
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=INPUT_PRECISION)  # (N, M) @ (M, D)
        dpt = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION)  # (N, D) @ (D, M) -> dP^T
        dst = pt * (dpt - delta[None, :])  # dS^T, fp32
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=INPUT_PRECISION)  # (N, M) @ (M, D)

    dk = dk * sm_scale  # S = scale * Q K^T  =>  dK = scale * dS^T Q
    st_mask = (offs_n < N_K)[:, None] & mask_d[None, :]
    tl.store(DK + off_b * skb + off_h * skh + offs_n[:, None] * skn + offs_d[None, :] * skd,
             dk.to(DK.dtype.element_ty), mask=st_mask)
    tl.store(DV + off_b * svb + off_h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd,
             dv.to(DV.dtype.element_ty), mask=st_mask)


@lazy_jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,  # DQ has the strides of Q
    sqb, sqh, sqn, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    sdob, sdoh, sdon, sdod,
    H, N_Q, N_K,
    sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows owned by this program (BLOCK_M2)
    BLOCK_N: tl.constexpr,  # keys per inner step (BLOCK_N2)
    CAUSAL: tl.constexpr,
    EVEN_N: tl.constexpr,  # N_K % BLOCK_N == 0: no key tail (with HEAD_DIM == BLOCK_D, K/V loads are unmasked)
    INPUT_PRECISION: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    k_base = K + off_b * skb + off_h * skh
    v_base = V + off_b * svb + off_h * svh

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    mask_m = offs_m < N_Q
    qd_mask = mask_m[:, None] & mask_d[None, :]
    q = tl.load(Q + off_b * sqb + off_h * sqh + offs_m[:, None] * sqn + offs_d[None, :] * sqd,
                mask=qd_mask, other=0.0)
    do = tl.load(DO + off_b * sdob + off_h * sdoh + offs_m[:, None] * sdon + offs_d[None, :] * sdod,
                 mask=qd_mask, other=0.0)
    lse = tl.load(LSE + off_bh.to(tl.int64) * N_Q + offs_m, mask=mask_m, other=0.0)
    delta = tl.load(DELTA + off_bh.to(tl.int64) * N_Q + offs_m, mask=mask_m, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # causal: keys beyond the last row of this block are invisible to all of its rows
    if CAUSAL:
        hi = tl.minimum(start_m + BLOCK_M, N_K)
    else:
        hi = N_K
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        mask_n = offs_n < N_K
        kt_ptrs = k_base + offs_n[None, :] * skn + offs_d[:, None] * skd  # K^T (BLOCK_D, BLOCK_N)
        vt_ptrs = v_base + offs_n[None, :] * svn + offs_d[:, None] * svd  # V^T
        if EVEN_N and HEAD_DIM == BLOCK_D:  # every key block is full: unmasked loads (as in the forward)
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        else:
            kv_mask = mask_n[None, :] & mask_d[:, None]
            kt = tl.load(kt_ptrs, mask=kv_mask, other=0.0)
            vt = tl.load(vt_ptrs, mask=kv_mask, other=0.0)
        p = tl.math.exp2(tl.dot(q, kt, input_precision=INPUT_PRECISION) * qk_scale - lse[:, None])
        valid = mask_n[None, :]
        if CAUSAL:
            valid = valid & (offs_m[:, None] >= offs_n[None, :])
        p = tl.where(valid, p, 0.0)
        dp = tl.dot(do, vt, input_precision=INPUT_PRECISION)  # (M, D) @ (D, N) -> (M, N)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=INPUT_PRECISION)  # (M, N) @ (N, D)

    dq = dq * sm_scale
    tl.store(DQ + off_b * sqb + off_h * sqh + offs_m[:, None] * sqn + offs_d[None, :] * sqd,
             dq.to(DQ.dtype.element_ty), mask=qd_mask)


# ----------------------------------------------------------------------------------------------- launchers
def _fwd_config(block_d: int, dtype: torch.dtype, precision: str = "ieee", arch: int = 90) -> dict[str, int]:
    """Forward tiles for a head dim padded to ``block_d`` on compute capability ``arch``.

    Every branch is checked for sm_90 and sm_80 by the ahead-of-time resource test (tests/test_kernels_compile.py:
    registers and spills from ptxas, shared memory); the numbers below are from it.
    fp16/bf16 (tensor cores), after the Triton tutorial's configs: BLOCK_M = 128 query rows per program at 8
    warps (two warpgroups of wgmma rows on Hopper), num_stages = 3 K/V tiles in flight.
      sm_90: BLOCK_N = 128 keys per step for d <= 64, 64 for d = 128: up to 255 registers/thread, no spills;
        112 KiB (d = 64) / 128 KiB (d = 128) of shared memory of the 227 KiB per block.
      sm_80 (and other pre-Hopper GPUs): the same tiles spill there (16 B/thread at d = 64, 60 B at d = 128,
        causal: mma.sync keeps more operands in registers than wgmma), so BLOCK_N = 64 / 32 (up to 232 / 192
        registers, no spills; 48 / 64 KiB of shared memory, inside the 99 KiB of sm_86/sm_89 too). These are
        FlashAttention-2's A100 tiles.
    fp32 (FMA, or TF32 MMAs when ``precision == "tf32"``): 64 x 32 tiles at 8 warps for d <= 64, 32 x 32 for
    larger d. Strict fp32 (FMA dots) at d = 128 spilled 436 B/thread causal with 2 stages (the two phases' loops
    double the live operands); with 1 stage it has 194 registers and no spills, so strict fp32 at d > 64 is not
    pipelined. fp32 attention is a correctness path (no FlashAttention library supports it either).
    Interpreter: 32 x 16 tiles, so small test shapes still cover several query blocks, a multi-block causal
    diagonal (BLOCK_M = 2 * BLOCK_N) and key tails.
    """
    if interpreting():
        return dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        if block_d <= 64:
            return dict(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2)
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=8, num_stages=2 if precision == "tf32" else 1)
    if arch >= 90:
        block_n = 128 if block_d <= 64 else 64
    else:
        block_n = 64 if block_d <= 64 else 32
    return dict(BLOCK_M=128, BLOCK_N=block_n, num_warps=8, num_stages=3)


def _bwd_config(block_d: int, dtype: torch.dtype, arch: int = 90) -> dict[str, int]:
    """Backward tiles (after the Triton tutorial: BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32).

    The dK/dV kernel owns a tall key block (BLOCK_N1: dK and dV accumulators are 2 x BLOCK_N1 x d fp32) and
    streams narrow query blocks (BLOCK_M1 = 32); the dQ kernel is the mirror image. Narrow inner blocks keep
    the four live (BLOCK_N1 x 32) fp32 tiles (S, P, dP, dS) in registers. Checked like the forward:
      fp16/bf16, d <= 64: 128-tall blocks at 8 warps (sm_90 152 registers; sm_80 255, no spills).
      fp16/bf16, d = 128: 64-tall blocks; sm_90 at 4 warps (up to 247 registers, no spills), sm_80 at 8 warps
        (up to 223 registers; 4 warps spilled 120 B/thread there, causal).
      fp32: 64 x 16 at 8 warps (d <= 64) or 32 x 16 at 4 warps, the largest tiles without spills on sm_90 with and
        without TF32; on sm_80 those spilled 4 B (d <= 64) and 12 B (d = 128, strict fp32), so there d <= 64
        uses 32 x 16 at 4 warps and d = 128 8 warps.
    """
    if interpreting():
        return dict(BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        if block_d <= 64:
            if arch >= 90:
                return dict(BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=16, num_warps=8, num_stages=2)
            return dict(BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16, num_warps=4, num_stages=2)
        return dict(BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16, num_warps=4 if arch >= 90 else 8,
                    num_stages=2)
    if block_d <= 64:
        return dict(BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32, num_warps=8, num_stages=3)
    return dict(BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=32, num_warps=4 if arch >= 90 else 8, num_stages=3)


def _arch() -> int:
    return 0 if interpreting() else target_arch()


def _precision() -> str:
    # fp32 attention follows torch's matmul flag (TF32 off by default), as cuBLAS / SDPA math does
    return dot_precision(torch.backends.cuda.matmul.allow_tf32)


# Tile overrides for tuning experiments on a GPU (``tile_config``): merged over the launchers' choices. Read by the
# forward when it runs; the backward gets the forward's copy through the autograd context (CUDA backward runs on
# autograd's own thread, outside any context manager of the caller).
_TILE_OVERRIDE: dict[str, dict[str, int]] = {}


@contextlib.contextmanager
def tile_config(fwd: dict[str, int] | None = None, bwd: dict[str, int] | None = None) -> Iterator[None]:
    """Within the block, launch with these tiles merged over ``_fwd_config`` / ``_bwd_config``'s (same keys):
    how ``archbench kernels`` times candidate tiles beside the chosen ones, so a GPU run has the numbers to tune
    with. A benchmarking hook: not thread-safe, and any override should first pass the ahead-of-time resource
    test (tests/test_kernels_compile.py)."""
    global _TILE_OVERRIDE
    saved = _TILE_OVERRIDE
    _TILE_OVERRIDE = {"fwd": dict(fwd or {}), "bwd": dict(bwd or {})}
    try:
        yield
    finally:
        _TILE_OVERRIDE = saved


def _attn_fwd(q, k, v, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    o = torch.empty((b, h, n_q, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b * h, n_q), dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, lse
    block_d = max(16, next_power_of_2(d))  # tl.dot needs K >= 16; the padded columns are masked to 0
    precision = _precision()
    cfg = {**_fwd_config(block_d, q.dtype, precision, _arch()), **_TILE_OVERRIDE.get("fwd", {})}
    grid = (cdiv(n_q, cfg["BLOCK_M"]), b * h)  # query blocks fastest: programs sharing a head's K/V run together
    _attn_fwd_kernel[grid](
        q, k, v, o, lse,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        h, n_q, n_k, scale * _LOG2E,
        HEAD_DIM=d, BLOCK_D=block_d, NUM_PHASES=2 if causal else 1, EVEN_N=n_k % cfg["BLOCK_N"] == 0,
        INPUT_PRECISION=precision, **cfg,
    )
    return o, lse


def _attn_bwd(do, q, k, v, o, lse, causal: bool, scale: float, override: dict[str, int] | None = None):
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    block_d = max(16, next_power_of_2(d))
    cfg = {**_bwd_config(block_d, q.dtype, _arch()), **(override or {})}
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty((b * h, n_q), dtype=torch.float32, device=q.device)
    _attn_bwd_preprocess_kernel[(cdiv(n_q, cfg["BLOCK_M2"]), b * h)](
        o, do, delta, *o.stride(), *do.stride(), h, n_q,
        HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=cfg["BLOCK_M2"],
    )
    common = dict(HEAD_DIM=d, BLOCK_D=block_d, CAUSAL=causal, INPUT_PRECISION=_precision(),
                  num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    # dk/dv are addressed with k/v's strides and dq with q's: empty_like keeps the strides of a dense input
    # (``_dense``); strides of size-1 dims never matter (their index is always 0)
    for grad, t in ((dq, q), (dk, k), (dv, v)):
        assert all(a == b for a, b, n in zip(grad.stride(), t.stride(), t.shape, strict=True) if n > 1)
    _attn_bwd_dkdv_kernel[(cdiv(n_k, cfg["BLOCK_N1"]), b * h)](
        q, k, v, do, lse, delta, dk, dv, *strides, h, n_q, n_k, scale, scale * _LOG2E,
        BLOCK_M=cfg["BLOCK_M1"], BLOCK_N=cfg["BLOCK_N1"], EVEN_M=n_q % cfg["BLOCK_M1"] == 0, **common,
    )
    _attn_bwd_dq_kernel[(cdiv(n_q, cfg["BLOCK_M2"]), b * h)](
        q, k, v, do, lse, delta, dq, *strides, h, n_q, n_k, scale, scale * _LOG2E,
        BLOCK_M=cfg["BLOCK_M2"], BLOCK_N=cfg["BLOCK_N2"], EVEN_N=n_k % cfg["BLOCK_N2"] == 0, **common,
    )
    return dq, dk, dv


class _AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float):
        o, lse = _attn_fwd(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale, ctx.bwd_tiles = causal, scale, _TILE_OVERRIDE.get("bwd")
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _attn_bwd(_dense(do), q, k, v, o, lse, ctx.causal, ctx.scale, ctx.bwd_tiles)
        return dq, dk, dv, None, None


def _dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its head dim has unit stride (coalesced loads) and its memory is a dense permutation of
    its shape, e.g. ``(B, N, H, d).transpose(1, 2)``; else a contiguous copy. Dense inputs let the gradients be
    allocated with ``empty_like`` (same strides), so the backward kernels reuse the input strides."""
    if t.stride(-1) == 1:
        expected = 1
        dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride(), strict=True) if sz != 1)
        dense = True
        for stride, size in dims:
            dense = dense and stride == expected
            expected *= size
        if dense:
            return t
    return t.contiguous()


# ----------------------------------------------------------------------------------------------- public API
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """``softmax(q k^T * scale [+ causal mask]) v`` for (B, H, N, d) tensors, differentiable.

    q (B, H, N_q, d); k, v (B, H, N_k, d); same dtype (fp32/fp16/bf16); d <= ``MAX_HEAD_DIM``; scale defaults to
    1/sqrt(d); causal is top-left aligned like SDPA's ``is_causal``. Returns (B, H, N_q, d) in q's dtype.
    Runs the Triton kernels (FA2 forward and backward) on CUDA or under TRITON_INTERPRET=1, else
    ``attention_reference``.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention: expected (B, H, N, d) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    b, h, _, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[-1] != d or v.shape != k.shape:
        raise ValueError(f"attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not "
                         "match (k and v (B, H, N_k, d), same B, H, d as q)")
    if k.shape[2] == 0:
        raise ValueError("attention: k and v have no keys (N_k = 0); softmax over nothing is undefined")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not use_triton(q, k, v):
        return attention_reference(q, k, v, causal, scale)
    if q.dtype not in _SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"attention: dtypes {q.dtype}/{k.dtype}/{v.dtype}; the kernel needs one of fp32, fp16, "
                         "bf16 for all three")
    if d > MAX_HEAD_DIM:
        raise ValueError(f"attention: head dim {d} > {MAX_HEAD_DIM} is not supported by the kernel")
    return _AttentionFunction.apply(_dense(q), _dense(k), _dense(v), bool(causal), scale)
