"""LLaMA-style decoder-only language model (Touvron et al. 2023).

tokens: (B, N) int64 in [0, vocab_size) -> logits (B, N, vocab_size).

    embed   token embedding (V -> D), no positional table: positions enter through RoPE
    blocks  depth x pre-norm [x + Attn(RMSNorm(x)), x + SwiGLU(RMSNorm(x))]
            Attn: q, k, v, o Linear(D, D) without bias; rotary embedding on q and k; causal SDPA
            SwiGLU: w2(silu(w1 x) * w3 x), hidden F = multiple_of * ceil((2/3 * 4D) / multiple_of)
    head    RMSNorm, Linear(D -> V) without bias, untied from the embedding
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archbench.models._layers import RMSNorm, attention, make_divisible
from archbench.models._registry import InputSpec, register_model


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 1024  # token ids in [0, vocab_size); embedding and LM head rows
    dim: int = 128  # model width D before `width` scaling
    depth: int = 2  # decoder layers
    heads: int = 4  # attention heads; head dim = D / heads (must be even for RoPE)
    multiple_of: int = 32  # SwiGLU hidden is rounded up to this, as in Meta's reference code
    eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 10000.0  # RoPE base: frequency of pair i is theta^(-2i / head_dim)
    seq_len: int = 64  # tokens in the example input; also the length the RoPE table is precomputed for
    width: float = 1.0  # multiplier on D, rounded to a multiple of 8 * heads (head dim stays 8-aligned)
    fused: bool = False  # RMSNorm and attention through kernels.rms_norm / kernels.attention

    def __post_init__(self) -> None:
        if self.depth < 1 or self.seq_len < 1:
            raise ValueError(f"Llama needs depth >= 1 and seq_len >= 1, got {self.depth}, {self.seq_len}")


def swiglu_hidden(dim: int, multiple_of: int) -> int:
    """LLaMA's FFN width: 2/3 of 4D (keeps SwiGLU's 3 matrices at the MACs of a 4D GELU MLP), rounded up."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (seq_len, head_dim): angle[n, i] = n * theta^(-2i / head_dim), halves repeated."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (N, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (N, head_dim)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x_i, x_{i + d/2}) by the position angle ("rotate half" form). x: (B, H, N, d)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class CausalSelfAttention(nn.Module):
    """x: (B, N, D) -> (B, N, D), causal, with rotary positions."""

    def __init__(self, dim: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads = heads
        self.fused = fused
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, N, D = x.shape

        def split(t: Tensor) -> Tensor:  # (B, N, D) -> (B, H, N, d)
            return t.view(B, N, self.heads, D // self.heads).transpose(1, 2)

        q = apply_rope(split(self.wq(x)), cos, sin)
        k = apply_rope(split(self.wk(x)), cos, sin)
        y = attention(q, k, split(self.wv(x)), causal=True, fused=self.fused)  # (B, H, N, d)
        return self.wo(y.transpose(1, 2).reshape(B, N, D))


class SwiGLU(nn.Module):
    """x: (B, N, D) -> (B, N, D); w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DecoderBlock(nn.Module):
    """x: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float, fused: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps, fused=fused)
        self.attn = CausalSelfAttention(dim, heads, fused)
        self.mlp_norm = RMSNorm(dim, eps, fused=fused)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """tokens (B, N) int64 -> logits (B, N, vocab_size)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = make_divisible(cfg.dim * cfg.width, 8 * cfg.heads)
        hidden = swiglu_hidden(dim, cfg.multiple_of)
        self.embed = nn.Embedding(cfg.vocab_size, dim)
        self.blocks = nn.ModuleList(
            DecoderBlock(dim, cfg.heads, hidden, cfg.eps, cfg.fused) for _ in range(cfg.depth)
        )
        self.norm = RMSNorm(dim, cfg.eps, fused=cfg.fused)
        self.lm_head = nn.Linear(dim, cfg.vocab_size, bias=False)
        # RoPE is computed, not learned: non-persistent buffers, absent from the state_dict.
        cos, sin = rope_tables(cfg.seq_len, dim // cfg.heads, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.input_spec = InputSpec((1, cfg.seq_len), torch.int64, high=cfg.vocab_size)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def _rope(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        if n <= self.rope_cos.shape[0]:
            cos, sin = self.rope_cos[:n], self.rope_sin[:n]
        else:  # longer than precomputed: compute on the fly (a benchmark sweeping seq_len rebuilds anyway)
            cos, sin = rope_tables(n, self.rope_cos.shape[1], self.cfg.rope_theta)
        return cos.to(like.device, like.dtype), sin.to(like.device, like.dtype)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, N) int64 -> logits (B, N, vocab_size)."""
        x = self.embed(tokens)  # (B, N, D)
        cos, sin = self._rope(tokens.shape[1], x)  # (N, d) each, broadcast over (B, H)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))


@register_model
def llama_tiny(width: float = 1.0, depth: int = 2, seq_len: int = 64, vocab_size: int = 1024,
               fused: bool = False) -> Llama:
    """LLaMA tiny: D 128, 2 layers, 4 heads of 32, 64 tokens, vocab 1024."""
    return Llama(LlamaConfig(vocab_size=vocab_size, dim=128, depth=depth, heads=4, seq_len=seq_len,
                             width=width, fused=fused))


@register_model
def llama_s(width: float = 1.0, depth: int = 4, seq_len: int = 128, vocab_size: int = 2048,
            fused: bool = False) -> Llama:
    """LLaMA small: D 192, 4 layers, 3 heads of 64, 128 tokens, vocab 2048."""
    return Llama(LlamaConfig(vocab_size=vocab_size, dim=192, depth=depth, heads=3, seq_len=seq_len,
                             width=width, fused=fused))
