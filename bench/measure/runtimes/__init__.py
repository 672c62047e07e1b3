"""Runtimes behind one small protocol, chosen by name from ``RUNTIMES``.

    rt = get_runtime("onnxruntime")()
    rt.prepare(source, precision="fp32", device="cpu", threads=2, workdir=Path("runs/x/artifacts"))
    native = rt.convert(inputs)      # outside the timed loop: torch tensors -> what rt.run takes
    out = rt.run(native)             # the timed call; returns torch tensors or numpy arrays
    rt.outputs(out)                  # -> list of numpy arrays, for fidelity checks

``prepare`` sets ``load_ms`` (build/load the model, or create the session), ``size_bytes`` (the artefact on
disk), ``notes`` and, for int8 variants, ``quant_method`` (how the variant was made; see archbench.bench.measure.quantize for the
precisions each runtime runs). Every runtime applies ``threads`` to its own intra-op pool and nothing else.
A precision/device a runtime cannot run raises ``UnsupportedCell``: the cell is recorded as skipped, with why.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from archbench.bench.measure.quantize import QuantConfig
from archbench.bench.measure.sources import ModelSource

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UnsupportedCell(Exception):
    """This runtime cannot run this precision/device here: the cell is *skipped*, not failed."""


class Runtime(Protocol):
    name: str
    load_ms: float
    size_bytes: int
    notes: list[str]
    quant_method: str

    def prepare(self, src: ModelSource, precision: str, device: str, threads: int, workdir: Path,
                quant: QuantConfig | None = None) -> None: ...

    def convert(self, inputs: tuple[torch.Tensor, ...]) -> Any: ...

    def run(self, native_inputs: Any) -> Any: ...

    def outputs(self, out: Any) -> list[np.ndarray]: ...


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    return []


def state_dict_file_bytes(module: torch.nn.Module, path: Path) -> int:
    """Serialize the state_dict with torch.save and return the file's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
    return path.stat().st_size


class TorchEager:
    """PyTorch eager mode under ``torch.inference_mode()`` on CPU or CUDA."""

    name = "torch"

    def __init__(self) -> None:
        self.load_ms = 0.0
        self.size_bytes = 0
        self.notes: list[str] = []
        self.quant_method = ""

    def _check(self, precision: str, device: str) -> torch.dtype:
        if precision == "int8-static":
            raise UnsupportedCell(f"{self.name} int8-static needs QuantStub edits or the PT2E/torchao flow; "
                                  "use --runtime onnxruntime for int8-static")
        if precision == "int8-dynamic":
            if device != "cpu":
                raise UnsupportedCell(f"{self.name} int8-dynamic (torch.ao dynamic quantization) runs on CPU only")
            why = _torch_dynamic_unavailable()
            if why:
                raise UnsupportedCell(why)
            return torch.float32
        if precision not in _TORCH_DTYPES:
            raise UnsupportedCell(f"{self.name} runs {', '.join([*_TORCH_DTYPES, 'int8-dynamic'])}; not {precision}")
        if device == "cuda" and not torch.cuda.is_available():
            raise UnsupportedCell("no CUDA device")
        return _TORCH_DTYPES[precision]

    def prepare(self, src: ModelSource, precision: str, device: str, threads: int, workdir: Path,
                quant: QuantConfig | None = None) -> None:
        dtype = self._check(precision, device)
        assert src.module is not None
        self.device = torch.device(device)
        self.dtype = dtype
        t = time.perf_counter()
        if precision == "int8-dynamic":
            from archbench.bench.measure.quantize import quantize_torch_dynamic

            try:
                model, self.quant_method, notes = quantize_torch_dynamic(src.module.float().eval())
            except LookupError as e:
                raise UnsupportedCell(f"{self.name} int8-dynamic: {e}") from None
            self.notes += notes
            self.model = model.eval()
        else:
            self.model = src.module.to(device=self.device, dtype=dtype).eval()
        self.load_ms += (time.perf_counter() - t) * 1e3
        self.size_bytes = state_dict_file_bytes(self.model, workdir / f"state_dict_{precision}.pt")

    def convert(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(
            x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device) for x in inputs
        )

    def run(self, native_inputs: tuple[torch.Tensor, ...]) -> Any:
        with torch.inference_mode():
            return self.model(*native_inputs)

    def outputs(self, out: Any) -> list[np.ndarray]:
        return [t.detach().float().cpu().numpy() for t in _flatten(out)]


class TorchCompile(TorchEager):
    """``torch.compile`` (inductor, default mode). Compilation happens on the first call of each batch size,
    so it shows up in ``first_inference_ms``, not in the timed loop."""

    name = "torch-compile"

    def prepare(self, src: ModelSource, precision: str, device: str, threads: int, workdir: Path,
                quant: QuantConfig | None = None) -> None:
        super().prepare(src, precision, device, threads, workdir, quant)
        self.model = torch.compile(self.model, dynamic=False)


class OnnxRuntime:
    """ONNX Runtime on the model exported by ``torch.onnx.export``, or on its fp16 and int8 variants (archbench.bench.measure.quantize).

    Export tries the dynamo exporter (dynamic batch dim) and falls back to the legacy TorchScript exporter when it
    fails. The exported fp32 graph is checked against PyTorch on a random input before anything is timed; a
    disagreement beyond ``1e-3 * max(1, max|y|)`` fails the cell (int8 graphs are judged by the fidelity metrics
    instead). Torch runs with one thread while exporting, so its pool is never live next to ONNX Runtime's in the
    measuring process. ``size_bytes`` is the variant's files on disk (.onnx plus any external .data).
    """

    name = "onnxruntime"
    PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")

    def __init__(self) -> None:
        self.load_ms = 0.0
        self.size_bytes = 0
        self.notes: list[str] = []
        self.quant_method = ""

    def prepare(self, src: ModelSource, precision: str, device: str, threads: int, workdir: Path,
                quant: QuantConfig | None = None) -> None:
        import onnxruntime as ort

        if precision not in self.PRECISIONS:
            why = "few ONNX Runtime kernels take bf16" if precision == "bf16" else "unknown precision"
            raise UnsupportedCell(f"onnxruntime here runs {', '.join(self.PRECISIONS)}; not {precision} ({why})")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UnsupportedCell("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.device = device
        if src.onnx_path is not None:
            path = src.onnx_path
        else:
            torch.set_num_threads(1)
            path = export_onnx(src, workdir, self.notes)
            try:
                verify_onnx(src, path)
            except RuntimeError as e:
                if not self.notes[-1].startswith("onnx export reused"):
                    raise
                # The cached export (archbench.bench.measure.engine exports first, in a worker of its own) holds other weights than
                # this worker's model: a factory that seeding torch does not make reproducible. Export it here.
                self.notes.append(f"cached export disagreed ({e}); re-exported in this worker")
                path = export_onnx(src, workdir, self.notes, reuse=False)
                verify_onnx(src, path)
        if precision in ("int8-dynamic", "int8-static"):
            path = self._quantize(src, path, precision, device, workdir, quant or QuantConfig())
        elif precision == "fp16":
            path = self._fp16(src, path, workdir)
        from archbench.bench.measure.onnx_profile import onnx_files

        self.size_bytes = sum(p.stat().st_size for p in onnx_files(path) if p.exists())
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t = time.perf_counter()
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        self.load_ms = (time.perf_counter() - t) * 1e3
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _fp16(self, src: ModelSource, fp32: Path, workdir: Path) -> Path:
        """fp32 graph -> fp16 graph next to it (archbench.bench.measure.quantize.convert_onnx_fp16); returns its path."""
        from archbench.bench.measure.quantize import convert_onnx_fp16

        workdir.mkdir(parents=True, exist_ok=True)
        res = convert_onnx_fp16(fp32, workdir / f"{fp32.stem}.fp16.onnx")
        self.quant_method = res.method
        self.notes.append(f"fp16: converted in {res.seconds:.2g} s")
        verify_runs(src, res.path)
        return res.path

    def _quantize(self, src: ModelSource, fp32: Path, precision: str, device: str, workdir: Path,
                  cfg: QuantConfig) -> Path:
        """fp32 graph -> pre-processed graph -> int8 graph (files next to the export); returns the int8 path."""
        from archbench.bench.measure import quantize as q

        workdir.mkdir(parents=True, exist_ok=True)
        pre = q.preprocess(fp32, workdir / f"{fp32.stem}.pre.onnx", self.notes)
        out = workdir / f"{fp32.stem}.{precision}.onnx"
        if precision == "int8-dynamic":
            res = q.quantize_onnx_dynamic(pre, out, cfg)
        else:
            import onnx

            from archbench.bench.measure.hooks import HookContext

            g = onnx.load(str(pre), load_external_data=False).graph
            inits = {t.name for t in g.initializer}
            names = [i.name for i in g.input if i.name not in inits]
            assert src.input_spec is not None
            ctx = HookContext(src.name, dict(src.knobs), self.name, precision, cfg.calib_batch_size, device,
                              src.input_spec.with_batch(cfg.calib_batch_size), src.family, names)
            reader, desc = q.calibration_reader(src, names, cfg, ctx)
            res = q.quantize_onnx_static(pre, out, reader, desc, cfg)
        self.quant_method = res.method
        self.notes.append(f"{precision}: quantized in {res.seconds:.2g} s")
        verify_runs(src, res.path)
        return res.path

    def convert(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
        return {n: x.cpu().numpy() for n, x in zip(self.input_names, inputs, strict=True)}

    def run(self, native_inputs: dict[str, np.ndarray]) -> Any:
        return self.session.run(None, native_inputs)

    def outputs(self, out: Any) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in out]


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings; keep them out of the user's terminal (the worker log has it)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_onnx(src: ModelSource, workdir: Path, notes: list[str], reuse: bool = True) -> Path:
    """Export ``src`` to ``workdir/model.onnx`` with a dynamic batch dimension; with ``reuse``, a finished export
    already there (``exporter.txt`` beside it says which exporter wrote it) is returned as it is."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    marker = workdir / "exporter.txt"
    if not reuse:
        marker.unlink(missing_ok=True)
    if path.exists() and marker.exists():
        notes.append(f"onnx export reused ({marker.read_text().strip()})")
        return path
    assert src.module is not None
    model = src.module.float().eval().cpu()
    example = src.example_inputs(batch=2)  # batch 2, so the exporter cannot specialize the batch dim to 1
    errors = []
    try:
        with _quiet():
            batch = torch.export.Dim("batch")
            torch.onnx.export(model, example, str(path), dynamo=True, input_names=["input"],
                              dynamic_shapes=({0: batch},), external_data=True)
        marker.write_text("dynamo")
        notes.append("exported with the dynamo exporter")
        return path
    except Exception as e:
        errors.append(f"dynamo: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    try:
        with _quiet():
            torch.onnx.export(model, example, str(path), dynamo=False, input_names=["input"],
                              dynamic_axes={"input": {0: "batch"}}, opset_version=17)
        marker.write_text(f"legacy; dynamo failed: {errors[0][:200]}")
        notes.append("exported with the legacy exporter: " + errors[0][:200])
        return path
    except Exception as e:
        errors.append(f"legacy: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise RuntimeError("onnx export failed; " + "; ".join(errors))


def verify_onnx(src: ModelSource, path: Path, batch: int = 3) -> float:
    """Run the exported graph and the PyTorch model on one random input; raise when they disagree."""
    import onnxruntime as ort

    assert src.module is not None
    x = src.example_inputs(batch=batch, seed=1234)
    with torch.inference_mode():
        ref = [t.float().numpy() for t in _flatten(src.module(*x))]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), x, strict=True)})
    if len(got) != len(ref):
        raise RuntimeError(f"exported graph has {len(got)} outputs, PyTorch model {len(ref)}")
    err = 0.0
    for r, g in zip(ref, got, strict=True):
        if r.shape != g.shape:
            raise RuntimeError(f"exported output shape {g.shape} != PyTorch {r.shape}")
        e = float(np.max(np.abs(r - g))) if r.size else 0.0
        tol = 1e-3 * max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
        if not e <= tol:
            raise RuntimeError(f"exported outputs disagree with PyTorch: max abs err {e:.3g} > tol {tol:.3g}")
        err = max(err, e)
    return err


def verify_runs(src: ModelSource, path: Path, batch: int = 3) -> None:
    """A quantized graph loads, runs and gives outputs of PyTorch's shapes (how close they are is fidelity's job)."""
    import onnxruntime as ort

    x = src.example_inputs(batch=batch if src.onnx_path is None else None, seed=1234)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), x, strict=True)})
    if src.module is None:
        return
    with torch.inference_mode():
        ref = [t.float().numpy() for t in _flatten(src.module(*x))]
    shapes = [tuple(g.shape) for g in got]
    if shapes != [tuple(r.shape) for r in ref]:
        raise RuntimeError(f"quantized graph outputs {shapes}, PyTorch {[tuple(r.shape) for r in ref]}")


def _torch_dynamic_unavailable() -> str | None:
    from archbench.bench.measure.quantize import torch_dynamic_available

    return torch_dynamic_available()


RUNTIMES: dict[str, type] = {"torch": TorchEager, "torch-compile": TorchCompile, "onnxruntime": OnnxRuntime}


def get_runtime(name: str) -> type:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}") from None
