"""Compile the kernels for a GPU that is not here, and read what the compiler made (chapter 9).

Triton compiles a kernel when it is first launched, for the GPU it is launched on. Nothing in that
compilation needs the GPU itself: the compiler and NVIDIA's assembler (``ptxas``, shipped inside the
``triton`` wheel) run on the CPU. :func:`compiled_launches` uses that. While it is active, a launch of
any ``@triton.jit`` kernel is not run; it is compiled for the chosen GPU, with the same
specialisation a real launch would get from the same arguments (the values of the constexprs, which
integers are 1 or multiples of 16, which pointers are 16-byte aligned), and recorded. The callers'
results are left unwritten, so only the record is of use.

What the record shows without a GPU:

* that every kernel compiles for the GPU (an H100 is compute capability 9.0), which the
  interpreter, used by the tests on CPU, does not prove;
* the memory instructions in the PTX, NVIDIA's assembly language: ``ld.global.v4.b32`` loads 16
  bytes in one instruction, ``ld.global.b32`` four; ``atom.global...add`` and ``red.global.add`` are
  atomic adds;
* from ``ptxas``: the registers each thread uses and whether any spill to local memory.

How fast the kernels run still takes the GPU to find out.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

#: Compute capability of an NVIDIA H100 (and H200), the GPU the book's targets are set for.
H100 = 90


@dataclasses.dataclass
class Launch:
    """One launch, compiled for ``capability`` instead of run."""

    kernel: str  # the kernel's name
    grid: tuple  # programs along each axis
    constexprs: dict  # name -> value, as the compiler specialised on them
    num_warps: int
    capability: int
    asm: dict  # "ttir", "ttgir", "llir", "ptx", "cubin": each stage of the compilation

    @property
    def ptx(self) -> str:
        return self.asm["ptx"]

    def memory_instructions(self) -> collections.Counter:
        return memory_instructions(self.ptx)

    def resources(self) -> dict:
        return ptxas_resources(self.ptx, self.capability)


def _grid(grid, args: dict) -> tuple:
    g = grid(args) if callable(grid) else grid
    return tuple(int(x) for x in (g if isinstance(g, (tuple, list)) else (g,)))


@contextlib.contextmanager
def compiled_launches(capability: int = H100):
    """While active, every ``kernel[grid](...)`` launch is compiled for a CUDA GPU of compute
    capability ``capability`` (90 for an H100) and appended, as a :class:`Launch`, to the list this
    yields, instead of running. Arguments may be CPU tensors: only their types and the alignment of
    their data pointers matter. Not thread-safe: it replaces ``JITFunction.run`` for the duration.

    Not available under ``TRITON_INTERPRET=1``: the kernels are then interpreter functions, and so
    are Triton's own helpers they call (``tl.max``, ...), which its compiler cannot use. Compile in a
    process without it (:func:`report` does that by itself)."""
    if knobs.runtime.interpret:
        raise RuntimeError("compiled_launches() needs a process without TRITON_INTERPRET=1 "
                           "(offline.report() starts one by itself)")
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    launches: list[Launch] = []
    original = JITFunction.run

    def compile_instead(self, *args, grid, warmup, **kwargs):
        kwargs.setdefault("debug", False)
        binder = create_function_from_signature(self.signature, self.params, backend)
        bound_args, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization,
                                                                options)
        compiled = triton.compile(ASTSource(self, signature, constexprs, attrs), target=target,
                                  options=options.__dict__)
        names = list(self.signature.parameters)
        launches.append(Launch(
            kernel=self.fn.__name__, grid=_grid(grid, bound_args),
            constexprs={names[path[0]]: value for path, value in constexprs.items()},
            num_warps=options.num_warps, capability=capability, asm=dict(compiled.asm)))
        return None

    JITFunction.run = compile_instead
    try:
        yield launches
    finally:
        JITFunction.run = original


_OPCODE = re.compile(r"^\s*(?:@!?%p\d+\s+)?([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*)(?=[\s;])", re.MULTILINE)
_DIRECTIVE_OR_LABEL = re.compile(r"^\s*(?:\.|\$|//|[{}])")


def opcodes(ptx: str) -> collections.Counter:
    """How many times each instruction appears in ``ptx`` (directives, labels and comments left out),
    e.g. ``{"ld.global.v4.b32": 2, "mad.lo.s64": 8, "ret": 1, ...}``."""
    lines = (line for line in ptx.splitlines() if line.strip() and not _DIRECTIVE_OR_LABEL.match(line))
    return collections.Counter(m.group(1) for line in lines if (m := _OPCODE.match(line)))


def memory_instructions(ptx: str) -> collections.Counter:
    """How many times each global-memory instruction (loads, stores, atomics) appears in ``ptx``,
    e.g. ``{"ld.global.v4.b32": 2, "st.global.v4.b32": 2, "ld.global.b64": 1}``."""
    return collections.Counter({name: n for name, n in opcodes(ptx).items()
                                if name.split(".")[0] in ("ld", "st", "red", "atom") and ".global" in name})


def integer_divisions(ptx: str) -> int:
    """Integer divisions and remainders in ``ptx`` (``div.s64``, ``rem.u32``, ...): the instructions a
    kernel needs when it finds a number's row and column from its position, as PyTorch's does."""
    return sum(n for name, n in opcodes(ptx).items()
               if name.split(".")[0] in ("div", "rem") and re.fullmatch(r"[su]\d+", name.split(".")[-1]))


def bytes_per_access(instruction: str) -> int:
    """Bytes one thread moves with one such instruction: ``ld.global.v4.b32`` moves 16."""
    parts = instruction.split(".")
    vector = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d+", p)), 1)
    bits = next((int(p[1:]) for p in reversed(parts) if re.fullmatch(r"[bfsu]\d+", p)), 8)
    return vector * bits // 8


def ptxas(capability: int = H100) -> str:
    """The ``ptxas`` that ships with Triton's NVIDIA backend, for GPUs of ``capability``."""
    from triton.backends.nvidia.compiler import get_ptxas
    return get_ptxas(capability).path


def ptxas_resources(ptx: str, capability: int = H100) -> dict:
    """Assemble ``ptx`` for ``sm_<capability>`` with ``ptxas -v`` and return what it reports per
    thread: ``{"registers": ..., "spill_stores": ..., "spill_loads": ...}`` (bytes for the spills)."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability
    arch = sm_arch_from_capability(capability)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        command = [ptxas(capability), "-v", f"--gpu-name={arch}", src, "-o", os.path.join(tmp, "kernel.cubin")]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    report = done.stdout + done.stderr
    registers = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    if registers is None or spills is None:
        raise RuntimeError(f"unexpected ptxas report:\n{report}")
    return {"registers": int(registers.group(1)), "spill_stores": int(spills.group(1)),
            "spill_loads": int(spills.group(2))}


# --------------------------------------------------------------------------------------------------
# embedlib's own kernels, compiled for one GPU: the table chapter 9 prints
# --------------------------------------------------------------------------------------------------
def cases(num_embeddings: int = 1000, n: int = 65536) -> list[tuple[str, object]]:
    """``(what, launch)`` pairs: each ``launch()`` calls one of the kernel wrappers of
    :mod:`embedlib.torch._triton.kernels` on CPU tensors, as embedlib would on a GPU. With ``n``
    indices into ``num_embeddings`` rows, each row repeats about 65 times, so the deterministic
    backward needs both of its kernels (pieces of 32, then their partial sums)."""
    import torch

    from embedlib.torch._triton import kernels as k
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, num_embeddings, (n,), generator=g)
    bounds = torch.arange(0, n + 1, 8)  # bags of 8

    def table(dim, dtype=torch.float32):
        return torch.randn(num_embeddings, dim, generator=g).to(dtype)

    def grad(dim):
        return torch.randn(n, dim, generator=g)

    return [
        ("lookup, float32, D = 12", lambda: k.gather(idx, table(12))),
        ("lookup, float32, D = 64", lambda: k.gather(idx, table(64))),
        ("lookup, float32, D = 12, from a (V, 13) table", lambda: k.gather(idx, table(13)[:, :12])),
        ("lookup, bfloat16, D = 64", lambda: k.gather(idx, table(64, torch.bfloat16))),
        ("backward, atomic adds, float32, D = 64", lambda: k.scatter_add(idx, grad(64), num_embeddings)),
        ("backward, deterministic, float32, D = 64",
         lambda: k.scatter_add_deterministic(idx, grad(64), num_embeddings)),
        ("bags of 8 (sum), float32, D = 64", lambda: k.bag_forward(idx, table(64), bounds, None, -1, "sum", False)),
    ]


def report(capability: int = H100) -> list[dict]:
    """Compile every launch of :func:`cases` for ``capability`` and describe it: one dict per
    launch with the case, the kernel, its block and warps, the global-memory instructions in its
    PTX (name -> count), its integer divisions, and what ``ptxas`` reports (registers per thread,
    spilled bytes).

    Under ``TRITON_INTERPRET=1`` Triton's own helpers (``tl.max``, ...) are interpreter functions
    that its compiler cannot use, so the report is then made in a child process without it."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        done = subprocess.run([sys.executable, "-m", __name__, "--capability", str(capability)],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"compiling in a child process failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout)
    rows = []
    for what, launch in cases():
        with compiled_launches(capability) as launches:
            launch()
        for one in launches:
            blocks = [v for name, v in one.constexprs.items() if name.startswith("BLOCK_")]
            resources = one.resources()
            flags = ", ".join(f"{name}={value}" for name, value in one.constexprs.items() if isinstance(value, bool))
            rows.append({"case": what, "kernel": one.kernel, "flags": flags, "capability": capability,
                         "block": " x ".join(str(b) for b in blocks), "warps": one.num_warps,
                         "instructions": dict(one.memory_instructions()),
                         "integer_divisions": integer_divisions(one.ptx), "registers": resources["registers"],
                         "spilled_bytes": resources["spill_stores"]})
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="embedlib's Triton kernels compiled for a CUDA GPU, as JSON")
    parser.add_argument("--capability", type=int, default=H100, help="compute capability, e.g. 90 (H100), 80 (A100)")
    print(json.dumps(report(parser.parse_args().capability)))
