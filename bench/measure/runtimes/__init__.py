"""Runtimes: one file each, behind one protocol, chosen by name from ``RUNTIMES``.

    cls = get_runtime("onnxruntime")          # imports only that runtime's file (and so its package)
    rt = cls(threads=2, device="cpu")         # imports the runtime's package and sets its thread pools
    rt.prepare(model, "fp32", workdir, quant) # model: measure.model.TorchModel or measure.model.Exported
    native = rt.convert(model.inputs(8, 0))   # outside the timed loop: numpy arrays -> what rt.run takes
    out = rt.run(native)                      # the timed call
    rt.outputs(out)                           # -> list of float32 numpy arrays, for fidelity

What a runtime class declares (class attributes), and so owns — nothing outside its file special-cases it:

- ``name``: the ``--runtime`` value; ``precisions``: what it can run (anything else is a *skipped* record with
  ``UnsupportedCell``'s reason); ``devices``; ``trains``: whether ``--mode train`` applies (``compiles``: its
  training steps go through ``torch.compile``);
- ``needs_torch``: True when its measuring process builds the PyTorch module. False means a deployment of it does
  not contain torch, and neither does its worker: it reads what the artifacts step left (``artifact``);
- ``artifact``: what the artifacts step (measure.artifacts, a worker of its own, once per model) must build for it:
  ``"none"`` or ``"onnx"`` (the exported graph, the input specs and the fp32 reference outputs);
- ``package``: the distribution whose version goes into every record it measures (``runtime_version``);
- ``extra``: the pip extra that installs it, for the one-line error when it is missing;
- ``generates``: whether ``--mode generate`` applies: after ``prepare``, ``decoder(model, prompt_len, new_tokens)``
  returns the object the generation loop drives (archbench.bench.measure.harness.Decoder: ``convert`` a numpy
  prompt, ``prefill`` it to the first token, ``decode`` one token to the next, ``tokens`` back to numpy, ``sync``,
  ``kv_itemsize``); a runtime that does not generate makes those cells *skipped*.

- ``shares_process``: whether a timing-only repetition may run in a long-lived worker after other models
  (measure.dispatch.Pool); False where one model's state would carry over (torch.compile's caches).

``bind_thread()`` is called first in any other thread that will call ``run`` (serving executors).

After ``prepare`` an instance holds ``load_ms`` (how it is counted is each runtime's docstring), ``size_bytes``
(the artefact it loads, on disk), ``notes``, ``quant_method`` (how a reduced-precision variant was made),
``runtime_threads`` and ``runtime_config`` (what it says it runs with).

Adding a runtime is one file defining such a class plus one line in ``RUNTIMES``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

# name -> "module:Class", imported on first use so that choosing a runtime imports only its package.
RUNTIMES: dict[str, str] = {
    "torch": "archbench.bench.measure.runtimes.torch_eager:TorchEager",
    "torch-compile": "archbench.bench.measure.runtimes.torch_compile:TorchCompile",
    "onnxruntime": "archbench.bench.measure.runtimes.onnx_runtime:OnnxRuntime",
    "openvino": "archbench.bench.measure.runtimes.openvino_runtime:OpenVino",
}


class UnsupportedCell(Exception):
    """This runtime cannot run this precision/device/source here: the cell is *skipped*, not failed."""


class MissingRuntime(UnsupportedCell):
    """The runtime's package is not installed (the message names the extra that installs it)."""


class Runtime(Protocol):
    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    devices: ClassVar[tuple[str, ...]]
    trains: ClassVar[bool]
    needs_torch: ClassVar[bool]
    artifact: ClassVar[str]
    package: ClassVar[str]
    extra: ClassVar[str]

    load_ms: float
    size_bytes: int
    notes: list[str]
    quant_method: str
    runtime_threads: int | None
    runtime_config: str

    def __init__(self, threads: int, device: str) -> None: ...

    def prepare(self, model: Any, precision: str, workdir: Path, quant: Any) -> None: ...

    def convert(self, inputs: tuple[np.ndarray, ...]) -> Any: ...

    def run(self, native_inputs: Any) -> Any: ...

    def outputs(self, out: Any) -> list[np.ndarray]: ...


class RuntimeBase:
    """Defaults and bookkeeping shared by the runtime files (a convenience, not part of the protocol)."""

    name: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    trains: ClassVar[bool] = False
    compiles: ClassVar[bool] = False  # torch.compile the module (training steps too)
    needs_torch: ClassVar[bool] = False
    artifact: ClassVar[str] = "none"
    package: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    generates: ClassVar[bool] = False  # --mode generate: ``decoder`` after ``prepare``
    shares_process: ClassVar[bool] = True  # timing repetitions of several models may share one worker process

    def __init__(self, threads: int, device: str) -> None:
        self.threads = threads
        self.device = device
        self.load_ms = 0.0
        self.size_bytes = 0
        self.notes: list[str] = []
        self.quant_method = ""
        self.runtime_threads: int | None = None
        self.runtime_config = ""

    @classmethod
    def check(cls, precision: str, device: str) -> None:
        """UnsupportedCell unless this runtime runs ``precision`` on ``device``."""
        if device not in cls.devices:
            raise UnsupportedCell(f"{cls.name} runs on {', '.join(cls.devices)} here; not {device}")
        if precision not in cls.precisions:
            raise UnsupportedCell(f"{cls.name} runs {', '.join(cls.precisions)}; not {precision}")

    def bind_thread(self) -> None:
        """Called first in every thread that will call ``run`` besides the one that built this instance (the
        serving executors, archbench.bench.modes.serve): a runtime whose thread settings are per thread applies
        them there. Default: nothing (settings live in the session)."""

    def decoder(self, model: Any, prompt_len: int, new_tokens: int) -> Any:
        """The greedy decoder of ``--mode generate`` on the prepared model (see the module docstring)."""
        raise UnsupportedCell(f"{self.name} cannot generate here (no decode-step path); "
                              "--mode generate runs on torch, torch-compile and onnxruntime")

    @classmethod
    def version(cls) -> str:
        try:
            return importlib.metadata.version(cls.package)
        except importlib.metadata.PackageNotFoundError:
            return ""


def get_runtime(name: str) -> type[Any]:
    """The runtime class registered as ``name``; ValueError for an unknown name."""
    try:
        ref = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}") from None
    mod, _, cls = ref.partition(":")
    return getattr(importlib.import_module(mod), cls)


def runtime_names() -> list[str]:
    return list(RUNTIMES)


def flatten_outputs(out: Any) -> list[Any]:
    """The tensors/arrays of a model's output, in order: a tensor, a tuple/list, a dict or a ModelOutput."""
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    if out is None or isinstance(out, (int, float, str, bool)):
        return []
    return [out]
