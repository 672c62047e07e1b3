"""Training mode (archbench.bench.modes.train, archbench.bench.modes.maxbatch): the step trains, the memory split adds up, the max-batch search
finds the right batch under a memory cap and records every trial."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tests_helpers import TESTS

from archbench.bench.cell import Options, TrainOptions
from archbench.bench.cli.main import main
from archbench.bench.measure.engine import RunSpec, run
from archbench.bench.measure.harness import StopRule
from archbench.bench.measure.train_step import TrainStep, loss_kind
from archbench.bench.modes.maxbatch import find_max_batch, run_search
from archbench.bench.record import read_records
from archbench.models import create_model

FAST = StopRule(warmup_iters=1, warmup_s=0.0, min_iters=3, min_time_s=0.02, max_time_s=2.0)


@pytest.fixture
def one_thread():
    """In-process steps on one thread: the machine may be shared, and two spinning pools would crawl."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mlp_s_params(in_features: int = 64, hidden: int = 256, depth: int = 2, classes: int = 10) -> tuple[int, int]:
    """(parameter count, parameter tensors) of mlp_s from its layout: depth x Linear(+bias), then Linear head."""
    count = in_features * hidden + hidden + (depth - 1) * (hidden * hidden + hidden) + hidden * classes + classes
    return count, 2 * (depth + 1)


# ------------------------------------------------------------------------------------------- the step trains


@pytest.mark.parametrize(
    "model, knobs, precision, optimizer, kind",
    [
        ("mlp_s", {}, "fp32", "adamw", "cross-entropy"),
        ("mlp_s", {}, "fp32", "sgd", "cross-entropy"),
        ("mlp_s", {}, "bf16", "adamw", "cross-entropy"),
        ("llama_tiny", {"seq_len": 16, "depth": 1}, "fp32", "adamw", "next-token-cross-entropy"),
        ("trainfactories:regressor", {}, "fp32", "adamw", "mse"),
    ],
)
def test_step_updates_weights_and_loss_goes_down(model: str, knobs: dict, precision: str, optimizer: str, kind: str,
                                                 monkeypatch, one_thread) -> None:
    monkeypatch.chdir(TESTS)
    from archbench.bench.measure.sources import resolve

    torch.manual_seed(0)
    src = resolve(model, knobs)
    ts = TrainStep(src.module, src.input_spec, optimizer=optimizer, precision=precision)
    assert ts.loss_kind == kind
    before = [p.detach().clone() for p in ts.model.parameters()]
    data = ts.make_batch(6, seed=0)  # a fixed batch: a few steps must fit it better
    losses = [float(ts(data)) for _ in range(8)]
    assert losses[-1] < 0.98 * losses[0], f"loss did not go down: {losses}"
    changed = [not torch.equal(a, b) for a, b in zip(before, ts.model.parameters(), strict=True)]
    assert all(changed), f"{changed.count(False)} of {len(changed)} parameter tensors unchanged"


@pytest.mark.parametrize(
    "out_shape, x, expected",
    [
        ((5, 64, 1024), torch.zeros(5, 64, dtype=torch.int64), "next-token-cross-entropy"),
        ((5, 10), torch.zeros(5, 3, 32, 32), "cross-entropy"),
        ((5, 10), torch.zeros(5, 17, dtype=torch.int64), "cross-entropy"),  # RNN classifier on tokens
        ((5, 1), torch.zeros(5, 8), "mse"),  # one output: regression, not 1-class classification
        ((5, 3, 2), torch.zeros(5, 6), "mse"),
        ((5, 64, 1024), torch.zeros(5, 64), "mse"),  # float input: not a language model
        ((5, 1, 1024), torch.zeros(5, 1, dtype=torch.int64), "mse"),  # one token: no next token to predict
    ],
)
def test_loss_kind_table(out_shape: tuple[int, ...], x: torch.Tensor, expected: str) -> None:
    assert loss_kind(torch.zeros(out_shape), (x,)) == expected


# ------------------------------------------------------------------------------------------- memory split


@pytest.mark.parametrize(
    "optimizer, state_bytes",
    [
        # AdamW: exp_avg and exp_avg_sq per parameter (fp32) + one fp32 scalar `step` per parameter tensor.
        ("adamw", lambda n, tensors: 2 * 4 * n + 4 * tensors),
        # SGD with momentum: one fp32 momentum buffer per parameter.
        ("sgd", lambda n, tensors: 4 * n),
    ],
)
def test_param_grad_optimizer_split_is_exact_for_mlp_s(optimizer: str, state_bytes, one_thread) -> None:
    n, tensors = mlp_s_params()
    ts = TrainStep(create_model("mlp_s"), optimizer=optimizer)
    ts(ts.make_batch(3))
    p, g, s = ts.state_mib()
    assert p * 2**20 == 4 * n
    assert g * 2**20 == 4 * n
    assert s * 2**20 == state_bytes(n, tensors)


def test_train_cell_records_split_time_to_train_and_report(tmp_path: Path) -> None:
    n, tensors = mlp_s_params()
    spec = RunSpec(models=["mlp_s"], out=tmp_path / "run", runtimes=["torch"], batches=[4], threads=1, rule=FAST,
                   repetitions=2, mode="train", options=Options(train=TrainOptions(optimizer="adamw", train_samples=10_000)))
    (r,) = run(spec)
    assert r.status == "ok", r.error
    assert (r.mode, r.optimizer, r.loss_fn) == ("train", "adamw", "cross-entropy")
    assert r.param_mib * 2**20 == 4 * n and r.grad_mib * 2**20 == 4 * n
    assert r.optimizer_state_mib * 2**20 == 8 * n + 4 * tensors
    assert r.latency_p50_ms > 0 and r.throughput_sps == pytest.approx(4 * 1000 / r.latency_mean_ms)
    parts = r.train_mem_baseline_mib + r.param_mib + r.grad_mib + r.optimizer_state_mib + r.activation_mib
    assert parts == pytest.approx(r.train_peak_mem_mib) or r.activation_mib == 0
    assert r.activation_mib_per_sample == pytest.approx(r.activation_mib / 4)
    assert r.train_samples == 10_000 and r.time_to_train_s == pytest.approx(10_000 / r.throughput_sps)
    # the same model at the same batch in inference mode is another cell
    (rec,) = read_records(spec.out / "records.jsonl")
    assert "train" in rec.key() and replace(rec, mode="infer").key() != rec.key()


# ------------------------------------------------------------------------------------------- max batch


@pytest.mark.parametrize(
    "start, limit, answer, best, hit_limit",
    [
        (1, 1024, 5, 5, False),
        (1, 1024, 1, 1, False),
        (1, 1024, 0, 0, False),  # not even the start fits
        (1, 1024, 64, 64, False),  # a power of two: doubling's first failure is 128
        (3, 1024, 37, 37, False),
        (1, 100, 10**6, 100, True),  # everything fits: stop at the limit
        (8, 8, 10**6, 8, True),
    ],
)
def test_find_max_batch_doubles_then_bisects(start: int, limit: int, answer: int, best: int, hit_limit: bool) -> None:
    s = find_max_batch(lambda b: b <= answer, start, limit)
    assert (s.best, s.hit_limit) == (best, hit_limit)
    assert all(ok == (b <= answer) for b, ok in s.trials)
    assert len({b for b, _ in s.trials}) == len(s.trials), "a batch was tried twice"
    if not hit_limit and best:
        assert s.first_failure == best + 1 and (best + 1, False) in s.trials
    assert len(s.trials) <= 2 * (limit.bit_length() + 1)


def test_max_batch_search_under_cpu_memory_cap(tmp_path: Path, monkeypatch) -> None:
    """trainfactories:big_activation touches MIB_PER_SAMPLE MiB per sample. Probe the fixed part (process, model)
    with one batch-1 trial, set the cap halfway between 3 and 4 samples above it: searching from batch 2, the
    trials must be 2 (fits), 4 (out of memory), 3 (fits), and the answer 3."""
    from trainfactories import MIB_PER_SAMPLE

    monkeypatch.chdir(TESTS)
    model = "trainfactories:big_activation"
    base = dict(models=[model], runtimes=["torch"], threads=1, rule=FAST, timeout_s=120, repetitions=2)
    (probe,) = run(RunSpec(out=tmp_path / "probe", batches=[1], mode="maxbatch-trial", **base))
    assert probe.status == "ok", probe.error
    fixed = probe.train_peak_mem_mib - MIB_PER_SAMPLE
    cap = fixed + 3.5 * MIB_PER_SAMPLE

    out = tmp_path / "search"
    recs = run_search(RunSpec(out=out, batches=[2], mode="train",
                              options=Options(train=TrainOptions(find_max_batch=True, mem_cap_mib=cap)), **base))
    trials = [r for r in recs if r.mode == "maxbatch-trial"]
    assert [(r.batch, r.status) for r in trials] == [(2, "ok"), (4, "failed"), (3, "ok")]
    failed = trials[1]
    assert failed.error.startswith("out of memory") and f"--mem-cap-mib {cap:g}" in failed.error
    assert all(r.mem_cap_mib == cap for r in recs)
    assert all(r.train_peak_mem_mib <= cap for r in trials if r.status == "ok")
    (final,) = [r for r in recs if r.mode == "train"]
    assert (final.status, final.batch, final.max_batch) == ("ok", 3, 3), final.error
    assert final.latency_p50_ms > 0
    # The activation estimate sees the known per-sample memory (plus a little fixed slack).
    assert 0.95 * MIB_PER_SAMPLE <= final.activation_mib_per_sample <= 1.25 * MIB_PER_SAMPLE
    on_disk = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(on_disk) == 4  # every trial and the answer
    from archbench.bench.report.train import training_md

    md = "\n".join(training_md(recs))
    assert "Max-batch search trials" in md and "out of memory" in md


# ------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "mlp_s", "--find-max-batch"], "--find-max-batch only applies with --mode train"),
        (["run", "mlp_s", "--optimizer", "sgd"], "--optimizer only applies with --mode train"),
        (["run", "mlp_s", "--mode", "train", "--runtime", "torch,onnxruntime"], "runtime onnxruntime cannot train"),
        (["run", "mlp_s", "--mode", "train", "--epochs", "3"], "--epochs needs --train-samples"),
        (["run", "mlp_s", "--mode", "train", "--mem-cap-mib", "0"], "--mem-cap-mib must be > 0"),
        (["run", "mlp_s", "--mode", "train", "--max-batch-limit", "64"], "only applies with --find-max-batch"),
    ],
)
def test_cli_rejects_training_flags_that_cannot_apply(args: list[str], message: str, capsys, tmp_path) -> None:
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_train_spec() -> None:
    from archbench.bench.cli.main import build_parser, spec_from_args

    args = build_parser().parse_args(["run", "resnet_s", "vit_s", "--mode", "train", "--batch", "8,32",
                                      "--train-samples", "1.2e6", "--epochs", "2", "--out", "x"])
    spec = spec_from_args(args)
    assert spec.mode == "train" and spec.runtimes == ["torch"]
    assert (spec.options.train.optimizer, spec.options.train.train_samples) == ("adamw", 2_400_000)
    args = build_parser().parse_args(["run", "mlp_s", "--out", "x"])
    spec = spec_from_args(args)
    assert spec.mode == "infer" and spec.runtimes == ["torch", "onnxruntime"] and spec.options == Options()
