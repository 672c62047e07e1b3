"""Resolve what the user names into something to measure.

Three kinds of model reference:

- a zoo name (``resnet_s``), built with ``models.create_model(name, **knobs)``;
- an import path ``pkg.module:factory`` whose callable returns an ``nn.Module``, or a tuple
  ``(module, example_inputs)``; example inputs come from the module's ``input_spec``, the tuple, or
  ``--input-shape``/``--dtype``;
- a path to an ``.onnx`` file (static profile from its graph; measured by ONNX Runtime only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archbench.bench.cell import Cell
from archbench.bench.errors import UsageError
from archbench.bench.measure.hooks import import_callable
from archbench.bench.measure.inputs import ArraySpec, onnx_input_specs
from archbench.models import InputSpec, create_model, get_entry

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

    name: str  # what the user typed (zoo name, import path or file path)
    kind: str  # "zoo" | "import" | "onnx"
    module: nn.Module | None
    onnx_path: Path | None
    input_spec: InputSpec | None
    knobs: dict[str, Any]
    family: str = ""

    def example_inputs(self, batch: int | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
        if self.input_spec is None:
            raise UsageError(f"{self.name}: the model states no example input; pass --input-shape (and --dtype), or in pytest input_shape in [tool.archbench] or archbench_bench.model(..., input_shape=...)")
        g = torch.Generator().manual_seed(seed)
        return (self.input_spec.make(batch=batch, generator=g),)


def is_onnx_ref(ref: str) -> bool:
    return ref.lower().endswith(".onnx")


def is_import_ref(ref: str) -> bool:
    return ":" in ref and not is_onnx_ref(ref)


def load_weights(module: nn.Module, path: str) -> None:
    """Load a state_dict file with ``torch.load(weights_only=True)`` (no pickled code is executed)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"cannot load weights {path!r}: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except Exception as e:
        raise UsageError(f"weights {path!r} do not fit the model: {str(e).splitlines()[0]}") from e


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

    if is_import_ref(ref):
        factory = import_callable(ref)
        try:
            out = factory(**knobs)
        except Exception as e:
            raise UsageError(f"factory {ref!r} raised {type(e).__name__}: {e}") from e
        example: tuple[torch.Tensor, ...] | None = None
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
        example = None
        family = entry.family
        kind = "zoo"

    if weights:
        load_weights(module, weights)

    spec: InputSpec | None = getattr(module, "input_spec", None)
    if example is not None and len(example) == 1 and isinstance(example[0], torch.Tensor):
        t = example[0]
        spec = InputSpec(tuple(t.shape), t.dtype, spec.high if spec else None)
    if input_shape is not None:
        base = spec or InputSpec(input_shape)
        spec = InputSpec(input_shape, dtype or base.dtype, base.high)
    elif dtype is not None and spec is not None:
        spec = InputSpec(spec.shape, dtype, spec.high)
    module.eval()
    src = ModelSource(ref, kind, module, None, spec, knobs, family=family)
    if spec is None:
        raise UsageError(f"{ref}: the model states no example input; pass --input-shape (and --dtype), or in pytest input_shape in [tool.archbench] or archbench_bench.model(..., input_shape=...)")
    return src


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
        specs = (ArraySpec.from_input_spec(src.input_spec),)
    return src, specs
