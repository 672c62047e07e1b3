"""User hooks named on the command line as ``pkg.module:function`` (imported in the worker process).

Metric hook (``archbench run ... --metric-hook mypkg.evaluate:accuracy``) — a real task metric, higher is better::

    def accuracy(predict, ctx) -> float:
        # predict(inputs: tuple[array-like, ...]) -> list[np.ndarray]
        #     runs the *prepared* variant (this runtime and precision: the int8 ONNX session, the fp16 module...)
        #     on numpy arrays (or CPU torch tensors) shaped like ctx.input_spec (any batch) and returns its outputs
        #     as float32 numpy.
        # ctx: HookContext (model, knobs, runtime, precision, batch, device, input_spec, family, input_names);
        #     input_spec is an archbench.bench.measure.inputs.ArraySpec: shape, numpy dtype, high; .make(batch, seed)
        x, y = load_my_validation_set(ctx.input_spec)
        logits = predict((x,))[0]
        return 100.0 * float((logits.argmax(-1) == y).mean())      # accuracy in percent: drops are "points"

The hook runs in the measuring process: a hook that imports torch into an ONNX Runtime or OpenVINO worker adds
torch to that cell's memory (the record's warning says so).

It is called once per measured cell, after timing, and its value is recorded as ``task_metric``; the budget metric
``task_metric_drop`` is the fp32 cell's value minus the variant's. A hook that raises leaves ``task_metric`` empty
and its error in the record's ``warning``.

Calibration hook (``--calibration mypkg.data:calib``) for ``int8-static`` — representative inputs::

    def calib(ctx) -> Iterable[dict[str, np.ndarray]] | onnxruntime.quantization.CalibrationDataReader:
        # ctx.input_names: the ONNX graph's input names; yield {name: array} batches of real data
        for x in my_loader(ctx.input_spec):
            yield {ctx.input_names[0]: x.numpy()}

It runs where the variant is made (the artifacts worker, before any measuring worker). Without it, calibration
batches are drawn from the model's input specs (``ArraySpec.make``, measure.inputs) with seeds
that neither the timing loop nor the fidelity check uses. Random inputs calibrate ranges for random inputs: for a
deployment decision, give real data.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archbench.bench.errors import USER_CODE_ERRORS, UsageError


@dataclass(frozen=True)
class HookContext:
    model: str
    knobs: dict[str, Any]
    runtime: str
    precision: str
    batch: int
    device: str
    input_spec: Any  # measure.inputs.ArraySpec of the cell's (first) input, batch = ctx.batch
    family: str = ""
    input_names: list[str] = field(default_factory=list)


def load_hook(ref: str, what: str) -> Callable[..., Any]:
    """Import ``pkg.module:function``; UsageError (one line) when it does not resolve to a callable."""
    if ":" not in ref:
        raise UsageError(f"bad {what} {ref!r}: expected pkg.module:function")
    return import_callable(ref)


def demote_cwd() -> None:
    """Move the current directory ('' with ``-c``, the full path with ``python -m``) from the front of sys.path to
    the end: a user's (or this repository's) ``kernels/``, ``models/`` or ``numpy.py`` in the folder archbench runs
    from must not shadow a package that archbench or a dependency imports (transformers imports the ``kernels``
    distribution), while the user's own ``pkg.module:factory`` modules are still found there, last."""
    here = {"", ".", os.getcwd()}
    if any(p in here for p in sys.path):
        sys.path[:] = [p for p in sys.path if p not in here] + [os.getcwd()]


def add_user_path(path: str) -> None:
    """Make modules in ``path`` importable, searched after everything already on sys.path."""
    if path and path not in sys.path and not (path == os.getcwd() and "" in sys.path):
        sys.path.append(path)


def import_callable(ref: str) -> Any:
    """``pkg.module:attr`` -> the callable; UsageError (one line) when it does not import or is not callable.

    The current directory is searched *after* archbench and the installed packages (appended to sys.path, never
    put first), so a user's ``numpy.py`` or ``models/`` cannot shadow a library archbench imports later."""
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise UsageError(f"bad model reference {ref!r}: expected pkg.module:factory")
    add_user_path(os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except USER_CODE_ERRORS as e:  # the user's module failing to import is bad input, not our crash
        raise UsageError(f"cannot import {mod_name!r} for {ref!r}: {type(e).__name__}: {e}") from e
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{mod_name!r} has no attribute {attr!r} (from {ref!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{ref!r} is not callable")
    return obj

