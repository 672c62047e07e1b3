"""Roofline: the machine's measured peaks, where each model lands under them, and which layers are memory-bound.

Peaks are *measured on this machine*, not taken from a datasheet (a laptop's turbo, a cloud VM's share of a
socket and the thread count all move them):

- peak FLOP/s = 2 n^3 / t, best of a few n x n fp32 matmuls (torch.mm), at the records' thread count;
- peak bytes/s = 2 N / t, best of a few copies of an N-byte fp32 tensor (reads N, writes N), N far larger than
  any cache, so it is DRAM (or HBM) bandwidth.

The ridge point ridge = peak FLOP/s / peak bytes/s (FLOP per byte) splits memory-bound from compute-bound work:
attainable FLOP/s at arithmetic intensity I is min(peak FLOP/s, I x peak bytes/s) (Williams, Waterman & Patterson,
"Roofline", CACM 2009).

Each measured cell is placed at

- achieved FLOP/s = FLOPs of one forward / p50 latency (FLOPs = 2 x MACs, see bench/profile.py), and
- arithmetic intensity = FLOPs / bytes, where **bytes per forward is an estimate**: weights (the size of the
  artefact the runtime loaded, ``size_mib``) + the input tensor + the output tensors, each moved once.
  Intermediate activations are not counted (they often stay in cache), so the true traffic is higher and the
  true intensity lower. When the weights fit in the CPU's caches they are not re-read from DRAM on every call,
  so a small model can sit *above* the bandwidth roof: that is the cache at work, not a measurement error.

Layer classification (``classify_layers``) applies the same estimate per module of a Profile: a module's own
MACs (its MACs minus its children's) over its own weights + its input and output activations, at batch 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from archbench.bench.record import Record

PEAKS_FILE = "peaks.json"


@dataclass(frozen=True)
class Peaks:
    """Measured peaks (machine.peaks.measure_peaks) of one device at one thread count and matmul dtype (fields as cached in peaks.json)."""

    device: str  # cpu | cuda
    threads: int  # torch intra-op threads during the measurement
    flops_per_s: float  # best 2 n^3 / t of an (n, n) @ (n, n) matmul in ``dtype``
    bytes_per_s: float  # best 2 B / t of a B-byte copy (read + write)
    matmul_n: int
    copy_mib: float  # B / 2^20
    hostname: str = ""
    cpu_model: str = ""
    gpu_name: str = ""
    measured_at: str = ""
    dtype: str = "fp32"  # of the matmul (fp32 | fp16 | bf16); peaks.json files from before this field are fp32

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the bandwidth roof meets the compute roof."""
        return self.flops_per_s / self.bytes_per_s

    def roof(self, intensity: float) -> float:
        """Attainable FLOP/s at ``intensity`` FLOP/byte: min(peak FLOP/s, I x peak bytes/s) (Williams et al. 2009)."""
        return min(self.flops_per_s, intensity * self.bytes_per_s)

# Bytes per element of the dtype names records carry (Record.input_dtype is torch's name without "torch.").
_ITEMSIZE = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8, "double": 8,
             "int64": 8, "long": 8, "int32": 4, "int": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


# ----------------------------------------------------------------------------------------------------- peaks.json


def load_peaks(path: Path) -> list[Peaks]:
    """Peaks cached in a peaks.json (a list of Peaks objects); [] when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return [Peaks(**d) for d in data.get("peaks", [])]
    except (OSError, ValueError, TypeError):
        return []


def save_peaks(path: Path, peaks: Iterable[Peaks]) -> None:
    """Write peaks to ``path``, replacing any earlier entry for the same machine, device and threads."""
    merged: dict[tuple, Peaks] = {}
    for p in [*load_peaks(path), *peaks]:
        merged[(p.hostname, p.cpu_model, p.gpu_name, p.device, p.threads)] = p
    doc = {"about": "measured peaks of archbench.bench.analyze.roofline.measure_peaks: fp32 matmul FLOP/s and copy bytes/s",
           "peaks": [asdict(p) for p in merged.values()]}
    from archbench.bench.atomic import atomic_write

    atomic_write(path, json.dumps(doc, indent=2) + "\n")


def peaks_for(record: Record, peaks: Sequence[Peaks]) -> Peaks | None:
    """The peaks measured on the record's machine and device, preferring the record's thread count."""
    device = record.device
    same = [p for p in peaks if p.device == device and p.hostname == record.hostname
            and p.cpu_model == record.cpu_model and (device != "cuda" or p.gpu_name == record.gpu_name)]
    exact = [p for p in same if p.threads == record.threads]
    return (exact or same or [None])[-1]


def is_this_machine(record: Record) -> bool:
    from archbench.bench.env import environment

    env = environment()
    return record.hostname == env["hostname"] and record.cpu_model == env["cpu_model"]


# ----------------------------------------------------------------------------------------------------- placement


def input_bytes(record: Record) -> int | None:
    """Bytes of the input tensor, from Record.input_shape ('8x3x64x64') and input_dtype."""
    shape, dtype = record.input_shape or "", record.input_dtype or "float32"
    try:
        numel = math.prod(int(d) for d in str(shape).split("x"))
    except ValueError:
        return None
    return numel * _ITEMSIZE.get(str(dtype), 4)


@dataclass(frozen=True)
class Placement:
    """Where one measured cell sits on its device's roofline."""

    model: str
    runtime: str
    precision: str
    batch: int
    device: str
    machine: str  # archbench.bench.env.fingerprint of the record
    flops: int  # per forward at this batch
    weight_bytes: int
    input_bytes: int
    output_bytes: int | None  # None: unknown, left out of the estimate
    achieved_flops_per_s: float  # flops / p50
    roof_flops_per_s: float | None  # attainable at this intensity; None without peaks
    bound: str  # memory | compute | ? (no peaks)

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.input_bytes + (self.output_bytes or 0)

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else math.inf

    @property
    def of_roof(self) -> float | None:
        return self.achieved_flops_per_s / self.roof_flops_per_s if self.roof_flops_per_s else None


def place(records: Iterable[Record], peaks: Sequence[Peaks] = (),
          outputs: Callable[[Record], int | None] | None = None) -> list[Placement]:
    """Roofline placements of the ok inference records that have FLOPs, a p50 and a size (a training step's
    FLOPs are not the forward's, so mode train is left out), and of generate records' decode step (``model
    decode``: its FLOPs over its ``decode_bytes``, weights less the embedding table + the KV cache it reads).
    ``outputs(record)``: the bytes of one forward's outputs (records do not carry them; measure.profile.output_bytes
    reads a zoo model's from a meta-device forward); None or its None: left out of the estimate."""
    from archbench.bench.analyze.generation import is_generation
    from archbench.bench.env import fingerprint

    out = []
    for r in records:
        # A generate record is placed as one decode step: its FLOPs, and the bytes it reads (modes.generate).
        decode = is_generation(r) and bool(r.decode_bytes)
        if not r.ok or not r.flops or not r.latency_p50_ms or r.size_mib is None or \
                ((r.mode or "infer") != "infer" and not decode):
            continue
        p = peaks_for(r, peaks)
        pl = Placement(
            model=r.model + (f" decode (prompt {r.prompt_len})" if decode else ""), runtime=r.runtime, precision=r.precision,
            batch=int(r.batch or 1), device=r.device, machine=fingerprint(r), flops=int(r.flops),
            weight_bytes=int(r.decode_bytes) if decode else int(float(r.size_mib) * 2**20),
            input_bytes=0 if decode else input_bytes(r) or 0, output_bytes=0 if decode else (outputs(r) if outputs else None),
            achieved_flops_per_s=r.flops / (r.latency_p50_ms * 1e-3),  # FLOPs per forward / p50 seconds
            roof_flops_per_s=None, bound="?",
        )
        if p is not None:
            ai = pl.intensity
            pl = replace(pl, roof_flops_per_s=p.roof(ai), bound="memory" if ai < p.ridge else "compute")
        out.append(pl)
    return out


# ----------------------------------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerBound:
    module: str
    type: str
    macs: int  # the module's own MACs (children's excluded), batch 1
    weight_bytes: int  # its own parameters and buffers
    activation_bytes: int  # its input + output tensors
    intensity: float  # 2 x macs / (weight_bytes + activation_bytes), FLOP/byte
    bound: str  # memory | compute

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


def classify_layers(profile: Any, bytes_by_module: dict[str, tuple[int, int]], ridge: float) -> list[LayerBound]:
    """Modules of ``profile`` (a archbench.bench.measure.profile.Profile) that do MACs of their own, classified against ``ridge``
    (FLOP/byte): memory-bound when 2 x own MACs / (own weights + input + output bytes) < ridge. Largest first."""
    rows = {r.module: r for r in profile.by_module}
    child_macs: dict[str, int] = {}
    for name, r in rows.items():
        if name:
            parent = name.rpartition(".")[0]
            child_macs[parent] = child_macs.get(parent, 0) + r.macs
    out = []
    for name, r in rows.items():
        own = r.macs - child_macs.get(name, 0)
        if own <= 0:
            continue
        w, a = bytes_by_module.get(name, (0, 0))
        ai = 2 * own / (w + a) if w + a else math.inf
        out.append(LayerBound(name or "(model)", r.type, own, w, a, ai, "memory" if ai < ridge else "compute"))
    return sorted(out, key=lambda lb: -lb.macs)
