"""``torch.compile`` (inductor, default mode, static shapes) over PyTorch eager (runtimes.torch_eager).

Compilation happens on the first call of each batch size, so it lands in ``first_inference_ms``, not in the timed
loop nor in ``load_ms`` (build + cast, as eager). Precisions, threads and size as eager.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from archbench.bench.measure.runtimes.torch_eager import TorchEager


class TorchCompile(TorchEager):
    name = "torch-compile"
    compiles = True

    def prepare(self, model: Any, precision: str, workdir: Path, quant: Any = None) -> None:
        super().prepare(model, precision, workdir, quant)
        self.model = torch.compile(self.model, dynamic=False)
        self.runtime_config += "; torch.compile(dynamic=False) inductor default mode"
