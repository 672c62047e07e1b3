"""A small timm-style model registry.

    @register_model
    def resnet_s(width: float = 1.0, ...) -> ResNet: ...

    create_model("resnet_s", width=0.5)      # -> nn.Module with .input_spec
    list_models("vit*")                      # fnmatch, natural sort

The family of a model is the name of the module that registers it (``models.resnet`` -> ``resnet``).
The knobs of a model are the keyword parameters of its builder, with their defaults.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """The example input a model states from its knobs.

    shape: full shape, batch dimension first (shape[0] is the default batch, 1).
    dtype: torch dtype of the tensor.
    high:  for integer inputs (token ids), values are drawn from [low, high); None for float inputs.
    low:   for integer inputs, the smallest value (0; an all-ones attention mask is low=1, high=2).
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int | None = None
    low: int = 0

    def with_batch(self, batch: int) -> InputSpec:
        return InputSpec((batch, *self.shape[1:]), self.dtype, self.high, self.low)

    def make(
        self,
        batch: int | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """A random tensor of this spec (never all zeros: normal floats, uniform ints in [low, high))."""
        shape = self.shape if batch is None else (batch, *self.shape[1:])
        if self.dtype.is_floating_point:
            x = torch.randn(shape, generator=generator, dtype=torch.float32)
            return x.to(device=device, dtype=self.dtype)
        high = self.high if self.high is not None else 2
        return torch.randint(self.low, high, shape, generator=generator, dtype=self.dtype).to(device)

    def describe(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        dt = str(self.dtype).removeprefix("torch.")
        return f"{dims} {dt}" + (f" [{self.low},{self.high})" if self.high is not None else "")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    fn: Callable[..., nn.Module]
    knobs: dict[str, Any] = field(default_factory=dict)  # knob name -> default value
    doc: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; its keyword parameters are the model's knobs."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    family = fn.__module__.rsplit(".", 1)[-1]
    knobs = {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    doc = (inspect.getdoc(fn) or "").split("\n", 1)[0]
    _REGISTRY[name] = ModelEntry(name, family, fn, knobs, doc)
    return fn


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _ensure_loaded() -> None:
    # Importing the package registers every zoo family (models/__init__.py imports them).
    import archbench.models  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern``, in natural order (vgg_s before vgg_10)."""
    _ensure_loaded()
    return sorted((n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)), key=_natural_key)


def close_matches(name: str, n: int = 3) -> list[str]:
    _ensure_loaded()
    return difflib.get_close_matches(name, list(_REGISTRY), n=n, cutoff=0.5)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises ValueError naming close matches."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = close_matches(name)
        msg = f"unknown model {name!r}"
        msg += f"; did you mean {', '.join(hint)}?" if hint else "; see `archbench list`"
        raise ValueError(msg) from None


def _kind(default: Any, annotation: Any) -> str:
    """bool | int | float | str | any: a knob's type, from its default, else from its annotation (``int | None``)."""
    for t in (bool, int, float, str):
        if type(default) is t:
            return t.__name__
    text = str(annotation)
    for name in ("bool", "int", "float", "str"):
        if re.search(rf"\b{name}\b", text):
            return name
    return "any"


def _check_value(name: str, knob: str, value: Any, kind: str, nullable: bool) -> Any:
    """One knob against its type. Every numeric zoo knob is a size (width multiplier, depth, resolution, sequence
    length, classes...): it must be > 0. Returns the value (8.0 for an int knob -> 8)."""
    where = f"model {name!r}: knob {knob}={value!r}"
    if value is None and nullable:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false")
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value, ok = int(value), True
        if not ok or value < 1:
            raise ValueError(f"{where}: expected a whole number >= 1")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{where}: expected a number > 0")
        value = float(value)
    elif kind == "str" and not isinstance(value, str):
        raise ValueError(f"{where}: expected a string")
    return value


def check_knobs(name: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """Validate knobs for a registered model without building it: unknown names (listing the model's knobs) and
    values of the wrong type or range raise ValueError with one line naming the knob and what is allowed.
    Returns the knobs with integral floats of int knobs made ints."""
    entry = get_entry(name)
    unknown = sorted(set(knobs) - set(entry.knobs))
    if unknown:
        raise ValueError(
            f"model {name!r} has no knob {', '.join(unknown)}; its knobs are: {', '.join(entry.knobs)}"
        )
    params = inspect.signature(entry.fn).parameters
    out = {}
    for k, v in knobs.items():
        default, annotation = entry.knobs[k], params[k].annotation
        nullable = default is None or "None" in str(annotation)
        out[k] = _check_value(name, k, v, _kind(default, annotation), nullable)
    return out


def create_model(name: str, **knobs: Any) -> nn.Module:
    """Build a registered model. Unknown knobs, knob values of the wrong type or range (``check_knobs``) and
    combinations the family cannot build (a patch size that does not divide the resolution...) raise ValueError."""
    entry = get_entry(name)
    knobs = check_knobs(name, knobs)
    try:
        return entry.fn(**knobs)
    except (ValueError, TypeError, AssertionError, RuntimeError, ZeroDivisionError) as e:
        text = ", ".join(f"{k}={v!r}" for k, v in knobs.items())
        msg = str(e).strip().splitlines()
        raise ValueError(f"model {name!r} cannot be built with {text or 'its defaults'}: "
                         f"{msg[0] if msg else type(e).__name__}") from e
