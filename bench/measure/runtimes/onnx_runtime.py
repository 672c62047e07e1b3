"""ONNX Runtime on the exported graph (measure.artifacts), or on its fp16 and int8 variants (measure.quantize).

- precisions: fp32; fp16 (``onnxruntime.transformers.float16``, fp32 inputs/outputs); int8-dynamic
  (``quantize_dynamic``); int8-static (QDQ, calibrated). bf16 is skipped: few ONNX Runtime CPU kernels take it.
- its measuring worker never imports torch, nor onnx or the quantizer: the variant file is made by ``build`` in the
  artifacts worker (``quant_pre_process`` alone imports torch through onnxruntime.tools), and the input specs and
  fp32 references come from the artefact folder.
- threads: ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``, sequential execution, all graph
  optimizations; the record's ``runtime_threads`` is what the session options say.
- ``load_ms``: creating the ``InferenceSession`` from the file (export and conversion are not included: a deployment
  ships the converted file).
- ``size_bytes``: the variant's files on disk (.onnx plus any external .data).
- generation (``--mode generate``): the decode-step graph (measure.decode.export_step: past keys and values
  in and out, batch, new tokens and cache length dynamic) runs the prefill from an empty cache and each decode
  step; the argmax is numpy's (``OrtDecoder``). Its fp16 and int8-dynamic variants are made from that graph.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from archbench.bench.measure.runtimes import MissingRuntime, RuntimeBase, UnsupportedCell


class OnnxRuntime(RuntimeBase):
    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8-dynamic", "int8-static")
    devices = ("cpu", "cuda")
    needs_torch = False
    artifact = "onnx"
    package = "onnxruntime"
    extra = ""
    generates = True

    def __init__(self, threads: int, device: str) -> None:
        super().__init__(threads, device)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingRuntime(f"onnxruntime is not installed ({e}); pip install onnxruntime") from None
        self.ort = ort

    @classmethod
    def check(cls, precision: str, device: str) -> None:
        if precision == "bf16":
            raise UnsupportedCell("onnxruntime here runs fp32, fp16, int8-dynamic, int8-static; not bf16 "
                                  "(few ONNX Runtime kernels take bf16)")
        super().check(precision, device)

    @classmethod
    def version(cls) -> str:
        import importlib.metadata

        for dist in ("onnxruntime", "onnxruntime-gpu"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return ""

    @classmethod
    def build(cls, model: Any, precision: str, workdir: Path, quant: Any = None) -> dict[str, Any]:
        """The file this runtime loads for ``precision``: the export itself for fp32, else a variant made from it
        in the artefact folder. Runs in the artifacts worker (measure.artifacts.build_variants)."""
        from archbench.bench.measure.files import onnx_files

        cls.check(precision, "cpu")
        fp32 = Path(model.onnx_path)
        out: dict[str, Any] = {"path": str(fp32), "notes": [], "quant_method": "",
                               "files": [str(f) for f in onnx_files(fp32)]}
        if precision == "fp16":
            from archbench.bench.measure.quantize import convert_onnx_fp16

            res = convert_onnx_fp16(fp32, workdir / f"{fp32.stem}.fp16.onnx")
            out["notes"].append(f"fp16: converted in {res.seconds:.2g} s")
        elif precision in ("int8-dynamic", "int8-static"):
            res = cls._quantize(model, fp32, precision, workdir, quant, out["notes"])
            out["notes"].append(f"{precision}: quantized in {res.seconds:.2g} s")
        else:
            return out
        _check_runs(model, fp32, res.path)
        out["path"], out["quant_method"] = str(res.path), res.method
        out["files"] = [str(f) for f in onnx_files(res.path)]
        return out

    @classmethod
    def _quantize(cls, model: Any, fp32: Path, precision: str, workdir: Path, cfg: Any, notes: list[str]) -> Any:
        """fp32 graph -> pre-processed graph -> int8 graph (files in the artefact folder)."""
        import onnxruntime as ort

        from archbench.bench.measure import quantize as q
        from archbench.bench.measure.hooks import HookContext

        cfg = cfg or q.QuantConfig()
        pre = q.preprocess(fp32, workdir / f"{fp32.stem}.pre.onnx", notes)
        out = workdir / f"{fp32.stem}.{precision}.onnx"
        if precision == "int8-dynamic":
            return q.quantize_onnx_dynamic(pre, out, cfg)
        names = [i.name for i in ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()]
        fixed = model.specs[0].shape[0] if model.kind == "onnx" else None
        bs = fixed or cfg.calib_batch_size
        ctx = HookContext(model.source, model.knobs, cls.name, precision, bs, "cpu", model.specs[0].with_batch(bs),
                          model.family, names)
        reader, desc = q.calibration_reader(model.specs, names, cfg, ctx, fixed)
        return q.quantize_onnx_static(pre, out, reader, desc, cfg)

    def prepare(self, model: Any, precision: str, workdir: Path, quant: Any = None) -> None:
        from archbench.bench.measure.variants import variant

        ort = self.ort
        self.check(precision, self.device)
        providers = ["CPUExecutionProvider"]
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UnsupportedCell("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        v = variant(type(self), model, precision, workdir, quant)
        self.notes += v.notes
        self.quant_method = v.quant_method
        self.size_bytes = v.size_bytes
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t = time.perf_counter()
        self.session = ort.InferenceSession(str(v.path), sess_options=so, providers=providers)
        self.load_ms = (time.perf_counter() - t) * 1e3
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.runtime_threads = so.intra_op_num_threads
        self.runtime_config = (f"{self.session.get_providers()[0]}; intra_op={so.intra_op_num_threads} inter_op=1; "
                               "sequential; ORT_ENABLE_ALL")

    def convert(self, inputs: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        return dict(zip(self.input_names, inputs, strict=True))

    def run(self, native_inputs: dict[str, np.ndarray]) -> Any:
        return self.session.run(None, native_inputs)

    def outputs(self, out: Any) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in out]

    def decoder(self, model: Any, prompt_len: int, new_tokens: int) -> OrtDecoder:
        return OrtDecoder(self.session, model.specs)


class OrtDecoder:
    """Greedy decoding on the decode-step graph: (tokens, past_k, past_v) -> (logits, k, v), the outputs k, v fed
    back as the next step's past. ``specs``: the graph's inputs at the prefill (tokens, two empty caches)."""

    kv_itemsize = 4  # the graph's cache inputs and outputs are fp32 (fp16 variants keep fp32 at their edges)

    def __init__(self, session: Any, specs: Any) -> None:
        self.session = session
        self.names = [i.name for i in session.get_inputs()]
        self.cache_specs = specs[1:]
        self.k = self.v = None

    def convert(self, prompt: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(prompt, dtype=np.int64)

    def _step(self, tokens: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        logits, self.k, self.v = self.session.run(None, dict(zip(self.names, (tokens, k, v), strict=True)))
        return logits[:, -1].argmax(-1)[:, None].astype(np.int64)

    def prefill(self, prompt: np.ndarray) -> np.ndarray:
        empty = [np.zeros(s.with_batch(prompt.shape[0]).shape, np.float32) for s in self.cache_specs]
        return self._step(prompt, *empty)

    def decode(self, token: np.ndarray) -> np.ndarray:
        return self._step(token, self.k, self.v)

    def tokens(self, token: np.ndarray) -> np.ndarray:
        return token

    def sync(self) -> None:
        pass


def _check_runs(model: Any, fp32: Path, variant: Path) -> None:
    """The variant loads, runs and gives the fp32 graph's output shapes (closeness is fidelity's job)."""
    import onnxruntime as ort

    from archbench.bench.measure.inputs import make_inputs

    batch = model.specs[0].shape[0] if model.kind == "onnx" else 3
    x = make_inputs(model.specs, batch, 1234)
    shapes = []
    for path in (fp32, variant):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), x, strict=True)})
        shapes.append([tuple(np.shape(g)) for g in got])
    if shapes[0] != shapes[1]:
        raise RuntimeError(f"{variant.name} outputs {shapes[1]}, the fp32 graph {shapes[0]}")
