"""Mode ``train``: training steps (``archbench run --mode train``) and the trials of ``--find-max-batch``.

What a step is, how memory splits and what the cap means: measure.train_step. A job is one (model, runtime,
precision, device): the model is built in the measuring worker (no artefacts: nothing is exported), one batch size
per cell. Cells of mode ``maxbatch-trial`` run the memory pass only (modes.maxbatch drives the search). The
end-of-run table is inference's (latency = one step); the report's training section is report.train's.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, ClassVar

from archbench.bench.analyze.stats import fill_latency
from archbench.bench.modes import ModeBase
from archbench.bench.record import Record


class Train(ModeBase):
    name: ClassVar[str] = "train"
    cell_modes: ClassVar[tuple[str, ...]] = ("train", "maxbatch-trial")
    artifacts: ClassVar[bool] = False  # the model is built in the measuring worker

    def run_job(self, job: Any, emit: Any) -> None:
        """The worker's training path: one job (model, runtime, precision, device), each batch a cell.

        The cells' ``mode`` is ``train`` (timed cells) or ``maxbatch-trial`` (memory pass only, one batch); their
        options hold optimizer, mem_cap_mib, train_samples."""
        import torch

        from archbench.bench.measure.harness import (
            cpu_snapshot,
            current_rss_mib,
            measure,
            other_cpu_pct,
            trim_heap,
        )
        from archbench.bench.measure.profile import count_macs, count_params
        from archbench.bench.measure.protocol import new_record as _new_record
        from archbench.bench.measure.protocol import one_line as _one_line
        from archbench.bench.measure.protocol import prepare_failed
        from archbench.bench.measure.sources import build_source
        from archbench.bench.measure.train_step import (
            MODE_TRAIN,
            MODE_TRIAL,
            MemoryCapExceeded,
            RssWatchdog,
            TrainStep,
            TrainUnsupported,
            compute_loss,
            first_tensor,
            is_cuda_oom,
            memory_pass,
            set_tensors,
            tensor_mib,
            time_to_train_s,
        )

        head = job.head
        opts = head.options
        mode = head.mode or MODE_TRAIN
        trial = mode == MODE_TRIAL
        threads = head.threads
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        device, runtime, precision = head.device, head.runtime, head.precision
        cuda = device == "cuda"
        cap = opts.train.mem_cap_mib
        optimizer = opts.train.optimizer or "adamw"
        train_samples = opts.train.train_samples
        rule = job.rule
        by_batch = {c.batch: c for c in job.cells}

        def new_record(batch: int, **kw: Any) -> Any:
            rec = _new_record(by_batch.get(batch, head.with_batch(batch)), job.run_id, **kw)
            rec.optimizer, rec.mem_cap_mib, rec.train_samples = optimizer, cap, train_samples
            return rec

        def resolved() -> Any:
            return build_source(head)[0]

        batches: list[int] = [c.batch for c in job.cells]
        counts: dict[str, Any] = {}
        try:
            from archbench.bench.measure.runtimes import get_runtime, runtime_names

            rt_cls = get_runtime(runtime)
            if not rt_cls.trains:
                trainers = [n for n in runtime_names() if get_runtime(n).trains]
                raise TrainUnsupported(f"runtime {runtime} does not train; use {' or '.join(trainers)}")
            if cuda and not torch.cuda.is_available():
                raise TrainUnsupported("no CUDA device")
            # A throwaway copy first: static counts, and one batch-1 forward + backward so that lazily initialised
            # library state lands in the baseline, not in the activation estimate.
            probe = resolved()
            if probe.module is None:
                raise TrainUnsupported("an ONNX graph cannot be trained here; give a PyTorch model")
            counts["params"] = count_params(probe.module)[0]
            if not trial:
                try:
                    counts["macs"] = count_macs(probe.module, probe.example_inputs(batch=1))
                except Exception as e:  # a model fvcore cannot trace still gets timed
                    print(f"MAC count failed: {_one_line(e)}", file=sys.stderr)
            warm = TrainStep(probe.module, probe.input_spec, optimizer, "fp32", "cpu")
            warm.model.zero_grad(set_to_none=True)
            x, y = warm.make_batch(1)
            compute_loss(warm.loss_kind, first_tensor(warm.model(*x)), x, y).backward()
            del warm, probe, x, y
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                baseline = torch.cuda.memory_allocated() / 2**20
                if cap:
                    total = torch.cuda.get_device_properties(0).total_memory / 2**20
                    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
            else:
                trim_heap()
                baseline = current_rss_mib()
            t = time.perf_counter()
            src = resolved()
            ts = TrainStep(src.module, src.input_spec, optimizer, precision, device, compile=rt_cls.compiles)
            load_ms = (time.perf_counter() - t) * 1e3
        except Exception as e:
            prepare_failed(e, (TrainUnsupported,), job.cells, job.run_id, emit)
            return

        for b in batches:
            emit("start", batch=b)
            spec = src.input_spec.with_batch(b)
            rec = new_record(
                b, family=src.family, input_shape="x".join(map(str, spec.shape)),
                input_dtype=str(spec.dtype).removeprefix("torch."), params=counts.get("params"), load_ms=load_ms,
                loss_fn=ts.loss_kind, train_mem_baseline_mib=baseline,
            )
            if counts.get("macs") is not None:
                rec.macs = counts["macs"] * b  # of one forward at this batch, as for inference
                rec.flops = 2 * rec.macs
            sets: list[Any] = []
            watchdog = RssWatchdog(cap) if cap and not cuda else None
            try:
                with watchdog or contextlib.nullcontext():
                    sets = [ts.make_batch(b, seed=s) for s in range(1 if trial else opts.input_sets)]
                    if watchdog:  # the extra rotated input sets are the harness's, not the step's: allow for them
                        watchdog.cap_mib = cap + (len(sets) - 1) * tensor_mib(set_tensors(sets[0]))
                    if not trial:
                        before = cpu_snapshot()
                        timing = measure(ts, sets, rule, cuda=cuda)
                        # A step's work ~ 3 forwards (backward: grads w.r.t. activations and w.r.t. weights, each
                        # ~ the forward's MACs): achieved GFLOP/s = 3 x forward FLOPs / p50 step seconds. The first
                        # step (first_inference_ms) includes compilation.
                        fill_latency(rec, timing.samples_ms, first_ms=timing.first_ms, warmup_iters=timing.warmup_iters,
                                         measure_s=timing.measure_s, other_cpu_pct=other_cpu_pct(before, cpu_snapshot()),
                                         flops_per_call=3 * rec.flops if rec.flops else None)
                        if train_samples:
                            rec.time_to_train_s = time_to_train_s(int(train_samples), rec.throughput_sps)
                    del sets[1:]
                    if watchdog:
                        trim_heap()
                        watchdog.cap_mib = cap
                    mem = memory_pass(ts, sets[0], baseline)
                rec.train_peak_mem_mib = mem.peak_mib
                rec.param_mib, rec.grad_mib = mem.param_mib, mem.grad_mib
                rec.optimizer_state_mib, rec.activation_mib = mem.optimizer_state_mib, mem.activation_mib
                rec.activation_mib_per_sample = mem.activation_mib / b
                if cuda:
                    rec.cuda_max_allocated_mib = mem.peak_mib
                    rec.cuda_max_reserved_mib = torch.cuda.max_memory_reserved() / 2**20
                else:
                    rec.peak_rss_mib = mem.peak_mib
                if cap and not cuda and mem.peak_mib > cap:
                    raise MemoryCapExceeded()
            except MemoryCapExceeded:
                rec.status = "failed"
                if rec.train_peak_mem_mib is not None:
                    rec.error = (f"out of memory: peak RSS {rec.train_peak_mem_mib:.1f} MiB > --mem-cap-mib {cap:g} "
                                 f"(baseline {baseline:.1f} MiB)")
                else:
                    seen = watchdog.fired_mib if watchdog and watchdog.fired_mib else float("nan")
                    rec.train_peak_mem_mib = seen
                    rec.error = (f"out of memory: RSS reached {seen:.1f} MiB > --mem-cap-mib {cap:g} mid-step "
                                 f"(baseline {baseline:.1f} MiB)")
            except Exception as e:
                print(traceback.format_exc(), file=sys.stderr)
                rec.status = "failed"
                rec.error = ("out of memory: " if cuda and is_cuda_oom(e) else "") + _one_line(e)
            finally:
                sets.clear()
                ts.release()
                if cuda:
                    torch.cuda.empty_cache()
            emit.record(rec)

    def summary(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        from tabulate import tabulate

        from archbench.bench.report.tables import TABLE_COLS, table_rows

        own = [r for r in self.own(records) if r.mode == "train"]  # max-batch trials: in the report
        if not own:
            return []
        return tabulate(table_rows(own), headers=TABLE_COLS, tablefmt="simple", disable_numparse=True).splitlines()

    def report_md(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        from archbench.bench.report.train import training_md

        return training_md(records)
