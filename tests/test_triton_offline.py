"""embedlib's Triton kernels compiled for GPUs that are not here (``embedlib.torch._triton.offline``).

The interpreter tests (``test_triton_kernels.py``) prove the kernels compute the right numbers; these
prove what the interpreter cannot: that every kernel compiles for an H100 (compute capability 9.0) and
an A100 (8.0) with the specialisation a real launch gives it, and that the compiled code moves rows the
way chapter 9 says (16-byte vector loads and stores, vector atomics on the H100, no atomics at all in
the deterministic backward, no spills, one kernel for every batch size). Runs on CPU, in this process:
``TRITON_INTERPRET`` must not be set here (the interpreter's ``tl.max`` cannot be compiled).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                reason="compiles kernels; under the interpreter see test_report_under_the_interpreter")

from embedlib.torch._triton import kernels as k  # noqa: E402
from embedlib.torch._triton import offline  # noqa: E402

H100, A100 = 90, 80
V = 200


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def table(dim, dtype=torch.float32, rows=V):
    return torch.randn(rows, dim, generator=_gen(1)).to(dtype)


def indices(n, dtype=torch.int64, high=V):
    return torch.randint(0, high, (n,), generator=_gen(2)).to(dtype)


def compile_(launch, capability=H100):
    with offline.compiled_launches(capability) as launches:
        launch()
    return launches


def row_accesses(instructions, index_bytes=8):
    """The loads, stores and atomics that move row data: all but the index loads (int64: 8 bytes)."""
    return {name: n for name, n in instructions.items()
            if not (name.startswith("ld.") and offline.bytes_per_access(name) == index_bytes
                    and not re.search(r"\.v\d", name))}


# --------------------------------------------------------------------------------------------------
# Everything compiles, for both GPUs
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("capability", [H100, A100])
@pytest.mark.parametrize("dim, dtype, index_dtype", [
    (1, torch.float32, torch.int64), (12, torch.float32, torch.int32), (64, torch.float32, torch.int64),
    (100, torch.float16, torch.int64), (64, torch.bfloat16, torch.int32), (12, torch.float64, torch.int64),
    (2048, torch.float32, torch.int64),  # two blocks of columns
])
def test_every_kernel_compiles(capability, dim, dtype, index_dtype):
    idx = indices(600, index_dtype)
    w, g = table(dim, dtype), table(dim, dtype, rows=600)
    bounds = torch.tensor([0, 5, 5, 300, 600])
    psw = torch.rand(600, generator=_gen(3)).to(dtype)
    launches = compile_(lambda: [
        k.gather(idx, w),
        k.scatter_add(idx, g, V, 3),
        k.scatter_add_deterministic(idx, g, V, 3, chunk=4),  # runs of ~3 cut at 4: one and two levels
        k.bag_forward(idx, w, bounds, psw, 3, "sum", False),
        k.bag_forward(idx, w, bounds, None, -1, "mean", False),
        k.bag_forward(idx, w, bounds, None, 3, "max", True),
        k.bag_backward(idx, g[:4], bounds, None, torch.tensor([5, 0, 295, 300]), V, 3, "mean"),
        k.bag_backward(idx, g[:4], bounds, psw, None, V, -1, "sum"),
    ], capability)
    names = [one.kernel for one in launches]
    assert names.count("_gather_kernel") == 1 and names.count("_scatter_add_kernel") == 1
    assert names.count("_segment_sum_kernel") >= 1
    assert names.count("_bag_forward_kernel") == 3 and names.count("_bag_backward_kernel") == 2
    for one in launches:
        assert one.capability == capability and ".target sm_" in one.ptx and one.asm["cubin"]
        assert one.grid[1] == (2 if dim == 2048 else 1)


def test_launches_are_compiled_not_run_and_the_patch_is_removed():
    w, idx = table(16), indices(100)
    original = triton.runtime.jit.JITFunction.run
    with pytest.raises(ZeroDivisionError):
        with offline.compiled_launches() as launches:
            out = k.gather(idx, w)
            1 / 0
    assert triton.runtime.jit.JITFunction.run is original
    assert len(launches) == 1 and launches[0].kernel == "_gather_kernel" and launches[0].grid == (1, 1)
    assert out.shape == (100, 16)  # allocated by the wrapper, never written: nothing ran


# --------------------------------------------------------------------------------------------------
# What the compiled code does
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [4, 12, 16, 64, 128, 300])
def test_float32_rows_move_in_16_byte_vectors(dim):
    """D a multiple of 4 floats: rows start on 16-byte boundaries, and every load and store of row
    data in the gather, and every atomic add of the backward on an H100, moves 16 bytes."""
    idx = indices(4096)
    (gather,) = compile_(lambda: k.gather(idx, table(dim)))
    moves = row_accesses(gather.memory_instructions())
    assert moves and {offline.bytes_per_access(name) for name in moves} == {16}, moves
    assert sum(n for name, n in moves.items() if name.startswith("st.")) > 0
    (scatter,) = compile_(lambda: k.scatter_add(idx, table(dim, rows=4096), V))
    atomics = {name for name in scatter.memory_instructions() if name.startswith(("atom.", "red."))}
    assert atomics and all(name.endswith("add.v4.f32") for name in atomics), atomics


def test_a100_adds_one_float_per_atomic():
    """Vector atomic adds of floats are new in compute capability 9.0: an A100 adds 4 bytes at a time."""
    (scatter,) = compile_(lambda: k.scatter_add(indices(4096), table(64, rows=4096), V), A100)
    atomics = {name for name in scatter.memory_instructions() if name.startswith(("atom.", "red."))}
    assert atomics and {offline.bytes_per_access(name) for name in atomics} == {4}, atomics


def test_rows_of_a_sliced_table_are_read_narrow_but_written_wide():
    """Columns 0..11 of a (V, 13) table: rows 52 bytes apart, so only 4-byte loads are safe; the output
    is a fresh contiguous (n, 12) tensor, whose 48-byte rows still take 16-byte stores."""
    (one,) = compile_(lambda: k.gather(indices(4096), table(13)[:, :12]))
    moves = row_accesses(one.memory_instructions())
    loads = {offline.bytes_per_access(name) for name in moves if name.startswith("ld.")}
    stores = {offline.bytes_per_access(name) for name in moves if name.startswith("st.")}
    assert loads == {4} and stores == {16}, moves


def test_six_floats_move_in_8_byte_vectors():
    (one,) = compile_(lambda: k.gather(indices(4096), table(6)))
    assert {offline.bytes_per_access(name) for name in row_accesses(one.memory_instructions())} == {8}


def test_deterministic_backward_has_no_atomics():
    launches = compile_(lambda: k.scatter_add_deterministic(indices(20000, high=50), table(64, rows=20000), 50))
    assert [one.kernel for one in launches] == ["_segment_sum_kernel"] * len(launches) and len(launches) >= 2
    for one in launches:
        assert not [name for name in one.memory_instructions() if name.startswith(("atom.", "red."))]


def test_one_kernel_serves_every_batch_size_and_padding_row():
    """The number of indices and the padding row are not specialised on: a new batch size reuses the
    compiled kernel instead of compiling another."""
    w = table(64)
    a = compile_(lambda: (k.gather(indices(4096), w), k.scatter_add(indices(4096), table(64, rows=4096), V, 3)))
    b = compile_(lambda: (k.gather(indices(4097), w), k.scatter_add(indices(4097), table(64, rows=4097), V, 7)))
    for x, y in zip(a, b):
        assert x.ptx == y.ptx and x.grid != y.grid


@pytest.mark.parametrize("dim", [12, 64, 2048])
def test_no_integer_division_per_number(dim):
    """PyTorch's index_select divides every element's position by D to find its row (chapter 9);
    these kernels know row and column from the block's shape: no division or remainder anywhere."""
    idx = indices(4096)
    launches = compile_(lambda: (k.gather(idx, table(dim)), k.scatter_add(idx, table(dim, rows=4096), V)))
    for one in launches:
        ops = offline.opcodes(one.ptx)
        assert ops["ret"] == 1 and any(name.startswith("ld.global") for name in ops)
        assert offline.integer_divisions(one.ptx) == 0, ops


def test_no_registers_spill_in_the_float32_kernels():
    for row in offline.report(H100):
        assert row["spilled_bytes"] == 0 and row["integer_divisions"] == 0, row
        assert 0 < row["registers"] <= 255, row


def test_report_rows():
    rows = offline.report(H100)
    assert [row["case"] for row in rows[:4]] == [what for what, _ in offline.cases()[:4]]
    assert {row["kernel"] for row in rows} == {"_gather_kernel", "_scatter_add_kernel", "_segment_sum_kernel",
                                              "_bag_forward_kernel"}
    deterministic = [row for row in rows if row["kernel"] == "_segment_sum_kernel"]
    assert [row["flags"] for row in deterministic] == ["HAS_PERM=True, TO_ROWS=False", "HAS_PERM=False, TO_ROWS=True"]


def test_report_under_the_interpreter():
    """In a process with TRITON_INTERPRET=1 (chapter 9 on a machine without a GPU), report() compiles
    in a child process and returns the same rows."""
    code = ("import json, os; os.environ['TRITON_INTERPRET'] = '1'\n"
            "from embedlib.torch._triton import offline\n"
            "print(json.dumps(offline.report(90)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == offline.report(H100)


def test_compiled_launches_refuses_the_interpreter():
    code = ("import os; os.environ['TRITON_INTERPRET'] = '1'\n"
            "from embedlib.torch._triton import offline\n"
            "try:\n"
            "    with offline.compiled_launches():\n"
            "        pass\n"
            "except RuntimeError as e:\n"
            "    print('refused:', e)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "refused: compiled_launches() needs a process without TRITON_INTERPRET" \
        in done.stdout, done.stdout + done.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# Reading PTX
# --------------------------------------------------------------------------------------------------
def test_memory_instructions_counts_global_accesses_only():
    ptx = """
        ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
    @%p1 ld.global.b64 { %rd5 }, [ %rd2 + 0 ];
        @%p2 st.global.v4.b32 [ %rd3 + 0 ], { %r1, %r2, %r3, %r4 };
        ld.shared.b32 %r9, [%r8];
        @%p3 atom.global.gpu.relaxed.add.v4.f32 { %r5, %r6, %r7, %r8 }, [ %rd4 + 0 ], { %r1, %r2, %r3, %r4 };
        ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 16 ];
    """
    assert offline.memory_instructions(ptx) == {"ld.global.v4.b32": 2, "ld.global.b64": 1, "st.global.v4.b32": 1,
                                                "atom.global.gpu.relaxed.add.v4.f32": 1}


def test_opcodes_skip_directives_labels_and_comments():
    ptx = """
    .reg .b64 %rd<84>;
    // a comment
$L__BB0_2:
    .loc 1 116 0
    @!%p3 bra $L__BB0_2;
    div.s64 %rd1, %rd2, %rd3;
    ret;
    """
    assert offline.opcodes(ptx) == {"bra": 1, "div.s64": 1, "ret": 1}
    assert offline.integer_divisions(ptx + "rem.u32 %r1, %r2, %r3;\n div.rn.f32 %f1, %f2, %f3;\n") == 2


@pytest.mark.parametrize("name, size", [("ld.global.v4.b32", 16), ("ld.global.b64", 8), ("st.global.v2.b32", 8),
                                        ("ld.global.b16", 2), ("atom.global.gpu.relaxed.add.v4.f32", 16),
                                        ("red.global.add.f32", 4), ("atom.global.gpu.relaxed.add.f64", 8)])
def test_bytes_per_access(name, size):
    assert offline.bytes_per_access(name) == size


def test_ptxas_resources_reads_registers_and_spills():
    (one,) = compile_(lambda: k.gather(indices(100), table(16)))
    r = offline.ptxas_resources(one.ptx, H100)
    assert set(r) == {"registers", "spill_stores", "spill_loads"} and r["registers"] > 0
    with pytest.raises(subprocess.CalledProcessError):
        offline.ptxas_resources("this is not PTX", H100)
