"""PyTorch -> ONNX export, checked against PyTorch before anything is timed. Runs in the artifacts worker only.

Export tries the dynamo exporter (dynamic batch dim) and falls back to the legacy TorchScript exporter when it
fails. The exported graph is checked against the PyTorch module on a random input (seed 1234, batch 3): a
disagreement beyond ``1e-3 * max(1, max|y|)`` fails every cell that needs the graph.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archbench.bench.measure.inputs import ArraySpec, make_inputs
from archbench.bench.measure.runtimes import flatten_outputs


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and warnings; keep them out of the user's terminal (the worker log has it)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def torch_inputs(specs: tuple[ArraySpec, ...], batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(x) for x in make_inputs(specs, batch, seed))


def run_module(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """fp32 outputs of ``module`` as float32 numpy arrays, flattened in order."""
    with torch.inference_mode():
        out = module(*inputs)
    return [t.float().cpu().numpy() for t in flatten_outputs(out) if isinstance(t, torch.Tensor)]


def input_names(module: torch.nn.Module, n: int) -> list[str]:
    """The graph's input names: the module's own (``input_names``: a transformers model's input_ids,
    attention_mask, ...) when it states one per input, else ``input`` or ``input0..``. Runtimes feed inputs by
    position, so the names are for people reading the graph."""
    own = [str(x) for x in getattr(module, "input_names", None) or ()]
    if len(own) == n and len(set(own)) == n:
        return own
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]


def export_onnx(module: torch.nn.Module, specs: tuple[ArraySpec, ...], path: Path) -> str:
    """Export ``module`` to ``path`` (+ ``path.data``) with a dynamic batch dim; returns how it was exported."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = module.float().eval().cpu()
    example = torch_inputs(specs, 2, 0)  # batch 2, so the exporter cannot specialize the batch dim to 1
    names = input_names(module, len(specs))
    errors = []
    try:
        with _quiet():
            batch = torch.export.Dim("batch")
            torch.onnx.export(model, example, str(path), dynamo=True, input_names=names,
                              dynamic_shapes=tuple({0: batch} for _ in specs), external_data=True)
        return "dynamo"
    except Exception as e:
        errors.append(f"dynamo: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    try:
        with _quiet():
            torch.onnx.export(model, example, str(path), dynamo=False, input_names=names,
                              dynamic_axes={n: {0: "batch"} for n in names}, opset_version=17)
        return f"legacy; dynamo failed: {errors[0][:200]}"
    except Exception as e:
        errors.append(f"legacy: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise RuntimeError("onnx export failed; " + "; ".join(errors))


def verify_onnx(module: torch.nn.Module, specs: tuple[ArraySpec, ...], path: Path, batch: int = 3) -> float:
    """Run the exported graph and the PyTorch module on one random input; raise when they disagree."""
    import onnxruntime as ort

    x = make_inputs(specs, batch, 1234)
    ref = run_module(module, tuple(torch.from_numpy(a) for a in x))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), x, strict=True)})
    return check_close(ref, got)


def check_close(ref: list[np.ndarray], got: list[Any], rel: float = 1e-3) -> float:
    """Max abs error of ``got`` against ``ref``; RuntimeError on a count/shape mismatch, NaN, or beyond tolerance."""
    if len(got) != len(ref):
        raise RuntimeError(f"exported graph has {len(got)} outputs, PyTorch model {len(ref)}")
    err = 0.0
    for r, g in zip(ref, got, strict=True):
        g = np.asarray(g, dtype=np.float32)
        if r.shape != g.shape:
            raise RuntimeError(f"exported output shape {g.shape} != PyTorch {r.shape}")
        if r.size and not np.all(np.isfinite(r)):
            raise RuntimeError("the PyTorch model's own outputs are not finite (NaN/inf) on a random input")
        e = float(np.max(np.abs(r - g))) if r.size else 0.0
        tol = rel * max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
        if not e <= tol:
            raise RuntimeError(f"exported outputs disagree with PyTorch: max abs err {e:.3g} > tol {tol:.3g}")
        err = max(err, e)
    return err
