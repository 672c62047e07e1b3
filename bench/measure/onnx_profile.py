"""Static profile of an ``.onnx`` file: parameters and size from its initializers, MACs of Conv / Gemm / MatMul /
LSTM / GRU / RNN nodes from ONNX shape inference. Same MAC/FLOP conventions as ``archbench.bench.measure.profile``."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from archbench.bench.errors import UsageError
from archbench.bench.measure.files import onnx_files  # noqa: F401  (re-exported)
from archbench.bench.measure.profile import ModuleRow, OpRow, Profile

_MAC_OPS = ("Conv", "Gemm", "MatMul", "LSTM", "GRU", "RNN")


def _dims(vi) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def load_onnx_checked(path: Path | str) -> Any:
    """The ModelProto of an .onnx file (external data not loaded), or UsageError with one line saying what is wrong:
    no file, an empty file, not an ONNX model, no graph, or external data files that are not next to it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such ONNX file: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"{path} is empty (0 bytes), not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise UsageError(f"cannot read ONNX file {path}: {type(e).__name__}: {msg[0] if msg else ''}") from None
    if not model.graph.node and not model.graph.output:
        raise UsageError(f"{path} holds no ONNX graph (no nodes, no outputs)")
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location" and not (path.parent / entry.value).is_file():
                raise UsageError(f"{path}: its weights live in an external data file {entry.value!r}, "
                                 f"which is not next to it in {path.parent}/")
    return model


def profile_onnx(path: Path, input_shape: tuple[int, ...] | None = None) -> Profile:
    """Profile an ONNX graph. Symbolic input dims take ``input_shape`` (single-input graphs) or else 1."""
    import onnx
    from onnx import helper, shape_inference

    model = load_onnx_checked(path)
    g = model.graph
    init_names = {t.name for t in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in init_names]
    notes: list[str] = []
    if input_shape is not None and len(graph_inputs) != 1:
        raise UsageError(f"--input-shape fits single-input graphs; {path} has {len(graph_inputs)} inputs")
    for vi in graph_inputs:
        dims = vi.type.tensor_type.shape.dim
        if input_shape is not None:
            if len(input_shape) != len(dims):
                raise UsageError(
                    f"--input-shape has {len(input_shape)} dims but input {vi.name!r} of {path} has {len(dims)}"
                )
            for d, v in zip(dims, input_shape, strict=True):
                d.ClearField("dim_param")
                d.dim_value = v
        else:
            for d in dims:
                if not d.HasField("dim_value"):
                    notes.append(f"input {vi.name!r}: symbolic dim {d.dim_param!r} taken as 1 (set --input-shape)")
                    d.ClearField("dim_param")
                    d.dim_value = 1
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | str]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[vi.name] = _dims(vi)
    for t in g.initializer:
        shapes[t.name] = list(t.dims)

    def known(name: str) -> list[int] | None:
        s = shapes.get(name)
        return [int(x) for x in s] if s is not None and all(isinstance(x, int) for x in s) else None

    macs_by_op: Counter = Counter()
    calls: Counter = Counter()
    node_rows: list[ModuleRow] = []
    unknown = 0
    for node in g.node:
        calls[node.op_type] += 1
        if node.op_type not in _MAC_OPS:
            continue
        out = known(node.output[0]) if node.output else None
        m: int | None = None
        if node.op_type == "Conv":
            w = known(node.input[1])
            if out and w:
                m = math.prod(out) * math.prod(w[1:])  # N*M*Ho*Wo * (C/g)*kh*kw
        elif node.op_type in ("Gemm", "MatMul"):
            a = known(node.input[0])
            if out and a:
                trans_a = any(at.name == "transA" and helper.get_attribute_value(at) for at in node.attribute)
                k = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
                m = math.prod(out) * k
        else:  # LSTM / GRU / RNN: X (T, B, I), W (dirs, G*H, I), R (dirs, G*H, H)
            x, w, r = known(node.input[0]), known(node.input[1]), known(node.input[2])
            if x and w and r:
                m = x[0] * x[1] * (math.prod(w) + math.prod(r))
        if m is None:
            unknown += 1
            continue
        macs_by_op[node.op_type] += m
        node_rows.append(ModuleRow(node.name or node.op_type, node.op_type, 0, m))
    if unknown:
        notes.append(f"{unknown} Conv/Gemm/MatMul/RNN nodes had unknown shapes after inference; their MACs are missing")

    params = 0
    fp32_bytes = 0
    for t in g.initializer:
        n = math.prod(t.dims)
        params += n
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        fp32_bytes += n * (4 if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                   onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE) else itemsize)
    file_bytes = sum(p.stat().st_size for p in onnx_files(path) if p.exists())
    ops: list[OpRow] = [OpRow(op, calls[op], m, None) for op, m in macs_by_op.most_common()]
    ops += [OpRow(op, n, None, None) for op, n in calls.most_common() if op not in macs_by_op]
    total = int(sum(macs_by_op.values()))
    in_desc = ", ".join(
        f"{vi.name}: {'x'.join(str(d) for d in _dims(vi))}" for vi in graph_inputs
    )
    notes.append("parameters = elements of every initializer (ONNX has no trainable flag: trainable = params)")
    return Profile(
        model=str(path),
        input=in_desc,
        params=params,
        trainable_params=params,
        state_dict_bytes=fp32_bytes,
        file_bytes=file_bytes,
        macs=total,
        flops=2 * total,
        by_module=[ModuleRow("", "graph", params, total), *node_rows],
        by_operator=ops,
        cross_check=None,
        notes=notes,
    )
