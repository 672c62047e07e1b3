"""LLaMA KV cache and greedy decoding (models/llama.py): the cached steps reproduce the full recompute.

Cases are small odd shapes; two of them run past cfg.seq_len (the precomputed RoPE table), one from the prompt on
and one during decoding. The fused path runs the real Triton kernels in a child process under the interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from tests_helpers import ROOT
from torch.export import Dim, export

from archbench.models import create_model
from archbench.models.llama import Llama, generate, kv_cache_bytes

NEW = 9

# (model, knobs, batch, prompt length)
CASES = [
    ("llama_tiny", {}, 1, 5),
    ("llama_tiny", {"seq_len": 12}, 3, 17),  # prompt already longer than the RoPE table
    ("llama_s", {}, 3, 5),
    ("llama_s", {"seq_len": 20}, 1, 17),  # 17 + 9 tokens: crosses seq_len while decoding
]
IDS = [f"{n}-b{b}-p{p}" + (f"-seq{k['seq_len']}" if k else "") for n, k, b, p in CASES]


def _model(name: str, knobs: dict[str, Any]) -> Llama:
    torch.manual_seed(0)
    return create_model(name, **knobs).eval()


def _prompt(model: Llama, batch: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, model.cfg.vocab_size, (batch, n), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _greedy_full_recompute(model: Llama, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    seq = prompt
    for _ in range(new_tokens):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq


@pytest.mark.parametrize("name, knobs, batch, n", CASES, ids=IDS)
def test_greedy_generate_matches_full_recompute(name: str, knobs: dict[str, Any], batch: int, n: int) -> None:
    model = _model(name, knobs)
    prompt = _prompt(model, batch, n)
    ref = _greedy_full_recompute(model, prompt, NEW)
    assert ref.shape == (batch, n + NEW)
    assert torch.equal(generate(model, prompt, NEW), ref)
    assert torch.equal(generate(model, prompt, NEW, static=True), ref)
    assert torch.equal(generate(model, prompt, 0), prompt)


@pytest.mark.parametrize("name, knobs, batch, n", CASES, ids=IDS)
def test_cached_logits_match_uncached(name: str, knobs: dict[str, Any], batch: int, n: int) -> None:
    # prefill over the prompt, then one token per step: every position's logits equal forward(full sequence)
    model = _model(name, knobs)
    seq = _prompt(model, batch, n + NEW)
    with torch.no_grad():
        full = model(seq)
        k, v = model.new_cache(batch)
        ks, vs = model.new_cache(batch, capacity=n + NEW)
        logits, k, v = model.step(seq[:, :n], k, v)
        logits_s, ks, vs = model.step_static(seq[:, :n], ks, vs, 0)
        got, got_s = [logits], [logits_s]
        for t in range(n, n + NEW):
            logits, k, v = model.step(seq[:, t:t + 1], k, v)
            logits_s, ks, vs = model.step_static(seq[:, t:t + 1], ks, vs, torch.tensor(t))
            got.append(logits)
            got_s.append(logits_s)
    torch.testing.assert_close(torch.cat(got, dim=1), full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(got_s, dim=1), full, atol=1e-4, rtol=1e-4)
    assert k.shape == (model.layers, batch, model.kv_heads, n + NEW, model.head_dim)
    torch.testing.assert_close(ks, k, atol=1e-5, rtol=1e-5)  # full static cache == grown cache
    torch.testing.assert_close(vs, v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, knobs", [("llama_tiny", {"seq_len": 12}), ("llama_s", {})])
@pytest.mark.parametrize("split", [1, 6, 16])
def test_chunked_prefill_equals_one_step(name: str, knobs: dict[str, Any], split: int) -> None:
    # A multi-token step after a non-empty past needs the bottom-right causal mask (query i sees keys <= T + i).
    model = _model(name, knobs)
    prompt = _prompt(model, 3, 17)
    with torch.no_grad():
        l1, k1, v1 = model.step(prompt, *model.new_cache(3))
        la, k, v = model.step(prompt[:, :split], *model.new_cache(3))
        lb, k2, v2 = model.step(prompt[:, split:], k, v)
        ks, vs = model.new_cache(3, capacity=20)
        sa, ks, vs = model.step_static(prompt[:, :split], ks, vs, 0)
        sb, ks, vs = model.step_static(prompt[:, split:], ks, vs, split)
    for got, want in [(k2, k1), (v2, v1), (ks[..., :17, :], k1), (vs[..., :17, :], v1)]:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([la, lb], dim=1), l1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat([sa, sb], dim=1), l1, atol=1e-4, rtol=1e-4)
    assert not ks[..., 17:, :].any()  # slots past pos + N stay untouched


def test_static_cache_masks_unwritten_slots() -> None:
    # Garbage in the slots not yet written must not reach the logits.
    model = _model("llama_tiny", {})
    prompt = _prompt(model, 2, 7)
    k0, v0 = model.new_cache(2, capacity=11)
    with torch.no_grad():
        clean, _, _ = model.step_static(prompt, k0, v0, 0)
        dirty, _, _ = model.step_static(prompt, torch.randn_like(k0) * 10, torch.randn_like(v0) * 10, 0)
    torch.testing.assert_close(dirty, clean, atol=1e-5, rtol=1e-5)


def test_kv_cache_bytes_formula_and_shape_facts() -> None:
    model = _model("llama_tiny", {})  # D 128, 2 layers, 4 heads of 32
    assert (model.dim, model.layers, model.kv_heads, model.head_dim) == (128, 2, 4, 32)
    assert model.kv_heads * model.head_dim == model.dim and model.layers == model.cfg.depth
    assert kv_cache_bytes(model, context=10, batch=3) == 2 * 2 * 4 * 32 * 10 * 3 * 4
    prompt = _prompt(model, 3, 5)
    with torch.no_grad():
        _, k, v = model.step(prompt, *model.new_cache(3))
        _, k, v = model.step(prompt[:, :1], k, v)  # one decode step: context 6
    assert k.shape == v.shape == (2, 3, 4, 6, 32)
    assert k.nbytes + v.nbytes == kv_cache_bytes(model, context=6, batch=3)
    for dtype in (torch.float16, torch.bfloat16):
        k, v = model.new_cache(2, capacity=13, dtype=dtype)
        assert k.nbytes + v.nbytes == kv_cache_bytes(model, context=13, batch=2, dtype=dtype)
    wide = _model("llama_s", {"width": 0.5})
    k, v = wide.new_cache(1, capacity=7)
    assert k.shape == (wide.layers, 1, wide.kv_heads, 7, wide.head_dim)
    assert k.nbytes + v.nbytes == kv_cache_bytes(wide, context=7)


class _Step(torch.nn.Module):
    def __init__(self, model: Llama) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.step(tokens, past_k, past_v)


def test_step_exports_with_dynamic_cache_length() -> None:
    # torch.export (the front end of the ONNX exporter) traces one graph for any new-token count and cache length,
    # the empty cache included: no Python branch on tensor values in the unfused step.
    model = _model("llama_tiny", {"width": 0.5, "seq_len": 8})
    tokens = _prompt(model, 2, 3)
    with torch.no_grad():
        _, k, v = model.step(_prompt(model, 2, 4, seed=2), *model.new_cache(2))
    n, t = Dim("n", min=1, max=4096), Dim("t", min=0, max=4096)
    prog = export(_Step(model), (tokens, k, v), dynamic_shapes=({1: n}, {3: t}, {3: t})).module()
    with torch.no_grad():
        for toks, past in [(_prompt(model, 2, 11, seed=3), model.new_cache(2)), (tokens[:, :1], (k, v))]:
            for got, want in zip(prog(toks, *past), model.step(toks, *past), strict=True):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_static_step_compiles_without_graph_breaks_or_recompiles() -> None:
    torch._dynamo.reset()  # dynamo caches per code object: a compile of step_static by an earlier test is not ours
    model = _model("llama_tiny", {"width": 0.5, "seq_len": 8})
    step = torch.compile(model.step_static, backend="eager", fullgraph=True)
    k, v = model.new_cache(2, capacity=12)
    tokens = _prompt(model, 2, 5)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        _, k, v = model.step_static(tokens, k, v, torch.tensor(0))  # prefill eagerly
        for pos in range(5, 9):
            logits, k, v = step(tokens[:, pos - 5:pos - 4], k, v, torch.tensor(pos))
    assert logits.shape == (2, 1, model.cfg.vocab_size) and k.shape == (model.layers, 2, model.kv_heads, 12, model.head_dim)
    torch._dynamo.reset()


CHILD = r"""
import json, torch
from archbench.models import create_model
from archbench.models.llama import generate
import archbench.kernels.attention as ka, archbench.kernels.rms_norm as kr

def _no_fallback(*a, **k):
    raise AssertionError("the torch reference ran instead of the Triton kernel")

ka.attention_reference = kr.rms_norm_reference = _no_fallback
calls, kernel = [], ka.attention
def counting(q, k, v, causal=False, scale=None):
    calls.append([q.shape[2], k.shape[2], causal])
    return kernel(q, k, v, causal=causal, scale=scale)
ka.attention = counting

torch.manual_seed(0)
knobs = dict(width=0.5, depth=1, seq_len=8)
plain = create_model("llama_tiny", **knobs).eval()
fused = create_model("llama_tiny", fused=True, **knobs).eval()
fused.load_state_dict(plain.state_dict())
prompt = torch.randint(0, 1024, (2, 5), generator=torch.Generator().manual_seed(1))
a, b = generate(plain, prompt, 5), generate(fused, prompt, 5)  # 10 tokens: past seq_len
with torch.no_grad():
    k, v = fused.new_cache(2)
    l1, k, v = fused.step(a[:, :4], k, v)
    l2, k, v = fused.step(a[:, 4:], k, v)  # 6 tokens after a past of 4: the unfused masked path
    err = float((torch.cat([l1, l2], 1) - plain(a)).abs().max())
print(json.dumps({"same_tokens": torch.equal(a, b), "chunked_err": err, "calls": calls}))
"""


def test_fused_generate_with_real_kernels() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["same_tokens"] and out["chunked_err"] <= 1e-4, out
    calls = out["calls"]
    # generate: prefill (5 x 5, causal kernel) then 4 single-token decodes (unmasked kernel over the whole cache)
    assert calls[:5] == [[5, 5, True], [1, 6, False], [1, 7, False], [1, 8, False], [1, 9, False]], calls
    assert calls[5:] == [[4, 4, True]], calls  # chunked prefill: only the first chunk can use the kernel
