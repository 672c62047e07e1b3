"""How far a variant's outputs are from the fp32 PyTorch model's, on the same inputs. Pure functions over numpy.

    fid = compare(refs, gots)   # refs[i], gots[i]: the output arrays of input set i (reference, variant)

Definitions (every input set and every output of the model counts):

- ``top1_agree``: fraction of rows whose argmax over the last dim matches the reference's, pooled over the
  input sets. Computed on the model's first output when it looks like logits: shape (B, C) for classifiers,
  (B, N, V) for language models (a "row" is then one token), with C, V >= 2. Meaningful for classifiers and LMs;
  for other outputs it is None. ``top1_rows`` says how many rows it rests on (its resolution is 1 / rows).
- ``cosine``: cosine similarity of the flattened outputs of one input set; the *minimum* over input sets
  (the worst set, so one bad input is not averaged away).
- ``sqnr_db``: signal-to-quantization-noise ratio, 10 log10(sum ref^2 / sum (ref - got)^2), pooled over sets and
  outputs; +inf when the outputs are identical. Every 6 dB is about one bit: int8 done well lands near 30-40 dB.
- ``max_abs_err``: max |ref - got| over everything.

Non-finite outputs (an fp16 overflow) give cosine NaN, sqnr -inf and max_abs_err inf: a budget then FAILs.

A task metric (accuracy on real data) is what really matters, and only the user can compute it; the run command's
``--metric-hook pkg.mod:fn`` is called as ``fn(predict, ctx) -> float`` (see ``archbench.bench.measure.hooks``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fidelity:
    sets: int  # input sets compared
    top1_agree: float | None
    top1_rows: int | None
    cosine: float
    sqnr_db: float
    max_abs_err: float


def _pair(r: np.ndarray, g: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(r, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if r.shape != g.shape:
        raise ValueError(f"{where}: output shape {g.shape} differs from the reference's {r.shape}")
    return r, g


def is_logits(shape: tuple[int, ...]) -> bool:
    """(B, C) classifier logits or (B, N, V) language-model logits, with at least two classes."""
    return len(shape) in (2, 3) and shape[-1] >= 2


def argmax_matches(ref: np.ndarray, got: np.ndarray) -> tuple[int, int]:
    """(rows whose argmax over the last dim agree, rows) for logits of shape (..., C)."""
    r, g = _pair(ref, got, "argmax_matches")
    a, b = r.argmax(axis=-1), g.argmax(axis=-1)
    return int((a == b).sum()), int(a.size)


def cosine_similarity(ref: np.ndarray, got: np.ndarray) -> float:
    """cos(angle) between the flattened arrays; 1.0 when both are all zeros, 0.0 when only one is."""
    r, g = _pair(ref, got, "cosine_similarity")
    r, g = r.ravel(), g.ravel()
    if not np.all(np.isfinite(g)):
        return math.nan
    nr, ng = float(np.linalg.norm(r)), float(np.linalg.norm(g))
    if nr == 0.0 or ng == 0.0:
        return 1.0 if nr == ng else 0.0
    return float(np.dot(r, g) / (nr * ng))


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """10 log10(signal / noise): +inf for zero noise, -inf for non-finite noise or a zero signal with noise."""
    if not math.isfinite(noise_energy):
        return -math.inf
    if noise_energy == 0.0:
        return math.inf
    if signal_energy == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy)


def compare(refs: Sequence[Sequence[np.ndarray]], gots: Sequence[Sequence[np.ndarray]]) -> Fidelity:
    """Fidelity of ``gots`` against ``refs``: one list of output arrays per input set, same order and shapes."""
    if len(refs) != len(gots):
        raise ValueError(f"{len(gots)} output sets to compare against {len(refs)} references")
    if not refs:
        raise ValueError("compare() needs at least one input set")
    matches = rows = 0
    top1 = True
    sig = noise = 0.0
    worst_cos = math.inf
    max_err = 0.0
    for i, (ref, got) in enumerate(zip(refs, gots, strict=True)):
        if len(ref) != len(got):
            raise ValueError(f"input set {i}: {len(got)} outputs, reference has {len(ref)}")
        if not ref:
            raise ValueError(f"input set {i}: the model returned no tensors")
        pairs = [_pair(r, g, f"input set {i}, output {j}") for j, (r, g) in enumerate(zip(ref, got, strict=True))]
        if top1 and is_logits(pairs[0][0].shape):
            m, n = argmax_matches(*pairs[0])
            matches, rows = matches + m, rows + n
        else:
            top1 = False
        flat_r = np.concatenate([r.ravel() for r, _ in pairs])
        flat_g = np.concatenate([g.ravel() for _, g in pairs])
        c = cosine_similarity(flat_r, flat_g)
        worst_cos = c if math.isnan(c) or math.isnan(worst_cos) else min(worst_cos, c)
        d = flat_r - flat_g
        sig += float(np.dot(flat_r, flat_r))
        noise += float(np.dot(d, d)) if np.all(np.isfinite(d)) else math.inf
        if d.size:
            max_err = max(max_err, float(np.max(np.abs(d))) if np.all(np.isfinite(d)) else math.inf)
    return Fidelity(
        sets=len(refs),
        top1_agree=matches / rows if top1 and rows else None,
        top1_rows=rows if top1 and rows else None,
        cosine=worst_cos,
        sqnr_db=sqnr_db(sig, noise),
        max_abs_err=max_err,
    )
