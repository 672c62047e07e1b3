"""Example inputs as every measuring process makes them: numpy only, so torch-free workers make the same ones.

    spec = ArraySpec((1, 3, 64, 64), "float32")          # or ArraySpec.from_input_spec(module.input_spec)
    x = spec.make(batch=8, seed=0)                        # (8, 3, 64, 64) float32, standard normal
    ArraySpec.from_json(spec.to_json()) == spec           # stored beside the export (measure.artifacts)

Floats are standard normal, integers (token ids) uniform in [low, high) (low 0, or 1 for an all-ones attention mask):
never all zeros, which could hit fast paths.
Seeds: the timed loop rotates sets 0..k-1, fidelity compares sets 0..n-1 (``fidelity_seeds``), the export check uses
1234 and int8 calibration 10000 and up (measure.quantize.CALIB_SEED), so calibration never sees judged inputs;
``--mode generate`` prompts use PROMPT_SEED.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# torch dtype names (str(torch.float32) minus "torch.") -> numpy dtype names
_NUMPY = {"float32": "float32", "float16": "float16", "bfloat16": "float32", "float64": "float64",
          "int64": "int64", "int32": "int32", "int8": "int8", "uint8": "uint8", "bool": "bool"}


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[int, ...]  # batch dimension first (unless batch_dim says otherwise)
    dtype: str = "float32"  # numpy dtype name
    high: int | None = None  # integer inputs: values in [low, high)
    low: int = 0  # integer inputs: 1 with high=2 makes an all-ones attention mask (no padding, as deployed)
    batch_dim: int = 0  # where the batch is: 1 for a KV cache (layers, B, heads, T, head_dim) (modes.generate)

    def _batched(self, batch: int) -> tuple[int, ...]:
        d = self.batch_dim
        return (*self.shape[:d], batch, *self.shape[d + 1:])

    def with_batch(self, batch: int) -> ArraySpec:
        return ArraySpec(self._batched(batch), self.dtype, self.high, self.low, self.batch_dim)

    def make(self, batch: int | None = None, seed: int = 0) -> np.ndarray:
        shape = self.shape if batch is None else self._batched(batch)
        rng = np.random.default_rng(seed)
        if np.issubdtype(np.dtype(self.dtype), np.floating):
            return rng.standard_normal(shape, dtype=np.float32).astype(self.dtype, copy=False)
        return rng.integers(self.low, self.high if self.high is not None else 2, shape).astype(self.dtype)

    def describe(self) -> str:
        return "x".join(map(str, self.shape)) + f" {self.dtype}" + (f" [{self.low},{self.high})" if self.high else "")

    def to_json(self) -> dict[str, Any]:
        d = {"shape": list(self.shape), "dtype": self.dtype, "high": self.high, "low": self.low}
        return d | ({"batch_dim": self.batch_dim} if self.batch_dim else {})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ArraySpec:
        return cls(tuple(int(x) for x in d["shape"]), str(d["dtype"]), d.get("high"), int(d.get("low") or 0),
                   int(d.get("batch_dim") or 0))

    @classmethod
    def from_input_spec(cls, spec: Any) -> ArraySpec:
        """From an archbench.models.InputSpec (torch dtype); bf16 inputs are made as fp32 and cast by the runtime."""
        name = str(spec.dtype).removeprefix("torch.")
        return cls(tuple(spec.shape), _NUMPY.get(name, "float32"), spec.high, int(getattr(spec, "low", 0)))


def make_inputs(specs: tuple[ArraySpec, ...], batch: int, seed: int) -> tuple[np.ndarray, ...]:
    """One input set: an array per model input, each from its own stream so adding an input changes no other."""
    return tuple(s.make(batch, seed * 1009 + i) for i, s in enumerate(specs))


PROMPT_SEED = 4242  # --mode generate: the fixed random prompt every runtime's generations start from


def prompt_tokens(spec: ArraySpec, batch: int) -> np.ndarray:
    """The prompt of ``--mode generate`` (modes.generate): random token ids of the model's example input
    (batch, P), the same in every process and runtime, so their greedy tokens can be compared."""
    return spec.make(batch, seed=PROMPT_SEED)


def fidelity_seeds(batch: int, input_sets: int, samples: int) -> list[int]:
    """Seeds of the input sets fidelity compares: the timing sets 0..k-1, plus more until ``samples`` samples."""
    return list(range(max(input_sets, math.ceil(samples / batch) if samples > 0 else 0, 1)))


def specs_to_json(specs: tuple[ArraySpec, ...]) -> str:
    return json.dumps([s.to_json() for s in specs])


def specs_from_json(text: str) -> tuple[ArraySpec, ...]:
    return tuple(ArraySpec.from_json(d) for d in json.loads(text))


def onnx_input_specs(path: Any, shape: tuple[int, ...] | None = None, dtype: str | None = None) -> tuple[ArraySpec, ...]:
    """The graph inputs of an ONNX file (initializers excluded); symbolic dims -> 1, or ``shape`` for one input."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    specs = []
    for inp in (i for i in g.input if i.name not in inits):
        tt = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim)
        np_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        high = None if np.issubdtype(np.dtype(np_dtype), np.floating) else 2
        specs.append(ArraySpec(dims, np_dtype, high))
    if shape is not None:
        if len(specs) != 1:
            raise ValueError(f"--input-shape gives one shape; {path} has {len(specs)} inputs")
        specs = [ArraySpec(shape, dtype or specs[0].dtype, specs[0].high)]
    return tuple(specs)
