"""Transformers models for ``hf:`` references (archbench.models.hub): a config with random weights, the head a
task needs, example inputs from the config, wrapped so every runtime sees positional tensors and a flat output.

Imports transformers only inside functions (the ``hf`` extra), so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archbench.models._hub_base import HubError, HubModel, hint, require
from archbench.models._registry import InputSpec

# Knobs of hf: sources that are not config attributes (see the module docstring).
HF_KNOBS = ("task", "seq_len", "inputs", "attn_implementation", "resolution", "num_classes")
# task -> the transformers Auto class that builds its head
HF_TASKS: dict[str, str] = {
    "base": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
}
DEFAULT_SEQ_LEN = 128


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers logs config advice (e.g. a bos_token_id outside a shrunk vocabulary) on every build; the
    user chose that config on purpose, so keep it out of the terminal for the build and restore the level."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class HFModule(nn.Module):
    """A transformers model as a plain module: positional tensors in, a flat tuple of tensors out.

    The inputs are bound to the model's keyword names (``input_names``), so ``module(ids, mask)`` is
    ``model(input_ids=ids, attention_mask=mask)``; the fixed positional signature (not ``*args``) lets
    torch.export give each input its own dynamic batch dimension. The output ModelOutput (or tuple / dict) is
    flattened to its tensors in order: logits, or last_hidden_state and pooler_output; None fields and caches
    are dropped (the config has ``use_cache=False``, so there is no cache). One tensor is returned bare."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...], input_specs: tuple[InputSpec, ...]) -> None:
        super().__init__()
        if not 1 <= len(input_names) <= 4:
            raise HubError(f"{type(model).__name__}: 1 to 4 inputs are supported, not {len(input_names)}")
        self.model = model
        self.input_names = tuple(input_names)
        self.input_specs = tuple(input_specs)
        self.input_spec = input_specs[0]

    def forward(self, x0: torch.Tensor, x1: torch.Tensor | None = None, x2: torch.Tensor | None = None,
                x3: torch.Tensor | None = None) -> Any:
        kwargs = {n: x for n, x in zip(self.input_names, (x0, x1, x2, x3), strict=False) if x is not None}
        out = _tensors(self.model(**kwargs))
        return out[0] if len(out) == 1 else tuple(out)


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):  # ModelOutput is an OrderedDict of the fields that are not None
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []  # None, a Cache object, scalars


def _hf_config_dict(ref: str, name: str) -> dict[str, Any] | None:
    """The config.json of a local directory, a config file, or a hub id (cache first); None for a model type."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise HubError(f"{ref}: the directory has no config.json")
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise HubError(f"{ref}: cannot read {path}: {e}") from None
    if name in CONFIG_MAPPING_NAMES:
        return None
    if name.endswith(".json") or name.startswith((".", "/", "~")):
        raise HubError(f"{ref}: no such file or directory")
    return json.loads(Path(_hub_config_file(ref, name)).read_text())


def _hub_config_file(ref: str, repo_id: str) -> str:
    """The cached config.json of a hub id; the network is tried only when the cache has none and the hub's host
    resolves (huggingface_hub would otherwise retry for ~25 s before failing offline)."""
    from huggingface_hub import constants, hf_hub_download

    try:
        return hf_hub_download(repo_id, "config.json", local_files_only=True)
    except Exception:  # not cached (or not a valid id): try the hub, unless offline
        pass
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    what = f"{ref}: {repo_id!r} is no transformers model type{hint(repo_id, list(CONFIG_MAPPING_NAMES))}, and no " \
           "config.json for it is cached"
    if not _hub_reachable(constants):
        raise HubError(f"{what}; the hub cannot be reached (offline): use a model type (hf:bert), a local "
                       "directory or a config.json path")
    try:
        with _quiet_hub():
            return hf_hub_download(repo_id, "config.json")
    except Exception as e:
        raise HubError(f"{what} nor could be fetched: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from None


def _hub_reachable(constants: Any) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host name does not resolve (no network here)."""
    import socket
    from urllib.parse import urlparse

    if getattr(constants, "HF_HUB_OFFLINE", False):
        return False
    host = urlparse(getattr(constants, "ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub logs each retry of a failing download; the error we raise says it in one line."""
    import logging

    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _hf_config(ref: str, name: str, overrides: dict[str, Any], optional: dict[str, Any] | None = None) -> Any:
    """The config ``name`` refers to, with ``overrides`` (each must be an attribute of it) and ``optional``
    overrides (applied where the config has the attribute: --resolution is image_size where there is one)."""
    from transformers import CONFIG_MAPPING

    data = _hf_config_dict(ref, name)
    model_type = name if data is None else data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise HubError(f"{ref}: config.json has model_type {model_type!r}, which this transformers "
                       "does not know" + (hint(str(model_type), list(CONFIG_MAPPING.keys())) if model_type else ""))
    config_class = CONFIG_MAPPING[model_type]
    try:
        plain = config_class() if data is None else config_class.from_dict(data)
    except (TypeError, ValueError) as e:
        raise HubError(f"{ref}: its config cannot be built: {str(e).splitlines()[0]}") from None
    # A config silently keeps any keyword it is given, so a typo (n_layers) would build the default model: accept
    # only what the config has (attributes, aliases such as GPT-2's num_hidden_layers, properties: num_labels).
    unknown = sorted(k for k in overrides if not hasattr(plain, k))
    if unknown:
        known = sorted(set(plain.to_dict()) | set(getattr(config_class, "attribute_map", {}) or {}))
        hints = "".join(hint(k, known) for k in unknown)
        raise HubError(f"{ref}: {config_class.__name__} has no attribute {', '.join(unknown)}{hints} "
                       f"(hf knobs: {', '.join(HF_KNOBS)}, or any config attribute)")
    overrides = {**{k: v for k, v in (optional or {}).items() if hasattr(plain, k)}, **overrides}
    if not overrides:
        return plain
    try:
        # Overrides go through __init__ (not setattr afterwards), so attributes derived from them, such as
        # LLaMA's head_dim = hidden_size / num_attention_heads, follow them.
        if data is None:
            return config_class(**overrides)
        return config_class.from_dict({**data, **overrides})
    except (TypeError, ValueError) as e:
        raise HubError(f"{ref}: config {overrides} rejected: {str(e).splitlines()[0]}") from None


def _auto_classes(transformers: Any, config: Any) -> list[str]:
    """The tasks whose Auto class has a model for this config."""
    out = []
    for task, auto in HF_TASKS.items():
        mapping = getattr(getattr(transformers, auto), "_model_mapping", None)
        with contextlib.suppress(Exception):
            if mapping is not None and type(config) in mapping:
                out.append(task)
    return out


def default_task(config: Any) -> str:
    """The head a model type is usually benchmarked with when its config names no architecture.

    Encoder-decoders -> seq2seq-lm; vision models (image_size, no vocabulary) -> image-classification; decoder-only
    text models (a causal-LM head and no masked-LM head: GPT-2, LLaMA) -> causal-lm; the rest (BERT, RoBERTa) ->
    the base model, as ``AutoModel`` gives it."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    mt = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq-lm" if mt in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES else "base"
    if mt in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES and getattr(config, "vocab_size", None) is None:
        return "image-classification"
    if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal-lm"
    return "base"


def _hf_model(ref: str, transformers: Any, config: Any, task: str | None, attn: str | None) -> nn.Module:
    kw: dict[str, Any] = {"dtype": torch.float32}  # hub configs often say bf16; runtimes cast for precisions
    if attn:
        kw["attn_implementation"] = attn
    archs = getattr(config, "architectures", None) or []
    if task is None and archs and hasattr(transformers, archs[0]):
        task = archs[0]  # a config.json from a checkpoint names the class it was saved from
    task = task or default_task(config)
    if task in HF_TASKS:
        auto = getattr(transformers, HF_TASKS[task])
        try:
            return auto.from_config(config, **kw)
        except ValueError:
            tasks = _auto_classes(transformers, config)
            raise HubError(f"{ref}: no {task} head for {type(config).__name__}; tasks it has: "
                           f"{', '.join(tasks) or 'none'} (--knob task=...)") from None
    cls = getattr(transformers, task, None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise HubError(f"{ref}: unknown task {task!r}; use one of {', '.join(HF_TASKS)} or a transformers model "
                       "class name such as BertForMaskedLM")
    try:
        return cls._from_config(config, **kw)
    except (TypeError, ValueError, AttributeError) as e:
        raise HubError(f"{ref}: {task} cannot be built from {type(config).__name__}: {e}") from None


def _max_positions(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _image_size(config: Any) -> tuple[int, int, int]:
    """(channels, H, W) of a vision config (or its vision_config); 224 x 224 (ImageNet's crop) when it states no
    image size, as convolutional configs (HF ResNet, ConvNeXt) do."""
    cfg = getattr(config, "vision_config", None) or config
    size = getattr(cfg, "image_size", None) or 224
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
    return int(getattr(cfg, "num_channels", 3) or 3), h, w


def _hf_inputs(ref: str, model: nn.Module, config: Any, names: tuple[str, ...] | None,
               seq_len: int | None, resolution: int | None = None) -> tuple[tuple[str, ...], tuple[InputSpec, ...]]:
    """The forward's inputs and example specs (batch 1), from the config: vocabulary, positions, image size."""
    params = inspect.signature(model.forward).parameters
    main = getattr(model, "main_input_name", "input_ids")
    if names is None:
        names = (main,)
        if main == "input_ids" and "attention_mask" in params:
            names += ("attention_mask",)  # what a tokenizer gives, and what a deployment passes
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
            names += ("decoder_input_ids",)
    bad = [n for n in names if n not in params]
    if bad:
        raise HubError(f"{ref}: {type(model).__name__}.forward has no input {', '.join(bad)}")
    text_cfg = getattr(config, "text_config", None) or config
    vocab = getattr(text_cfg, "vocab_size", None)
    longest = _max_positions(text_cfg)
    n = int(seq_len) if seq_len is not None else min(DEFAULT_SEQ_LEN, longest or DEFAULT_SEQ_LEN)
    uses_tokens = any(x in ("input_ids", "decoder_input_ids", "attention_mask", "token_type_ids") for x in names)
    if uses_tokens and longest is not None and n > longest and getattr(config, "position_embedding_type",
                                                                        "absolute") == "absolute":
        raise HubError(f"{ref}: seq_len {n} is longer than the model's {longest} positions")
    specs = []
    for name in names:
        if name in ("input_ids", "decoder_input_ids"):
            if not vocab:
                raise HubError(f"{ref}: the config states no vocab_size for {name}")
            specs.append(InputSpec((1, n), torch.int64, high=int(vocab)))
        elif name == "attention_mask":
            specs.append(InputSpec((1, n), torch.int64, high=2, low=1))  # all ones: no padding
        elif name == "token_type_ids":
            specs.append(InputSpec((1, n), torch.int64, high=max(1, int(getattr(config, "type_vocab_size", 1)))))
        elif name == "pixel_values":
            c, h, w = _image_size(config)
            h, w = (int(resolution), int(resolution)) if resolution is not None else (h, w)
            specs.append(InputSpec((1, c, h, w), torch.float32))
        elif name == "input_features" and getattr(config, "num_mel_bins", None):
            # Whisper-style log-mel features: (B, mels, frames), 2 frames per encoder position (conv stride 2)
            frames = 2 * int(getattr(config, "max_source_positions", 1500))
            specs.append(InputSpec((1, int(config.num_mel_bins), frames), torch.float32))
        elif name == "input_values":
            specs.append(InputSpec((1, int(seq_len or 16000)), torch.float32))  # raw audio samples
        else:
            raise HubError(f"{ref}: cannot make an example {name!r} from the config; choose inputs with "
                           "--knob inputs=NAME+NAME (input_ids, attention_mask, token_type_ids, "
                           "decoder_input_ids, pixel_values, input_features, input_values)")
    return tuple(names), tuple(specs)


def build_hf(ref: str, name: str, knobs: dict[str, Any]) -> HubModel:
    transformers = require("hf")
    special = {k: knobs.pop(k) for k in HF_KNOBS if k in knobs}
    resolution = special.pop("resolution", None)
    optional = {"image_size": int(resolution)} if resolution is not None else {}
    if "num_classes" in special:
        knobs["num_labels"] = int(special.pop("num_classes"))
    inputs = special.get("inputs")
    names = tuple(x.strip() for x in str(inputs).replace(",", "+").split("+") if x.strip()) if inputs else None
    with _quiet_transformers():
        config = _hf_config(ref, name, knobs, optional)
        if hasattr(config, "use_cache"):
            config.use_cache = False  # a KV cache output is neither traceable (MACs) nor exportable (ONNX)
        model = _hf_model(ref, transformers, config, special.get("task"), special.get("attn_implementation"))
        model = model.float().eval()
        input_names, specs = _hf_inputs(ref, model, config, names, special.get("seq_len"), resolution)
    return HubModel(HFModule(model, input_names, specs).eval(), specs, "hf", input_names)


def check_hf(ref: str, name: str, knobs: dict[str, Any]) -> None:
    """What build_hf would reject, without building the model: the config (offline), its attributes, the task."""
    transformers = require("hf")
    overrides = {k: v for k, v in knobs.items() if k not in HF_KNOBS}
    with _quiet_transformers():
        _hf_config(ref, name, overrides)
    task = knobs.get("task")
    if task is not None and task not in HF_TASKS and not hasattr(transformers, str(task)):
        raise HubError(f"{ref}: unknown task {task!r}; use one of {', '.join(HF_TASKS)} or a transformers "
                       "model class name such as BertForMaskedLM")


def hf_names(pattern: str) -> list[str]:
    """The transformers model types matching an fnmatch ``pattern``, sorted."""
    import fnmatch

    require("hf")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(n for n in CONFIG_MAPPING_NAMES if fnmatch.fnmatchcase(n, pattern))
