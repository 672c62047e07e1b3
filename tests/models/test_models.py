"""The model zoo: registry behaviour, shapes, gradients, and parameter counts against closed forms.

Parametrized over ``list_models()``, so a newly registered model is tested for free (it needs a row in
``tests/_analytic.py`` for the count tests, which fail loudly until it has one).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import _analytic
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archbench.models import ModelEntry, create_model, get_entry, list_models
from archbench.models._registry import _REGISTRY

ALL = list_models()

# Published reference counts (torchvision / timm, 1000 classes, 224 px), independent of our formulas.
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenetv2": 3_504_872,
    "vit_tiny": 5_717_416,
}
PUBLISHED_GMACS = {"resnet18": 1.814, "resnet50": 4.089, "mobilenetv2": 0.3008, "vit_tiny": 1.258}

# Knobs every builder of a family must expose, so a CLI can sweep them uniformly.
FAMILY_KNOBS = {
    "mlp": {"width", "depth", "in_features", "num_classes", "fused"},
    "vgg": {"width", "depth", "resolution", "num_classes", "fused"},
    "resnet": {"width", "depth", "resolution", "num_classes", "fused"},
    "mobilenet": {"width", "depth", "resolution", "num_classes", "fused"},
    "vit": {"width", "depth", "resolution", "patch_size", "num_classes", "fused"},
    "llama": {"width", "depth", "seq_len", "vocab_size", "fused"},
    "rnn": {"width", "depth", "seq_len", "vocab_size", "num_classes", "fused"},
}

# Default-size models must stay cheap: the default benchmark runs the whole non-published zoo in minutes.
SMALL_ZOO_MAX_MACS = 700_000_000


def _fast_knobs(name: str) -> dict[str, Any]:
    """Forward/backward tests run the 224-px published models at 64 px (their counts are checked at 224)."""
    return {"resolution": 64} if get_entry(name).knobs.get("resolution", 0) > 128 else {}


def _expected_output(name: str, batch: int, knobs: dict[str, Any]) -> tuple[int, ...]:
    k = {**get_entry(name).knobs, **knobs}
    if get_entry(name).family == "llama":
        return (batch, k["seq_len"], k["vocab_size"])
    return (batch, k["num_classes"])


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------- registry


def test_zoo_has_the_required_models() -> None:
    required = {
        "mlp_s", "mlp_m", "vgg_s", "vgg_m", "resnet_s", "resnet_m", "resnet18", "resnet50",
        "mobilenet_s", "mobilenetv2", "vit_tiny", "vit_s", "llama_tiny", "llama_s", "lstm_s", "gru_s",
    }  # fmt: skip
    assert required <= set(ALL), f"missing: {sorted(required - set(ALL))}"


def test_list_models_wildcard_and_natural_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert list_models("vit*") == ["vit_s", "vit_tiny"]
    assert list_models("resnet*")[:2] == ["resnet18", "resnet50"]
    assert list_models("nothing*") == []
    # natural order: 2 before 10 (plain sorting would put "zz_10" first)
    for n in ("zz_10", "zz_2", "zz_1"):
        monkeypatch.setitem(_REGISTRY, n, ModelEntry(n, "test", nn.Identity))
    assert list_models("zz_*") == ["zz_1", "zz_2", "zz_10"]


@pytest.mark.parametrize(
    "typo, suggestion",
    [
        ("resnet_ss", "resnet_s"),
        ("vit_tini", "vit_tiny"),
        ("mobilenet_v2", "mobilenetv2"),
        ("lama_s", "llama_s"),
    ],
)
def test_unknown_model_suggests_a_close_match(typo: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=f"unknown model '{typo}'.*{suggestion}"):
        create_model(typo)


def test_unknown_knob_lists_the_knobs() -> None:
    with pytest.raises(ValueError, match="no knob widht") as err:
        create_model("resnet_s", widht=0.5)
    for knob in ("width", "depth", "resolution", "num_classes", "fused"):
        assert knob in str(err.value)


@pytest.mark.parametrize("name", ALL)
def test_builder_exposes_family_knobs(name: str) -> None:
    entry = get_entry(name)
    assert entry.family in FAMILY_KNOBS, f"{name}: family {entry.family!r} has no row in FAMILY_KNOBS"
    missing = FAMILY_KNOBS[entry.family] - set(entry.knobs)
    assert not missing, f"{name} lacks knobs {sorted(missing)}"
    assert entry.knobs["fused"] is False
    assert entry.doc, f"{name}: builder needs a one-line docstring"


# ------------------------------------------------------------------------------------------- shapes and grads


@pytest.mark.parametrize("name", ALL)
def test_input_spec_matches_knobs(name: str) -> None:
    model = create_model(name)
    spec = model.input_spec
    k = get_entry(name).knobs
    assert spec.shape[0] == 1
    if "seq_len" in k:
        assert (spec.shape, spec.dtype, spec.high) == ((1, k["seq_len"]), torch.int64, k["vocab_size"])
    elif "resolution" in k:
        assert (spec.shape, spec.dtype, spec.high) == (
            (1, 3, k["resolution"], k["resolution"]),
            torch.float32,
            None,
        )
    else:
        assert (spec.shape, spec.dtype) == ((1, k["in_features"]), torch.float32)


@pytest.mark.parametrize("name", ALL)
def test_forward_shape_and_backward_grads(name: str) -> None:
    torch.manual_seed(0)
    knobs = _fast_knobs(name)
    model = create_model(name, **knobs).train()
    x = model.input_spec.make(batch=2, generator=torch.Generator().manual_seed(1))
    y = model(x)
    assert tuple(y.shape) == _expected_output(name, 2, knobs)
    assert torch.isfinite(y).all()
    y.float().square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient (unused parameter?)"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", ["resnet_s", "vit_s", "llama_tiny", "lstm_s"])
def test_eval_forward_is_batch_independent(name: str) -> None:
    # Row 0 of a batch-2 forward equals the batch-1 forward: no cross-sample leakage (BN in eval, masks, RNN state).
    model = create_model(name).eval()
    x = model.input_spec.make(batch=2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]), atol=1e-4, rtol=1e-4)


def test_llama_is_causal() -> None:
    # Changing the last token must not change the logits of earlier positions.
    model = create_model("llama_tiny").eval()
    x = model.input_spec.make(batch=1, generator=torch.Generator().manual_seed(3))
    x2 = x.clone()
    x2[0, -1] = (x2[0, -1] + 1) % model.input_spec.high
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    torch.testing.assert_close(y[:, :-1], y2[:, :-1])
    assert not torch.allclose(y[:, -1], y2[:, -1])


# --------------------------------------------------------------------------------------------- param counts


@pytest.mark.parametrize("name", ALL)
def test_param_count_matches_formula(name: str) -> None:
    assert _n_params(create_model(name)) == _analytic.params(name)


@pytest.mark.parametrize("name, knobs", _analytic.KNOB_CASES, ids=lambda v: str(v))
def test_knob_variations_match_formula(name: str, knobs: dict[str, Any]) -> None:
    model = create_model(name, **knobs)
    assert _n_params(model) == _analytic.params(name, **knobs)
    x = model.input_spec.make(batch=2)
    with torch.no_grad():
        assert tuple(model.eval()(x).shape) == _expected_output(name, 2, knobs)


@pytest.mark.parametrize("name, expected", PUBLISHED_PARAMS.items())
def test_published_param_counts(name: str, expected: int) -> None:
    assert _n_params(create_model(name)) == expected
    assert _analytic.params(name) == expected


@pytest.mark.parametrize("name, gmacs", PUBLISHED_GMACS.items())
def test_published_macs_formula(name: str, gmacs: float) -> None:
    assert _analytic.macs(name) / 1e9 == pytest.approx(gmacs, rel=0.01)


@pytest.mark.parametrize("name", [n for n in ALL if n not in PUBLISHED_PARAMS])
def test_small_zoo_defaults_stay_small(name: str) -> None:
    assert _analytic.macs(name) <= SMALL_ZOO_MAX_MACS, (
        f"{name}: {_analytic.macs(name):,} MACs at its defaults"
    )


# ------------------------------------------------------------------------------------------------ fused hook


@pytest.mark.parametrize("name", ALL)
def test_fused_model_has_identical_state_dict_keys(name: str) -> None:
    # Building a fused model imports no kernel (they load lazily in forward) and keeps every key.
    knobs = _fast_knobs(name)
    plain, fused = create_model(name, **knobs), create_model(name, fused=True, **knobs)
    assert list(plain.state_dict()) == list(fused.state_dict())
    fused.load_state_dict(plain.state_dict())


def _fake_kernels(calls: dict[str, int]) -> dict[str, types.ModuleType]:
    """Torch stand-ins for kernels/*, with the signatures models/_layers.py calls, counting calls."""

    def fold_bn(w, gamma, beta, mean, var, eps):  # type: ignore[no-untyped-def]
        calls["fold_bn"] += 1
        scale = gamma / torch.sqrt(var + eps)
        return w * scale[:, None, None, None], beta - mean * scale

    def conv_bn_act(x, w, b, stride, padding, dilation, act):  # type: ignore[no-untyped-def]
        calls["conv_bn_act"] += 1
        y = F.conv2d(x, w, b, stride, padding, dilation)
        return {"relu": F.relu, "relu6": F.relu6, None: lambda t: t}[act](y)

    def rms_norm(x, weight, eps):  # type: ignore[no-untyped-def]
        calls["rms_norm"] += 1
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def attention(q, k, v, causal):  # type: ignore[no-untyped-def]
        calls["attention"] += 1
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    mods = {}
    for mod_name, fns in {
        "archbench.kernels.conv_bn_relu": {"fold_bn": fold_bn, "conv_bn_act": conv_bn_act},
        "archbench.kernels.rms_norm": {"rms_norm": rms_norm},
        "archbench.kernels.attention": {"attention": attention},
    }.items():
        mods[mod_name] = types.ModuleType(mod_name)
        mods[mod_name].__dict__.update(fns)
    return mods


@pytest.mark.parametrize(
    "name, kernels_used",
    [
        ("resnet_s", {"fold_bn", "conv_bn_act"}),
        ("mobilenet_s", {"fold_bn", "conv_bn_act"}),
        ("vit_s", {"attention"}),
        ("llama_tiny", {"rms_norm", "attention"}),
    ],
)
def test_fused_hook_wiring_with_stub_kernels(
    name: str, kernels_used: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wiring only (the real kernels are tested in tests/test_kernels*.py): with torch stand-ins behind the
    # kernel API, fused=True must call them and reproduce the unfused output with the same weights.
    calls = dict.fromkeys(["fold_bn", "conv_bn_act", "rms_norm", "attention"], 0)
    for mod_name, mod in _fake_kernels(calls).items():
        monkeypatch.setitem(sys.modules, mod_name, mod)
    torch.manual_seed(0)
    plain = create_model(name).eval()
    for m in plain.modules():  # non-trivial BN statistics, so a wrong fold shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = create_model(name, fused=True).eval()
    fused.load_state_dict(plain.state_dict())
    x = plain.input_spec.make(batch=2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), atol=1e-4, rtol=1e-4)
        n_fold = calls["fold_bn"]
        fused(x)  # second call: folded weights come from the cache
        assert calls["fold_bn"] == n_fold
        for model in (plain, fused):  # an in-place change of BN statistics must invalidate that cache
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.mul_(3.0)
        torch.testing.assert_close(fused(x), plain(x), atol=1e-4, rtol=1e-4)
    assert {k for k, v in calls.items() if v} == kernels_used
