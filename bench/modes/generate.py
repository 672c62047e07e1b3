"""Language models as they are deployed (``archbench run --mode generate``): prefill, then one token at a time.

**A timed generation** = from a fixed random prompt (measure.inputs.prompt_tokens: the model's example input, B x P
token ids), one prefill step over the prompt from an empty KV cache, the argmax of its last logits (the first new
token), then ``new_tokens - 1`` decode steps, each feeding the last token and taking the argmax (greedy; the last
token is never fed back). Each step is timed on its own (perf_counter; CUDA synchronized).

- ``ttft_ms`` (time to first token) = the prefill step + its argmax: one sample per generation.
- ``tpot_ms`` (time per output token) = one decode step + its argmax: the record's ``latency_*`` (samples_ms holds
  every decode step of every timed generation). The first generated token is TTFT's, so it is not in TPOT.
- ``tokens_per_s`` = batch x decoded tokens / decode time = batch / mean decode step (``throughput_sps``).
- ``e2e_ms`` = one whole generation: TTFT + every decode step.
- ``kv_cache_mib`` (analytic) = 2 (k and v) x layers x kv_heads x head_dim x (P + new_tokens) x batch x bytes per
  element of the cache; ``kv_rss_growth_mib`` (measured) = the worker's peak resident memory during one
  generation minus its resident memory right before that generation's prefill (the cache, the logits and the
  activations of the steps, plus allocator slack; 0 when freed memory is reused).
- ``macs`` / ``flops`` = one decode step at this batch at the mean cache length, ``prefill_macs`` the prefill
  (measure.decode.generation_counts).
- ``decode_bytes`` = what one decode step must read: the weights (the loaded artefact's size, less the embedding
  table's share: a step gathers B rows of it, not the table) + the KV cache at the mean cache length
  (2 x layers x kv_heads x head_dim x (P + N/2 - 1) x batch x bytes); ``decode_gbps`` = decode_bytes / TPOT p50.
  Decoding at small batch is memory-bound: compare it with the machine's copy bandwidth (machine.peaks).
- ``top1_agree`` = the fraction of generated tokens equal to the fp32 PyTorch eager model's greedy tokens from the
  same prompt (once two greedy runs diverge they rarely meet again, so 1.0 or a clear drop).

**Repetitions**: each worker process runs warm-up generations (at least one, and ``warmup_s``; the first, cold, is
``first_inference_ms`` end to end, compilation included for torch-compile), then timed generations until at least
``MIN_GENERATIONS`` generations, ``min_iters`` decode steps and ``min_time_s`` seconds (or ``max_time_s``). TTFT's
per-repetition median and p95 and TPOT's per-repetition statistics are combined over repetitions like every
latency (analyze.combine). Memory and token agreement come from the first repetition.

This module imports neither torch nor a runtime: ONNX Runtime workers run it torch-free. The torch side (which
models can generate, the decode-step export, MAC counts, reference tokens) is measure.decode.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from archbench.bench.analyze.stats import fill_latency
from archbench.bench.cell import Cell, Job
from archbench.bench.measure.files import read_json
from archbench.bench.measure.harness import (  # noqa: F401
    MIN_GENERATIONS,
    Decoder,
    Generation,
    GenTiming,
    generate_once,
    time_generations,
)
from archbench.bench.measure.inputs import prompt_tokens
from archbench.bench.measure.prepare import finish
from archbench.bench.measure.protocol import new_record, one_line, prepare_failed
from archbench.bench.modes import ModeBase
from archbench.bench.record import Record

MODE_GENERATE = "generate"
UNSUPPORTED_PRECISIONS = {"int8-static": "int8-static needs calibration caches a decode step would see; "
                                         "--mode generate runs fp32, fp16, bf16 and int8-dynamic"}


def kv_bytes(info: dict[str, Any], context: int, batch: int, itemsize: int) -> int:
    """2 (k and v) x layers x kv_heads x head_dim x context x batch x itemsize (models.llama.kv_cache_bytes)."""
    return 2 * info["layers"] * info["kv_heads"] * info["head_dim"] * context * batch * itemsize


class Generate(ModeBase):
    name: ClassVar[str] = MODE_GENERATE
    cell_modes: ClassVar[tuple[str, ...]] = (MODE_GENERATE,)

    def run_job(self, job: Job, emit: Any) -> None:
        """Load and prepare once, then every batch size of the job."""
        from archbench.bench.measure.runtimes import UnsupportedCell

        try:
            rt, model, dec, info, rss_imports = prepare_decoder(job)
        except Exception as e:
            prepare_failed(e, (UnsupportedCell,), job.cells, job.run_id, emit)
            return
        for cell in job.cells:
            emit("start", batch=cell.batch)
            emit.record(measure_generation(cell, rt, model, dec, info, job, rss_imports))

    def build_artifacts(self, job: Job, emit: Any) -> None:
        """The decode-step graph instead of the forward (measure.decode), then the precision variants."""
        from archbench.bench.measure.decode import build_artifacts
        from archbench.bench.measure.variants import build_variants

        if build_artifacts(job, emit):
            build_variants(job, Path(job.workdir))

    def summary(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        from archbench.bench.report.generate import generation_table

        text = generation_table(records, peaks)
        return text.splitlines() if text else []

    def report_md(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        from archbench.bench.report.generate import generation_md

        return generation_md(records, peaks)

    def plots(self, records: Sequence[Record], out: Path) -> list[Path]:
        from archbench.bench.report.generate import plot_context

        return plot_context(records, out)

    def peaks(self, records: Sequence[Record], known: Sequence[Any]) -> Any:
        """This machine's copy bandwidth at the records' threads (the decode GB/s is read against it), measured
        when ``known`` (the run's peaks.json) lacks it; None when there is nothing to read it against."""
        from archbench.bench.analyze.generation import is_generation
        from archbench.bench.analyze.roofline import peaks_for

        gen = [r for r in records if is_generation(r) and r.ok]
        if not gen:
            return None
        have = peaks_for(gen[0], known)
        if have is not None and have.threads == gen[0].threads:
            return None
        from archbench.bench.machine.peaks import measure_peaks

        print(f"archbench run: measuring this machine's copy bandwidth ({gen[0].device}, {gen[0].threads} threads) "
              "for the decode GB/s ...", file=sys.stderr)
        return measure_peaks(gen[0].device, int(gen[0].threads))


def prepare_decoder(job: Job) -> tuple[Any, Any, Decoder, dict[str, Any], float]:
    """(runtime, model, its decoder, generation facts, RSS after the runtime's imports); UnsupportedCell:
    the job's cells are skipped."""
    from archbench.bench.measure.artifacts import generate_info_path, read_meta
    from archbench.bench.measure.prepare import prepare
    from archbench.bench.measure.runtimes import UnsupportedCell, get_runtime

    head = job.head
    if head.options.generate.new_tokens < 2:
        raise UnsupportedCell("--mode generate needs --new-tokens >= 2 (TPOT is over the tokens after the first)")
    cls = get_runtime(head.runtime)
    if head.precision in UNSUPPORTED_PRECISIONS:
        raise UnsupportedCell(UNSUPPORTED_PRECISIONS[head.precision])
    cls.check(head.precision, head.device)
    if not cls.generates:
        raise UnsupportedCell(f"{cls.name} cannot generate here (no decode-step path); "
                              "--mode generate runs on torch, torch-compile and onnxruntime")
    info: dict[str, Any] = {}

    def load(cell: Cell, workdir: Path, cells: tuple[Cell, ...]) -> Any:
        if cls.needs_torch:
            from archbench.bench.measure.decode import torch_model

            model, facts = torch_model(cell, workdir, cells)
        else:
            from archbench.bench.measure.model import Exported

            meta = read_meta(workdir)
            if meta.get("skip"):
                raise UnsupportedCell(meta["skip"])
            model = Exported(cell, workdir)
            facts = read_json(generate_info_path(workdir, cell.options.generate.new_tokens))
        info.update(facts)
        return model

    p = prepare(job, load=load)
    dec = p.runtime.decoder(p.model, int(p.model.specs[0].shape[1]), head.options.generate.new_tokens)
    return p.runtime, p.model, dec, info, p.rss_imports_mib


def measure_generation(cell: Cell, rt: Any, model: Any, dec: Decoder, info: dict[str, Any], job: Job,
                       rss_imports: float) -> Record:
    """One cell: timing, and in the first repetition memory and token agreement. Never raises."""
    from archbench.bench.measure.harness import cpu_snapshot, other_cpu_pct

    b, n = cell.batch, cell.options.generate.new_tokens
    spec = model.specs[0].with_batch(b)
    p = int(spec.shape[1])
    rec = new_record(cell, job.run_id, family=model.family, input_shape="x".join(map(str, spec.shape)),
                     input_dtype=spec.dtype, params=info.get("params"), size_mib=rt.size_bytes / 2**20,
                     load_ms=rt.load_ms, quant_method=rt.quant_method, runtime_version=type(rt).version(),
                     runtime_threads=rt.runtime_threads, runtime_config=rt.runtime_config,
                     rss_imports_mib=round(rss_imports, 2), prompt_len=p, new_tokens=n)
    try:
        if info.get("decode_macs") is not None:
            rec.macs, rec.prefill_macs = info["decode_macs"] * b, info["prefill_macs"] * b
            rec.flops = 2 * rec.macs
        elif info.get("mac_error"):
            rec.warning = f"MACs not counted: {info['mac_error']}"
        rec.kv_cache_mib = kv_bytes(info, p + n, b, dec.kv_itemsize) / 2**20
        prompt = dec.convert(prompt_tokens(model.specs[0], b))
        before = cpu_snapshot()
        t = time_generations(dec, prompt, n, job.rule)
        fill_latency(rec, t.step_ms, first_ms=t.first_ms, warmup_iters=t.warmup, measure_s=t.measure_s,
                         other_cpu_pct=other_cpu_pct(before, cpu_snapshot()), flops_per_call=rec.flops,
                         min_time_hint="--min-time or more --new-tokens")
        rec.repetitions, rec.rep_rounds = 1, [job.repetition]
        ttft, e2e = np.asarray(t.ttft_ms), np.asarray([g.e2e_ms for g in t.timed])
        rec.ttft_ms, rec.ttft_p95_ms = float(np.percentile(ttft, 50)), float(np.percentile(ttft, 95))
        rec.e2e_ms = float(np.median(e2e))
        rec.rep_ttft_ms, rec.rep_ttft_p95_ms, rec.rep_e2e_ms = [rec.ttft_ms], [rec.ttft_p95_ms], [rec.e2e_ms]
        rec.ttft_samples_ms = [round(x, 6) for x in t.ttft_ms]
        weights = rt.size_bytes * (1 - info.get("embed_params", 0) / max(1, info.get("params") or 1))
        rec.decode_bytes = int(weights + kv_bytes(info, info["mean_past"], b, dec.kv_itemsize))
        rec.decode_gbps = rec.decode_bytes / (rec.latency_p50_ms * 1e-3) / 1e9
        if job.repetition == 0:  # memory and tokens do not vary between processes
            _memory_and_tokens(rec, dec, prompt, cell, Path(job.workdir), rss_imports)
    except Exception as e:
        print(traceback.format_exc(), file=sys.stderr)
        rec.status, rec.error = "failed", one_line(e)
    return finish(rec, rt)


def _memory_and_tokens(rec: Record, dec: Decoder, prompt: Any, cell: Cell, workdir: Path,
                       rss_imports: float) -> None:
    """One more generation with the peak-RSS mark reset: the growth over it, and its tokens against the fp32
    reference's (the torch fp32 cell is that reference: nothing to compare)."""
    from archbench.bench.measure.artifacts import generate_refs_path
    from archbench.bench.measure.harness import current_rss_mib, peak_rss_mib, reset_peak_rss, trim_heap

    trim_heap()
    reset_peak_rss()
    start = current_rss_mib()
    got = generate_once(dec, prompt, cell.options.generate.new_tokens).tokens
    rec.peak_rss_mib = round(peak_rss_mib(), 2)
    rec.kv_rss_growth_mib = round(max(0.0, rec.peak_rss_mib - start), 3)
    rec.rss_model_mib = round(rec.peak_rss_mib - rss_imports, 2)
    if cell.runtime == "torch" and cell.precision == "fp32":
        return
    ref_path = generate_refs_path(workdir, cell.batch, cell.options.generate.new_tokens)
    if ref_path.exists():
        ref = np.load(ref_path)
        if ref.shape == got.shape:
            rec.top1_agree, rec.top1_rows = float(np.mean(ref == got)), int(ref.size)
