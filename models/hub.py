"""Models by name from timm, torchvision and Hugging Face transformers: random weights, no network.

    build("timm:resnet50")                              -> HubModel(module, input_specs, family="timm")
    build("tv:mobilenet_v3_small", {"num_classes": 10}) # torchvision; knobs are builder keywords
    build("hf:gpt2", {"n_layer": 2, "seq_len": 64})     # transformers; knobs override the config
    list_hub("timm", "convnext*")                       -> ["convnext_atto", ...]

Sources (the part before the colon):

- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **knobs)``; the example input is the model's
  pretrained config ``input_size`` (``--resolution R`` makes it R x R, and is passed as ``img_size`` to models
  whose pretrained config says their input size is fixed, such as ViTs).
- ``torchvision:NAME`` or ``tv:NAME``: ``torchvision.models.get_model(NAME, weights=None, **knobs)``; the example
  input is the crop size of the model's default weights' transforms (the weights are never loaded), or the
  model's own ``image_size``. Classification, segmentation and video models; detection and optical flow take
  lists or pairs of images, which a benchmark's positional inputs cannot express.
- ``hf:WHAT``: a transformers model built from a config with random weights. WHAT is a model type (``hf:bert``,
  ``hf:gpt2``, ``hf:llama``: the library's default config), a local directory holding ``config.json``, a path to
  a ``config.json``, or a hub id whose ``config.json`` is in the local cache (else fetched when the network is
  there; ``HF_HUB_OFFLINE=1`` never tries). Knobs override config attributes (``n_layer=2``), except these:
  ``task`` (base, causal-lm, masked-lm, seq2seq-lm, sequence-classification, token-classification,
  question-answering, image-classification, or a class name such as ``BertForMaskedLM``), ``seq_len`` (text
  models' sequence length, default min(128, max positions)), ``inputs`` (the forward's inputs, ``+``-separated,
  e.g. ``input_ids+attention_mask``), ``attn_implementation`` (sdpa, eager), ``resolution`` (-> image_size) and
  ``num_classes`` (-> num_labels).

Transformers models are wrapped (``HFModule``) so that every runtime sees a plain module: positional tensor inputs
(input_ids, attention_mask, ...), ``use_cache=False`` (a KV cache output breaks the JIT trace MACs are counted on
and both ONNX exporters) and a flat tuple of output tensors instead of a ModelOutput.

Each source's package is an optional extra; a missing one is a one-line ``MissingExtra`` naming it. Errors a user
can fix are ``HubError`` (a ValueError), which the CLI prints as one line.

This module is the API (and timm / torchvision); transformers lives in ``hub_hf``, the shared parts in ``_hub_base``.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from archbench.models._hub_base import (  # noqa: F401  (re-exported: the hub API is this module)
    PACKAGES,
    PREFIXES,
    HubError,
    HubModel,
    MissingExtra,
    describe_inputs,
    hint,
    is_hub_ref,
    require,
    split_ref,
)
from archbench.models._registry import InputSpec
from archbench.models.hub_hf import HF_KNOBS, HF_TASKS, HFModule, build_hf, check_hf, default_task, hf_names  # noqa: F401

# ----------------------------------------------------------------------------------------------- build


def build(ref: str, knobs: dict[str, Any] | None = None, settle_batchnorm: bool = True) -> HubModel:
    """Build the hub model ``ref`` names (``timm:``, ``torchvision:``/``tv:``, ``hf:``) with ``knobs``.

    ``settle_batchnorm``: re-estimate BatchNorm running statistics on one random batch (``settle_batchnorm_stats``
    below); pass False when trained weights will be loaded over them."""
    parts = split_ref(ref)
    if parts is None:
        raise HubError(f"{ref!r} names no hub source; use timm:NAME, torchvision:NAME (tv:NAME) or hf:NAME")
    source, name = parts
    if not name:
        raise HubError(f"{ref!r}: give a model name after the colon, e.g. timm:resnet50")
    knobs = dict(knobs or {})
    if source == "timm":
        built = _build_timm(ref, name, knobs)
    elif source == "torchvision":
        built = _build_torchvision(ref, name, knobs)
    else:
        built = build_hf(ref, name, knobs)
    if settle_batchnorm:
        settle_batchnorm_stats(built.module, built.input_specs)
    return built


# Seed of the batch BatchNorm statistics are estimated on: apart from the timing/fidelity/calibration seeds
# (measure.inputs), so no judged input is one the statistics were fitted to.
BN_SEED = 20_000


def settle_batchnorm_stats(module: nn.Module, specs: tuple[InputSpec, ...], batch: int = 2) -> bool:
    """Set every BatchNorm's running mean/var to its input's statistics on one random batch; True if any.

    A freshly initialised network in eval mode normalises with running stats (0, 1) that match nothing it
    computes, so activations shrink or grow layer by layer: torchvision's MobileNetV3-Small gave logits of
    ~1e-9, which fp16 flushed to zero (cosine 0, top-1 agreement 0 against fp32: a fact about the init, not about
    fp16). With its statistics re-estimated BN normalises as in a trained network and its logits are O(0.1).
    Only the BN layers run in train mode (dropout and drop-path stay off); momentum=None makes the estimate the
    plain batch average; weights are untouched. Batch 2 so that a BN after global pooling sees a variance."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or any(p.is_meta for p in module.parameters()):
        return False
    momenta = [bn.momentum for bn in bns]
    g = torch.Generator().manual_seed(BN_SEED)
    x = tuple(s.make(batch=batch, generator=g) for s in specs)
    try:
        module.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad():
            module(*x)
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        module.eval()
    return True


def check(ref: str, knobs: dict[str, Any] | None = None) -> None:
    """What ``build`` would reject without building anything: a missing package, an unknown name, an hf config
    that cannot be had (offline) or an attribute it does not have. For failing fast before workers start."""
    parts = split_ref(ref)
    if parts is None or not parts[1]:
        raise HubError(f"{ref!r}: use timm:NAME, torchvision:NAME (tv:NAME) or hf:NAME")
    source, name = parts
    knobs = dict(knobs or {})
    if source == "timm":
        timm = require("timm")
        if not timm.is_model(name):
            raise HubError(f"unknown timm model {name!r}{hint(name, timm.list_models())}")
    elif source == "torchvision":
        _torchvision_kind_or_raise(ref, require("torchvision"), name)
    else:
        check_hf(ref, name, knobs)


def _image_spec(channels: int, height: int, width: int) -> InputSpec:
    return InputSpec((1, channels, height, width), torch.float32)


def _call_builder(ref: str, fn: Any, *args: Any, **kw: Any) -> nn.Module:
    """Call a library's builder; a TypeError/ValueError from bad knobs becomes one HubError line."""
    try:
        return fn(*args, **kw)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HubError(f"{ref}: building it with {kw or 'no knobs'} failed: {type(e).__name__}: {msg}") from None


def _build_timm(ref: str, name: str, knobs: dict[str, Any]) -> HubModel:
    timm = require("timm")
    if not timm.is_model(name):
        raise HubError(f"unknown timm model {name!r}{hint(name, timm.list_models())}; "
                       "see `archbench list --source timm 'PATTERN'`")
    resolution = knobs.pop("resolution", None)
    cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    if resolution is not None and fixed and "img_size" not in knobs:
        # ViT-style models size their position embeddings at build time: the resolution must reach the builder.
        knobs["img_size"] = int(resolution)
    module = _call_builder(ref, timm.create_model, name, pretrained=False, **knobs).eval()
    # The model's own pretrained_cfg (after knobs) says what it was trained at: (C, H, W).
    c, h, w = tuple(module.pretrained_cfg.get("input_size") or (3, 224, 224))
    if "img_size" in knobs:
        size = knobs["img_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
    if resolution is not None:
        h = w = int(resolution)
    if "in_chans" in knobs:
        c = int(knobs["in_chans"])
    return HubModel(module, (_image_spec(c, h, w),), "timm")


def _torchvision_kind(tv: Any, name: str) -> str:
    """Which torchvision.models subpackage registers ``name``: classification is the top level."""
    for kind in ("detection", "optical_flow", "quantization", "segmentation", "video"):
        if name in tv.models.list_models(module=getattr(tv.models, kind)):
            return kind
    return "classification"


def torchvision_names(tv: Any) -> list[str]:
    """The torchvision models archbench can build: classification, segmentation and video."""
    return sorted(n for n in tv.models.list_models()
                  if _torchvision_kind(tv, n) in ("classification", "segmentation", "video"))


def _torchvision_kind_or_raise(ref: str, tv: Any, name: str) -> str:
    """The model's kind (classification, segmentation, video); HubError for names archbench cannot build."""
    if name not in tv.models.list_models():
        raise HubError(f"unknown torchvision model {name!r}{hint(name, tv.models.list_models())}; "
                       "see `archbench list --source torchvision`")
    kind = _torchvision_kind(tv, name)
    if kind in ("detection", "optical_flow"):
        raise HubError(f"{ref}: torchvision {kind} models take lists or pairs of images and return per-image "
                       "dicts; archbench measures models called with positional tensors")
    if kind == "quantization":
        raise HubError(f"{ref}: torchvision's quantized models are built for eager static quantization; measure "
                       f"torchvision:{name.removeprefix('quantized_')} with --precision int8-dynamic/int8-static")
    return kind


def _build_torchvision(ref: str, name: str, knobs: dict[str, Any]) -> HubModel:
    tv = require("torchvision")
    kind = _torchvision_kind_or_raise(ref, tv, name)
    resolution = knobs.pop("resolution", None)
    module = _call_builder(ref, tv.models.get_model, name, weights=None, **knobs).eval()
    if resolution is not None and getattr(module, "image_size", None) not in (None, resolution):
        # torchvision ViTs size their position embeddings from image_size at build time.
        module = _call_builder(ref, tv.models.get_model, name, weights=None, image_size=int(resolution),
                               **knobs).eval()
    # The input the default weights were trained on, from their preset transforms (the weights are not loaded).
    size: Any = getattr(module, "image_size", None)
    preset = tv.models.get_model_weights(name).DEFAULT.transforms
    kw = getattr(preset, "keywords", {}) or {}
    if size is None:
        size = kw.get("crop_size") or kw.get("resize_size") or 224
    if resolution is not None:
        size = int(resolution)
    h, w = (size, size) if isinstance(size, int) else (size[0], size[-1])
    if kind == "video":
        # (B, C, T, H, W): 16 frames, the clip length torchvision's video models are trained on
        return HubModel(module, (InputSpec((1, 3, 16, h, w), torch.float32),), "torchvision")
    return HubModel(module, (_image_spec(3, h, w),), "torchvision")


# ----------------------------------------------------------------------------------------------- listing


def list_hub(source: str, pattern: str = "*") -> list[str]:
    """Names a source can build that match an fnmatch ``pattern`` (hf: model types), sorted."""
    source = PREFIXES.get(source.lower(), source.lower())
    if source not in PACKAGES:
        raise HubError(f"unknown source {source!r}; known: zoo, {', '.join(PREFIXES)}")
    if source == "timm":
        return list(require("timm").list_models(pattern))
    if source == "torchvision":
        return [n for n in torchvision_names(require("torchvision")) if fnmatch.fnmatchcase(n, pattern)]
    return hf_names(pattern)
