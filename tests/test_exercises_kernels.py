"""Checkers of chapter 9 (embedlib/exercises/kernels.py): right answers pass, classic mistakes get their hint.

The kernel checkers are tried with torch functions standing in for a reader's kernel (the mistakes
are emulated in torch), and once with real Triton kernels run by Triton's interpreter in a child
process (``TRITON_INTERPRET=1`` must be set before triton is first imported, and must not leak into
the rest of the suite).
"""
import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import ROOT
from embedlib.exercises import CheckResult, check_gather_kernel, check_lines_touched, check_scatter_add_kernel
from embedlib.exercises.kernels import _lines_touched

torch = pytest.importorskip("torch")


# --- memory lines touched per row -----------------------------------------------------------------

def lines_touched(row_bytes, line_bytes):
    return row_bytes / line_bytes + 1 - math.gcd(row_bytes, line_bytes) / line_bytes


def lines_touched_exactly(row_bytes, line_bytes):
    return Fraction(row_bytes + line_bytes - math.gcd(row_bytes, line_bytes), line_bytes)


def lines_by_counting(row_bytes, line_bytes):
    # the rows of one period, L / gcd(s, L) of them, each counted line by line
    period = line_bytes // math.gcd(row_bytes, line_bytes)
    starts = np.arange(period) * row_bytes
    return float(np.mean((starts + row_bytes - 1) // line_bytes - starts // line_bytes + 1))


def test_lines_touched_solutions_pass():
    for fn in (lines_touched, lines_touched_exactly, lines_by_counting):
        result = check_lines_touched(fn)
        assert result, repr(result)
        assert isinstance(result, CheckResult)
        assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


@given(st.integers(1, 2_000), st.integers(1, 256))
def test_reference_lines_formula_matches_counting_every_row_of_a_period(s, line):
    g = math.gcd(s, line)
    counted = sum((k * s + s - 1) // line - (k * s) // line + 1 for k in range(line // g))
    assert Fraction(counted, line // g) == Fraction(s + line - g, line)
    assert math.isclose(_lines_touched(s, line), (s + line - g) / line, rel_tol=1e-15)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, L: math.ceil(s / L), "starts on a line boundary"),
    (lambda s, L: s / L, "a line is fetched whole"),
    (lambda s, L: math.ceil(s / L) + 1, "that is the worst case"),
    (lambda s, L: s / L + 1, "uniformly random offsets"),
    (lambda s, L: [s, L], "return a single number"),
])
def test_classic_lines_mistakes_get_their_hint(wrong, hint):
    result = check_lines_touched(wrong)
    assert not result
    assert "✗" in repr(result) and "problem:" in repr(result)
    assert hint in repr(result), repr(result)


def test_lines_report_is_exact():
    def bytes_over_line(row_bytes, line_bytes):
        return row_bytes / line_bytes

    assert repr(check_lines_touched(bytes_over_line)) == textwrap.dedent("""\
        ✗ bytes_over_line failed hidden case 1 of 17: row_bytes=48, line_bytes=64 (rows smaller than a line)
          inputs:
            row_bytes = 48
            line_bytes = 64
          problem: 1 of 1 values differ; the first at position (): expected 1.5, got 0.75
          hint: s/L counts bytes in units of lines, but a line is fetched whole: partly used lines count""")


def test_checkers_refuse_a_call_instead_of_a_function():
    for checker in (check_lines_touched, check_gather_kernel, check_scatter_add_kernel):
        with pytest.raises(TypeError, match="pass your function itself"):
            checker(None)


def test_checkers_are_deterministic():
    def wrong(s, line):
        return s / line

    assert repr(check_lines_touched(wrong)) == repr(check_lines_touched(wrong))
    assert repr(check_gather_kernel(gather_d_apart)) == repr(check_gather_kernel(gather_d_apart))
    assert repr(check_scatter_add_kernel(last_write_wins)) == repr(check_scatter_add_kernel(last_write_wins))


# --- gather kernel (emulated in torch) ------------------------------------------------------------

def gather(indices, weight):
    return weight[indices.long()]


def gather_by_index_select(indices, weight):
    return torch.index_select(weight, 0, indices)


def test_gather_solutions_pass():
    for fn in (gather, gather_by_index_select):
        result = check_gather_kernel(fn)
        assert result, repr(result)
    assert check_gather_kernel(gather, device="cpu", seed=3)


def gather_d_apart(indices, weight):
    # the kernel computes row offsets as index * D: right only when weight is contiguous
    num_rows, dim = weight.shape
    return weight.as_strided((num_rows, dim), (dim, 1), weight.storage_offset())[indices.long()]


def gather_drops_last_block(indices, weight):
    # a grid of B // BLOCK_N programs (BLOCK_N = 128) into an output from torch.zeros
    out = weight[indices.long()]
    out[(len(indices) // 128) * 128:] = 0
    return out


def gather_block_d_8(indices, weight):
    # BLOCK_D = 8 whatever D is: the columns from 8 on are never written
    out = weight[indices.long()]
    out[:, 8:] = 0
    return out


def gather_raises_on_empty(indices, weight):
    if len(indices) == 0:
        raise ValueError("arange's end argument must be greater than the start argument")
    return weight[indices.long()]


@pytest.mark.parametrize("wrong, hint", [
    (gather_d_apart, "weight.stride(0) = 17 elements apart, not D = 10"),
    (gather_drops_last_block, "rows from 896 on are wrong"),
    (gather_block_d_8, "columns 8 and after are wrong"),
    (gather_raises_on_empty, "return the empty (0, D) output before launching"),
])
def test_gather_mistakes_get_their_hint(wrong, hint):
    result = check_gather_kernel(wrong)
    assert not result
    assert hint in repr(result), repr(result)


@pytest.mark.parametrize("wrong, problem", [
    (lambda i, w: w[i.long()].double(), "allocate the output with dtype=weight.dtype"),
    (lambda i, w: w[i.long()].cpu().numpy(), "not a torch.Tensor"),
    (lambda i, w: w[:1].expand(len(i), -1) if w.shape[0] == 1 else w[i.long()], "shares its memory"),
])
def test_gather_result_must_be_a_new_tensor_like_weight(wrong, problem):
    result = check_gather_kernel(wrong)
    assert not result
    assert problem in repr(result), repr(result)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_kernel_checkers_say_when_there_is_no_gpu():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        check_gather_kernel(gather, device="cuda")


# --- scatter-add kernel (emulated in torch) -------------------------------------------------------

def scatter_add(indices, grad, num_embeddings):
    out = torch.zeros((num_embeddings, grad.shape[1]), dtype=grad.dtype, device=grad.device)
    return out.index_add_(0, indices, grad)


def scatter_add_by_index_put(indices, grad, num_embeddings):
    out = torch.zeros((num_embeddings, grad.shape[1]), dtype=grad.dtype, device=grad.device)
    return out.index_put_((indices.long(),), grad, accumulate=True)


def test_scatter_add_solutions_pass():
    for fn in (scatter_add, scatter_add_by_index_put):
        result = check_scatter_add_kernel(fn)
        assert result, repr(result)


def last_write_wins(indices, grad, num_embeddings):
    out = torch.zeros((num_embeddings, grad.shape[1]), dtype=grad.dtype, device=grad.device)
    out[indices.long()] = grad
    return out


def lost_within_blocks(indices, grad, num_embeddings, block=64):
    # a load, add and store per block of indices: repeats inside a block lose all but one update
    out = torch.zeros((num_embeddings, grad.shape[1]), dtype=grad.dtype, device=grad.device)
    for start in range(0, len(indices), block):
        rows = indices[start:start + block].long()
        out[rows] = out[rows] + grad[start:start + block]
    return out


def untouched_rows_of_garbage(indices, grad, num_embeddings):
    # every named row written with its sum, the others left as torch.empty found them
    out = torch.full((num_embeddings, grad.shape[1]), 7.0, dtype=grad.dtype, device=grad.device)
    named = indices.long().unique()
    out[named] = scatter_add(indices, grad, num_embeddings)[named]
    return out


def adds_onto_sevens(indices, grad, num_embeddings):
    out = torch.full((num_embeddings, grad.shape[1]), 7.0, dtype=grad.dtype, device=grad.device)
    return out.index_add_(0, indices, grad)


def tiny_garbage(indices, grad, num_embeddings):
    # within the tolerance of the values, but rows nobody names must be exactly 0
    out = scatter_add(indices, grad, num_embeddings)
    untouched = torch.ones(num_embeddings, dtype=torch.bool, device=grad.device)
    untouched[indices.long()] = False
    out[untouched] = 1e-30
    return out


def scatter_raises_on_empty(indices, grad, num_embeddings):
    if len(indices) == 0:
        raise ValueError("Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)")
    return scatter_add(indices, grad, num_embeddings)


@pytest.mark.parametrize("wrong, hint", [
    (last_write_wins, "use tl.atomic_add"),
    (lost_within_blocks, "use tl.atomic_add"),
    (untouched_rows_of_garbage, "start from torch.zeros"),
    (adds_onto_sevens, "start from torch.zeros"),
    (tiny_garbage, "must be exactly 0"),
    (scatter_raises_on_empty, "return the all-zero (num_embeddings, D) table"),
    (lambda i, g, v: scatter_add(i, g, v).float(), "allocate the output with dtype=grad.dtype"),
])
def test_scatter_add_mistakes_get_their_hint(wrong, hint):
    result = check_scatter_add_kernel(wrong)
    assert not result
    assert hint in repr(result), repr(result)


def test_lost_updates_found_in_the_first_case():
    result = check_scatter_add_kernel(lost_within_blocks)
    assert result.cases_run == 1 and "repeated indices lose updates" in repr(result)


# --- real Triton kernels, run by the interpreter --------------------------------------------------

KERNELS = '''
import torch
import triton
import triton.language as tl

from embedlib.exercises import check_gather_kernel, check_scatter_add_kernel


@triton.jit
def gather_kernel(idx_ptr, w_ptr, out_ptr, B, stride_w, D: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < B
    src = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    ok = row_ok[:, None] & (cols < D)[None, :]
    vals = tl.load(w_ptr + src[:, None] * stride_w + cols[None, :], mask=ok)
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], vals, mask=ok)


def triton_gather(indices, weight):
    B, D = indices.numel(), weight.shape[1]
    out = torch.empty((B, D), dtype=weight.dtype, device=weight.device)
    if B > 0:
        gather_kernel[(triton.cdiv(B, 64),)](indices, weight, out, B, weight.stride(0), D=D, BLOCK_N=64,
                                             BLOCK_D=triton.next_power_of_2(D))
    return out


@triton.jit
def scatter_add_kernel(idx_ptr, g_ptr, out_ptr, B, D: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, ATOMIC: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < B
    dst = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    ok = row_ok[:, None] & (cols < D)[None, :]
    g = tl.load(g_ptr + rows[:, None] * D + cols[None, :], mask=ok, other=0.0)
    where = out_ptr + dst[:, None] * D + cols[None, :]
    if ATOMIC:
        tl.atomic_add(where, g, mask=ok)
    else:  # the race: lanes with the same row all load the old sum, and one store wins
        tl.store(where, tl.load(where, mask=ok) + g, mask=ok)


def scatter(indices, grad, num_embeddings, atomic):
    B, D = grad.shape
    out = torch.zeros((num_embeddings, D), dtype=grad.dtype, device=grad.device)
    if B > 0:
        scatter_add_kernel[(triton.cdiv(B, 64),)](indices, grad, out, B, D=D, BLOCK_N=64,
                                                  BLOCK_D=triton.next_power_of_2(D), ATOMIC=atomic)
    return out


def triton_scatter_add(indices, grad, num_embeddings):
    return scatter(indices, grad, num_embeddings, True)


def racy_scatter_add(indices, grad, num_embeddings):
    return scatter(indices, grad, num_embeddings, False)


result = check_gather_kernel(triton_gather, device="cpu")
assert result, repr(result)
result = check_scatter_add_kernel(triton_scatter_add, device="cpu")
assert result, repr(result)
result = check_scatter_add_kernel(racy_scatter_add, device="cpu")
assert not result and "use tl.atomic_add" in repr(result), repr(result)
print("interpreted kernels checked")
'''


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernels_through_the_interpreter_in_a_child_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    child = subprocess.run([sys.executable, "-c", KERNELS], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    assert "interpreted kernels checked" in child.stdout
