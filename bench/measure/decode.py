"""The PyTorch side of ``--mode generate`` (archbench.bench.modes.generate): which models can generate, the
decode-step graph ONNX Runtime runs, MACs per prefill and per decoded token, the fp32 reference tokens, and the
decoder the torch runtimes time. Imports torch: only torch workers and the artifacts worker load it.

A model generates here when it has the zoo LLaMA's KV-cache API (archbench.models.llama): ``step(tokens, past_k,
past_v) -> (logits, k, v)``, ``step_static``, ``new_cache`` and the shape facts ``layers``, ``kv_heads``,
``head_dim``; or when it is an ``hf:`` causal LM (transformers' ``can_generate()``), which generates on torch eager
only, with transformers' own cache (``past_key_values``, a DynamicCache): what ``model.generate`` runs. Anything
else (a CNN, an encoder) is a *skipped* cell with the reason, and so are hf: models on torch-compile and ONNX Runtime
(their cache is a Python object, not graph inputs), and their per-token MACs (fvcore cannot trace that cache).

**The decode-step graph** (``export_step``): one ONNX graph ``(tokens (B, N), past_k, past_v (layers, B, kv_heads,
T, head_dim)) -> (logits (B, N, V), k, v (..., T + N, ...))`` with B, N and T dynamic, exported by the dynamo
exporter from ``Llama.step``. The same graph serves the prefill (T = 0, N = prompt) and every decode step (N = 1):
what a deployment that runs one ONNX file does. It is checked against ``step`` on a prefill and two decode steps.

**MACs** (``generation_counts``): the repository's counter (archbench.bench.measure.profile.count_macs, fvcore with
attention counted) on one ``step``: the prefill over the prompt from an empty cache, and one decode step with a
cache of ``P + N/2 - 1`` tokens, the mean cache length over the ``N - 1`` decode steps (a decode step's MACs grow
linearly with the cache, so this is the mean per decoded token). Batch 1; records scale by the batch.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from archbench.bench.cell import Cell, Job
from archbench.bench.measure.files import read_json, write_json
from archbench.bench.measure.inputs import ArraySpec, prompt_tokens
from archbench.bench.measure.runtimes import UnsupportedCell

STEP_ONNX = "step.onnx"
STEP_NAMES = (("tokens", "past_k", "past_v"), ("logits", "k", "v"))
_API = ("step", "step_static", "new_cache", "layers", "kv_heads", "head_dim")


def language_model(module: Any) -> nn.Module:
    """The KV-cache language model inside ``module`` (a compiled module's original; an hf: source's transformers
    model), or UnsupportedCell saying why this model cannot generate."""
    lm = getattr(module, "_orig_mod", module)
    if not hasattr(lm, "step") and not callable(getattr(lm, "can_generate", None)):
        lm = getattr(lm, "model", lm)  # models.hub_hf.HFModule wraps the transformers model
    if not hasattr(lm, "step") and hasattr(lm, "config") and callable(getattr(lm, "can_generate", None)):
        if lm.can_generate():
            return lm
        raise UnsupportedCell(f"not a causal LM ({type(lm).__name__} cannot generate): --mode generate runs "
                              "the zoo's llama_* and hf: causal LMs (--knob task=causal-lm)")
    missing = [a for a in _API if not hasattr(lm, a)]
    if missing:
        what = type(lm).__name__
        raise UnsupportedCell(f"not a causal LM with a KV cache ({what} has no {', '.join(missing[:2])}): "
                              "--mode generate runs the zoo's llama_* (step(), new_cache())")
    return lm


class StepGraph(nn.Module):
    """``Llama.step`` as a module's forward: what the decode-step graph is exported from."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: Tensor, past_k: Tensor, past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.lm.step(tokens, past_k, past_v)


def is_hf(lm: nn.Module) -> bool:
    """A transformers causal LM (its own cache object) rather than the zoo's step API."""
    return not hasattr(lm, "step")


def shape_facts(lm: nn.Module) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of the KV cache: the zoo LM's attributes, or a transformers config's."""
    if not is_hf(lm):
        return int(lm.layers), int(lm.kv_heads), int(lm.head_dim)
    c = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    heads = int(c.num_attention_heads)
    kv = int(getattr(c, "num_key_value_heads", None) or heads)
    return int(c.num_hidden_layers), kv, int(getattr(c, "head_dim", None) or c.hidden_size // heads)


class _HFLogits(nn.Module):
    """A transformers causal LM's forward without a cache, as fvcore can trace it (prefill MACs)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: Tensor) -> Tensor:
        return self.lm(input_ids=tokens, use_cache=False).logits


def step_specs(lm: nn.Module, prompt: ArraySpec) -> tuple[ArraySpec, ...]:
    """The decode-step graph's inputs at the prefill: the prompt (1, P) and two empty caches (batch in dim 1)."""
    cache = ArraySpec((lm.layers, 1, lm.kv_heads, 0, lm.head_dim), "float32", batch_dim=1)
    return (prompt, cache, cache)


def export_step(lm: nn.Module, path: Path) -> str:
    """Export ``lm.step`` to ``path`` (+ .data): batch, new tokens and cache length dynamic. Returns the exporter."""
    g = StepGraph(lm.float().eval().cpu())
    # Example sizes away from 0 and 1 (which the exporter would specialize): B 2, N 3, T 5.
    k = torch.randn(lm.layers, 2, lm.kv_heads, 5, lm.head_dim)
    tokens = torch.randint(0, 2, (2, 3))
    b, n, t = torch.export.Dim("batch"), torch.export.Dim("tokens"), torch.export.Dim("past")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(g, (tokens, k, k.clone()), str(path), dynamo=True, input_names=list(STEP_NAMES[0]),
                          output_names=list(STEP_NAMES[1]), external_data=True,
                          dynamic_shapes=({0: b, 1: n}, {1: b, 3: t}, {1: b, 3: t}))
    return "dynamo"


def verify_step(lm: nn.Module, path: Path, prompt: np.ndarray) -> float:
    """The graph against ``step`` on a prefill (T = 0) and two decode steps; RuntimeError when they disagree."""
    import onnxruntime as ort

    from archbench.bench.measure.export import check_close

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    k, v = lm.new_cache(prompt.shape[0], 0, dtype=torch.float32)
    tokens, err = torch.from_numpy(prompt), 0.0
    kn, vn = k.numpy(), v.numpy()
    for _ in range(3):
        with torch.inference_mode():
            ref = lm.step(tokens, k, v)
        got = sess.run(None, dict(zip(STEP_NAMES[0], (tokens.numpy(), kn, vn), strict=True)))
        err = max(err, check_close([t.numpy() for t in ref], got))
        _, k, v = ref
        _, kn, vn = got
        tokens = ref[0][:, -1].argmax(-1, keepdim=True)
    return err


def reference_tokens(lm: nn.Module, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
    """Greedy tokens (B, new_tokens) of the fp32 module from ``prompt``: what every other cell is compared with."""
    dec = make_decoder(lm, "cpu")
    tok = dec.prefill(dec.convert(prompt))
    out = [tok]
    for _ in range(new_tokens - 1):
        tok = dec.decode(tok)
        out.append(tok)
    return torch.cat(out, dim=1).numpy()


def generation_counts(lm: nn.Module, prompt_len: int, new_tokens: int) -> dict[str, Any]:
    """Shape facts, params and batch-1 MACs of the prefill and of the mean decode step (module docstring)."""
    from archbench.bench.measure.profile import count_macs, count_params

    mean_past = max(0, round(prompt_len + new_tokens / 2 - 1))  # cache length of the mean decode step
    embed = lm.get_input_embeddings() if hasattr(lm, "get_input_embeddings") else getattr(lm, "embed", None)
    layers, kv_heads, head_dim = shape_facts(lm)
    out: dict[str, Any] = {
        "prompt_len": prompt_len, "new_tokens": new_tokens, "mean_past": mean_past,
        "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
        "params": count_params(lm)[0], "embed_params": int(embed.weight.numel()) if embed is not None else 0,
    }
    tokens = torch.zeros(1, prompt_len, dtype=torch.int64)
    try:
        if is_hf(lm):
            out["prefill_macs"] = count_macs(_HFLogits(lm), (tokens,))
            out["mac_error"] = "per-token MACs of hf: models are not counted (fvcore cannot trace their cache)"
            return out
        g = StepGraph(lm)
        for key, n, past in (("prefill_macs", prompt_len, 0), ("decode_macs", 1, mean_past)):
            k, v = lm.new_cache(1, past, dtype=torch.float32)
            out[key] = count_macs(g, (tokens[:, :n], k, v))
    except Exception as e:  # a model fvcore cannot trace is still timed
        out["mac_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    return out


def write_info(lm: nn.Module, cell: Cell, prompt: ArraySpec, workdir: Path, cells: Any) -> dict[str, Any]:
    """The generation facts and, per batch, the fp32 reference tokens, unless already in ``workdir``. Call it
    while ``lm`` is still the fp32 module (before a runtime casts or quantizes it)."""
    from archbench.bench.measure.artifacts import generate_info_path, generate_refs_path

    n = cell.options.generate.new_tokens
    info = read_json(generate_info_path(workdir, n))
    if not info.get("params"):
        info = generation_counts(lm, prompt.shape[1], n)
        write_json(generate_info_path(workdir, n), info)
    for b in sorted({c.batch for c in cells}):
        path = generate_refs_path(workdir, b, n)
        if not path.exists():
            np.save(path, reference_tokens(lm, prompt_tokens(prompt, b), n))
    return info


def _shared_export(lm: nn.Module, cell: Cell, workdir: Path, prompt: np.ndarray) -> tuple[Path, str]:
    """The decode-step graph for ``lm``, exported once per model and knobs *other than* the prompt length: the
    graph does not depend on it (RoPE is computed from the positions), so a --prompt-len sweep shares one file in
    ``artifacts/_step/``. The file is verified against this very module (a model whose weights did depend on
    seq_len gets an export of its own in ``workdir``)."""
    import hashlib
    import json

    knobs = {k: v for k, v in cell.knob_dict.items() if k != "seq_len"}
    key = hashlib.sha1(json.dumps([cell.source, knobs], sort_keys=True).encode()).hexdigest()[:12]
    shared = workdir.parent / "_step" / key / STEP_ONNX
    if shared.exists():
        try:
            verify_step(lm, shared, prompt)
            return shared, read_json(shared.with_name("exporter.json")).get("exporter", "dynamo")
        except RuntimeError:
            shared = workdir / STEP_ONNX
    shared.parent.mkdir(parents=True, exist_ok=True)
    exporter = export_step(lm, shared)
    verify_step(lm, shared, prompt)
    write_json(shared.with_name("exporter.json"), {"exporter": exporter, "source": cell.source, "knobs": knobs})
    return shared, exporter


def build_artifacts(job: Job, emit: Any) -> bool:
    """The artifacts worker of a generate run: the decode-step export, its input specs, the generation facts and
    the reference tokens. A model that cannot generate leaves ``{"skip": why}`` for the measuring workers and
    returns False (no variants to build)."""
    from archbench.bench.measure.artifacts import SOURCE, SPECS
    from archbench.bench.measure.protocol import one_line
    from archbench.bench.measure.sources import build_source

    t0 = time.perf_counter()
    cell, workdir = job.head, Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        torch.set_num_threads(cell.threads)
        src, specs = build_source(cell)
        if src.module is None:
            raise UnsupportedCell(f"--mode generate needs a PyTorch causal LM; {cell.source} is an ONNX graph")
        lm = language_model(src.module).float().eval()
        if is_hf(lm):
            raise UnsupportedCell("hf: models generate on --runtime torch only: their KV cache is a transformers "
                                  "object, not the decode-step graph's inputs ONNX Runtime needs")
        write_info(lm, cell, specs[0], workdir, job.cells)
        meta = read_json(workdir / SOURCE)
        if not (meta.get("onnx") and Path(meta["onnx"]).exists()):
            path, exporter = _shared_export(lm, cell, workdir, specs[0].make(2, seed=1234))
            meta = {"family": src.family, "kind": src.kind, "onnx": str(path.resolve()), "exporter": exporter}
        write_json(workdir / SPECS, [s.to_json() for s in step_specs(lm, specs[0])])
        write_json(workdir / SOURCE, meta)
    except UnsupportedCell as e:
        write_json(workdir / SOURCE, {"skip": str(e)})
        return False
    except Exception as e:
        write_json(workdir / SOURCE, {"error": one_line(e)})  # the measuring workers report it
        raise
    emit("artifacts", seconds=round(time.perf_counter() - t0, 3), exporter=meta["exporter"])
    return True


def torch_model(cell: Cell, workdir: Path, cells: Any) -> tuple[Any, dict[str, Any]]:
    """(measure.model.TorchModel, generation facts) for a torch worker: the module built, checked to be a KV-cache
    LM (else UnsupportedCell), its facts and reference tokens written while it is still fp32."""
    from archbench.bench.measure.model import TorchModel

    model = TorchModel(cell, workdir, cells, references=False)
    lm = language_model(model.module).eval()
    context = int(model.specs[0].shape[1]) + cell.options.generate.new_tokens
    if is_hf(lm):
        c = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
        longest = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
        if longest and context > longest:
            raise UnsupportedCell(f"prompt + new tokens = {context} is beyond the model's {longest} positions")
    return model, write_info(lm, cell, model.specs[0], workdir, cells)


def make_decoder(module: nn.Module, device: str, capacity: int = 0, compile_step: bool = False) -> Any:
    """The decoder a torch runtime times: TorchDecoder on the zoo's step API (capacity > 0: fixed-capacity cache,
    ``compile_step``: torch.compile), HFDecoder on a transformers causal LM (eager only)."""
    lm = language_model(module)
    if not is_hf(lm):
        return TorchDecoder(lm, device, capacity, compile_step)
    if compile_step:
        raise UnsupportedCell("hf: models generate on --runtime torch only (torch-compile generation compiles the "
                              "zoo's fixed-capacity step_static)")
    return HFDecoder(lm, device)


class TorchDecoder:
    """Greedy decoding on a torch module, as the timed loop drives it (archbench.bench.modes.generate).

    eager: ``step`` with a growing cache from an empty one; static (torch.compile): ``step_static`` with a cache
    of fixed capacity P + N - 1, compiled once per shape (prefill and decode) with ``pos`` a 0-d tensor so no
    position triggers a recompile. Tokens stay tensors between steps; ``tokens`` converts at the end."""

    def __init__(self, lm: nn.Module, device: str, capacity: int = 0, compile_step: bool = False) -> None:
        self.lm = lm
        self.device = torch.device(device)
        self.capacity = capacity
        self.static = capacity > 0
        fn = self.lm.step_static if self.static else self.lm.step
        self.fn = torch.compile(fn, dynamic=False) if compile_step else fn
        self.k = self.v = self.pos = None
        self.kv_itemsize = self.lm.new_cache(1, 0)[0].dtype.itemsize  # the cache is in the weights' dtype

    def convert(self, prompt: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(prompt)).to(self.device)

    def prefill(self, prompt: Tensor) -> Tensor:
        """Prompt (B, P) -> the first generated token (B, 1), from an empty cache."""
        with torch.inference_mode():
            k, v = self.lm.new_cache(prompt.shape[0], self.capacity, device=self.device)
            if self.static:
                self.pos = torch.tensor(0, device=self.device)
                logits, self.k, self.v = self.fn(prompt, k, v, self.pos)
                self.pos = self.pos + prompt.shape[1]
            else:
                logits, self.k, self.v = self.fn(prompt, k, v)
            return logits[:, -1].argmax(-1, keepdim=True)

    def decode(self, token: Tensor) -> Tensor:
        """The last token (B, 1) -> the next (B, 1); the cache grows by one."""
        with torch.inference_mode():
            if self.static:
                logits, self.k, self.v = self.fn(token, self.k, self.v, self.pos)
                self.pos = self.pos + 1
            else:
                logits, self.k, self.v = self.fn(token, self.k, self.v)
            return logits[:, -1].argmax(-1, keepdim=True)

    def tokens(self, token: Tensor) -> np.ndarray:
        return token.cpu().numpy()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


class HFDecoder(TorchDecoder):
    """Greedy decoding on a transformers causal LM with its own cache (``past_key_values``), as its ``generate``
    runs: the prompt without an attention mask (one length, no padding), then one token per call."""

    def __init__(self, lm: nn.Module, device: str) -> None:
        self.lm, self.device, self.cache = lm, torch.device(device), None
        self.kv_itemsize = next(lm.parameters()).dtype.itemsize
        if self.kv_itemsize == 1:  # a quantized model keeps float activations
            self.kv_itemsize = 4

    def _run(self, tokens: Tensor, cache: Any) -> Tensor:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers 5 renames past_key_values; both spellings still work
            out = self.lm(input_ids=tokens, past_key_values=cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].argmax(-1, keepdim=True)

    def prefill(self, prompt: Tensor) -> Tensor:
        return self._run(prompt, None)

    def decode(self, token: Tensor) -> Tensor:
        return self._run(token, self.cache)
