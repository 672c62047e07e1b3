"""Generation records (``archbench run --mode generate``, archbench.bench.modes.generate) as rows and series for
the report: pure functions of Records returning frozen dataclasses.

    rows = generation_rows(records, copy_gbps=lambda r: 21.4)   # one row per generate record
    series = context_series(records)                            # TPOT and KV cache against context, per cell

Numbers are read as recorded (the worker's definitions, combined over repetitions by analyze.combine); the only
thing computed here is the decode bandwidth as a share of the machine's measured copy bandwidth, which the caller
supplies (archbench.bench.machine.peaks, through report.roofline.peaks_for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archbench.bench.cell import knobs_text
from archbench.bench.record import Record

MODE_GENERATE = "generate"  # archbench.bench.modes.generate.MODE_GENERATE (that module is the worker's)


def is_generation(r: Record) -> bool:
    return (r.mode or "infer") == MODE_GENERATE


@dataclass(frozen=True)
class GenerationRow:
    """One generate record, as the report's generation table shows it."""

    model: str
    knobs: str
    runtime: str
    precision: str
    batch: int
    prompt_len: int | None
    new_tokens: int | None
    status: str
    error: str
    repetitions: int | None
    ttft_ms: float | None
    ttft_lo_ms: float | None
    ttft_hi_ms: float | None
    ttft_p95_ms: float | None
    tpot_ms: float | None  # latency_p50_ms: one decode step
    tpot_lo_ms: float | None
    tpot_hi_ms: float | None
    tpot_p95_ms: float | None
    tokens_per_s: float | None
    e2e_ms: float | None
    kv_cache_mib: float | None
    kv_rss_growth_mib: float | None
    decode_gbps: float | None
    copy_gbps: float | None  # the machine's measured copy bandwidth at these threads, when known
    top1_agree: float | None

    @property
    def of_copy(self) -> float | None:
        """decode_gbps / copy_gbps: how close decoding runs to the memory bandwidth this machine showed."""
        if self.decode_gbps is None or not self.copy_gbps:
            return None
        return self.decode_gbps / self.copy_gbps


def generation_rows(records: Sequence[Record],
                    copy_gbps: Callable[[Record], float | None] | None = None) -> list[GenerationRow]:
    """A row per generate record, in the records' order; ``copy_gbps(record)`` the machine's copy GB/s."""
    rows = []
    for r in records:
        if not is_generation(r):
            continue
        rows.append(GenerationRow(
            model=r.model, knobs=r.knobs or "", runtime=r.runtime, precision=r.precision, batch=int(r.batch),
            prompt_len=r.prompt_len, new_tokens=r.new_tokens, status=r.status, error=r.error or "",
            repetitions=r.repetitions, ttft_ms=r.ttft_ms, ttft_lo_ms=r.ttft_lo_ms, ttft_hi_ms=r.ttft_hi_ms,
            ttft_p95_ms=r.ttft_p95_ms, tpot_ms=r.latency_p50_ms, tpot_lo_ms=r.latency_p50_lo_ms,
            tpot_hi_ms=r.latency_p50_hi_ms, tpot_p95_ms=r.latency_p95_ms, tokens_per_s=r.throughput_sps,
            e2e_ms=r.e2e_ms, kv_cache_mib=r.kv_cache_mib, kv_rss_growth_mib=r.kv_rss_growth_mib,
            decode_gbps=r.decode_gbps, copy_gbps=copy_gbps(r) if copy_gbps and r.ok else None,
            top1_agree=r.top1_agree,
        ))
    return rows


@dataclass(frozen=True)
class ContextPoint:
    context: int  # prompt + new tokens
    prompt_len: int
    tpot_ms: float
    tpot_lo_ms: float | None
    tpot_hi_ms: float | None
    ttft_ms: float | None
    kv_cache_mib: float | None
    kv_rss_growth_mib: float | None


@dataclass(frozen=True)
class ContextSeries:
    """One cell measured at several prompt lengths (same model, knobs but seq_len, runtime, precision, batch,
    new tokens): what the TPOT and KV-cache plots draw."""

    label: str  # "llama_s torch fp32 b1"
    model: str  # "llama_s fp32 b1" (knobs but seq_len): its analytic KV cache is the same on every runtime
    points: tuple[ContextPoint, ...]  # by context


def _base_knobs(knobs: str) -> str:
    """The knobs without seq_len (the prompt length of a generate record): what a context series shares."""
    import json

    try:
        d = json.loads(knobs or "{}")
    except ValueError:
        return knobs
    d.pop("seq_len", None)
    return json.dumps(d, sort_keys=True)


def context_series(records: Sequence[Record]) -> list[ContextSeries]:
    """Series of ok generate records that differ only in prompt length, those with two or more lengths."""
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        if is_generation(r) and r.ok and r.prompt_len and r.latency_p50_ms:
            key = (r.model, _base_knobs(r.knobs), r.runtime, r.precision, r.batch, r.new_tokens, r.device)
            groups.setdefault(key, []).append(r)
    out = []
    for (model, knobs, runtime, precision, batch, _n, _d), rs in groups.items():
        by_len = {r.prompt_len: r for r in rs}
        if len(by_len) < 2:
            continue
        pts = tuple(ContextPoint(int(r.prompt_len) + int(r.new_tokens or 0), int(r.prompt_len),
                                 float(r.latency_p50_ms), r.latency_p50_lo_ms, r.latency_p50_hi_ms, r.ttft_ms,
                                 r.kv_cache_mib, r.kv_rss_growth_mib)
                    for r in sorted(by_len.values(), key=lambda r: r.prompt_len))
        k = knobs_text(knobs)
        out.append(ContextSeries(f"{model}{k} {runtime} {precision} b{batch}", f"{model}{k} {precision} b{batch}",
                                 pts))
    return out
