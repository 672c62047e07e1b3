"""LLaMA-style decoder-only language model (Touvron et al. 2023).

tokens: (B, N) int64 in [0, vocab_size) -> logits (B, N, vocab_size).

    embed   token embedding (V -> D), no positional table: positions enter through RoPE
    blocks  depth x pre-norm [x + Attn(RMSNorm(x)), x + SwiGLU(RMSNorm(x))]
            Attn: q, k, v, o Linear(D, D) without bias; rotary embedding on q and k; causal SDPA
            SwiGLU: w2(silu(w1 x) * w3 x), hidden F = multiple_of * ceil((2/3 * 4D) / multiple_of)
    head    RMSNorm, Linear(D -> V) without bias, untied from the embedding

KV cache (inference only; ``forward`` does not use it). A cache is a pair of stacked tensors k, v of shape
(layers, B, kv_heads, T, head_dim), explicit inputs and outputs so that a step exports to ONNX/torch.export with
past key/values as graph inputs and outputs (no lists, dicts or Python branches on tensor values):

    Llama.step(tokens, past_k, past_v)           growing cache: appends N tokens, returns (logits, k, v) with T + N
    Llama.step_static(tokens, cache_k, cache_v, pos)  fixed capacity (static shapes, for torch.compile): writes N
                                                      tokens at slots [pos, pos + N), masks the unwritten slots
    generate(model, prompt, new_tokens)          greedy decoding: prefill = one step over the prompt from an empty
                                                 cache (T = 0), then one step per generated token
    kv_cache_bytes(model, context, batch)        2 * layers * kv_heads * head_dim * context * batch * dtype size

The N new tokens sit at positions pos + [0, N) (pos = cached length): RoPE uses those positions (computed on the
fly, so beyond cfg.seq_len too) and query i sees key j iff j <= pos + i, i.e. the causal mask is aligned
bottom-right. kv_heads == heads (no grouped-query attention in this family).
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


def rope_at(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (N, head_dim) at any positions (N,): the rows of ``rope_tables``, without a length cap."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (N, head_dim/2)
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

    def step(self, x: Tensor, cos: Tensor, sin: Tensor, cache_k: Tensor, cache_v: Tensor, positions: Tensor,
             static: bool) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, N, D) at positions (N,); cache_k, cache_v (B, H, T, d) -> (y (B, N, D), k, v).

        static=False appends: k, v are (B, H, T + N, d). static=True writes the new keys and values into the slots
        ``positions`` of a fixed-capacity cache: k, v keep their shape (B, H, T_max, d).
        """
        B, N, D = x.shape

        def split(t: Tensor) -> Tensor:  # (B, N, D) -> (B, H, N, d)
            return t.view(B, N, self.heads, D // self.heads).transpose(1, 2)

        q = apply_rope(split(self.wq(x)), cos, sin)
        k_new = apply_rope(split(self.wk(x)), cos, sin)
        v_new = split(self.wv(x))
        if static:
            k, v = cache_k.index_copy(2, positions, k_new), cache_v.index_copy(2, positions, v_new)
        else:
            k, v = torch.cat([cache_k, k_new], dim=2), torch.cat([cache_v, v_new], dim=2)
        y = self._attend(q, k, v, positions, static)  # (B, H, N, d)
        return self.wo(y.transpose(1, 2).reshape(B, N, D)), k, v

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, static: bool) -> Tensor:
        # The fused kernel's causal mask is top-left aligned (query i sees keys j <= i), right only without a past.
        # A single query needs no mask (the newest token sees every cached key), so it runs unmasked. Anything
        # else (several new tokens after a past, or a fixed-capacity cache whose unwritten slots must be masked)
        # takes plain SDPA with an explicit mask. These branches test shapes, never tensor values.
        n_q, n_k = q.shape[2], k.shape[2]
        if self.fused and not static and n_q == n_k:  # prefill from an empty cache
            return attention(q, k, v, causal=True, fused=True)
        if self.fused and not static and n_q == 1:  # decode: one token
            return attention(q, k, v, causal=False, fused=True)
        visible = torch.arange(n_k, device=q.device)[None, :] <= positions[:, None]  # (N_q, N_k): j <= pos + i
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible)


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

    def step(self, x: Tensor, cos: Tensor, sin: Tensor, cache_k: Tensor, cache_v: Tensor, positions: Tensor,
             static: bool) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` with a KV cache: see ``CausalSelfAttention.step``."""
        a, k, v = self.attn.step(self.attn_norm(x), cos, sin, cache_k, cache_v, positions, static)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), k, v


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
        # Shape facts for the KV cache and its cost model (plain ints, not buffers).
        self.dim, self.layers, self.kv_heads, self.head_dim = dim, cfg.depth, cfg.heads, dim // cfg.heads
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

    def new_cache(self, batch: int, capacity: int = 0, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Zero k, v of shape (layers, batch, kv_heads, capacity, head_dim), in the weights' dtype and device by
        default: capacity 0 is the empty cache ``step`` starts from; capacity > 0 the buffer of ``step_static``."""
        w = self.embed.weight
        shape = (self.layers, batch, self.kv_heads, capacity, self.head_dim)
        k = torch.zeros(shape, dtype=dtype or w.dtype, device=device or w.device)
        return k, torch.zeros_like(k)

    def step(self, tokens: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (B, N) following the T cached ones; past_k, past_v (layers, B, kv_heads, T, head_dim) ->
        (logits (B, N, vocab_size), k, v (layers, B, kv_heads, T + N, head_dim)).

        Positions are T + [0, N), taken from the cache's shape. T = 0 with the whole prompt is the prefill, N = 1 a
        decode step. logits equal ``forward(all T + N tokens)[:, T:]`` up to float rounding. Each step returns new
        stacked tensors (a copy of the cache): simple and export-friendly rather than fast.
        """
        positions = torch.arange(tokens.shape[1], device=tokens.device) + past_k.shape[3]
        return self._step(tokens, past_k, past_v, positions, static=False)

    def step_static(self, tokens: Tensor, cache_k: Tensor, cache_v: Tensor,
                    pos: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Fixed-capacity ``step``: cache_k, cache_v (layers, B, kv_heads, T_max, head_dim) hold tokens [0, pos);
        tokens (B, N) go to slots [pos, pos + N) (pos + N <= T_max). Returns (logits (B, N, vocab_size), k, v) with
        k, v the same shape as the inputs, so every step has static shapes (pass pos as a 0-d int64 tensor so
        torch.compile does not specialize on it). Attention always runs unfused: slots past the written ones
        are masked, which the fused kernel's causal mask cannot express.
        """
        positions = torch.arange(tokens.shape[1], device=tokens.device) + pos
        return self._step(tokens, cache_k, cache_v, positions, static=True)

    def _step(self, tokens: Tensor, cache_k: Tensor, cache_v: Tensor, positions: Tensor,
              static: bool) -> tuple[Tensor, Tensor, Tensor]:
        x = self.embed(tokens)  # (B, N, D)
        cos, sin = rope_at(positions, self.head_dim, self.cfg.rope_theta)  # (N, d) each
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, cos, sin, cache_k[i], cache_v[i], positions, static)
            ks.append(k)
            vs.append(v)
        return self.lm_head(self.norm(x)), torch.stack(ks), torch.stack(vs)


def kv_cache_bytes(model: Llama, context: int, batch: int = 1, dtype: torch.dtype | None = None) -> int:
    """Analytic KV-cache size: 2 (k and v) * layers * kv_heads * head_dim * context * batch * bytes per element
    (dtype defaults to the weights')."""
    itemsize = (dtype or model.embed.weight.dtype).itemsize
    return 2 * model.layers * model.kv_heads * model.head_dim * context * batch * itemsize


@torch.no_grad()
def generate(model: Llama, prompt: Tensor, new_tokens: int, static: bool = False) -> Tensor:
    """Greedy decoding with the KV cache: prompt (B, P) int64 -> (B, P + new_tokens), the prompt followed by the
    argmax tokens. One prefill step over the prompt, then one step per token (the last token is never fed back).
    static=True uses ``step_static`` with a cache of capacity P + new_tokens - 1. Rows share one length (no
    padding)."""
    B, P = prompt.shape
    if new_tokens <= 0:
        return prompt.clone()
    k, v = model.new_cache(B, P + new_tokens - 1 if static else 0)
    logits, k, v = model.step_static(prompt, k, v, 0) if static else model.step(prompt, k, v)
    out = [prompt]
    for i in range(new_tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out.append(nxt)
        if i + 1 < new_tokens:
            pos = P + i
            logits, k, v = model.step_static(nxt, k, v, pos) if static else model.step(nxt, k, v)
    return torch.cat(out, dim=1)


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
