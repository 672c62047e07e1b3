"""Static profile: parameters, size, MACs and FLOPs, per module and per operator.

Conventions (also stated in the README):

- **MAC** = one multiply-accumulate. We count MACs of the ops that do matrix work: convolutions (grouped and
  depthwise included), linear / matmul / bmm / einsum, scaled-dot-product attention (QK^T and AV, the full
  N x N square even when causal, as FlashAttention's papers and FlopCounterMode do) and LSTM/GRU/RNN gate
  matmuls. Normalization, activations, softmax, pooling and elementwise ops have no MACs by this definition;
  they are listed as *uncounted* with their share of CPU forward time, so you can see what MACs miss.
- **FLOPs** = 2 x MACs (one multiply + one add), the convention of FlopCounterMode and most papers' "FLOPs".

MACs come from fvcore's JIT-trace analysis with handles added for the ops it lacks (attention, RNNs); the total is
cross-checked against ``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------------------------
# fvcore handles. A handle gets the JIT node's input and output Values and returns a Counter {op_name: MACs}.


def _shape(val: Any) -> list[int] | None:
    from fvcore.nn.jit_handles import get_shape

    try:
        return get_shape(val)
    except Exception:
        return None


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> Counter:
    # q: (..., Nq, d), k: (..., Nk, d), v: (..., Nk, dv)
    # QK^T: (..., Nq, d) @ (..., d, Nk) -> prod(...) * Nq * Nk * d MACs;  AV: prod(...) * Nq * Nk * dv MACs.
    q, k, v = (_shape(x) for x in inputs[:3])
    assert q is not None and k is not None and v is not None
    batch = math.prod(q[:-2])
    nq, d = q[-2], q[-1]
    nk, dv = k[-2], v[-1]
    return Counter({"scaled_dot_product_attention": batch * nq * nk * (d + dv)})


def _rnn_macs(kind: str):
    def handle(inputs: list[Any], outputs: list[Any]) -> Counter:
        # aten::lstm(input, hx[], params[], has_biases, num_layers, dropout, train, bidirectional, batch_first)
        # Every 2-D param is a gate weight W_ih (G*H, I) or W_hh (G*H, H) (G = 4 LSTM, 3 GRU, 1 RNN) applied once
        # per timestep per sequence; so MACs = (T*B) * sum(numel of 2-D weights) = T*B*G*H*(I+H) per layer/dir.
        x = _shape(inputs[0])
        assert x is not None
        steps = math.prod(x[:-1])  # T * B, whatever batch_first says
        weights = 0
        for p in inputs[2].node().inputs():
            s = _shape(p)
            if s is not None and len(s) == 2:
                weights += s[0] * s[1]
        return Counter({kind: steps * weights})

    return handle


def _mac_handles() -> dict[str, Any]:
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        bmm_flop_jit,
        conv_flop_jit,
        einsum_flop_jit,
        linear_flop_jit,
        matmul_flop_jit,
    )

    # fvcore's own matmul/conv handles count one multiply-add as one "flop": exactly our MACs.
    return {
        "aten::addmm": addmm_flop_jit,
        "aten::bmm": bmm_flop_jit,
        "aten::_convolution": conv_flop_jit,
        "aten::einsum": einsum_flop_jit,
        "aten::matmul": matmul_flop_jit,
        "aten::mm": matmul_flop_jit,
        "aten::linear": linear_flop_jit,
        "aten::scaled_dot_product_attention": _sdpa_macs,
        "aten::lstm": _rnn_macs("lstm"),
        "aten::gru": _rnn_macs("gru"),
        "aten::rnn_tanh": _rnn_macs("rnn_tanh"),
        "aten::rnn_relu": _rnn_macs("rnn_relu"),
    }


# Ops that only move or describe data: not listed as uncounted work.
_SHAPE_OPS = {
    "aten::Int", "aten::ScalarImplicit", "aten::size", "aten::view", "aten::reshape", "aten::flatten",
    "aten::unflatten", "aten::permute", "aten::transpose", "aten::t", "aten::expand", "aten::expand_as",
    "aten::contiguous", "aten::detach", "aten::squeeze", "aten::unsqueeze", "aten::select", "aten::slice",
    "aten::chunk", "aten::split", "aten::unbind", "aten::to", "aten::type_as", "aten::dropout", "aten::numel",
    "aten::arange", "aten::zeros", "aten::ones", "aten::empty", "aten::full", "aten::zeros_like",
    "aten::ones_like", "aten::empty_like", "aten::full_like", "aten::alias", "aten::lift_fresh", "aten::dim",
    "aten::__getitem__", "aten::list", "aten::tensor", "aten::as_strided", "aten::view_as", "aten::feature_dropout",
    "aten::eq", "aten::ne", "aten::floor_divide", "aten::floordiv", "aten::mul_scalar", "aten::item",
}

# fvcore's handles name their counts ("conv"); the aten op the profiler sees under that name.
_TRACE_NAME = {"conv": "aten::_convolution"}

# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpRow:
    """One operator of the profile. ``macs`` is None for an uncounted op (no MACs by our definition)."""

    op: str
    calls: int
    macs: int | None
    time_share: float | None  # inclusive CPU time of the op / one forward's CPU time (0..1); None if unmeasured


@dataclass(frozen=True)
class ModuleRow:
    module: str  # dotted path, "" for the whole model
    type: str
    params: int
    macs: int


@dataclass(frozen=True)
class CrossCheck:
    """archbench's FLOPs vs torch.utils.flop_counter.FlopCounterMode on the same forward."""

    flop_counter_flops: int  # what FlopCounterMode counted (FLOPs)
    comparable_flops: int  # archbench FLOPs of the ops FlopCounterMode also counts on this device
    rel_diff: float  # (comparable - flop_counter) / flop_counter, 0 when both are 0
    missed_by_flop_counter: dict[str, int]  # archbench op -> FLOPs that FlopCounterMode did not count


@dataclass(frozen=True)
class Profile:
    model: str
    input: str  # InputSpec.describe() or the ONNX graph inputs
    params: int
    trainable_params: int
    state_dict_bytes: int  # fp32 state_dict: every parameter and buffer at 4 bytes per element
    file_bytes: int  # torch.save(state_dict) (or the .onnx file + external data) on disk
    macs: int
    flops: int  # 2 x macs
    by_module: list[ModuleRow] = field(default_factory=list)
    by_operator: list[OpRow] = field(default_factory=list)
    cross_check: CrossCheck | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def uncounted(self) -> list[OpRow]:
        return [r for r in self.by_operator if r.macs is None]


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; shared (tied) parameters counted once."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return total, trainable


def state_dict_sizes(model: nn.Module) -> tuple[int, int]:
    """(fp32 bytes of the state_dict's floating tensors + others at their size, bytes of torch.save output)."""
    sd = model.state_dict()
    # Tied weights (GPT-2's lm_head is its token embedding) appear under two keys but are one tensor, stored once
    # by torch.save and by the ONNX export: count each storage once.
    unique = {(t.data_ptr(), t.numel(), t.dtype): t for t in sd.values()}.values()
    fp32 = sum(t.numel() * (4 if t.is_floating_point() else t.element_size()) for t in unique)
    buf = io.BytesIO()
    torch.save(sd, buf)
    return fp32, buf.getbuffer().nbytes


def _analysis(model: nn.Module, inputs: tuple[torch.Tensor, ...]):
    from fvcore.nn.jit_analysis import JitModelAnalysis

    a = JitModelAnalysis(model, inputs)
    a.set_op_handle(**_mac_handles())
    # fvcore silently ignores a fixed list of ops (relu, add, cat, ...); we want every op that does work listed,
    # so only pure shape/metadata ops stay ignored. (fvcore 0.1.5 keeps this set in a private attribute.)
    a._ignored_ops = set(_SHAPE_OPS)
    a.unsupported_ops_warnings(False)
    a.uncalled_modules_warnings(False)
    a.tracer_warnings("none")
    return a


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Total MACs of one forward of ``model`` on ``inputs`` (see the module docstring for what counts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(_analysis(model, inputs).total())


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ profiler's start/stop lines, which it writes straight to file descriptor 2."""
    try:
        fd = os.dup(2)
    except OSError:  # no usable stderr (e.g. closed): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def _op_times(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[dict[str, float], dict[str, int]]:
    """Inclusive CPU time share and calls per forward of every aten op, over 1-10 eager forwards (~0.5 s)."""
    import time

    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(*inputs)  # warm-up: lazy init, allocator
        t = time.perf_counter()
        model(*inputs)
        reps = max(1, min(10, int(0.5 / max(time.perf_counter() - t, 1e-6))))
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                model(*inputs)
    events = prof.key_averages()
    # The forwards' CPU time is the sum of self times of every event recorded.
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    shares = {e.key: e.cpu_time_total / total for e in events}
    calls = {e.key: e.count // reps for e in events}
    return shares, calls


def _cross_check(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], macs_by_op: dict[str, int]
) -> CrossCheck:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(*inputs)
    counted = {str(k).split(".")[-1]: int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    fc_total = int(fc.get_total_flops())
    fc_attention = sum(v for k, v in counted.items() if "attention" in k)
    missed: dict[str, int] = {}
    if fc_attention == 0 and macs_by_op.get("scaled_dot_product_attention"):
        missed["scaled_dot_product_attention"] = 2 * macs_by_op["scaled_dot_product_attention"]
    for rnn in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        # aten::lstm & co. run as one fused op that FlopCounterMode has no formula for (its gate matmuls are
        # not dispatched as mm/addmm on CPU), so it counts none of their FLOPs.
        if macs_by_op.get(rnn):
            missed[rnn] = 2 * macs_by_op[rnn]
    comparable = 2 * sum(macs_by_op.values()) - sum(missed.values())
    rel = 0.0 if fc_total == comparable == 0 else (comparable - fc_total) / max(fc_total, 1)
    return CrossCheck(fc_total, comparable, rel, missed)


def profile_module(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    name: str = "model",
    input_desc: str = "",
    time_ops: bool = True,
) -> Profile:
    """Profile a module on example inputs (eval mode, CPU)."""
    model.eval()
    params, trainable = count_params(model)
    sd_bytes, file_bytes = state_dict_sizes(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = _analysis(model, inputs)
        total = int(a.total())
        by_op_macs = {k: int(v) for k, v in a.by_operator().items()}
        by_mod = a.by_module()
        unsupported = a.unsupported_ops()

    shares, calls = _op_times(model, inputs) if time_ops else ({}, {})
    rows: list[OpRow] = []
    def share(op: str) -> float | None:
        # Eager runs the in-place variant (relu_, add_) where the trace may name the out-of-place one.
        found = [shares[k] for k in (op, op + "_", op.rstrip("_")) if k in shares]
        return sum(dict.fromkeys(found)) if found else (0.0 if shares else None)

    for op, m in sorted(by_op_macs.items(), key=lambda kv: -kv[1]):
        key = _TRACE_NAME.get(op, "aten::" + op)
        rows.append(OpRow(op, calls.get(key, 0), m, share(key)))
    for op, n in sorted(unsupported.items(), key=lambda kv: -(share(kv[0]) or 0)):
        rows.append(OpRow(op.removeprefix("aten::"), n, None, share(op)))

    module_types = dict(model.named_modules())
    mod_params: dict[str, int] = defaultdict(int)
    for pname, p in model.named_parameters():
        parts = pname.split(".")[:-1]
        for i in range(len(parts) + 1):
            mod_params[".".join(parts[:i])] += p.numel()
    mod_rows = [
        ModuleRow(m, type(module_types[m]).__name__ if m in module_types else "", mod_params.get(m, 0), int(v))
        for m, v in by_mod.items()
        if m in module_types
    ]

    notes: list[str] = []
    check = None
    try:
        check = _cross_check(model, inputs, by_op_macs)
    except Exception as e:  # a model FlopCounterMode cannot run is a note, not a failed profile
        notes.append(f"FlopCounterMode cross-check failed: {type(e).__name__}: {e}")
    return Profile(
        model=name,
        input=input_desc,
        params=params,
        trainable_params=trainable,
        state_dict_bytes=sd_bytes,
        file_bytes=file_bytes,
        macs=total,
        flops=2 * total,
        by_module=mod_rows,
        by_operator=rows,
        cross_check=check,
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------------- roofline inputs
# What analyze.roofline needs from a model that records do not carry: output sizes and per-module bytes.

# Bytes per element of a float output at each precision (an int8 model dequantizes its outputs to fp32).
_OUT_ITEMSIZE = {"fp16": 2, "bf16": 2, "fp32": 4}


@functools.lru_cache(maxsize=256)
def _zoo_output_bytes_per_sample(model: str, knobs: str) -> int | None:
    """Output bytes of one fp32 forward at batch 1 of a zoo model, from a meta-device forward (no memory, no
    compute: only shapes). None for names outside the zoo or a forward meta tensors cannot run."""
    try:
        import torch

        from archbench.models import create_model, get_entry

        get_entry(model)
        kw = json.loads(knobs) if knobs else {}
        with torch.device("meta"):
            m = create_model(model, **kw).eval()
            spec = m.input_spec.with_batch(1)
            x = torch.empty(spec.shape, dtype=spec.dtype)
            with torch.inference_mode():
                y = m(x)
    except Exception:  # not a zoo model, or an op without a meta kernel: the estimate goes without outputs
        return None
    outs = [y] if isinstance(y, torch.Tensor) else [t for t in _flat(y) if isinstance(t, torch.Tensor)]
    return sum(t.numel() * 4 for t in outs)


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _flat(item)]
    if isinstance(x, dict):
        return [t for item in x.values() for t in _flat(item)]
    return [x]


def output_bytes(record: Any) -> int | None:
    """Bytes of the outputs of one forward (records do not carry them): for zoo models, a meta-device forward's
    output shapes x batch, at 2 bytes per element for fp16/bf16 and 4 otherwise; None otherwise."""
    per = _zoo_output_bytes_per_sample(record.model, record.knobs or "")
    if per is None:
        return None
    return per // 4 * _OUT_ITEMSIZE.get(record.precision, 4) * int(record.batch or 1)


def module_bytes(model: Any, inputs: tuple[Any, ...]) -> dict[str, tuple[int, int]]:
    """Per named module: (own parameter + buffer bytes, input + output tensor bytes of its (last) call).

    Forward hooks on every module for one forward; the handles are removed in ``finally``."""
    import torch

    acts: dict[str, int] = {}
    handles = []

    def nbytes(x: Any) -> int:
        return sum(t.numel() * t.element_size() for t in _flat(x) if isinstance(t, torch.Tensor))

    def hook(name: str) -> Callable[..., None]:
        def fn(mod: Any, args: Any, out: Any) -> None:
            acts[name] = nbytes(args) + nbytes(out)

        return fn

    try:
        for name, mod in model.named_modules():
            handles.append(mod.register_forward_hook(hook(name)))
        with torch.inference_mode():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, mod in model.named_modules():
        own = [*mod.parameters(recurse=False), *mod.buffers(recurse=False)]
        out[name] = (sum(t.numel() * t.element_size() for t in own), acts.get(name, 0))
    return out


def zoo_layer_bounds(model: str, knobs: str, ridge: float) -> list[Any] | None:
    """analyze.roofline.classify_layers for a zoo model at batch 1, fp32; None when ``model`` is not in the zoo."""
    import torch

    from archbench.models import create_model, get_entry

    try:
        get_entry(model)
    except ValueError:
        return None
    m = create_model(model, **(json.loads(knobs) if knobs else {})).eval()
    x = m.input_spec.make(batch=1, generator=torch.Generator().manual_seed(0))
    prof = profile_module(m, (x,), name=model, time_ops=False)
    from archbench.bench.analyze.roofline import classify_layers

    return classify_layers(prof, module_bytes(m, (x,)), ridge)
