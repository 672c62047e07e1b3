"""Closed-form parameter and MAC counts of the zoo, written from the architecture math.

This module never builds a model or walks modules: it restates each named model's architecture (the table
``ZOO`` below, which must be kept in step with the builders by hand — that is the point) and sums the
per-layer formulas. Tests compare it against ``sum(p.numel())`` and against the measured MAC counter.

MAC convention (one multiply-accumulate = 1 MAC; batch 1):
  conv       k*k * (C_in / groups) * C_out * H_out * W_out   (depthwise: groups = C_in = C_out)
  linear     in * out per row (token)
  attention  QK^T: H * N * N * d and AV: H * N * N * d, i.e. 2 * N^2 * D, the full square even when causal
  LSTM/GRU   per step per layer: gates * H * (I + H); gates = 4 (LSTM) or 3 (GRU)
  not counted: BN / LayerNorm / RMSNorm, activations, softmax, pooling, residual adds, SE's scale multiply,
  RoPE, embedding lookups, biases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Count(NamedTuple):
    params: int
    macs: int


def _round(v: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), bumped up if it lost more than 10% of ``v``."""
    r = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return r + divisor if r < 0.9 * v else r


def _down(size: int, stride: int) -> int:
    """Output side of a 'same'-padded k x k conv (k odd, pad k//2) or of maxpool 3x3/2 pad 1: ceil(size/stride)."""
    return (size - 1) // stride + 1


# --------------------------------------------------------------------------------------------------- families


def mlp(in_features: int, hidden: int, depth: int, num_classes: int, width: float) -> Count:
    h = _round(hidden * width)
    weights = in_features * h + (depth - 1) * h * h + h * num_classes
    biases = depth * h + num_classes
    return Count(weights + biases, weights)


def vgg(channels: tuple[int, ...], depth: int, resolution: int, num_classes: int, width: float) -> Count:
    params = macs = 0
    c_in, side = 3, resolution
    for i, c in enumerate(channels):
        c = _round(c * width)
        w = 9 * (c_in * c + (depth - 1) * c * c)  # first conv c_in -> c, then depth-1 convs c -> c
        params += w + 2 * c * depth  # + BN gamma, beta
        macs += w * side * side
        c_in = c
        if i < len(channels) - 1:
            side //= 2  # maxpool 2x2/2
    return Count(params + c_in * num_classes + num_classes, macs + c_in * num_classes)


def resnet(
    block: str,
    layers: tuple[int, ...],
    widths: tuple[int, ...],
    stem_width: int,
    se: bool,
    resolution: int,
    num_classes: int,
    width: float,
) -> Count:
    c0 = _round(stem_width * width)
    side = (resolution + 2 * 3 - 7) // 2 + 1  # 7x7/2, pad 3
    params, macs = 49 * 3 * c0 + 2 * c0, 49 * 3 * c0 * side * side
    side = _down(side, 2)  # maxpool 3x3/2 pad 1
    c_in = c0
    for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
        p = _round(w * width)
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            out = _down(side, stride)
            if block == "basic":
                c_out = p
                w3 = 9 * c_in * p + 9 * p * p  # two 3x3 convs
                params += w3 + 2 * (2 * p)
                macs += w3 * out * out
            else:
                c_out = 4 * p
                params += c_in * p + 9 * p * p + p * c_out + 2 * (p + p + c_out)
                macs += (
                    c_in * p * side * side + (9 * p * p + p * c_out) * out * out
                )  # 1x1 runs before the stride
            if se:
                r = _round(c_out / 16)
                params += 2 * c_out * r + r + c_out  # two 1x1 convs with bias
                macs += 2 * c_out * r  # on the pooled 1x1 map
            if stride != 1 or c_in != c_out:  # projection shortcut: 1x1/stride conv + BN
                params += c_in * c_out + 2 * c_out
                macs += c_in * c_out * out * out
            c_in, side = c_out, out
    return Count(params + c_in * num_classes + num_classes, macs + c_in * num_classes)


MOBILENETV2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet(depth: int | None, resolution: int, num_classes: int, width: float) -> Count:
    c_in = _round(32 * width)
    side = _down(resolution, 2)
    params, macs = 27 * c_in + 2 * c_in, 27 * c_in * side * side
    for t, c, n, s in MOBILENETV2_STAGES:
        c_out = _round(c * width)
        for i in range(n if depth is None else depth):
            stride = s if i == 0 else 1
            hid = round(c_in * t)
            if t != 1:  # 1x1 expand + BN
                params += c_in * hid + 2 * hid
                macs += c_in * hid * side * side
            side = _down(side, stride)
            params += 9 * hid + 2 * hid + hid * c_out + 2 * c_out  # depthwise 3x3 + BN, 1x1 project + BN
            macs += (9 * hid + hid * c_out) * side * side
            c_in = c_out
    last = _round(1280 * max(1.0, width))
    params += c_in * last + 2 * last + last * num_classes + num_classes
    macs += c_in * last * side * side + last * num_classes
    return Count(params, macs)


def vit(
    dim: int, depth: int, heads: int, patch_size: int, resolution: int, num_classes: int, width: float
) -> Count:
    D = _round(dim * width, 8 * heads)
    patches = (resolution // patch_size) ** 2
    N = patches + 1  # + CLS
    F = 4 * D  # MLP hidden
    per_block = 2 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (D * F + F) + (F * D + D)
    params = (
        (3 * patch_size**2 * D + D) + D + N * D + depth * per_block + 2 * D + D * num_classes + num_classes
    )
    macs = (
        patches * 3 * patch_size**2 * D  # patch conv
        + depth * (N * (4 * D * D + 2 * D * F) + 2 * N * N * D)  # qkv+proj, MLP, QK^T + AV
        + D * num_classes  # head on the CLS token only
    )
    return Count(params, macs)


def llama_attention_macs(dim: int, depth: int, heads: int, seq_len: int, width: float) -> int:
    """The attention term alone: depth * (QK^T + AV) = depth * 2 * N^2 * D."""
    D = _round(dim * width, 8 * heads)
    return depth * 2 * seq_len * seq_len * D


def llama(vocab_size: int, dim: int, depth: int, heads: int, seq_len: int, width: float) -> Count:
    D = _round(dim * width, 8 * heads)
    F = -(-int(8 * D / 3) // 32) * 32  # SwiGLU hidden: 2/3 of 4D rounded up to a multiple of 32
    V, N = vocab_size, seq_len
    params = V * D + depth * (4 * D * D + 3 * D * F + 2 * D) + D + D * V
    macs = depth * N * (4 * D * D + 3 * D * F) + llama_attention_macs(dim, depth, heads, N, width) + N * D * V
    return Count(params, macs)


def rnn(
    cell: str,
    vocab_size: int,
    embed_dim: int,
    hidden: int,
    depth: int,
    seq_len: int,
    num_classes: int,
    width: float,
) -> Count:
    gates = {"lstm": 4, "gru": 3}[cell]
    E, H = _round(embed_dim * width), _round(hidden * width)
    params, macs = vocab_size * E, 0
    for layer in range(depth):
        i = E if layer == 0 else H
        params += gates * (H * i + H * H + 2 * H)  # W_ih, W_hh, b_ih, b_hh
        macs += seq_len * gates * H * (i + H)
    return Count(params + H * num_classes + num_classes, macs + H * num_classes)


# ------------------------------------------------------------------------------------------------ named zoo

# name -> (family formula, fixed architecture, knob defaults). Knobs override the defaults; `fused` is ignored.
ZOO: dict[str, tuple[Callable[..., Count], dict[str, Any], dict[str, Any]]] = {
    "mlp_s": (mlp, {"hidden": 256}, {"width": 1.0, "depth": 2, "in_features": 64, "num_classes": 10}),
    "mlp_m": (mlp, {"hidden": 1024}, {"width": 1.0, "depth": 4, "in_features": 256, "num_classes": 10}),
    "vgg_s": (
        vgg,
        {"channels": (32, 64, 128, 256)},
        {"width": 1.0, "depth": 2, "resolution": 64, "num_classes": 10},
    ),
    "vgg_m": (
        vgg,
        {"channels": (32, 64, 128, 256, 512)},
        {"width": 1.0, "depth": 2, "resolution": 96, "num_classes": 10},
    ),
    "resnet_s": (
        resnet,
        {"block": "basic", "widths": (32, 64, 128, 256), "stem_width": 32, "se": True},
        {"width": 1.0, "depth": 1, "resolution": 64, "num_classes": 10},
    ),
    "resnet_m": (
        resnet,
        {"block": "bottleneck", "widths": (32, 64, 128, 256), "stem_width": 32, "se": True},
        {"width": 1.0, "depth": 2, "resolution": 96, "num_classes": 10},
    ),
    "resnet18": (
        resnet,
        {
            "block": "basic",
            "widths": (64, 128, 256, 512),
            "stem_width": 64,
            "se": False,
            "published": (2, 2, 2, 2),
        },
        {"width": 1.0, "depth": None, "resolution": 224, "num_classes": 1000},
    ),
    "resnet50": (
        resnet,
        {
            "block": "bottleneck",
            "widths": (64, 128, 256, 512),
            "stem_width": 64,
            "se": False,
            "published": (3, 4, 6, 3),
        },
        {"width": 1.0, "depth": None, "resolution": 224, "num_classes": 1000},
    ),
    "mobilenet_s": (mobilenet, {}, {"width": 0.5, "depth": 2, "resolution": 96, "num_classes": 10}),
    "mobilenetv2": (mobilenet, {}, {"width": 1.0, "depth": None, "resolution": 224, "num_classes": 1000}),
    "vit_s": (
        vit,
        {"dim": 192, "heads": 3},
        {"width": 1.0, "depth": 6, "resolution": 64, "patch_size": 8, "num_classes": 10},
    ),
    "vit_tiny": (
        vit,
        {"dim": 192, "heads": 3},
        {"width": 1.0, "depth": 12, "resolution": 224, "patch_size": 16, "num_classes": 1000},
    ),
    "llama_tiny": (
        llama,
        {"dim": 128, "heads": 4},
        {"width": 1.0, "depth": 2, "seq_len": 64, "vocab_size": 1024},
    ),
    "llama_s": (
        llama,
        {"dim": 192, "heads": 3},
        {"width": 1.0, "depth": 4, "seq_len": 128, "vocab_size": 2048},
    ),
    "lstm_s": (
        rnn,
        {"cell": "lstm", "embed_dim": 64, "hidden": 128},
        {"width": 1.0, "depth": 1, "seq_len": 64, "vocab_size": 1000, "num_classes": 10},
    ),
    "gru_s": (
        rnn,
        {"cell": "gru", "embed_dim": 64, "hidden": 128},
        {"width": 1.0, "depth": 1, "seq_len": 64, "vocab_size": 1000, "num_classes": 10},
    ),
}


def arch(name: str, **knobs: Any) -> dict[str, Any]:
    """The full keyword set of ``name``'s family formula: fixed architecture + knob defaults + ``knobs``."""
    if name not in ZOO:
        raise KeyError(f"no closed form for {name!r}; add it to tests/_analytic.py ZOO")
    _, fixed, defaults = ZOO[name]
    knobs = {k: v for k, v in knobs.items() if k != "fused"}
    unknown = set(knobs) - set(defaults)
    if unknown:
        raise KeyError(f"{name}: no knob {sorted(unknown)} in the closed form")
    kw = {**fixed, **defaults, **knobs}
    if "published" in kw:  # ResNet: depth None keeps the published per-stage counts, an int sets every stage
        published = kw.pop("published")
        depth = kw.pop("depth")
        kw["layers"] = published if depth is None else (depth,) * len(published)
    elif ZOO[name][0] is resnet:
        kw["layers"] = (kw.pop("depth"),) * 4
    return kw


def count(name: str, **knobs: Any) -> Count:
    """Parameters and forward MACs of ``create_model(name, **knobs)``."""
    kw = arch(name, **knobs)
    return ZOO[name][0](**kw)


def params(name: str, **knobs: Any) -> int:
    """Trainable parameters of ``create_model(name, **knobs)``."""
    return count(name, **knobs).params


def macs(name: str, **knobs: Any) -> int:
    """Forward MACs of ``create_model(name, **knobs)`` on its batch-1 ``input_spec``."""
    return count(name, **knobs).macs


def attention_macs(name: str, **knobs: Any) -> int:
    """The QK^T + AV term of a LLaMA model's MACs (the only term quadratic in seq_len)."""
    kw = arch(name, **knobs)
    return llama_attention_macs(kw["dim"], kw["depth"], kw["heads"], kw["seq_len"], kw["width"])


# Knob variations checked against the closed forms (params in test_models, MACs in test_macs). Odd resolutions
# exercise the floor/ceil of strided convs and pools; depth/width rows exercise the per-family knob semantics.
KNOB_CASES: list[tuple[str, dict[str, Any]]] = [
    ("mlp_s", {"width": 0.5}),
    ("mlp_m", {"depth": 1, "in_features": 37, "num_classes": 3}),
    ("vgg_s", {"width": 0.5}),
    ("vgg_s", {"depth": 1, "resolution": 70}),
    ("vgg_m", {"depth": 3, "resolution": 48, "width": 0.75}),
    ("resnet_s", {"width": 0.5}),
    ("resnet_s", {"depth": 2, "resolution": 70}),
    ("resnet_m", {"depth": 1, "width": 0.75, "num_classes": 7}),
    ("resnet18", {"depth": 1, "width": 0.5, "resolution": 64, "num_classes": 10}),
    ("resnet50", {"depth": 2, "resolution": 97}),
    ("mobilenet_s", {"width": 1.0, "depth": None, "resolution": 64}),
    ("mobilenet_s", {"depth": 1, "resolution": 101}),
    ("mobilenetv2", {"width": 0.5, "resolution": 96}),
    ("mobilenetv2", {"width": 1.4, "depth": 2, "resolution": 64}),
    ("vit_s", {"width": 0.5, "depth": 2}),
    ("vit_s", {"patch_size": 16, "resolution": 80}),
    ("vit_tiny", {"resolution": 64, "depth": 2}),
    ("llama_tiny", {"width": 0.5, "depth": 1}),
    ("llama_tiny", {"seq_len": 33, "vocab_size": 100}),
    ("llama_s", {"depth": 2, "width": 1.5, "seq_len": 16}),
    ("lstm_s", {"depth": 2, "width": 0.5}),
    ("gru_s", {"depth": 3, "seq_len": 17, "vocab_size": 50}),
]
