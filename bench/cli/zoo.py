"""`archbench list` (the zoo) and `archbench profile` (params, size, MACs per module and operator)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from archbench.bench.cli.options import source_from_args
from archbench.bench.errors import UsageError
from archbench.bench.report.format import human, pct, render

# ----------------------------------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    import torch

    from archbench.models import create_model, get_entry, list_models

    names = list_models(args.pattern)
    if not names:
        raise UsageError(f"no model matches {args.pattern!r}; `archbench list` shows them all")
    rows = []
    for n in names:
        e = get_entry(n)
        with torch.device("meta"):  # build without allocating weights: list is instant even for resnet50
            m = create_model(n)
        rows.append({
            "name": n,
            "family": e.family,
            "params": sum(p.numel() for p in m.parameters()),
            "input": m.input_spec.describe(),
            "knobs": " ".join(f"{k}={v}" for k, v in e.knobs.items()),
        })
    if args.format in ("table", "md"):
        for r in rows:
            r["params"] = human(r["params"])
    print(render(rows, args.format))
    return 0


# ----------------------------------------------------------------------------------------------------- profile


def _profile_summary_rows(p) -> list[dict[str, Any]]:
    cc = p.cross_check
    return [{
        "model": p.model,
        "input": p.input,
        "params": p.params,
        "trainable_params": p.trainable_params,
        "state_dict_mib": round(p.state_dict_bytes / 2**20, 4),
        "file_mib": round(p.file_bytes / 2**20, 4),
        "macs": p.macs,
        "flops": p.flops,
        "flop_counter_flops": cc.flop_counter_flops if cc else None,
        "flop_counter_rel_diff": round(cc.rel_diff, 6) if cc else None,
        "uncounted_ops": " ".join(r.op for r in p.uncounted),
    }]


def _print_profile_text(p, fmt: str) -> None:
    lines = [
        f"{p.model}   input {p.input}",
        f"  params        {p.params:,} (trainable {p.trainable_params:,})",
        f"  size          {human(p.state_dict_bytes, 'B', binary=True)} fp32 state_dict, "
        f"{human(p.file_bytes, 'B', binary=True)} on disk",
        f"  MACs          {human(p.macs)}   multiply-accumulates of conv / linear / matmul / attention / RNN gates",
        f"  FLOPs         {human(p.flops)}   = 2 x MACs",
    ]
    cc = p.cross_check
    if cc is not None:
        agree = "agrees exactly" if cc.rel_diff == 0 else f"differs by {pct(cc.rel_diff, 2)}"
        line = f"  cross-check   FlopCounterMode {human(cc.flop_counter_flops)}FLOPs: {agree} on the ops it counts"
        lines.append(line)
        for op, f in cc.missed_by_flop_counter.items():
            lines.append(f"                FlopCounterMode does not count {op} here ({human(f)}FLOPs, "
                         f"{pct(f / p.flops if p.flops else 0)} of the total)")
    unc = p.uncounted
    if unc:
        timed = any(r.time_share is not None for r in unc)
        lines.append("  uncounted ops (no MACs by definition" + ("; share of CPU forward time)" if timed else ")"))
        for r in unc:
            share = f"{pct(r.time_share):>7}" if r.time_share is not None else "      -"
            lines.append(f"    {r.op:<32} {r.calls:>5} calls  {share}")
    for n in p.notes:
        lines.append(f"  note: {n}")
    print("\n".join(lines))


def cmd_profile(args: argparse.Namespace) -> int:
    from archbench.bench.measure.sources import is_onnx_ref, parse_shape

    if is_onnx_ref(args.model):
        from archbench.bench.measure.onnx_profile import profile_onnx
        from archbench.bench.measure.sources import resolve

        src = resolve(args.model)
        prof = profile_onnx(src.onnx_path, parse_shape(args.input_shape) if args.input_shape else None)
    else:
        from archbench.bench.measure.profile import profile_module

        src = source_from_args(args, args.model)
        inputs = src.example_inputs(batch=args.batch)
        spec = src.input_spec.with_batch(args.batch) if args.batch else src.input_spec
        try:
            prof = profile_module(src.module, inputs, name=args.model, input_desc=spec.describe(),
                                  time_ops=not args.no_timing)
        except Exception as e:
            raise UsageError(f"{args.model}: forward on input {spec.describe()} failed: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    if args.by == "summary":
        if args.format == "table":
            _print_profile_text(prof, args.format)
        elif args.format == "json":
            print(json.dumps(asdict(prof) | {"uncounted": [asdict(r) for r in prof.uncounted]}, indent=2))
        else:
            print(render(_profile_summary_rows(prof), args.format))
        return 0
    if args.by == "operator":
        rows = [{"op": r.op, "calls": r.calls, "macs": r.macs, "flops": None if r.macs is None else 2 * r.macs,
                 "mac_share": None if r.macs is None or not prof.macs else r.macs / prof.macs,
                 "time_share": r.time_share} for r in prof.by_operator]
    else:
        rows = [{"module": r.module or "(model)", "type": r.type, "params": r.params, "macs": r.macs,
                 "flops": 2 * r.macs, "mac_share": r.macs / prof.macs if prof.macs else None}
                for r in prof.by_module
                if r.module.count(".") < args.max_depth or r.module == ""]
    if args.format in ("table", "md"):
        for r in rows:
            for k in ("params", "macs", "flops"):
                if k in r:
                    r[k] = human(r[k])
            for k in ("mac_share", "time_share"):
                if k in r:
                    r[k] = pct(r[k])
        print(f"{prof.model}   input {prof.input}   MACs {human(prof.macs)}   FLOPs {human(prof.flops)}")
    print(render(rows, args.format))
    return 0
