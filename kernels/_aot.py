"""Compile the kernels for a CUDA GPU on a machine without one (a development check, not a runtime path).

``compile_launches(arch=90)`` is a context manager under which calling the *real* launchers (with CPU tensors)
makes every ``kernel[grid](...)`` compile for ``cuda:sm_<arch>`` -- exactly the signature, specialization
(pointer alignment, strides equal to 1), constexprs, num_warps and num_stages the launcher would use on a GPU --
through Triton's full pipeline down to a cubin with the ptxas that ships in the triton wheel, and then *skip*
the launch. The compiled kernels (with ``metadata.shared`` bytes of shared memory, TTGIR, PTX) are collected.

It catches what the interpreter cannot: type errors of the compiled frontend, unsupported constexpr control
flow, tl.dot shape/dtype rules (bf16), shared memory over the per-block limit, and whether loads were
pipelined. It cannot say anything about speed or numerics on the device.

How: a stand-in Triton driver reports the target (``get_current_target``), and ``knobs.runtime.jit_cache_hook``
(called by ``JITFunction.run`` before compiling) compiles the kernel itself and returns True, which tells Triton
to skip its own compile and the launch. Both are restored on exit, as is ``TRITON_INTERPRET`` (removed inside
the block, since compiled-mode kernels are wanted). This touches Triton internals (3.x); on an incompatible
Triton it raises ``RuntimeError`` on entry rather than guessing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from typing import Any

from archbench.kernels._common import HAS_TRITON, import_triton

# Shared memory a block may use (opt-in maximum), bytes: H100/H200 (sm_90) 227 KiB, A100 (sm_80) 163 KiB.
SHARED_MEMORY_LIMIT = {90: 227 * 1024, 80: 163 * 1024, 89: 99 * 1024, 86: 99 * 1024}


@dataclass
class CompiledLaunch:
    name: str
    constants: dict[str, Any]
    num_warps: int
    num_stages: int
    shared_bytes: int
    kernel: Any  # triton.compiler.CompiledKernel (asm: ttir, ttgir, llir, ptx, cubin)
    ptxas_log: str = ""  # Triton's own `ptxas -v` output, when this launch was compiled fresh (not cached)

    def ttgir_count(self, op: str) -> int:
        return self.kernel.asm["ttgir"].count(op)

    def elementwise_masked_copies(self) -> int:
        """Async (cp.async) global->shared copies whose mask is computed per element (a bounds check), as opposed
        to the software pipeliner's one scalar predicate per stage (``tt.splat`` of an i1) or no mask at all."""
        import re

        ttgir = self.kernel.asm["ttgir"]
        defined_by = dict(re.findall(r"^\s*(%[\w.#]+) = ([\w.]+)", ttgir, flags=re.M))
        masks = re.findall(r"async_copy_global_to_local \S+, \S+ mask (%[\w.#]+)", ttgir)
        return sum(defined_by.get(m) != "tt.splat" for m in masks)

    def mma(self) -> str:
        """How tl.dot was lowered: "wgmma" (Hopper warpgroup MMA), "mma" (Ampere mma.sync), "fma" or "" (no dot)."""
        ttgir = self.kernel.asm["ttgir"]
        if "warp_group_dot" in ttgir:
            return "wgmma"
        if "tt.dot" not in ttgir:
            return ""
        return "mma" if "#ttg.nvidia_mma" in ttgir else "fma"

    def ptxas_usage(self, arch: int = 90) -> dict[str, int]:
        """Registers per thread and spill bytes from ``ptxas -v``, as Triton ran it for ``arch``.

        Read from the log of Triton's own ptxas run when this launch was compiled fresh; when Triton's cache
        served the cubin, ptxas is re-run on the PTX with Triton's flags (``-lineinfo --regAllocOptLevel=2``,
        ``--gpu-name=sm_90a``), which gives the same allocation. 255 registers with spills means the tiles are too
        big for num_warps: expect a slow kernel."""
        import re

        text = self.ptxas_log or self._run_ptxas(arch)
        regs = re.search(r"Used (\d+) registers", text)
        stores = re.search(r"(\d+) bytes spill stores", text)
        loads = re.search(r"(\d+) bytes spill loads", text)
        return {"registers": int(regs.group(1)) if regs else -1,
                "spill_stores": int(stores.group(1)) if stores else 0,
                "spill_loads": int(loads.group(1)) if loads else 0}

    def _run_ptxas(self, arch: int) -> str:
        import subprocess
        import tempfile

        from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

        with tempfile.TemporaryDirectory() as tmp:
            ptx = os.path.join(tmp, "k.ptx")
            with open(ptx, "w") as fh:
                fh.write(self.kernel.asm["ptx"])
            out = subprocess.run([get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                                  f"--gpu-name={sm_arch_from_capability(arch)}", ptx, "-o",
                                  os.path.join(tmp, "k.cubin")], capture_output=True, text=True, check=True)
        return out.stdout + out.stderr


class _TargetOnlyDriver:
    """Enough of a Triton driver for JITFunction.run to reach its compile hook; it cannot launch anything."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self._target

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"kernels._aot: no GPU here; the stand-in driver has no {name!r}")


@contextmanager
def compile_launches(arch: int = 90) -> Iterator[list[CompiledLaunch]]:
    """Within the block, kernel launches compile for ``cuda:sm_<arch>`` and are skipped; yields the list of them."""
    if not HAS_TRITON:
        raise RuntimeError("kernels._aot: triton is not installed")
    triton, _ = import_triton()
    try:
        from triton import knobs
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from triton.runtime.driver import driver
    except ImportError as exc:  # pragma: no cover - other triton versions
        raise RuntimeError(f"kernels._aot: unsupported triton {triton.__version__}: {exc}") from exc

    target = GPUTarget("cuda", arch, 32)
    launches: list[CompiledLaunch] = []

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):  # noqa: A002 - triton's names
        jit_fn = fn.jit_function
        src = ASTSource(jit_fn, compile["signature"], compile["constants"], compile["configs"][0])
        options = {"num_warps": compile["num_warps"], "num_stages": compile["num_stages"]}
        log = io.StringIO()
        saved_dump = knobs.nvidia.dump_ptxas_log
        knobs.nvidia.dump_ptxas_log = True  # Triton prints its ptxas -v log (fresh compiles only): keep it
        try:
            with redirect_stdout(log):
                kernel = triton.compile(src, target=target, options=options)
        finally:
            knobs.nvidia.dump_ptxas_log = saved_dump
        constants = {jit_fn.arg_names[k[0]]: v for k, v in compile["constants"].items() if len(k) == 1}
        text = log.getvalue()
        launches.append(CompiledLaunch(jit_fn.__name__, constants, options["num_warps"], options["num_stages"],
                                       kernel.metadata.shared, kernel, text if "Used" in text else ""))
        return True  # skip Triton's own compile and the launch

    saved_interpret = os.environ.pop("TRITON_INTERPRET", None)
    saved_hook = knobs.runtime.jit_cache_hook
    saved_driver = driver._active  # None unless something already chose one; creating one needs a GPU
    driver.set_active(_TargetOnlyDriver(target))
    knobs.runtime.jit_cache_hook = hook
    try:
        yield launches
    finally:
        knobs.runtime.jit_cache_hook = saved_hook
        driver._active = saved_driver
        if saved_interpret is not None:
            os.environ["TRITON_INTERPRET"] = saved_interpret
