"""Hub sources (archbench.models.hub): timm:, torchvision:/tv: and hf: models by name, offline, random weights.

Parameter and MAC counts are checked against closed forms written here from each architecture's math (never from
archbench's counter), or against published counts (torchvision's weights metadata, the timm/torchvision model
cards). MAC convention as tests/_analytic.py: linear/conv/matmul and attention (QK^T + AV, the full N x N square
even when causal); no norms, activations, softmax, embeddings or biases.

Every test needs its source's package (the extras archbench[timm], [torchvision], [hf]) and skips with the reason
when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from archbench.bench.errors import UsageError
from archbench.bench.measure.profile import count_macs, count_params
from archbench.bench.measure.sources import build_source, check_ref, resolve
from archbench.models import hub

PY = sys.executable


def need(source: str) -> Any:
    """The source's package, or skip naming the extra (a broken import is a skip with its message too)."""
    try:
        return hub.require(source)
    except hub.MissingExtra as e:
        pytest.skip(str(e))


# ----------------------------------------------------------------------------------------------- references


@pytest.mark.parametrize("ref, expected", [
    ("timm:resnet50", ("timm", "resnet50")),
    ("torchvision:resnet18", ("torchvision", "resnet18")),
    ("tv:mobilenet_v3_small", ("torchvision", "mobilenet_v3_small")),
    ("hf:bert", ("hf", "bert")),
    ("hf:google-bert/bert-base-uncased", ("hf", "google-bert/bert-base-uncased")),
    ("hf:./my/model", ("hf", "./my/model")),
    ("HF:gpt2", ("hf", "gpt2")),
    ("mypkg.nets:build", None),  # an import path
    ("resnet_s", None),  # a zoo name
])
def test_split_ref(ref: str, expected: tuple[str, str] | None) -> None:
    assert hub.split_ref(ref) == expected, ref


def test_several_inputs_overrides_and_example_specs() -> None:
    """--input-shape reaches every input of its rank (input_ids and mask alike), --dtype the floating ones; example
    tensors a factory returns give their specs (integer range from the values, never only zeros)."""
    from archbench.bench.measure.sources import _override, _spec_of
    from archbench.models import InputSpec

    ids, mask = InputSpec((1, 128), torch.int64, 30522), InputSpec((1, 128), torch.int64, 2, 1)
    img = InputSpec((1, 3, 32, 32))
    got = _override("m", (ids, mask, img), (4, 64), torch.float16)
    assert [(s.shape, s.dtype, s.low, s.high) for s in got] == [
        ((4, 64), torch.int64, 0, 30522), ((4, 64), torch.int64, 1, 2), ((1, 3, 32, 32), torch.float16, 0, None)]
    with pytest.raises(UsageError, match="fits none of its inputs"):
        _override("m", (ids, mask), (1, 3, 8, 8), None)
    assert _spec_of(torch.tensor([[5, 9, 0]]), None) == InputSpec((1, 3), torch.int64, 10, 0)
    assert _spec_of(torch.ones(1, 4, dtype=torch.int64), None) == InputSpec((1, 4), torch.int64, 2, 1)
    assert _spec_of(torch.zeros(1, 4, dtype=torch.int64), None).high == 2


# ----------------------------------------------------------------------------------------------- transformers
# Closed forms. N = sequence length (tokens), batch 1.


def bert_counts(V: int, P: int, T: int, d: int, L: int, I: int, N: int) -> tuple[int, int]:  # noqa: E741
    """BertModel: embeddings (word, position, token type, LayerNorm), L encoder layers, pooler (CLS -> d)."""
    layer = 4 * (d * d + d) + 2 * d + (d * I + I) + (I * d + d) + 2 * d  # Q K V O, LN, FFN in/out, LN
    params = V * d + P * d + T * d + 2 * d + L * layer + d * d + d
    # per layer: Q K V O projections 4Nd^2, FFN 2NdI, attention QK^T + AV 2N^2 d; pooler: one d x d on CLS
    macs = L * (4 * N * d * d + 2 * N * d * I + 2 * N * N * d) + d * d
    return params, macs


def gpt2_counts(V: int, P: int, d: int, L: int, N: int) -> tuple[int, int]:
    """GPT2LMHeadModel: wte + wpe, L blocks (c_attn d->3d, c_proj d->d, MLP d->4d->d, two LNs), ln_f; the LM head
    is tied to wte (no params of its own) but computes N x d x V."""
    params = V * d + P * d + L * (12 * d * d + 13 * d) + 2 * d
    macs = L * (12 * N * d * d + 2 * N * N * d) + N * d * V
    return params, macs


def llama_counts(V: int, d: int, L: int, H: int, KV: int, I: int, N: int) -> tuple[int, int]:  # noqa: E741
    """LlamaForCausalLM, grouped-query attention (KV heads of head_dim d/H), SwiGLU MLP (gate, up, down), RMSNorms,
    untied LM head, no biases."""
    hd = d // H
    proj = d * H * hd + 2 * d * KV * hd + H * hd * d  # q, k, v, o
    params = V * d + L * (proj + 3 * d * I + 2 * d) + d + V * d
    # attention: every query head against N keys: QK^T H*N*N*hd + AV H*N*N*hd
    macs = L * (N * proj + 3 * N * d * I + 2 * H * N * N * hd) + N * d * V
    return params, macs


def vit_counts(S: int, p: int, d: int, L: int, I: int, K: int) -> tuple[int, int]:  # noqa: E741
    """ViTForImageClassification: patch conv (3 -> d, p x p, stride p), CLS + position embeddings, L pre-norm
    blocks, final LN, a linear classifier on the CLS token."""
    patches = (S // p) ** 2
    N = patches + 1  # + CLS
    layer = 2 * d + 4 * (d * d + d) + 2 * d + (d * I + I) + (I * d + d)
    params = (3 * p * p * d + d) + d + N * d + L * layer + 2 * d + d * K + K
    macs = patches * 3 * p * p * d + L * (4 * N * d * d + 2 * N * d * I + 2 * N * N * d) + d * K
    return params, macs


HF_CASES = [
    # ref, knobs, (params, MACs) from the closed form, MACs some transformers versions add
    ("hf:bert", dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256,
                     vocab_size=1000, seq_len=24),
     bert_counts(V=1000, P=512, T=2, d=64, L=2, I=256, N=24), 0),
    ("hf:gpt2", dict(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, seq_len=32),
     gpt2_counts(V=1000, P=1024, d=64, L=2, N=32), 0),
    ("hf:gpt2", dict(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, seq_len=32, attn_implementation="eager"),
     gpt2_counts(V=1000, P=1024, d=64, L=2, N=32), 0),  # eager attention: matmuls instead of SDPA, same MACs
    ("hf:llama", dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=160, vocab_size=1000, seq_len=20),
     llama_counts(V=1000, d=64, L=2, H=4, KV=2, I=160, N=20),
     16 // 2 * 20),  # transformers 5.0 builds RoPE's angles as a matmul, inv_freq (hd/2, 1) @ positions (1, N)
    ("hf:vit", dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                    image_size=32, patch_size=8, num_classes=10),
     vit_counts(S=32, p=8, d=64, L=2, I=128, K=10), 0),
]


@pytest.mark.parametrize("ref, knobs, expected, extra", HF_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(HF_CASES)])
def test_hf_params_and_macs_match_closed_form(ref: str, knobs: dict[str, Any], expected: tuple[int, int],
                                              extra: int) -> None:
    need("hf")
    src = resolve(ref, knobs)
    params, macs = count_params(src.module)[0], count_macs(src.module, src.example_inputs(batch=1))
    assert params == expected[0] and macs in (expected[1], expected[1] + extra), \
        f"{ref} {knobs}: counted params {params:,} MACs {macs:,}, closed form {expected[0]:,} / {expected[1]:,}"


def test_gpt2_macs_cross_checked_and_attention_counted() -> None:
    """As for the zoo: FlopCounterMode agrees on every op it counts; attention is archbench's on top."""
    need("hf")
    from archbench.bench.measure.profile import profile_module

    src = resolve("hf:gpt2", dict(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, seq_len=32))
    prof = profile_module(src.module, src.example_inputs(1), time_ops=False)
    attention = 2 * 2 * 32 * 32 * 64  # L * 2 N^2 d
    by_op = {r.op: r.macs for r in prof.by_operator}
    assert by_op.get("scaled_dot_product_attention") == attention, by_op
    cc = prof.cross_check
    assert cc is not None and cc.rel_diff == 0, cc
    assert cc.missed_by_flop_counter == {"scaled_dot_product_attention": 2 * attention}


def test_hf_inputs_from_config() -> None:
    """Text models: input_ids over the vocabulary + an all-ones attention mask, seq_len from the knob (default 128,
    capped at the model's positions); the measuring path gets one ArraySpec per input."""
    need("hf")
    from archbench.bench.cell import Cell, canonical_knobs

    src = resolve("hf:bert", dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64))
    assert src.input_names == ("input_ids", "attention_mask")
    assert [s.shape for s in src.input_specs] == [(1, 128), (1, 128)]
    ids, mask = src.example_inputs(batch=3)
    assert ids.shape == (3, 128) and int(ids.max()) < 30522 and ids.dtype == torch.int64
    assert torch.equal(mask, torch.ones_like(mask)), "the attention mask is all ones (no padding)"
    short = resolve("hf:gpt2", dict(n_layer=1, n_embd=32, n_head=2, n_positions=64))
    assert short.input_specs[0].shape == (1, 64), "default seq_len is capped at the model's positions"
    cell = Cell("hf:gpt2", knobs=canonical_knobs(dict(n_layer=1, n_embd=32, n_head=2, seq_len=16)))
    _, specs = build_source(cell)
    assert [(s.shape, s.dtype, s.low, s.high) for s in specs] == [((1, 16), "int64", 0, 50257),
                                                                  ((1, 16), "int64", 1, 2)]
    x = specs[1].make(batch=2, seed=0)
    assert x.min() == x.max() == 1


@pytest.mark.parametrize("knobs, head, out_shape", [
    ({}, "BertModel", [(1, 8, 32), (1, 32)]),  # last_hidden_state, pooler_output
    ({"task": "sequence-classification", "num_classes": 3}, "BertForSequenceClassification", [(1, 3)]),
    ({"task": "masked-lm"}, "BertForMaskedLM", [(1, 8, 1000)]),
    ({"task": "BertForTokenClassification", "num_labels": 5}, "BertForTokenClassification", [(1, 8, 5)]),
])
def test_hf_task_selection(knobs: dict[str, Any], head: str, out_shape: list[tuple[int, ...]]) -> None:
    need("hf")
    base = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=1000,
                seq_len=8)
    src = resolve("hf:bert", {**base, **knobs})
    assert type(src.module.model).__name__ == head
    with torch.inference_mode():
        out = src.module(*src.example_inputs(1))
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    assert [tuple(t.shape) for t in outs] == out_shape


@pytest.mark.parametrize("ref, knobs, message", [
    ("hf:gpt2", {"n_layers": 2}, "did you mean n_layer"),
    ("hf:bert", {"task": "translation"}, "unknown task 'translation'"),
    ("hf:gpt2", {"seq_len": 4096}, "longer than the model's 1024 positions"),
    ("hf:nosuchmodeltype", {}, "no transformers model type"),
])
def test_hf_mistakes_are_one_line(ref: str, knobs: dict[str, Any], message: str, monkeypatch) -> None:
    need("hf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an unknown name must not wait on the network
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match=message) as e:
        resolve(ref, {"n_layer": 1, **knobs} if ref == "hf:gpt2" and "n_layers" not in knobs else knobs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_hf_weights_load_into_the_wrapped_model(tmp_path: Path, fmt: str) -> None:
    """--weights takes the transformers model's own state_dict (no wrapper prefix), torch.save'd or safetensors."""
    need("hf")
    knobs = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100,
                 seq_len=8)
    torch.manual_seed(1)
    trained = resolve("hf:bert", knobs).module
    path = tmp_path / f"w.{fmt}"
    if fmt == "pt":
        torch.save(trained.model.state_dict(), path)
    else:
        from safetensors.torch import save_model

        save_model(trained.model, str(path))
    torch.manual_seed(2)
    src = resolve("hf:bert", knobs, weights=str(path))
    x = src.example_inputs(2)
    with torch.inference_mode():
        for a, b in zip(src.module(*x), trained(*x), strict=True):
            assert torch.equal(a, b)


def test_hf_local_dir_config_file_and_architecture(tmp_path: Path) -> None:
    """A local directory or config.json: its architectures name the class; knobs override its attributes."""
    transformers = need("hf")
    cfg = transformers.GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=500, n_positions=64,
                                  architectures=["GPT2ForSequenceClassification"], num_labels=4, pad_token_id=0)
    cfg.save_pretrained(tmp_path)
    for ref in (f"hf:{tmp_path}", f"hf:{tmp_path / 'config.json'}"):
        src = resolve(ref, {"n_layer": 1, "seq_len": 16})
        assert type(src.module.model).__name__ == "GPT2ForSequenceClassification"
        assert src.module.model.config.n_layer == 1
        with torch.inference_mode():
            assert tuple(src.module(*src.example_inputs(2)).shape) == (2, 4)


def test_hf_hub_id_from_cache_offline(tmp_path: Path) -> None:
    """A hub id resolves from a cached config.json with the network off; an uncached one fails at once."""
    transformers = need("hf")
    snap = tmp_path / "hub" / "models--someorg--tiny-gpt2" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300).save_pretrained(snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("a" * 40)
    code = ("import sys, time; from archbench.bench.measure.sources import resolve\n"
            "from archbench.bench.measure.profile import count_params\n"
            "src = resolve('hf:someorg/tiny-gpt2', {'seq_len': 8}); print(count_params(src.module)[0])\n"
            "t = time.time()\n"
            "try: resolve('hf:someorg/not-cached')\n"
            "except Exception as e: print(type(e).__name__, round(time.time() - t), e)\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    params, failed = p.stdout.strip().splitlines()[-2:]
    assert int(params) == gpt2_counts(V=300, P=1024, d=32, L=1, N=8)[0]
    assert failed.startswith("UsageError 0 ") and "(offline)" in failed, failed


def test_gpt2_onnx_export_runs_in_onnxruntime(tmp_path: Path) -> None:
    """use_cache=False and the flat-output wrapper make GPT-2 exportable (the dynamo exporter, dynamic batch)."""
    need("hf")
    import onnxruntime as ort

    from archbench.bench.measure.export import export_onnx, verify_onnx

    src, specs = build_source(_cell("hf:gpt2", n_layer=2, n_embd=64, n_head=2, vocab_size=1000, seq_len=16))
    path = tmp_path / "model.onnx"
    assert export_onnx(src.module, specs, path) == "dynamo"
    assert verify_onnx(src.module, specs, path, batch=3) < 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    (logits,) = sess.run(None, {"input_ids": specs[0].make(5, 0), "attention_mask": specs[1].make(5, 0)})
    assert logits.shape == (5, 16, 1000)


def _cell(source: str, **knobs: Any) -> Any:
    from archbench.bench.cell import Cell, canonical_knobs

    return Cell(source, knobs=canonical_knobs(knobs))


def test_bert_base_matches_published_count() -> None:
    """bert-base: 109,482,240 parameters (built on the meta device: no memory, no time)."""
    need("hf")
    with torch.device("meta"):
        m = hub.build("hf:bert")
    assert count_params(m.module)[0] == 109_482_240 == bert_counts(30522, 512, 2, 768, 12, 3072, 128)[0]


# ----------------------------------------------------------------------------------------------- timm, torchvision


@pytest.mark.parametrize("ref, params", [
    ("timm:resnet18", 11_689_512),  # timm / torchvision model cards
    ("timm:mobilenetv3_small_100", 2_542_856),
    ("timm:vit_tiny_patch16_224", 5_717_416),
    ("torchvision:resnet18", 11_689_512),
    ("tv:mobilenet_v3_small", 2_542_856),
    ("tv:resnet50", 25_557_032),
])
def test_timm_torchvision_published_params(ref: str, params: int) -> None:
    need(hub.split_ref(ref)[0])
    with torch.device("meta"):
        m = hub.build(ref)
    assert count_params(m.module)[0] == params, ref
    assert m.input_specs[0].shape == (1, 3, 224, 224)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_macs_match_published(name: str) -> None:
    """torchvision's weights metadata publishes each model's GMACs (its docs' "GFLOPS" column, `_ops`)."""
    tv = need("torchvision")
    src = resolve(f"tv:{name}")
    macs = count_macs(src.module, src.example_inputs(1))
    published = tv.models.get_model_weights(name).DEFAULT.meta["_ops"]
    assert round(macs / 1e9, 3) == published, f"{name}: counted {macs / 1e9:.4f} GMACs, published {published}"


def test_timm_macs_match_module_hooks() -> None:
    """timm resnet18 at 128 px: archbench's trace count equals an independent count from forward hooks on every
    Conv2d (k*k*C_in/groups per output element) and Linear (in_features per output element)."""
    need("timm")
    src = resolve("timm:resnet18", {"resolution": 128})
    assert src.input_spec.shape == (1, 3, 128, 128)
    total = 0

    def hook(mod: torch.nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() * mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        else:
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in src.module.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        x = src.example_inputs(1)
        with torch.inference_mode():
            src.module(*x)
    finally:
        for h in handles:
            h.remove()
    assert count_macs(src.module, x) == total


def test_timm_vit_resolution_reaches_the_builder() -> None:
    """A ViT's position embeddings are sized at build time: --resolution becomes img_size, and it runs."""
    need("timm")
    src = resolve("timm:vit_tiny_patch16_224", {"resolution": 96, "depth": 1})
    assert src.input_spec.shape == (1, 3, 96, 96)
    with torch.inference_mode():
        assert tuple(src.module(*src.example_inputs(2)).shape) == (2, 1000)


def test_batchnorm_statistics_settled() -> None:
    """Fresh BN statistics (0, 1) shrank torchvision MobileNetV3-Small's logits to ~1e-9, which fp16 flushed to zero;
    re-estimated on a random batch they are O(0.1) and fp16 agrees with fp32. Deterministic, weights untouched."""
    need("torchvision")

    def stats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k}

    torch.manual_seed(0)
    src = resolve("tv:mobilenet_v3_small", {"resolution": 64})
    torch.manual_seed(0)
    fresh = hub.build("tv:mobilenet_v3_small", {"resolution": 64}, settle_batchnorm=False).module
    torch.manual_seed(0)
    again = resolve("tv:mobilenet_v3_small", {"resolution": 64}).module
    assert all(torch.equal(v, stats(again)[k]) for k, v in stats(src.module).items()), "not deterministic"
    assert all(float(v.abs().max()) in (0.0, 1.0) for v in stats(fresh).values() if v.is_floating_point())
    weights = {k: v for k, v in fresh.state_dict().items() if "running_" not in k and "num_batches" not in k}
    assert all(torch.equal(v, src.module.state_dict()[k]) for k, v in weights.items()), "weights changed"
    x = src.example_inputs(4)
    with torch.inference_mode():
        y = src.module(*x)
        y16 = src.module.half()(*(t.half() for t in x)).float()
    assert y.abs().max() > 1e-2, float(y.abs().max())
    assert torch.nn.functional.cosine_similarity(y.flatten(), y16.flatten(), dim=0) > 0.99


@pytest.mark.parametrize("ref, knobs, message", [
    ("timm:resnet_18", {}, "did you mean resnet18"),
    ("tv:resnet_18", {}, "did you mean resnet18"),
    ("tv:fasterrcnn_resnet50_fpn", {}, "detection models take lists"),
    ("tv:resnet18", {"widthh": 2}, "unexpected keyword"),  # a knob the builder does not take
])
def test_timm_torchvision_mistakes(ref: str, knobs: dict[str, Any], message: str) -> None:
    need(hub.split_ref(ref)[0])
    with pytest.raises(UsageError, match=message) as e:
        resolve(ref, knobs)
    assert "\n" not in str(e.value)
    if not knobs:  # the fail-fast check, which builds nothing, rejects the same names
        with pytest.raises(UsageError, match=message):
            check_ref(ref)


# ----------------------------------------------------------------------------------------------- CLI


def test_list_source_timm(capsys) -> None:
    need("timm")
    from archbench.bench.cli.main import main

    assert main(["list", "--source", "timm", "resnet1*"]) == 0
    out = capsys.readouterr().out
    assert "timm:resnet18 " in out and "11.7 M" in out and "1x3x224x224" in out
    assert main(["list", "tv:mobilenet_v3*", "--format", "csv"]) in (0,) or pytest.skip("no torchvision")
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith("name,") and any(r.startswith("torchvision:mobilenet_v3_small,") for r in rows)


def test_missing_extra_is_one_line() -> None:
    """Without a source's package, `archbench profile` says in one line which extra installs it (exit 2)."""
    cases = [("timm", "timm:resnet18", "timm"), ("transformers", "hf:bert", "hf"),
             ("torchvision", "tv:resnet18", "torchvision")]
    code = ("import sys\n"
            f"for m in {[c[0] for c in cases]!r}: sys.modules[m] = None  # as if not installed\n"
            "from archbench.bench.cli.main import main\n"
            f"for ref in {[c[1] for c in cases]!r}:\n"
            "    print(main(['profile', ref, '--no-timing']))\n")
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["2", "2", "2"], p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == len(cases), p.stderr
    for line, (_, ref, extra) in zip(lines, cases, strict=True):
        assert f"pip install 'archbench[{extra}]'" in line, (ref, line)


@pytest.mark.slow
def test_run_hf_gpt2_torch_and_onnxruntime(tmp_path: Path) -> None:
    """End to end: `archbench run hf:gpt2` on a tiny config, torch and ONNX Runtime, MACs and params recorded
    and equal to the closed form, the ONNX Runtime cell faithful to PyTorch."""
    need("hf")
    from archbench.bench.record import read_records

    out = tmp_path / "run"
    cmd = [PY, "-m", "archbench.bench.cli.main", "run", "hf:gpt2", "--knob", "n_layer=2", "--knob", "n_embd=64",
           "--knob", "n_head=2", "--knob", "vocab_size=1000", "--seq-len", "16", "--runtime", "torch,onnxruntime",
           "--min-time", "0.05", "--min-iters", "5", "--threads", "1", "--repetitions", "1", "--out", str(out)]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = {r.runtime: r for r in read_records(out / "records.jsonl")}
    assert set(recs) == {"torch", "onnxruntime"}, recs
    params, macs = gpt2_counts(V=1000, P=1024, d=64, L=2, N=16)
    for rt, r in recs.items():
        assert r.status == "ok", (rt, r.error)
        assert (r.params, r.macs, r.family) == (params, macs, "hf"), rt
        assert r.input_shape == "1x16,1x16", r.input_shape
    ort = recs["onnxruntime"]
    assert ort.cosine > 0.9999 and ort.top1_agree == 1.0, (ort.cosine, ort.top1_agree)
    assert json.loads(ort.knobs)["seq_len"] == 16
    assert time.time() - t < 240
