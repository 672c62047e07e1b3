"""User hooks named on the command line as ``pkg.module:function`` (imported in the worker process).

Metric hook (``archbench run ... --metric-hook mypkg.evaluate:accuracy``) — a real task metric, higher is better::

    def accuracy(predict, ctx) -> float:
        # predict(inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]
        #     runs the *prepared* variant (this runtime and precision: the int8 ONNX session, the fp16 module...)
        #     on CPU torch tensors shaped like ctx.input_spec (any batch) and returns its outputs as float32 numpy.
        # ctx: HookContext (model, knobs, runtime, precision, batch, device, input_spec, family)
        x, y = load_my_validation_set(ctx.input_spec)
        logits = predict((x,))[0]
        return 100.0 * float((logits.argmax(-1) == y).mean())      # accuracy in percent: drops are "points"

It is called once per measured cell, after timing, and its value is recorded as ``task_metric``; the budget metric
``task_metric_drop`` is the fp32 cell's value minus the variant's. A hook that raises leaves ``task_metric`` empty
and its error in the record's ``warning``.

Calibration hook (``--calibration mypkg.data:calib``) for ``int8-static`` — representative inputs::

    def calib(ctx) -> Iterable[dict[str, np.ndarray]] | onnxruntime.quantization.CalibrationDataReader:
        # ctx.input_names: the ONNX graph's input names; yield {name: array} batches of real data
        for x in my_loader(ctx.input_spec):
            yield {ctx.input_names[0]: x.numpy()}

Without it, calibration batches are drawn from the model's own input generator (``InputSpec.make``) with seeds
that neither the timing loop nor the fidelity check uses. Random inputs calibrate ranges for random inputs: for a
deployment decision, give real data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archbench.bench.errors import UsageError


@dataclass(frozen=True)
class HookContext:
    model: str
    knobs: dict[str, Any]
    runtime: str
    precision: str
    batch: int
    device: str
    input_spec: Any  # models.InputSpec of the cell (batch = ctx.batch)
    family: str = ""
    input_names: list[str] = field(default_factory=list)


def load_hook(ref: str, what: str) -> Callable[..., Any]:
    """Import ``pkg.module:function``; UsageError (one line) when it does not resolve to a callable."""
    from archbench.bench.measure.sources import _import_callable

    if ":" not in ref:
        raise UsageError(f"bad {what} {ref!r}: expected pkg.module:function")
    return _import_callable(ref)
