"""Resolve what the user names into something to measure.

Four kinds of model reference:

- a zoo name (``resnet_s``), built with ``models.create_model(name, **knobs)``;
- a hub source (``timm:resnet50``, ``torchvision:mobilenet_v3_small`` / ``tv:...``, ``hf:bert``), built by
  ``archbench.models.hub`` with random weights and no network; the prefix wins over an import path of that name;
- an import path ``pkg.module:factory`` whose callable returns an ``nn.Module``, or a tuple
  ``(module, example_inputs)``; example inputs come from the module's ``input_specs`` (several inputs) or
  ``input_spec``, the tuple, or ``--input-shape``/``--dtype``;
- a path to an ``.onnx`` file (static profile from its graph; measured by ONNX Runtime only).

A model may take several inputs (a transformers text model: input_ids and attention_mask): ``ModelSource.input_specs``
holds one spec per positional input, ``input_spec`` the first.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archbench.bench.cell import Cell
from archbench.bench.errors import USER_CODE_ERRORS, UsageError, one_line_text
from archbench.bench.measure.hooks import import_callable
from archbench.bench.measure.inputs import ArraySpec, onnx_input_specs
from archbench.models import InputSpec, create_model, get_entry, hub
from archbench.models._registry import check_knobs

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "int64": torch.int64, "long": torch.int64,
    "int32": torch.int32,
}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``; raises UsageError when malformed."""
    msg = f"bad --input-shape {text!r}: expected comma-separated positive integers, e.g. 1,3,224,224"
    parts = [p.strip() for p in re.split(r"[,x]", text.strip())]
    if not parts or not all(p.isdigit() for p in parts):
        raise UsageError(msg)
    shape = tuple(int(p) for p in parts)
    if any(d <= 0 for d in shape):
        raise UsageError(msg)
    elements = math.prod(shape)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if elements * 4 > ram:  # even one float32 input of this shape cannot fit: say so now, not as N failed cells
        raise UsageError(f"bad --input-shape {text!r}: {elements:,} elements ({elements * 4 / 2**30:,.0f} GiB as "
                         f"float32) do not fit in this machine's {ram / 2**30:.0f} GiB of memory")
    return shape


def parse_dtype(text: str) -> torch.dtype:
    try:
        return DTYPES[text.lower()]
    except KeyError:
        raise UsageError(f"bad --dtype {text!r}; known: {', '.join(DTYPES)}") from None


def parse_knob_value(text: str) -> Any:
    """Knob values from the command line: int, float, bool (true/false) or string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclass
class ModelSource:
    """A resolved model reference. Exactly one of ``module`` / ``onnx_path`` is set."""

    name: str  # what the user typed (zoo name, hub source, import path or file path)
    kind: str  # "zoo" | "hub" | "import" | "onnx"
    module: nn.Module | None
    onnx_path: Path | None
    input_spec: InputSpec | None  # the first input (the only one for most models)
    knobs: dict[str, Any]
    family: str = ""  # zoo family, "timm" | "torchvision" | "hf", "user" or "onnx"
    input_specs: tuple[InputSpec, ...] = ()  # every positional input, in order; () means (input_spec,)
    input_names: tuple[str, ...] = ()  # their keyword names where the model has them (hf: input_ids, ...)

    def __post_init__(self) -> None:
        if not self.input_specs and self.input_spec is not None:
            self.input_specs = (self.input_spec,)

    def example_inputs(self, batch: int | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
        if self.input_spec is None:
            raise UsageError(f"{self.name}: the model states no example input; pass --input-shape (and --dtype), or in pytest input_shape in [tool.archbench] or archbench_bench.model(..., input_shape=...)")
        # Each input from its own stream, so the first input is the same tensor whether or not more follow.
        return tuple(s.make(batch=batch, generator=torch.Generator().manual_seed(seed if i == 0 else seed * 1009 + i))
                     for i, s in enumerate(self.input_specs))

    def describe_inputs(self, batch: int | None = None) -> str:
        """``"1x3x224x224 float32"``, or ``"input_ids 1x128 int64 [0,30522), attention_mask 1x128 int64 [1,2)"``."""
        specs = tuple(s.with_batch(batch) if batch else s for s in self.input_specs)
        return hub.describe_inputs(specs, self.input_names if len(specs) > 1 else ())


def is_onnx_ref(ref: str) -> bool:
    return ref.lower().endswith(".onnx")


def is_hub_ref(ref: str) -> bool:
    """``timm:NAME``, ``torchvision:NAME``/``tv:NAME`` or ``hf:NAME`` (archbench.models.hub)."""
    return hub.is_hub_ref(ref) and not is_onnx_ref(ref)


def is_import_ref(ref: str) -> bool:
    """Anything with a colon that is no .onnx file: an import path, or a hub source (``is_hub_ref``). Callers
    that check zoo names up front skip these; resolve() tells them apart, hub prefixes first."""
    return ":" in ref and not is_onnx_ref(ref)


def check_ref(ref: str, knobs: dict[str, Any] | None = None) -> None:
    """Fail fast, before any worker starts, on a reference that cannot resolve: a missing .onnx file, an unknown
    zoo name, or a hub source whose package is missing, whose name is unknown, or (hf) whose config cannot be
    had offline. Cheap: it builds nothing (import paths are checked when built)."""
    if is_onnx_ref(ref):
        from archbench.bench.measure.onnx_profile import load_onnx_checked

        load_onnx_checked(ref)
    elif is_hub_ref(ref):
        try:
            hub.check(ref, knobs)
        except hub.HubError as e:
            raise UsageError(str(e)) from None
    elif not is_import_ref(ref):
        try:
            check_knobs(ref, knobs or {})
        except ValueError as e:
            raise UsageError(str(e)) from None


def load_weights(module: nn.Module, path: str) -> None:
    """Load a state_dict file with ``torch.load(weights_only=True)`` (no pickled code is executed), or a
    ``.safetensors`` file. A transformers model (hub.HFModule) loads into the wrapped model, whose keys a
    checkpoint of it has."""
    if isinstance(module, hub.HFModule):
        module = module.model
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"cannot load weights {path!r}: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except Exception as e:
        raise UsageError(f"weights {path!r} do not fit the model: {one_line_text(str(e))}") from e


def resolve(
    ref: str,
    knobs: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    weights: str | None = None,
) -> ModelSource:
    """Turn a model reference into a ModelSource; every user mistake raises UsageError (one line)."""
    knobs = dict(knobs or {})
    if is_onnx_ref(ref):
        path = Path(ref)
        if not path.is_file():
            raise UsageError(f"no such ONNX file: {ref}")
        spec = InputSpec(input_shape, dtype or torch.float32) if input_shape else None
        return ModelSource(ref, "onnx", None, path, spec, knobs, family="onnx")

    names: tuple[str, ...] = ()
    specs: tuple[InputSpec, ...] = ()
    example: tuple[torch.Tensor, ...] | None = None
    if is_hub_ref(ref):
        try:
            built = hub.build(ref, knobs, settle_batchnorm=not weights)  # loaded weights bring their own
        except hub.HubError as e:
            raise UsageError(str(e)) from None
        module, family, kind = built.module, built.family, "hub"
        specs, names = built.input_specs, built.input_names
    elif is_import_ref(ref):
        factory = import_callable(ref)
        try:
            out = factory(**knobs)
        except USER_CODE_ERRORS as e:  # sys.exit() or KeyboardInterrupt in a factory is reported, not obeyed
            raise UsageError(f"factory {ref!r} raised {type(e).__name__}: {e}") from e
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module):
            out, ex = out
            example = tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)
        if not isinstance(out, nn.Module):
            raise UsageError(f"factory {ref!r} returned {type(out).__name__}, expected an nn.Module or (module, inputs)")
        module = out
        family = "user"
        kind = "import"
    else:
        try:
            entry = get_entry(ref)
            module = create_model(ref, **knobs)
        except ValueError as e:
            raise UsageError(str(e)) from None
        family = entry.family
        kind = "zoo"

    if weights:
        load_weights(module, weights)

    if not specs:
        specs = tuple(getattr(module, "input_specs", None) or ())
    if not specs and getattr(module, "input_spec", None) is not None:
        specs = (module.input_spec,)
    if example is not None and example and all(isinstance(t, torch.Tensor) for t in example):
        specs = tuple(_spec_of(t, specs[i] if i < len(specs) else None) for i, t in enumerate(example))
    specs = _override(ref, specs, input_shape, dtype)
    module.eval()
    if not specs:
        raise UsageError(_no_input_message(ref, module))
    return ModelSource(ref, kind, module, None, specs[0], knobs, family=family, input_specs=specs,
                       input_names=names)


def _no_input_message(ref: str, module: nn.Module) -> str:
    """Why a model has no example input and what to do: one input -> --input-shape; several -> a factory that
    returns (module, (inputs...)), since one --input-shape cannot describe them."""
    import inspect

    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        params = []
    if len(params) > 1:
        names = ", ".join(p.name for p in params)
        return (f"{ref}: its forward takes {len(params)} inputs ({names}) and the model states no example of them; "
                "--input-shape describes one input: make the factory return (module, (example inputs...))")
    return (f"{ref}: the model states no example input; pass --input-shape (and --dtype), or in pytest input_shape "
            "in [tool.archbench] or archbench_bench.model(..., input_shape=...)")


def _spec_of(t: torch.Tensor, stated: InputSpec | None) -> InputSpec:
    """The spec of an example tensor a factory returned; integer values keep the range the model states, else
    [min, max] of the example (token ids within the vocabulary it used, a mask of ones), at least [0, 2) when it
    starts at 0 so that generated inputs are never all zeros."""
    if t.is_floating_point():
        return InputSpec(tuple(t.shape), t.dtype)
    if stated is not None and stated.high is not None:
        return InputSpec(tuple(t.shape), t.dtype, stated.high, stated.low)
    lo, hi = (int(t.min()), int(t.max()) + 1) if t.numel() else (0, 2)
    return InputSpec(tuple(t.shape), t.dtype, max(hi, 2) if lo == 0 else hi, lo)


def _override(ref: str, specs: tuple[InputSpec, ...], shape: tuple[int, ...] | None,
              dtype: torch.dtype | None) -> tuple[InputSpec, ...]:
    """Apply --input-shape / --dtype. One input (or none stated): it gets them. Several: the shape goes to every
    input of that rank (input_ids and attention_mask alike), the dtype to every floating input."""
    if len(specs) <= 1:
        if shape is not None:
            base = specs[0] if specs else InputSpec(shape)
            return (InputSpec(shape, dtype or base.dtype, base.high, base.low),)
        if dtype is not None and specs:
            return (InputSpec(specs[0].shape, dtype, specs[0].high, specs[0].low),)
        return specs
    out = list(specs)
    if shape is not None:
        hits = [i for i, s in enumerate(specs) if len(s.shape) == len(shape)]
        if not hits:
            raise UsageError(f"{ref}: --input-shape {'x'.join(map(str, shape))} fits none of its inputs "
                             f"({', '.join(s.describe() for s in specs)})")
        for i in hits:
            out[i] = InputSpec(shape, out[i].dtype, out[i].high, out[i].low)
    if dtype is not None:
        out = [InputSpec(s.shape, dtype, s.high, s.low) if s.dtype.is_floating_point else s for s in out]
    return tuple(out)


def build_source(cell: Cell) -> tuple[Any, tuple[ArraySpec, ...]]:
    """(ModelSource, input specs) for ``cell``, seeded so every worker builds the same weights. Imports torch."""
    o = cell.options
    torch.manual_seed(0)
    src = resolve(cell.source, cell.knob_dict, o.input_shape, parse_dtype(o.dtype) if o.dtype else None, o.weights)
    if src.module is None:
        try:
            specs = onnx_input_specs(src.onnx_path, o.input_shape, o.dtype)
        except ValueError as e:
            raise UsageError(str(e)) from None
    else:
        specs = tuple(ArraySpec.from_input_spec(s) for s in src.input_specs)
    return src, specs
