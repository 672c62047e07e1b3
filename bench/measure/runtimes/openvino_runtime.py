"""OpenVINO (CPU plugin) on the exported graph, converted to OpenVINO IR. ``pip install 'archbench[openvino]'``.

- precisions (``INFERENCE_PRECISION_HINT``, read back from the compiled model into ``runtime_config``):
  - fp32: f32 IR, hint f32. Without a hint OpenVINO runs bf16 on CPUs with AMX/AVX512-BF16, so it is always set.
  - fp16: IR with fp16 weights (``compress_to_fp16``), hint f16. Native on CPUs with AVX512-FP16; where the CPU
    plugin cannot run f16 it falls back, and the record says what it ran.
  - bf16: f32 IR, hint bf16 (AMX / AVX512-BF16); skipped where the plugin does not take bf16 here.
  - int8-static: NNCF post-training quantization (``nncf.quantize``, calibrated on generated or ``--calibration``
    inputs; transformer preset when the graph has Softmax); skipped with the reason when nncf is not installed.
  - int8-dynamic: skipped (OpenVINO has no general activation-at-run-time int8 path; use int8-static).
- its measuring worker imports openvino and numpy, never torch: IR conversion and quantization happen in the
  artifacts worker (``build``), and the worker loads the IR.
- latency-oriented config: ``PERFORMANCE_HINT=LATENCY``, ``NUM_STREAMS=1``, ``INFERENCE_NUM_THREADS=threads``;
  one synchronous infer request with shared inputs. ``runtime_threads`` is what the compiled model reports.
- ``load_ms``: ``read_model`` of the IR + ``compile_model`` (conversion and quantization excluded, as for ONNX
  Runtime: a deployment ships the IR).
- ``size_bytes``: the IR's .xml + .bin.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from archbench.bench.measure.runtimes import MissingRuntime, RuntimeBase, UnsupportedCell

_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8-static": "f32"}
_INSTALL = "pip install 'archbench[openvino]'"


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as e:
        raise MissingRuntime(f"openvino is not installed ({e}); {_INSTALL}") from None
    return ov


class OpenVino(RuntimeBase):
    name = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8-static")
    devices = ("cpu",)
    needs_torch = False
    artifact = "onnx"
    package = "openvino"
    extra = "openvino"

    def __init__(self, threads: int, device: str) -> None:
        super().__init__(threads, device)
        self.ov = _import_openvino()

    @classmethod
    def check(cls, precision: str, device: str) -> None:
        if precision == "int8-dynamic":
            raise UnsupportedCell("openvino has no general dynamic (run-time activation) int8; "
                                  "use --precision int8-static (NNCF)")
        super().check(precision, device)

    @classmethod
    def build(cls, model: Any, precision: str, workdir: Path, quant: Any = None) -> dict[str, Any]:
        """The IR this runtime loads for ``precision`` (artifacts worker): converted from the ONNX export, fp16
        weights for fp16, NNCF-quantized for int8-static."""
        cls.check(precision, "cpu")
        ov = _import_openvino()
        t = time.perf_counter()
        m = ov.Core().read_model(str(model.onnx_path))
        notes: list[str] = []
        method = ""
        if precision == "int8-static":
            m, method = cls._quantize(m, model, quant)
        xml = workdir / f"model.openvino.{precision}.xml"
        ov.save_model(m, str(xml), compress_to_fp16=precision == "fp16")
        if precision == "fp16":
            method = "OpenVINO IR with fp16 weights (compress_to_fp16), INFERENCE_PRECISION_HINT f16"
        elif precision == "bf16":
            method = "OpenVINO IR with fp32 weights, INFERENCE_PRECISION_HINT bf16 (converted at compile)"
        notes.append(f"openvino IR ({precision}) built in {time.perf_counter() - t:.2g} s")
        return {"path": str(xml), "files": [str(xml), str(xml.with_suffix(".bin"))], "notes": notes,
                "quant_method": method}

    @classmethod
    def _quantize(cls, m: Any, model: Any, cfg: Any) -> tuple[Any, str]:
        try:
            import nncf
        except ImportError as e:
            raise UnsupportedCell(f"openvino int8-static needs nncf ({e}); {_INSTALL}") from None
        from archbench.bench.measure import quantize as q
        from archbench.bench.measure.hooks import HookContext

        cfg = cfg or q.QuantConfig()
        names = [p.get_friendly_name() for p in m.get_parameters()]
        fixed = model.specs[0].shape[0] if model.kind == "onnx" else None
        bs = fixed or cfg.calib_batch_size
        ctx = HookContext(model.source, model.knobs, cls.name, "int8-static", bs, "cpu",
                          model.specs[0].with_batch(bs), model.family, names)
        reader, desc = q.calibration_reader(model.specs, names, cfg, ctx, fixed)
        batches = []
        while (item := reader.get_next()) is not None:
            batches.append(item)
        if not batches:
            raise RuntimeError("int8-static: the calibration reader gave no batches")
        transformer = any(op.get_type_name() == "Softmax" for op in m.get_ops())
        kw = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
        qm = nncf.quantize(m, nncf.Dataset(batches), subset_size=sum(next(iter(b.values())).shape[0]
                                                                        for b in batches), **kw)
        method = (f"nncf.quantize {nncf.__version__} (post-training, {'transformer' if transformer else 'default'} "
                  f"preset); {desc}")
        return qm, method

    def prepare(self, model: Any, precision: str, workdir: Path, quant: Any = None) -> None:
        from archbench.bench.measure.variants import variant

        ov = self.ov
        self.check(precision, self.device)
        v = variant(type(self), model, precision, workdir, quant)
        self.notes += v.notes
        self.quant_method = v.quant_method
        self.size_bytes = v.size_bytes
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(self.threads),
                  "INFERENCE_PRECISION_HINT": _HINTS[precision]}
        t = time.perf_counter()
        core = ov.Core()
        try:
            self.compiled = core.compile_model(core.read_model(str(v.path)), "CPU", config)
        except RuntimeError as e:
            if precision in ("fp16", "bf16"):
                raise UnsupportedCell(f"openvino CPU does not run {precision} here: {str(e).splitlines()[0]}") from None
            raise
        self.load_ms = (time.perf_counter() - t) * 1e3
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        ran = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)  # an ov.Type: "f32", "bf16"
        if precision == "bf16" and ran != "bf16":
            raise UnsupportedCell(f"openvino CPU runs {ran} when asked for bf16 here (no bf16 support on this CPU)")
        if precision == "fp16" and ran != "f16":
            self.notes.append(f"this CPU has no native fp16: OpenVINO ran {ran} (fp16 weights, upcast)")
        self.runtime_threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.runtime_config = (f"CPU; PERFORMANCE_HINT=LATENCY NUM_STREAMS={self.compiled.get_property('NUM_STREAMS')} "
                               f"INFERENCE_NUM_THREADS={self.runtime_threads} INFERENCE_PRECISION_HINT={ran} "
                               f"ENABLE_CPU_PINNING={self.compiled.get_property('ENABLE_CPU_PINNING')}")
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]

    def convert(self, inputs: tuple[np.ndarray, ...]) -> dict[int, np.ndarray]:
        return {i: np.ascontiguousarray(a) for i, a in enumerate(inputs)}

    def run(self, native_inputs: dict[int, np.ndarray]) -> Any:
        # share_inputs: no copy of the input into OpenVINO's tensor; outputs are copied out (share_outputs=False),
        # as a caller that keeps them would need.
        return self.request.infer(native_inputs, share_inputs=True)

    def outputs(self, out: Any) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in out.to_tuple()]
