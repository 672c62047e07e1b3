"""``torch.compile`` (inductor, default mode, static shapes) over PyTorch eager (runtimes.torch_eager).

Compilation happens on the first call of each batch size, so it lands in ``first_inference_ms``, not in the timed
loop nor in ``load_ms`` (build + cast, as eager). Precisions, threads and size as eager.

Generation (``--mode generate``): ``Llama.step_static`` on a KV cache of fixed capacity (prompt + new tokens - 1),
compiled with static shapes: one graph for the prefill, one for a decode step (the position is a 0-d tensor, so
no step recompiles). Both compilations land in the first (cold) generation, ``first_inference_ms``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from archbench.bench.measure.runtimes.torch_eager import TorchEager


class TorchCompile(TorchEager):
    name = "torch-compile"
    compiles = True
    shares_process = False  # dynamo's per-code caches (and their recompile limit) would carry over between models

    def prepare(self, model: Any, precision: str, workdir: Path, quant: Any = None) -> None:
        super().prepare(model, precision, workdir, quant)
        self.model = torch.compile(self.model, dynamic=False)
        self.runtime_config += "; torch.compile(dynamic=False) inductor default mode"

    def decoder(self, model: Any, prompt_len: int, new_tokens: int) -> Any:
        from archbench.bench.measure.decode import make_decoder

        return make_decoder(self.model, self.device, capacity=prompt_len + new_tokens - 1, compile_step=True)
