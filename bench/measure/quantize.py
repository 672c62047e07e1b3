"""Reduced-precision variants of a model: ONNX Runtime fp16 conversion, dynamic and static (QDQ) int8 quantization,
and PyTorch dynamic quantization.

Precision names (``--precision``) and who runs them:

    fp32           torch, torch-compile, onnxruntime
    fp16           torch, torch-compile (the module is cast; inputs too); onnxruntime: the fp32 graph converted
                   by ``onnxruntime.transformers.float16`` (fp16 weights and activations, fp32 inputs and outputs)
    bf16           torch, torch-compile (cast as fp16); onnxruntime: skipped (few ONNX Runtime kernels take bf16)
    int8-dynamic   onnxruntime: ``quantize_dynamic`` (int8 weights; activations quantized per call at run time)
                   torch: ``torch.ao.quantization.quantize_dynamic`` on nn.Linear / LSTM / GRU (deprecated upstream,
                   still shipped in torch 2.13; a model with none of those is skipped)
    int8-static    onnxruntime: ``quantize_static``, QDQ format, per-channel weights, activation ranges calibrated
                   (MinMax) on sample batches; torch: skipped (eager static quantization needs QuantStub edits or
                   the PT2E/torchao flow)

ONNX pipeline, each step a file in the run's artefact folder::

    model.onnx (+ model.onnx.data)     the fp32 export (archbench.bench.measure.export, once per model)
      -> model.fp16.onnx               convert_float_to_float16(keep_io_types=True): Casts at the graph's edges
      -> model.pre.onnx                quant_pre_process: symbolic + ONNX shape inference and basic ORT graph
                                       optimization (Conv+BN folding...). Graphs from the dynamo exporter carry
                                       few shapes; without this, tensors of unknown shape are left unquantized.
      -> model.int8-dynamic.onnx       quantize_dynamic
      -> model.int8-static.onnx        quantize_static

Data types on x86: u8 activations, s8 weights (the combination ONNX Runtime's CPU kernels are built for), with
``reduce_range`` (7-bit weights) on CPUs without VNNI, where the u8 x s8 multiply-add (``vpmaddubsw``) can saturate
int16 (ONNX Runtime's own advice); s8/s8 on ARM. The choice is written into the record's ``quant_method``.

fp16 on ONNX Runtime's CPU provider halves the file but is rarely faster: nodes without an fp16 CPU kernel run in
fp32 between Casts that ONNX Runtime inserts at session creation. On its CUDA provider the fp16 kernels are native.

int8 is not always faster: ConvInteger (dynamic quantization of convolutions) has no fast kernel on many CPUs,
and the QuantizeLinear/DequantizeLinear work can outweigh the saving on small layers. ``archbench pick`` reports
int8 cells slower than their fp32 parent rather than hiding them.
"""

from __future__ import annotations

import contextlib
import platform
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "int8-dynamic", "int8-static")
INT8 = ("int8-dynamic", "int8-static")

# Calibration inputs use seeds from here on: the timing loop and the fidelity check use 0..k-1, the export check
# 1234, so calibration never sees the inputs the variant is then judged on.
CALIB_SEED = 10_000

# Graph ops that mean "this node runs in int8" after quantization (counted into quant_method).
_INT8_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM",
             "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QGemm", "QAttention")


@dataclass(frozen=True)
class QuantConfig:
    calib_batches: int = 16  # calibration batches for int8-static
    calib_batch_size: int = 8  # samples per calibration batch (1 for .onnx sources with a fixed batch)
    calibration: str | None = None  # pkg.mod:fn giving calibration batches (archbench.bench.measure.hooks); None: InputSpec.make
    per_channel: bool = True  # int8-static weights: one scale per output channel
    reduce_range: bool | None = None  # None: on x86 CPUs without VNNI (see the module docstring)


@dataclass(frozen=True)
class QuantResult:
    path: Path
    method: str  # one line for the record's quant_method
    seconds: float


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def default_reduce_range(flags: set[str] | None = None) -> bool:
    """7-bit weights on x86 CPUs without VNNI (avx512_vnni / avx_vnni / amx), full range elsewhere."""
    if not is_x86():
        return False
    flags = cpu_flags() if flags is None else flags
    return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _types(cfg: QuantConfig) -> tuple[Any, Any, bool, str]:
    from onnxruntime.quantization import QuantType

    rr = default_reduce_range() if cfg.reduce_range is None else cfg.reduce_range
    if is_x86():
        return QuantType.QUInt8, QuantType.QInt8, rr, "u8 activations, s8 weights" + (", reduce_range" if rr else "")
    return QuantType.QInt8, QuantType.QInt8, rr, "s8 activations, s8 weights" + (", reduce_range" if rr else "")


@contextlib.contextmanager
def _quiet_ort():
    """Python warnings from the quantizer (its logging still reaches the worker log, on stderr)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def preprocess(fp32_path: Path, out_path: Path, notes: list[str]) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference + basic optimization) into ``out_path``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_ort():
            quant_pre_process(str(fp32_path), str(out_path))
    except Exception as e:  # symbolic shape inference gives up on some graphs: ONNX shape inference still runs
        notes.append(f"quant_pre_process without symbolic shapes ({type(e).__name__}: {str(e)[:120]})")
        with _quiet_ort():
            quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return out_path


def op_counts(path: Path) -> Counter:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    return Counter(n.op_type for n in g.node)


def _describe_ops(path: Path) -> str:
    c = op_counts(path)
    parts = [f"{c[o]} {o}" for o in _INT8_OPS if c.get(o)]
    return ", ".join(parts) if parts else "no int8 nodes (nothing quantizable)"


def convert_onnx_fp16(fp32_path: Path, out_path: Path) -> QuantResult:
    """fp32 graph -> fp16 graph (``onnxruntime.transformers.float16``, shipped in the onnxruntime wheel).

    ``keep_io_types``: inputs and outputs stay fp32, so the same feeds and fidelity code serve; the converter's
    default block list keeps ops with no fp16 definition (e.g. Range, Resize variants) in fp32. Weights are
    written to ``out_path`` + ``.data`` when the fp32 export kept them outside its .onnx (the dynamo exporter does),
    so the variant's size on disk compares like for like.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from archbench.bench.measure.files import onnx_files

    t = time.perf_counter()
    model = onnx.load(str(fp32_path))  # with its external data
    with _quiet_ort():
        fp16 = convert_float_to_float16(model, keep_io_types=True)
    external = len(onnx_files(fp32_path)) > 1
    data = out_path.with_name(out_path.name + ".data")
    if data.exists():
        data.unlink()  # save_as_external_data appends
    onnx.save(fp16, str(out_path), save_as_external_data=external, location=data.name if external else None)
    s = time.perf_counter() - t
    c = op_counts(out_path)
    method = (f"onnxruntime.transformers.float16: fp16 weights and activations, fp32 inputs/outputs; graph: "
              f"{c.get('Cast', 0)} Cast")
    return QuantResult(out_path, method, s)


def quantize_onnx_dynamic(pre_path: Path, out_path: Path, cfg: QuantConfig) -> QuantResult:
    from onnxruntime.quantization import quantize_dynamic

    _, wtype, rr, _ = _types(cfg)
    t = time.perf_counter()
    with _quiet_ort():
        quantize_dynamic(str(pre_path), str(out_path), weight_type=wtype, reduce_range=rr)
    s = time.perf_counter() - t
    method = (f"onnxruntime quantize_dynamic: s8 weights{', reduce_range' if rr else ''}, activations quantized "
              f"at run time; graph: {_describe_ops(out_path)}")
    return QuantResult(out_path, method, s)


class _ListReader:
    """A CalibrationDataReader over a list of input dicts (ONNX Runtime iterates it with get_next)."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(batches)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        if item is not None:
            self.count += 1
        return item

    def rewind(self) -> None:  # not supported: ONNX Runtime's MinMax calibrator reads once
        raise NotImplementedError


def generated_batches(specs: tuple[Any, ...], input_names: list[str], cfg: QuantConfig,
                      fixed_batch: int | None = None) -> list[dict[str, np.ndarray]]:
    """Calibration batches from the model's input specs (measure.inputs), with fresh seeds (CALIB_SEED + i).

    ``fixed_batch``: a user's .onnx may fix the batch dim; calibrate at its own batch, as many samples in all."""
    from archbench.bench.measure.inputs import make_inputs

    bs = fixed_batch or cfg.calib_batch_size
    n = cfg.calib_batches * (cfg.calib_batch_size if fixed_batch else 1)
    return [dict(zip(input_names, make_inputs(specs, bs, CALIB_SEED + i), strict=True)) for i in range(n)]


def calibration_reader(specs: tuple[Any, ...], input_names: list[str], cfg: QuantConfig, ctx: Any,
                       fixed_batch: int | None = None) -> tuple[Any, str]:
    """(reader, description): the user's hook when given, else generated batches."""
    if cfg.calibration:
        from archbench.bench.errors import USER_CODE_ERRORS
        from archbench.bench.measure.hooks import load_hook

        fn = load_hook(cfg.calibration, "--calibration")
        try:
            got = fn(ctx)
        except USER_CODE_ERRORS as e:  # sys.exit() in the hook is this cell's failure, not the worker's exit
            raise RuntimeError(f"--calibration {cfg.calibration} raised {type(e).__name__}: {e}") from e
        if hasattr(got, "get_next"):
            return got, f"calibration from {cfg.calibration}"
        return _ListReader(got), f"calibration from {cfg.calibration}"
    batches = generated_batches(specs, input_names, cfg, fixed_batch)
    n = sum(next(iter(b.values())).shape[0] for b in batches) if batches else 0
    return _ListReader(batches), f"calibrated on {n} generated samples (seeds {CALIB_SEED}+)"


def quantize_onnx_static(pre_path: Path, out_path: Path, reader: Any, calib_desc: str, cfg: QuantConfig) -> QuantResult:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    atype, wtype, rr, types = _types(cfg)
    t = time.perf_counter()
    with _quiet_ort():
        quantize_static(
            str(pre_path), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel,
            reduce_range=rr, activation_type=atype, weight_type=wtype, calibrate_method=CalibrationMethod.MinMax,
        )
    s = time.perf_counter() - t
    count = getattr(reader, "count", None)
    if count == 0:
        raise RuntimeError("int8-static: the calibration reader gave no batches")
    method = (f"onnxruntime quantize_static QDQ, {'per-channel' if cfg.per_channel else 'per-tensor'} weights, "
              f"{types}; MinMax ranges {calib_desc}; graph: {_describe_ops(out_path)}")
    return QuantResult(out_path, method, s)


# ------------------------------------------------------------------------------------------------ PyTorch side


def torch_dynamic_available() -> str | None:
    """None when torch.ao.quantization.quantize_dynamic can run here, else why not."""
    try:
        import torch
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except Exception as e:  # removed in a future torch
        return f"torch.ao.quantization.quantize_dynamic is unavailable ({type(e).__name__}: {e})"
    engines = torch.backends.quantized.supported_engines
    if not any(e in engines for e in ("x86", "fbgemm", "qnnpack", "onednn")):
        return f"no quantized engine in this torch build (supported_engines: {engines})"
    return None


def quantize_torch_dynamic(module: Any) -> tuple[Any, str, list[str]]:
    """(quantized copy, quant_method, notes) with nn.Linear / LSTM / GRU as dynamic int8; the original is kept.

    Raises LookupError when the module has none of those layers (nothing to quantize).
    """
    import torch
    from torch import nn

    kinds = (nn.Linear, nn.LSTM, nn.GRU)
    found = Counter(type(m).__name__ for m in module.modules() if type(m) in kinds)
    if not found:
        raise LookupError("no nn.Linear / LSTM / GRU layers to quantize dynamically")
    from torch.ao.quantization import quantize_dynamic

    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_dynamic(module, set(kinds), dtype=torch.qint8, inplace=False)
    if any("deprecated" in str(w.message).lower() for w in caught):
        notes.append(f"torch.ao.quantization is deprecated upstream (torch {torch.__version__} still ships it)")
    convs = sum(1 for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd))
    method = ("torch.ao.quantization.quantize_dynamic qint8 on " + ", ".join(f"{n} {k}" for k, n in found.items())
              + (f"; {convs} conv layers stay fp32" if convs else "")
              + f"; engine {torch.backends.quantized.engine}")
    return q, method, notes
