"""``archbench run --mode generate`` (bench/modes/generate.py): prefill and decode of the zoo's LLaMA through the
CLI on torch and ONNX Runtime, records with TTFT / TPOT / tokens/s / KV cache, ONNX Runtime's greedy tokens equal to
PyTorch's, skipped cells for models and runtimes that cannot generate, budgets, reports and bad values.

One small run (llama_tiny, prompts of 8 and 16 tokens, 4 new tokens, 2 repetitions) is shared by the module; the
rest runs in process. The torch.compile test is marked slow (compiling two graphs takes ~30 s on a 2-vCPU box).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archbench.bench.analyze.stats import fill_latency
from archbench.bench.record import Record, read_records

ARCHBENCH = [sys.executable, "-m", "archbench.bench.cli.main"]
FAST = ["--min-time", "0.02", "--min-iters", "3", "--threads", "1", "--repetitions", "2"]
PROMPTS, NEW = (8, 16), 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("generate") / "run"
    proc = subprocess.run([*ARCHBENCH, "run", "llama_tiny", "--mode", "generate", "--prompt-len",
                           ",".join(map(str, PROMPTS)), "--new-tokens", str(NEW), "--runtime", "torch,onnxruntime",
                           *FAST, "--budget", "ttft_ms<=5000, tpot_ms<=5000", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def _records(out: Path) -> dict[tuple[str, int], Record]:
    return {(r.runtime, r.prompt_len): r for r in read_records(out / "records.jsonl")}


def test_records_carry_ttft_tpot_tokens_per_s_and_kv_cache(run: tuple[Path, subprocess.CompletedProcess]) -> None:
    recs = _records(run[0])
    assert set(recs) == {(rt, p) for rt in ("torch", "onnxruntime") for p in PROMPTS}
    for (rt, p), r in recs.items():
        where = f"{rt} prompt {p}"
        assert r.ok and r.mode == "generate" and json.loads(r.knobs) == {"seq_len": p}, (where, r.error)
        assert r.new_tokens == NEW and r.repetitions == 2, where
        assert len(r.rep_ttft_ms) == 2 and len(r.rep_p50_ms) == 2, where
        assert r.ttft_lo_ms <= r.ttft_ms <= r.ttft_hi_ms and r.ttft_p95_ms >= min(r.ttft_samples_ms), where
        assert r.latency_p50_lo_ms <= r.latency_p50_ms <= r.latency_p50_hi_ms, where  # TPOT
        # every timed decode step is a TPOT sample: (new_tokens - 1) per generation, >= 3 generations a repetition
        assert all(len(s) % (NEW - 1) == 0 and len(s) >= 3 * (NEW - 1) for s in r.samples_by_rep), where
        assert r.throughput_sps == pytest.approx(1000.0 / r.latency_mean_ms), where  # tokens/s at batch 1
        assert r.e2e_ms > r.ttft_ms and r.first_inference_ms > 0, where
        # analytic KV cache: 2 x layers (2) x kv_heads (4) x head_dim (32) x (prompt + new) x batch x 4 bytes
        assert r.kv_cache_mib == 2 * 2 * 4 * 32 * (p + NEW) * 1 * 4 / 2**20, where
        assert r.kv_rss_growth_mib is not None and r.peak_rss_mib > 0, where
        assert r.prefill_macs > r.macs > 0 and r.flops == 2 * r.macs, where
        assert r.decode_bytes > 0 and r.decode_gbps == pytest.approx(r.decode_bytes / r.latency_p50_ms / 1e6), where
    assert recs[("torch", 16)].prefill_macs > recs[("torch", 8)].prefill_macs
    assert recs[("torch", 16)].macs > recs[("torch", 8)].macs  # a decode step attends to a longer cache
    assert recs[("onnxruntime", 8)].input_shape == "1x8"


def test_onnxruntime_tokens_equal_torch_tokens(run: tuple[Path, subprocess.CompletedProcess]) -> None:
    """End to end (the ORT cells' token agreement with fp32 PyTorch) and directly: the exported decode-step graph
    driven by OrtDecoder gives PyTorch's greedy tokens, and logits within 1e-4, at batch 2."""
    import onnxruntime as ort
    import torch

    from archbench.bench.measure.inputs import ArraySpec, prompt_tokens
    from archbench.bench.measure.runtimes.onnx_runtime import OrtDecoder
    from archbench.models import create_model
    from archbench.models.llama import generate

    out = run[0]
    for p in PROMPTS:
        r = _records(out)[("onnxruntime", p)]
        assert r.top1_agree == 1.0 and r.top1_rows == NEW, f"prompt {p}: {r.top1_agree}"
    workdir = out / "artifacts" / "llama_tiny_seq_len_8"
    meta = json.loads((workdir / "source.json").read_text())
    specs = tuple(ArraySpec.from_json(d) for d in json.loads((workdir / "specs.json").read_text()))
    sess = ort.InferenceSession(meta["onnx"], providers=["CPUExecutionProvider"])
    torch.manual_seed(0)  # as every worker builds it (measure.sources.build_source)
    model = create_model("llama_tiny", seq_len=8).eval()
    prompt = prompt_tokens(specs[0], 2)
    dec = OrtDecoder(sess, specs)
    tok = dec.prefill(dec.convert(prompt))
    got = [tok]
    for _ in range(5):
        tok = dec.decode(tok)
        got.append(tok)
    ref = generate(model, torch.from_numpy(prompt), 6)[:, 8:].numpy()
    assert np.array_equal(np.concatenate(got, axis=1), ref)
    with torch.inference_mode():
        logits = model.step(torch.from_numpy(prompt), *model.new_cache(2))[0][:, -1].numpy()
    empty = np.zeros((2, 2, 4, 0, 32), np.float32)
    ort_logits = sess.run(None, {"tokens": prompt, "past_k": empty, "past_v": empty})[0][:, -1]
    assert np.max(np.abs(ort_logits - logits)) < 1e-4


def test_onnxruntime_generation_worker_runs_with_torch_unimportable(
        run: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Deployment-true: the ONNX Runtime worker's whole generation path (decode-step graph, timing, memory, token
    agreement) in a process where importing torch fails."""
    from archbench.bench.cell import Cell, GenerateOptions, Job, Options, StopRule

    cell = Cell("llama_tiny", runtime="onnxruntime", threads=1, knobs='{"seq_len": 8}', mode="generate",
                options=Options(generate=GenerateOptions(new_tokens=NEW)))
    job = Job(cells=(cell,), workdir=str(run[0] / "artifacts" / "llama_tiny_seq_len_8"),
              rule=StopRule(min_iters=3, min_time_s=0.0))
    code = ("import sys; sys.modules['torch'] = None; sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
            "from archbench.bench.modes.worker import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], input=job.to_json(), capture_output=True, text=True,
                          timeout=300)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    rec = Record.from_dict([e for e in events if e["event"] == "record"][-1]["record"])
    assert rec.ok and rec.top1_agree == 1.0 and rec.ttft_ms > 0, f"{rec.error}\n{proc.stderr[-2000:]}"
    assert "torch was imported" not in rec.warning


def test_budget_verdicts_on_ttft_and_tpot(run: tuple[Path, subprocess.CompletedProcess]) -> None:
    from archbench.bench.analyze.budgets import FAIL, PASS, judge, parse_budget
    from archbench.bench.cli.main import main

    out, proc = run
    table = proc.stdout[proc.stdout.index("verdict "):]
    assert "ttft_ms" in table and "tpot_ms" in table and table.count(" generate ") == 4, table
    assert "PASS " in table and "FAIL" not in table, table  # 5 s a token: only a wild interval keeps it open
    records = read_records(out / "records.jsonl")
    verdicts = judge(records, parse_budget("ttft_ms<=1e-6, tpot_ms<=1e-6"))
    assert {v.verdict for v in verdicts} == {FAIL}  # ttft, a point estimate, fails outright
    ttft, tpot = verdicts[0].terms
    assert ttft.verdict == FAIL and tpot.verdict != PASS
    assert tpot.lower is not None and tpot.upper is not None and "over 2 repetitions" in tpot.reason
    assert {v.verdict for v in judge(records, parse_budget("kv_cache_mib<=1, e2e_ms<=1e6"))} == {PASS}
    assert main(["check", str(out), "--budget", "ttft_p95_ms<=1e-6"]) == 1
    assert main(["check", str(out), "--budget", "kv_cache_mib<=1, e2e_ms<=1e5"]) == 0


def test_report_has_a_generation_section_and_context_plots(run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = run
    assert "TTFT ms [95% CI]" in proc.stdout and "tokens/s" in proc.stdout and "KV MiB" in proc.stdout
    md = (out / "report.md").read_text()
    assert "## Generation" in md and "TPOT p50 ms [95% CI]" in md and "decode GB/s" in md
    assert "TPOT and KV cache against the context" in md and "% of " in md  # copy bandwidth measured (peaks.json)
    assert (out / "plots" / "tpot_vs_context.png").stat().st_size > 0
    assert (out / "plots" / "kv_cache_vs_context.png").stat().st_size > 0
    assert (out / "peaks.json").exists()


def test_a_model_that_cannot_generate_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """The worker's path, in process: mlp_s is no causal LM; openvino has no decode-step path."""
    from archbench.bench.cell import Cell, GenerateOptions, Job, Options
    from archbench.bench.measure.protocol import Emitter
    from archbench.bench.modes.generate import Generate

    for runtime, why in (("torch", "not a causal LM"), ("openvino", "cannot generate")):
        buf = io.StringIO()
        cell = Cell("mlp_s", runtime=runtime, mode="generate", options=Options(generate=GenerateOptions(new_tokens=4)))
        Generate().run_job(Job(cells=(cell,), workdir=str(tmp_path / runtime)), Emitter(buf))
        (event,) = [json.loads(line) for line in buf.getvalue().splitlines()]
        rec = Record.from_dict(event["record"])
        assert rec.status == "skipped" and why in rec.error, (runtime, rec.status, rec.error)


@pytest.mark.parametrize("argv, says", [
    (["--prompt-len", "0"], "--prompt-len '0': expected a whole number >= 1"),
    (["--new-tokens", "-1"], "expected a whole number >= 1"),
    (["--new-tokens", "1"], "TPOT needs at least 2 new tokens"),
    (["--prompt-len", "16000", "--new-tokens", "1000"], "beyond the 16384-token limit"),
    (["--prompt-len", "8,x"], "expected a whole number"),
], ids=["prompt-0", "new-negative", "new-1", "too-long", "not-a-number"])
def test_bad_values_are_one_error_line_and_exit_2(argv: list[str], says: str, capsys: pytest.CaptureFixture,
                                                  tmp_path: Path) -> None:
    rc = _main(["run", "llama_tiny", "--mode", "generate", *argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and says in err[0], err
    assert not (tmp_path / "x").exists()


def test_generation_flags_need_mode_generate(capsys: pytest.CaptureFixture) -> None:
    assert _main(["run", "llama_tiny", "--prompt-len", "8"]) == 2
    assert "only applies with --mode generate" in capsys.readouterr().err


def _main(argv: list[str]) -> int:
    """The CLI in process: its exit code, whether it returns it or argparse exits with it."""
    from archbench.bench.cli.main import main

    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_generation_metrics_apply_to_generate_records_only() -> None:
    from archbench.bench.analyze.combine import combine
    from archbench.bench.analyze.metrics import metric

    infer = Record("llama_tiny", "torch", "fp32", 1, "cpu", 1, latency_p50_ms=2.0, throughput_sps=500.0)
    for name in ("ttft_ms", "tpot_ms", "tokens_per_s", "kv_cache_mib"):
        got = metric(name).read(infer)
        assert got.value is None and "--mode generate" in got.note, name
    assert metric("latency_p50_ms").name == "p50_ms" and metric("throughput_sps").name == "throughput_sps"
    reps = []
    for i, (ttft, step) in enumerate([(10.0, 1.0), (12.0, 1.2)]):
        r = Record("llama_tiny", "torch", "fp32", 2, "cpu", 1, mode="generate", ttft_ms=ttft, ttft_p95_ms=ttft,
                   e2e_ms=ttft + 3 * step, decode_bytes=10**6)
        fill_latency(r, [step] * 6, first_ms=50.0, warmup_iters=1, measure_s=0.1, other_cpu_pct=None)
        r.rep_ttft_ms, r.rep_ttft_p95_ms, r.rep_e2e_ms, r.rep_rounds = [ttft], [ttft], [ttft + 3 * step], [i]
        reps.append(r)
    c = combine(reps)
    assert c.ttft_ms == pytest.approx((10.0 * 12.0) ** 0.5) and c.ttft_lo_ms < c.ttft_ms < c.ttft_hi_ms
    assert metric("tokens_per_s").value(c) == pytest.approx(2 * 1000.0 / c.latency_mean_ms)  # batch 2
    assert c.decode_gbps == pytest.approx(10**6 / (c.latency_p50_ms * 1e-3) / 1e9)


def test_kv_bytes_match_the_model_formula() -> None:
    import torch

    from archbench.bench.measure.decode import generation_counts
    from archbench.bench.modes.generate import kv_bytes
    from archbench.models import create_model
    from archbench.models.llama import kv_cache_bytes

    for name in ("llama_tiny", "llama_s"):
        m = create_model(name).eval()
        info = generation_counts(m, 12, 5)
        for ctx, b in ((17, 1), (40, 3)):
            assert kv_bytes(info, ctx, b, 4) == kv_cache_bytes(m, ctx, b, torch.float32), name
        assert info["mean_past"] == 12 + 2  # P + N/2 - 1, rounded


@pytest.mark.slow
def test_torch_compile_decoder_gives_eager_tokens() -> None:
    """torch.compile of step_static (fixed-capacity cache, pos a 0-d tensor): the eager tokens, no recompile
    per position (~30 s on a 2-vCPU box: two graphs compiled)."""
    import torch

    from archbench.bench.measure.decode import make_decoder
    from archbench.models import create_model
    from archbench.models.llama import generate

    torch.manual_seed(0)
    model = create_model("llama_tiny").eval()
    prompt = torch.randint(0, 1024, (1, 8), generator=torch.Generator().manual_seed(3))
    dec = make_decoder(model, "cpu", capacity=8 + 4 - 1, compile_step=True)
    tok = dec.prefill(prompt)
    got = [tok]
    for _ in range(3):
        tok = dec.decode(tok)
        got.append(tok)
    assert torch.equal(torch.cat(got, dim=1), generate(model, prompt, 4)[:, 8:])
