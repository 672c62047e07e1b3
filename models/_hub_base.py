"""What every hub source shares (archbench.models.hub): references, errors, the lazy import of a source's package
with the one-line error naming its extra, and the torchvision import fix-up. Imports only torch."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from archbench.models._registry import InputSpec

# prefix -> source; "tv" is short for torchvision
PREFIXES: dict[str, str] = {"timm": "timm", "torchvision": "torchvision", "tv": "torchvision", "hf": "hf"}
# source -> (the package it imports, the archbench extra that installs it)
PACKAGES: dict[str, tuple[str, str]] = {
    "timm": ("timm", "timm"), "torchvision": ("torchvision", "torchvision"), "hf": ("transformers", "hf"),
}


class HubError(ValueError):
    """A hub reference that cannot be built as given (unknown name, bad knob, no config offline)."""


class MissingExtra(HubError):
    """The source's package is not installed; the message names the extra that installs it."""


@dataclass
class HubModel:
    """A built hub model: the module (eval mode, fp32, random weights) and its example inputs, batch 1."""

    module: nn.Module
    input_specs: tuple[InputSpec, ...]
    family: str  # "timm" | "torchvision" | "hf"
    input_names: tuple[str, ...] = ()


def split_ref(ref: str) -> tuple[str, str] | None:
    """``"tv:resnet18"`` -> ``("torchvision", "resnet18")``; None when ``ref`` names no hub source."""
    prefix, sep, name = ref.partition(":")
    if not sep or prefix.lower() not in PREFIXES:
        return None
    return PREFIXES[prefix.lower()], name


def is_hub_ref(ref: str) -> bool:
    return split_ref(ref) is not None


def require(source: str) -> Any:
    """Import the source's package, or raise MissingExtra with the pip command that installs it."""
    package, extra = PACKAGES[source]
    _torchvision_importable()  # timm imports torchvision, and transformers may: make that import work first
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise MissingExtra(f"{source}: models need the {package} package: pip install 'archbench[{extra}]' "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


_SHIM_LIB: Any = None  # the torch.library fragment below, kept alive for the process


def _torchvision_importable() -> None:
    """Make an installed torchvision importable with a torch it was not built against.

    PyPI's Linux torchvision wheels are CUDA builds; beside the CPU torch that archbench pins, their C++ ops
    (``torchvision/_C.so``: nms, roi_align, ...) fail to load. torchvision then still imports, except that
    ``_meta_registrations`` registers fake kernels for ``torchvision::nms``/``qnms`` unconditionally and raises
    "operator torchvision::nms does not exist", which breaks ``import torchvision`` and so ``import timm`` and
    parts of transformers (``LlamaConfig`` among them: its lazy imports reach torchvision). We then declare the
    schemas of those two ops, with no kernel, and import again: classification, segmentation and video models
    never call them; a detection model that did would raise "could not run torchvision::nms" instead of returning
    wrong numbers. Nothing is patched; with a matching torchvision build the first import succeeds and this does
    nothing."""
    global _SHIM_LIB
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    try:
        importlib.import_module("torchvision")
        return
    except RuntimeError as e:
        if "torchvision::" not in str(e) or _SHIM_LIB is not None:
            raise MissingExtra(f"torchvision does not import with torch {torch.__version__}: {e}; install the "
                               "torchvision build that matches this torch") from None
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]  # the half-imported package, so the second import runs from the start
    _SHIM_LIB = torch.library.Library("torchvision", "FRAGMENT")  # schemas only, no kernels
    for op in ("nms", "qnms"):
        _SHIM_LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    try:
        importlib.import_module("torchvision")
    except RuntimeError as e:
        raise MissingExtra(f"torchvision does not import with torch {torch.__version__}: {e}; install the "
                           "torchvision build that matches this torch") from None


def hint(name: str, names: list[str]) -> str:
    """``"; did you mean a, b?"`` for the close matches of a mistyped name, else ``""``."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def describe_inputs(specs: tuple[InputSpec, ...], names: tuple[str, ...] = ()) -> str:
    """``"input_ids 1x128 int64 [0,30522), attention_mask 1x128 int64 [1,2)"``, or one spec's description."""
    if len(specs) == 1 and not names:
        return specs[0].describe()
    names = names or tuple(f"input{i}" for i in range(len(specs)))
    return ", ".join(f"{n} {s.describe()}" for n, s in zip(names, specs, strict=True))
