"""Training-side measurements (``archbench run --mode train``): step time, samples/s, memory split, time to train.

    ts = TrainStep(create_model("mlp_s"), optimizer="adamw", precision="fp32", device="cpu")
    data = ts.make_batch(32, seed=0)     # ((inputs,), target) on the step's device
    loss = ts(data)                      # one full step; returns the loss (detached)
    ts.split(peak_mib, baseline_mib)     # MemorySplit: params / grads / optimizer state / activations

**One step** = ``optimizer.zero_grad(set_to_none=True)``, forward (under ``torch.autocast`` for bf16/fp16, weights
stay fp32), loss, backward (through ``torch.amp.GradScaler`` for fp16, whose small gradients would underflow;
bf16 has fp32's exponent range and needs none), ``optimizer.step()``. The worker times it with
``archbench.bench.measure.harness.measure`` under the same rules as inference, rotating among random (inputs, target) sets; the
``latency_*`` fields of a training record hold the step time and ``throughput_sps`` = batch / mean step time.

**Loss**, chosen from the output of a batch-1 probe forward (the zoo has no labels; targets are random):

- language model, output (B, N, V) on integer input (B, N) with N >= 2: next-token cross-entropy of
  ``logits[:, :-1]`` against ``tokens[:, 1:]`` (the input tokens are their own targets);
- classifier, output (B, C) with C >= 2: cross-entropy against random labels in [0, C);
- anything else: MSE against a random normal target of the output's shape (the first tensor of a tuple/dict).

**Optimizers**: ``adamw`` (default; lr 1e-3, torch defaults otherwise: 2 fp32 moments per parameter plus a scalar
``step`` tensor per parameter tensor) and ``sgd`` (lr 0.01, momentum 0.9: one momentum buffer per parameter).

**Memory**, from a pass of ``MEM_STEPS`` steps on one input set after the timed loop (high-water mark reset first):

- ``train_peak_mem_mib``: CUDA: ``torch.cuda.max_memory_allocated``; CPU: the worker's peak resident memory
  (VmHWM), which includes the interpreter and libraries: ``train_mem_baseline_mib``;
- ``param_mib``, ``grad_mib``, ``optimizer_state_mib``: exact, sum of ``numel x element_size`` over the tensors;
- ``activation_mib`` = peak - baseline - params - grads - optimizer state, clamped at 0: an **estimate**. It holds
  what autograd saves plus the input batch, kernel workspace, allocator slack and any library memory first touched
  after the baseline. The baseline is read after a throwaway copy of the model has run one batch-1 forward and
  backward (so lazy library initialisation is already in it) and before the measured model is built: RSS on CPU
  (after ``malloc_trim`` hands freed heap back), allocated bytes on CUDA. Grads and activations do not peak at the
  same instant (activations are freed as backward makes grads), so this is the activation memory *at the peak*.

**Memory cap** (``--mem-cap-mib``): on CUDA, ``torch.cuda.set_per_process_memory_fraction`` makes the allocator
raise its out-of-memory error at the cap. On CPU the cap is on the worker's resident memory (RSS), not on its
address space: ``RLIMIT_AS`` counts virtual memory, which for torch (thread stacks, mapped libraries, allocator
reservations) is several times the RSS, so it would fail cells that fit. A watchdog thread polls RSS every
``WATCH_S`` seconds and raises ``MemoryCapExceeded`` in the measuring thread at its next Python bytecode; after the
memory pass the peak (VmHWM, which a short spike inside one C++ call cannot escape) is checked against the cap too.
Either way the cell fails with an error starting ``out of memory``. The cap is for one step with one batch resident
(as in the memory pass and in a max-batch trial): while the timed loop holds its extra rotated input sets, the
watchdog allows for their exact size on top of the cap.

**Time to train**: ``time_to_train_s = train_samples / throughput_sps``. Assumes the steady-state step time holds
for the whole run: no data loading, augmentation, evaluation, checkpointing, compile or warm-up time.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archbench.bench.measure.harness import available_mib, current_rss_mib, trim_heap  # noqa: F401  (available_mib: maxbatch)

MODE_TRAIN = "train"
MODE_TRIAL = "maxbatch-trial"  # one trial of a --find-max-batch search: memory only, no timing
MEM_STEPS = 2  # steps of the memory pass: the 1st creates optimizer state, the 2nd runs with all of it present
WATCH_S = 0.005  # RSS poll interval of the CPU memory-cap watchdog (reading /proc/self/statm costs ~20 us)
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}
OPTIMIZERS = tuple(DEFAULT_LR)
LOSSES = ("next-token-cross-entropy", "cross-entropy", "mse")


class TrainUnsupported(Exception):
    """This cell cannot train here (ONNX graph, unknown precision, no CUDA): the cell is *skipped*."""


class MemoryCapExceeded(BaseException):
    """Raised asynchronously in the measuring thread when RSS passes --mem-cap-mib. A BaseException, so library
    code that catches ``Exception`` to try a fallback cannot swallow it."""


# ----------------------------------------------------------------------------------------------- memory helpers


def tensor_mib(tensors: Iterable[Tensor]) -> float:
    """MiB of ``tensors`` from their sizes (numel x element_size); each tensor counted once."""
    seen: dict[int, Tensor] = {id(t): t for t in tensors}
    return sum(t.numel() * t.element_size() for t in seen.values()) / 2**20


class RssWatchdog:
    """Polls this process's RSS; above ``cap_mib`` it raises MemoryCapExceeded in the thread that entered it.

    The exception lands at that thread's next Python bytecode, i.e. between torch ops (one long C++ call such as
    backward finishes first). On exit a not-yet-delivered exception is cancelled."""

    def __init__(self, cap_mib: float, interval_s: float = WATCH_S) -> None:
        self.cap_mib = cap_mib
        self.interval_s = interval_s
        self.fired_mib: float | None = None
        self._stop = threading.Event()

    def __enter__(self) -> RssWatchdog:
        self._target = threading.get_ident()
        self._thread = threading.Thread(target=self._loop, name="rss-watchdog", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = current_rss_mib()
            if rss > self.cap_mib:
                self.fired_mib = rss
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                          ctypes.py_object(MemoryCapExceeded))
                return

    def __exit__(self, *exc: Any) -> bool:
        self._stop.set()
        self._thread.join()
        if self.fired_mib is not None:  # cancel an exception set but not yet delivered
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), None)
        return False


@dataclass(frozen=True)
class MemorySplit:
    """Memory of a training step, MiB. peak = baseline + params + grads + optimizer_state + activations
    (activations clamped at 0, so the sum can exceed a peak that came out below the exact parts)."""

    peak_mib: float
    baseline_mib: float
    param_mib: float
    grad_mib: float
    optimizer_state_mib: float
    activation_mib: float


# ----------------------------------------------------------------------------------------------- loss and step


def first_tensor(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for o in out:
            with contextlib.suppress(TypeError):
                return first_tensor(o)
    raise TypeError(f"the model's output holds no tensor ({type(out).__name__}); cannot form a loss")


def loss_kind(out: Tensor, inputs: tuple[Tensor, ...]) -> str:
    """Which loss fits an output (see the module docstring). ``out`` and ``inputs`` are from the same call."""
    x = inputs[0] if len(inputs) == 1 else None
    if (x is not None and not x.is_floating_point() and x.dim() == 2 and out.dim() == 3
            and tuple(out.shape[:2]) == tuple(x.shape) and x.shape[1] >= 2 and out.is_floating_point()):
        return "next-token-cross-entropy"
    if out.dim() == 2 and out.shape[1] >= 2 and out.is_floating_point():
        return "cross-entropy"
    return "mse"


def compute_loss(kind: str, out: Tensor, inputs: tuple[Tensor, ...], target: Tensor | None) -> Tensor:
    if kind == "next-token-cross-entropy":
        tokens = inputs[0]  # (B, N) int
        logits = out[:, :-1]  # (B, N-1, V): position n predicts token n+1
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    if kind == "cross-entropy":
        return F.cross_entropy(out, target)  # out (B, C), target (B,) int64 in [0, C)
    assert target is not None
    return F.mse_loss(out.float(), target)


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
    if name not in DEFAULT_LR:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    lr = DEFAULT_LR[name] if lr is None else lr
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.AdamW(params, lr=lr)


def _probe(model: nn.Module, input_spec: Any) -> tuple[str, tuple[int, ...]]:
    """(loss kind, output shape without the batch dim) from one batch-1 forward in eval mode without grad."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = (input_spec.make(batch=1, generator=torch.Generator().manual_seed(0)),)
            out = first_tensor(model(*x))
    finally:
        model.train(was_training)
    return loss_kind(out, x), tuple(out.shape[1:])


class TrainStep:
    """One full training step of ``model`` on batches built from ``input_spec`` (default: ``model.input_spec``)."""

    def __init__(
        self,
        model: nn.Module,
        input_spec: Any = None,
        optimizer: str = "adamw",
        precision: str = "fp32",
        device: str = "cpu",
        compile: bool = False,
        lr: float | None = None,
    ) -> None:
        if precision not in AMP_DTYPES:
            raise TrainUnsupported(f"training runs {', '.join(AMP_DTYPES)} (bf16/fp16 under autocast); "
                                   f"not {precision}")
        self.input_spec = input_spec if input_spec is not None else model.input_spec
        self.loss_kind, self.out_tail = _probe(model, self.input_spec)
        self.device = torch.device(device)
        self.precision = precision
        self.amp_dtype = AMP_DTYPES[precision]
        self.model = model.to(self.device).train()
        self.optimizer = make_optimizer(optimizer, [p for p in self.model.parameters() if p.requires_grad], lr)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model

    def make_batch(self, batch: int, seed: int = 0) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Random inputs (never zeros) and a random target for this step's loss, on the step's device."""
        g = torch.Generator().manual_seed(seed)
        x = self.input_spec.make(batch=batch, generator=g)
        if self.loss_kind == "next-token-cross-entropy":
            target = None  # the tokens are their own targets
        elif self.loss_kind == "cross-entropy":
            target = torch.randint(0, self.out_tail[0], (batch,), generator=g)
        else:
            target = torch.randn((batch, *self.out_tail), generator=g)
        return (x.to(self.device),), (None if target is None else target.to(self.device))

    def __call__(self, data: tuple[tuple[Tensor, ...], Tensor | None]) -> Tensor:
        inputs, target = data
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = first_tensor(self.forward(*inputs))
            loss = compute_loss(self.loss_kind, out, inputs, target)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def state_mib(self) -> tuple[float, float, float]:
        """(params, grads, optimizer state) MiB, exact from tensor sizes (grads: those present now)."""
        params = list(self.model.parameters())
        grads = [p.grad for p in params if p.grad is not None]
        state = [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, Tensor)]
        return tensor_mib(params), tensor_mib(grads), tensor_mib(state)

    def split(self, peak_mib: float, baseline_mib: float) -> MemorySplit:
        p, g, s = self.state_mib()
        return MemorySplit(peak_mib, baseline_mib, p, g, s, max(0.0, peak_mib - baseline_mib - p - g - s))

    def release(self) -> None:
        """Drop the gradients (optimizer state stays: it is part of the next cell's steady state too)."""
        self.optimizer.zero_grad(set_to_none=True)


def memory_pass(ts: TrainStep, data: Any, baseline_mib: float, steps: int = MEM_STEPS) -> MemorySplit:
    """Peak memory over ``steps`` steps after resetting the high-water mark, split into its parts."""
    from archbench.bench.measure.harness import peak_rss_mib, reset_peak_rss

    cuda = ts.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()  # trims the heap first
    for _ in range(steps):
        ts(data)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mib()
    return ts.split(peak, baseline_mib)


def time_to_train_s(train_samples: int, throughput_sps: float) -> float | None:
    """Seconds to push ``train_samples`` samples through at the steady-state rate (see the module docstring)."""
    return train_samples / throughput_sps if throughput_sps > 0 else None


# ----------------------------------------------------------------------------------------------- worker side


def set_tensors(data: tuple[tuple[Tensor, ...], Tensor | None]) -> list[Tensor]:
    inputs, target = data
    return [*inputs, *([] if target is None else [target])]


def is_cuda_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
