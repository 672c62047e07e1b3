"""Shared plumbing for the kernels: is Triton available, which path runs, and kernels made at launch time.

Dispatch rule (every public function in ``kernels/`` follows it):

    Triton kernel   if triton is installed and (the tensor is on CUDA or TRITON_INTERPRET=1 is set)
    torch reference otherwise (a CPU tensor without the interpreter, or no triton installed)

Triton fixes interpreter-vs-compiled mode when ``import triton`` runs: its own library functions (``tl.sum``,
``tl.max``, ``tl.zeros``, ...) are ``@triton.jit``-decorated at import, and ``@triton.jit`` reads
``TRITON_INTERPRET`` at decoration time. So:

- ``kernels`` never imports triton at import time (``import kernels.rms_norm`` is cheap, needs no GPU, and
  cannot freeze the mode early); triton is imported at the first kernel launch.
- Kernels are plain functions wrapped by ``lazy_jit``; ``triton.jit`` runs at first launch, and the module's
  ``tl`` global (referenced by the kernel bodies, which Triton resolves through the function's globals) is
  bound then. Kernel annotations are strings (``from __future__ import annotations``), which Triton accepts.
- If TRITON_INTERPRET at launch time disagrees with the mode triton was imported in (say ``torch.compile``
  imported triton before the variable was set), the launch raises a ``RuntimeError`` saying so, rather than
  failing deep inside Triton. Set ``TRITON_INTERPRET=1`` before anything imports triton (or re-exec).

Kernel bodies must not call other ``@triton.jit`` helpers of ours (each kernel is self-contained).
No env var writes and no device queries happen at import.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None


def import_triton() -> tuple[Any, Any]:
    """``(triton, triton.language)``, importing triton on first call; RuntimeError if it is not installed."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; the kernels' torch references are used instead")
    import triton
    import triton.language as tl

    return triton, tl


def triton_import_mode() -> str | None:
    """How the imported triton was set up: "interpret", "compiled", or None when triton is not imported yet."""
    standard = sys.modules.get("triton.language.standard")
    if standard is None:
        return None
    return "interpret" if type(standard.sum).__name__ == "InterpretedFunction" else "compiled"


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` is set to a true value now (Triton runs kernels in numpy on the CPU)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether the public functions should launch the Triton kernel for these tensors (see module docstring)."""
    if not HAS_TRITON:
        return False
    return interpreting() or all(t.is_cuda for t in tensors)


def target_arch() -> int:
    """The CUDA compute capability Triton compiles for now, as one number (90: H100/H200, 80: A100).

    Asked of Triton's active driver: the current GPU on a CUDA machine, the stand-in target inside
    ``kernels._aot.compile_launches``. Launchers use it where the best tiles differ between architectures.
    """
    triton, _ = import_triton()
    arch = triton.runtime.driver.active.get_current_target().arch
    return arch if isinstance(arch, int) else 0


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def dot_precision(fp32_allows_tf32: bool) -> str:
    """``tl.dot`` input precision for fp32 operands, mirroring the matching torch flag.

    fp16/bf16 operands ignore it (tensor cores, fp32 accumulation). The interpreter computes exactly anyway.
    """
    return "tf32" if fp32_allows_tf32 and not interpreting() else "ieee"


class LazyJIT:
    """``triton.jit(fn)`` created on first launch, for the mode (compiled / interpreter) active at that time.

    One object per mode is kept, so a process that runs compiled kernels (CUDA) never mixes in interpreted ones.

    Use as ``kernel[grid](*args, **meta)`` exactly like a ``@triton.jit`` function.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._by_mode: dict[bool, Any] = {}

    def get(self) -> Any:
        mode = interpreting()
        kernel = self._by_mode.get(mode)
        if kernel is None:
            triton, tl = import_triton()
            imported = triton_import_mode()
            if imported is not None and (imported == "interpret") != mode:
                raise RuntimeError(
                    f"{self.__name__}: TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r} now, but triton "
                    f"was imported in {imported} mode (Triton fixes the mode at `import triton`). Set "
                    "TRITON_INTERPRET=1 before anything imports triton (torch.compile does), e.g. in a fresh "
                    "process."
                )
            self.fn.__globals__["tl"] = tl  # kernel bodies resolve `tl` through the function's globals
            kernel = self._by_mode[mode] = triton.jit(self.fn)  # triton.jit reads TRITON_INTERPRET itself
        return kernel

    def __getitem__(self, grid: Any) -> Any:
        return self.get()[grid]


def lazy_jit(fn: Callable[..., Any]) -> LazyJIT:
    """Decorator: like ``@triton.jit`` but mode-agnostic at import time (see module docstring)."""
    return LazyJIT(fn)
