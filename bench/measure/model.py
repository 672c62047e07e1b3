"""What a runtime prepares: the model as its measuring process holds it.

- ``TorchModel`` (runtimes with ``needs_torch``): the PyTorch module, built in the worker from the cell's source;
  references for fidelity from an fp32 copy kept before the runtime casts or quantizes the module.
- ``Exported`` (every other runtime): the artefact folder the artifacts worker left (measure.artifacts): the ONNX
  file, input specs, counts and fp32 reference outputs. Importing this module does not import torch.

Both give the runtime and the worker the same things: ``specs``, ``inputs(batch, seed)`` (numpy), ``reference(batch,
seed)``, ``family``, ``counts``, ``onnx_path``, and ``module`` (TorchModel only).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from archbench.bench.cell import Cell
from archbench.bench.measure import artifacts
from archbench.bench.measure.inputs import make_inputs


class TorchModel:
    """A PyTorch module built in this process (the torch runtimes)."""

    def __init__(self, cell: Cell, workdir: Path, cells: tuple[Cell, ...] = (), references: bool = True) -> None:
        t = time.perf_counter()
        from archbench.bench.measure.sources import build_source

        self.src, self.specs = build_source(cell)
        self.build_ms = (time.perf_counter() - t) * 1e3
        if self.src.module is None:
            from archbench.bench.measure.runtimes import UnsupportedCell

            raise UnsupportedCell(f"{cell.runtime} runs PyTorch modules; {cell.source} is an ONNX graph "
                                  "(use --runtime onnxruntime or openvino)")
        self.module = self.src.module
        self.family, self.kind, self.exporter = self.src.family, self.src.kind, ""
        self.source, self.knobs = cell.source, cell.knob_dict
        self.onnx_path: Path | None = None
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.counts = artifacts.read_counts(workdir)
        if not self.counts:
            self.counts = artifacts.static_counts(self.src, self.specs)
            artifacts.write_json(workdir / artifacts.COUNTS, self.counts)
        # The fp32 module is the fidelity reference: its outputs are written (or checked) now, before the runtime
        # casts, quantizes or compiles it, so no fp32 copy stays resident while memory is measured. Torch at fp32
        # *is* the reference: nothing to compare.
        # references=False: the caller compares something else (modes.generate: tokens).
        self.has_reference = references and not (cell.runtime == "torch" and cell.precision == "fp32")
        if self.has_reference:
            artifacts.write_refs(self.module, self.specs, workdir, cells or (cell,))
        self._refs: dict[int, dict[int, list[np.ndarray]]] = {}

    def release(self) -> None:
        """Drop this handle's hold on the module (the runtime keeps what it runs): a quantized copy's original
        then no longer counts in the measured memory."""
        self.module = None
        self.src = None

    def inputs(self, batch: int, seed: int) -> tuple[np.ndarray, ...]:
        return make_inputs(self.specs, batch, seed)

    def reference(self, batch: int, seed: int) -> list[np.ndarray] | None:
        if not self.has_reference:
            return None
        if batch not in self._refs:
            self._refs[batch] = artifacts.read_refs(self.workdir, batch)
        return self._refs[batch].get(seed)


class Exported:
    """The artefacts of a model, read without torch (ONNX Runtime, OpenVINO)."""

    def __init__(self, cell: Cell, workdir: Path) -> None:
        meta = artifacts.read_meta(workdir)
        if meta.get("error"):
            raise RuntimeError(f"the model could not be built or exported: {meta['error']}")
        if not meta.get("onnx"):
            raise RuntimeError(f"no ONNX export in {workdir} (the artifacts worker failed: see its log)")
        self.onnx_path = Path(meta["onnx"])
        self.family, self.kind, self.exporter = meta.get("family", ""), meta.get("kind", ""), meta.get("exporter", "")
        self.source, self.knobs = cell.source, cell.knob_dict
        self.specs = artifacts.read_specs(workdir)
        self.counts = artifacts.read_counts(workdir)
        self.module = None
        self.build_ms = 0.0
        self.workdir = workdir
        self._refs: dict[int, dict[int, list[np.ndarray]]] = {}

    def release(self) -> None:
        pass

    def inputs(self, batch: int, seed: int) -> tuple[np.ndarray, ...]:
        return make_inputs(self.specs, batch, seed)

    def reference(self, batch: int, seed: int) -> list[np.ndarray] | None:
        if batch not in self._refs:
            self._refs[batch] = artifacts.read_refs(self.workdir, batch)
        return self._refs[batch].get(seed)
