"""The generation flags of ``archbench run`` / ``sweep`` (``--mode generate``) and their validation; torch-free.

    archbench run llama_s --mode generate --prompt-len 512 --new-tokens 64 --runtime torch,onnxruntime \\
        --budget "ttft_ms<=200, tpot_ms<=20"
    archbench run llama_tiny --mode generate --prompt-len 128,512     # a context sweep: one cell set per length
    archbench sweep llama_s --mode generate --seq-len 128,256,512 --budget "tpot_ms<=5"    # no --prompt-len here

The prompt is the model's example input, so its length is the model's ``seq_len`` knob: ``--prompt-len P`` sets
that knob to P (one knob set, with its own cells, artefacts and records, per length). A model without a seq_len
knob keeps its own example input (and a model that cannot generate gets skipped records saying why).
"""

from __future__ import annotations

import argparse
from typing import Any

from archbench.bench.cli.argtypes import count
from archbench.bench.errors import UsageError

DEFAULT_NEW_TOKENS = 64
MAX_CONTEXT = 16384  # prompt + new tokens: beyond this a CPU prefill takes minutes and the KV cache grows large
PROMPT_KNOB = "seq_len"  # the builder keyword that sets a zoo (or hf:) language model's example input length


def add_arguments(g: Any) -> None:
    """--prompt-len and --new-tokens, into the argument group ``g`` (trainopts owns --mode)."""
    g.add_argument("--prompt-len", default=None, metavar="P[,P...]",
                   help="generate: prompt tokens, a comma list for a context sweep (sets the model's seq_len "
                        "knob; default: the model's own example length)")
    g.add_argument("--new-tokens", type=count(1), default=None, metavar="N",
                   help=f"generate: tokens generated per generation, >= 2: the first from the prefill (TTFT), "
                        f"N - 1 decode steps (TPOT) (default {DEFAULT_NEW_TOKENS})")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``sweep``'s --mode and --new-tokens: a generate sweep's prompt length is its seq_len knob list."""
    g = p.add_argument_group("generation (--mode generate; the prompt is seq_len tokens: sweep it with --seq-len)")
    g.add_argument("--mode", choices=("infer", "generate"), default="infer",
                   help="infer: one forward per call (default); generate: prefill (TTFT) and decode steps (TPOT)")
    g.add_argument("--new-tokens", type=count(1), default=None, metavar="N",
                   help=f"generate: tokens generated per generation, >= 2 (default {DEFAULT_NEW_TOKENS})")


def prompt_lens(text: str | None) -> list[int]:
    """``--prompt-len`` as a list of counts (empty when not given); UsageError naming a bad value."""
    if text is None:
        return []
    from archbench.bench.cli.argtypes import check_count

    items = [t.strip() for t in str(text).split(",")]
    if not any(items) or not all(items):
        raise UsageError(f"bad --prompt-len {text!r}: expected comma-separated token counts, e.g. 128,512")
    try:
        out = [check_count(t, 1, "--prompt-len", MAX_CONTEXT - 1) for t in items]
    except ValueError as e:
        raise UsageError(str(e)) from None
    return list(dict.fromkeys(out))


def check(new_tokens: int, lens: list[int]) -> None:
    """UsageError unless TPOT can be measured and every context stays under MAX_CONTEXT."""
    if new_tokens < 2:
        raise UsageError(f"--new-tokens {new_tokens}: TPOT needs at least 2 new tokens (the first comes from the "
                         "prefill, the rest from decode steps)")
    for p in lens:
        if p + new_tokens > MAX_CONTEXT:
            raise UsageError(f"--prompt-len {p} + --new-tokens {new_tokens} = {p + new_tokens} tokens: beyond "
                             f"the {MAX_CONTEXT}-token limit of --mode generate")


def from_args(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Options for --mode generate ({"generate": GenerateOptions}); UsageError for a flag that cannot apply or a bad
    value."""
    given = [f for f, k in (("--prompt-len", "prompt_len"), ("--new-tokens", "new_tokens"))
             if getattr(args, k, None) is not None]
    if mode != "generate":
        if given:
            raise UsageError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with --mode generate")
        return {}
    n = getattr(args, "new_tokens", None)
    n = DEFAULT_NEW_TOKENS if n is None else n
    check(n, prompt_lens(getattr(args, "prompt_len", None)))
    from archbench.bench.cell import GenerateOptions

    return {"generate": GenerateOptions(new_tokens=n)}


def variants(args: argparse.Namespace, models: list[str], knobs: dict[str, Any],
             mode: str = "generate") -> dict[str, list[dict[str, Any]]]:
    """Per model, the knob sets of a --prompt-len sweep (measure.engine.RunSpec.variants): ``seq_len`` = each
    length, for the models whose builder takes it; the others keep ``knobs``. Empty for other modes."""
    from archbench.bench.measure.sources import check_ref, is_hub_ref, is_import_ref, is_onnx_ref

    lens = prompt_lens(getattr(args, "prompt_len", None))
    if not lens or mode != "generate":
        return {}
    if PROMPT_KNOB in knobs:
        raise UsageError(f"--prompt-len sets the {PROMPT_KNOB} knob; give one or the other")
    out = {}
    for m in models:
        if is_onnx_ref(m) or (is_import_ref(m) and not is_hub_ref(m)):  # a graph, or a factory of unknown knobs
            continue
        try:
            check_ref(m, {**knobs, PROMPT_KNOB: lens[0]})
        except UsageError:  # no seq_len knob (or an .onnx file): its own input; skipped if it cannot generate
            continue
        out[m] = [{**knobs, PROMPT_KNOB: p} for p in lens]
    return out


def check_resume(spec: Any) -> None:
    """--resume of a generate run with another --new-tokens would mix repetitions of different generations."""
    from archbench.bench.record import read_records

    if not (spec.resume and spec.mode == "generate"):
        return
    path = spec.out / "repetitions.jsonl"
    seen = {r.new_tokens for r in read_records(path) if r.mode == "generate"} if path.exists() else set()
    other = sorted(n for n in seen if n is not None and n != spec.options.generate.new_tokens)
    if other:
        raise UsageError(f"{spec.out} measured --new-tokens {other[0]}; --resume it with the same value, or choose "
                         "another --out")
