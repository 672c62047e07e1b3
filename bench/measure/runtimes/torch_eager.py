"""PyTorch eager mode under ``torch.inference_mode()``, on CPU or CUDA.

- precisions: fp32; fp16 and bf16 (the module and its floating inputs are cast); int8-dynamic on CPU
  (``torch.ao.quantization.quantize_dynamic`` on nn.Linear / LSTM / GRU, measure.quantize). int8-static is skipped:
  eager static quantization needs QuantStub edits or the PT2E/torchao flow.
- threads: ``torch.set_num_threads(threads)``, inter-op pool 1.
- ``load_ms``: building the module (``create_model`` or the user's factory) plus the cast or quantization.
- ``size_bytes``: the ``torch.save``d state_dict of what runs.
- generation (``--mode generate``): ``Llama.step`` with a growing KV cache (measure.decode.TorchDecoder).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archbench.bench.measure.runtimes import RuntimeBase, UnsupportedCell, flatten_outputs

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def state_dict_file_bytes(module: torch.nn.Module, path: Path) -> int:
    """Serialize the state_dict with torch.save and return the file's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
    return path.stat().st_size


def set_threads(threads: int) -> int:
    """torch's intra-op pool to ``threads``, its inter-op pool to 1 (once per process); returns what torch reports."""
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # the inter-op pool can be sized only before its first use
        torch.set_num_interop_threads(1)
    return torch.get_num_threads()


class TorchEager(RuntimeBase):
    name = "torch"
    precisions = ("fp32", "fp16", "bf16", "int8-dynamic")
    devices = ("cpu", "cuda")
    trains = True
    needs_torch = True
    artifact = "none"
    package = "torch"
    extra = ""
    generates = True

    def __init__(self, threads: int, device: str) -> None:
        super().__init__(threads, device)
        self.runtime_threads = set_threads(threads)
        self.runtime_config = f"inference_mode; interop_threads={torch.get_num_interop_threads()}"

    @classmethod
    def check(cls, precision: str, device: str) -> None:
        if precision == "int8-static":
            raise UnsupportedCell(f"{cls.name} int8-static needs QuantStub edits or the PT2E/torchao flow; "
                                  "use --runtime onnxruntime for int8-static")
        super().check(precision, device)
        if precision == "int8-dynamic":
            if device != "cpu":
                raise UnsupportedCell(f"{cls.name} int8-dynamic (torch.ao dynamic quantization) runs on CPU only")
            from archbench.bench.measure.quantize import torch_dynamic_available

            why = torch_dynamic_available()
            if why:
                raise UnsupportedCell(why)
        if device == "cuda" and not torch.cuda.is_available():
            raise UnsupportedCell("no CUDA device")

    def prepare(self, model: Any, precision: str, workdir: Path, quant: Any = None) -> None:
        self.check(precision, self.device)
        self.torch_device = torch.device(self.device)
        self.dtype = _DTYPES.get(precision, torch.float32)
        t = time.perf_counter()
        if precision == "int8-dynamic":
            from archbench.bench.measure.quantize import quantize_torch_dynamic

            try:
                self.model, self.quant_method, notes = quantize_torch_dynamic(model.module.float().eval())
            except LookupError as e:
                raise UnsupportedCell(f"{self.name} int8-dynamic: {e}") from None
            self.notes += notes
            self.model.eval()
        else:
            self.model = model.module.to(device=self.torch_device, dtype=self.dtype).eval()
        self.load_ms = model.build_ms + (time.perf_counter() - t) * 1e3
        self.size_bytes = state_dict_file_bytes(self.model, workdir / f"state_dict_{precision}.pt")

    def convert(self, inputs: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
        out = []
        for a in inputs:
            x = torch.from_numpy(np.ascontiguousarray(a))
            out.append(x.to(self.torch_device, self.dtype) if x.is_floating_point() else x.to(self.torch_device))
        return tuple(out)

    def run(self, native_inputs: tuple[torch.Tensor, ...]) -> Any:
        with torch.inference_mode():
            return self.model(*native_inputs)

    def bind_thread(self) -> None:
        # torch's intra-op (OpenMP) thread count is per calling thread: a new thread would get OpenMP's default
        # team (every CPU) and, beside other executors, spin for milliseconds per call (41 us -> 9 ms on mlp_s here)
        set_threads(self.threads)

    def decoder(self, model: Any, prompt_len: int, new_tokens: int) -> Any:
        from archbench.bench.measure.decode import make_decoder

        return make_decoder(self.model, self.device)

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def outputs(self, out: Any) -> list[np.ndarray]:
        return [t.detach().float().cpu().numpy() for t in flatten_outputs(out) if isinstance(t, torch.Tensor)]
