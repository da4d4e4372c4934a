"""The Triton kernels behind ``embedlib.torch`` on CUDA (chapter 9 builds them step by step).

A lookup moves bytes and does no arithmetic, so its speed limit is the memory bandwidth: the best a
gather can do is read each wanted row once and write it once, as fast as a device-to-device copy
moves the same bytes. Every kernel here is laid out for that:

* one program handles a block of ``BLOCK_N`` rows (indices) and ``BLOCK_D`` columns; ``BLOCK_D`` is
  the embedding dimension rounded up to a power of two (Triton's blocks have power-of-two shapes),
  so a whole row is one vectorised load and one vectorised store, and the mask ``cols < D`` hides
  the padding columns;
* ``BLOCK_N`` is chosen so that a program moves a few thousand elements: enough work per program
  to hide memory latency, not so much that the registers spill;
* offsets are computed in 64-bit, because ``row * D`` overflows 32 bits for tables past 2 GiB;
* sizes that change from call to call (the number of indices, bags, pieces; the padding row) are
  not specialised on, so a new batch size does not compile a new kernel; strides and ``D`` are,
  which lets the compiler prove that rows are aligned and load them in wide vectors.

Nothing here checks its arguments: the callers in :mod:`embedlib.torch._triton` have validated
them (indices in range, shapes, dtypes) before any kernel runs. The module imports ``triton`` at
import time; :mod:`embedlib.torch._triton` imports it only when a kernel is about to be used.
"""
from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl


def _fix_interpreter() -> None:
    """Let Triton 3.6's interpreter use a reduced value as a loop bound under NumPy >= 2.4.

    The interpreter turns such a value into an int with ``int(array)`` on a one-element array,
    which NumPy 2.4 refuses; the kernels here loop up to the longest bag or run in their block.
    Triton fixed it upstream (triton-lang/triton#9171, ``int(data.squeeze())``); this applies the
    same fix to older versions, and only to the interpreter.
    """
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_embedlib_fixed", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched._embedlib_fixed = True
    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _fix_interpreter()

#: Widest block of columns one program handles; wider rows are split across a second grid axis.
MAX_BLOCK_D = 1024
#: Elements (rows x columns) one program moves in the gather and the scatter-add.
ELEMENTS_PER_PROGRAM = 4096
#: Members one program adds in a row of the deterministic backward before handing over a partial
#: sum (so a row repeated a million times is added by many programs, in a fixed order).
CHUNK = 32

BAG_MODES = {"sum": 0, "mean": 1, "max": 2}


def block_d(dim: int) -> int:
    return min(triton.next_power_of_2(max(dim, 1)), MAX_BLOCK_D)


def block_n(bd: int, elements: int = ELEMENTS_PER_PROGRAM) -> int:
    return max(1, min(1024, elements // bd))


def warps(bn: int, bd: int) -> int:
    return 8 if bn * bd >= 8192 else 4 if bn * bd >= 2048 else 2 if bn * bd >= 512 else 1


def align(dim: int, itemsize: int, *row_strides: int, col_strides=(1,)) -> int:
    """The largest power of two, at most 16 bytes' worth of elements, that divides ``dim`` and every
    row stride: every row then starts on a 16-byte boundary (when the pointers do, which Triton
    checks itself), and the kernels tell the compiler so, which lets it move rows in 16-byte
    vectors. A column stride other than 1 rules vectors out: 1."""
    if any(c != 1 for c in col_strides):
        return 1
    g = math.gcd(dim, max(1, 16 // itemsize), *row_strides)
    return g & -g if g else 1


def on_its_device(launch):
    """Run ``launch`` with the GPU that holds its first tensor as the current device: Triton launches
    on the current device, which need not be the one the tensors live on (``cuda:1``, say)."""
    @functools.wraps(launch)
    def wrapper(*args, **kwargs):
        t = next(a for a in args if isinstance(a, torch.Tensor))
        if t.is_cuda and t.device.index is not None and t.device.index != torch.cuda.current_device():
            with torch.cuda.device(t.device):
                return launch(*args, **kwargs)
        return launch(*args, **kwargs)
    return wrapper


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision gradients are added in float32 and rounded once at the end, as torch does."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------------
# Forward: out[i] = weight[idx[i]]
# --------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["n"])
def _gather_kernel(idx_ptr, w_ptr, out_ptr, n, stride_wr, stride_wc,
                   D: tl.constexpr, ALIGN: tl.constexpr, OUT_ALIGN: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < n
    src = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    src_at = tl.multiple_of(src * stride_wr, ALIGN)  # where each wanted row starts (see align())
    out_at = tl.multiple_of(rows * D, OUT_ALIGN)  # the output is contiguous: its rows align by D alone
    ok = row_ok[:, None] & (cols < D)[None, :]
    vals = tl.load(w_ptr + src_at[:, None] + cols[None, :] * stride_wc, mask=ok)
    tl.store(out_ptr + out_at[:, None] + cols[None, :], vals, mask=ok)


@on_its_device
def gather(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight[idx]`` for a flat, contiguous int32/int64 ``idx``: shape ``(len(idx), D)``."""
    n, dim = idx.numel(), weight.shape[1]
    out = torch.empty((n, dim), dtype=weight.dtype, device=weight.device)
    if n == 0 or dim == 0:
        return out
    bd = block_d(dim)
    bn = block_n(bd)
    grid = (triton.cdiv(n, bn), triton.cdiv(dim, bd))
    a = align(dim, weight.element_size(), weight.stride(0), col_strides=(weight.stride(1),))
    _gather_kernel[grid](idx, weight, out, n, weight.stride(0), weight.stride(1), D=dim, ALIGN=a,
                         OUT_ALIGN=align(dim, out.element_size()), BLOCK_N=bn, BLOCK_D=bd, num_warps=warps(bn, bd))
    return out


# --------------------------------------------------------------------------------------------------
# Backward, fast: out[idx[i]] += grad[i] with atomic adds (the order of the adds is up to the GPU)
# --------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["n", "pad"])
def _scatter_add_kernel(idx_ptr, g_ptr, out_ptr, n, stride_gr, stride_gc, pad,
                        D: tl.constexpr, ALIGN: tl.constexpr, OUT_ALIGN: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < n
    dst = tl.load(idx_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    keep = row_ok & (dst != pad)  # the padding row receives nothing
    ok = keep[:, None] & (cols < D)[None, :]
    g_at = tl.multiple_of(rows * stride_gr, ALIGN)
    out_at = tl.multiple_of(dst * D, OUT_ALIGN)
    g = tl.load(g_ptr + g_at[:, None] + cols[None, :] * stride_gc, mask=ok, other=0.0)
    tl.atomic_add(out_ptr + out_at[:, None] + cols[None, :], g.to(out_ptr.dtype.element_ty), mask=ok,
                  sem="relaxed")


@on_its_device
def scatter_add(idx: torch.Tensor, grad: torch.Tensor, num_embeddings: int, pad: int = -1) -> torch.Tensor:
    """Dense ``(V, D)`` sum of the ``grad`` rows per index, by atomic adds; ``pad`` (or -1) is skipped."""
    n, dim = idx.numel(), grad.shape[1]
    acc = accumulator_dtype(grad.dtype)
    out = torch.zeros((num_embeddings, dim), dtype=acc, device=grad.device)
    if n and dim and num_embeddings:
        bd = block_d(dim)
        bn = block_n(bd)
        grid = (triton.cdiv(n, bn), triton.cdiv(dim, bd))
        a = align(dim, grad.element_size(), grad.stride(0), col_strides=(grad.stride(1),))
        _scatter_add_kernel[grid](idx, grad, out, n, grad.stride(0), grad.stride(1), pad, D=dim, ALIGN=a,
                                  OUT_ALIGN=align(dim, out.element_size()), BLOCK_N=bn, BLOCK_D=bd,
                                  num_warps=warps(bn, bd))
    return out if acc == grad.dtype else out.to(grad.dtype)


# --------------------------------------------------------------------------------------------------
# Backward, deterministic: sort once, then add each run of equal indices in a fixed order
# --------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["num_pieces", "pad"])
def _segment_sum_kernel(perm_ptr, src_ptr, starts_ptr, keys_ptr, out_ptr, num_pieces,
                        stride_sr, stride_sc, pad, D: tl.constexpr, ALIGN: tl.constexpr,
                        OUT_ALIGN: tl.constexpr, HAS_PERM: tl.constexpr, TO_ROWS: tl.constexpr,
                        BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """Piece ``p`` is the run ``[starts[p], starts[p+1])`` of a sorted sequence; its members are
    rows ``perm[j]`` of ``src`` (or rows ``j`` without ``perm``). Each piece is added in order,
    member by member, in the accumulator's precision; the sum goes to row ``keys[p]`` of ``out``
    (``TO_ROWS``, skipping ``pad``) or to row ``p`` (a partial sum for the next level)."""
    pieces = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    piece_ok = pieces < num_pieces
    col_ok = (cols < D)[None, :]
    begin = tl.load(starts_ptr + pieces, mask=piece_ok, other=0)
    end = tl.load(starts_ptr + pieces + 1, mask=piece_ok, other=0)
    length = end - begin
    acc = tl.zeros((BLOCK_P, BLOCK_D), dtype=out_ptr.dtype.element_ty)
    for k in range(0, tl.max(length)):
        active = k < length
        j = begin + k
        if HAS_PERM:
            j = tl.load(perm_ptr + j, mask=active, other=0)
        # Each row's pointer first, then its columns: written as one 2-D offset, the same address
        # makes Triton 3.6's layout pass fail for D = 32 and 64 when the rows come through perm.
        row_ptr = src_ptr + tl.multiple_of(j.to(tl.int64) * stride_sr, ALIGN)
        ok = active[:, None] & col_ok
        v = tl.load(row_ptr[:, None] + cols[None, :] * stride_sc, mask=ok, other=0.0)
        acc += v.to(out_ptr.dtype.element_ty)
    if TO_ROWS:
        key = tl.load(keys_ptr + pieces, mask=piece_ok, other=0).to(tl.int64)
        ok = (piece_ok & (key != pad))[:, None] & col_ok
        out_at = tl.multiple_of(key * D, OUT_ALIGN)
        tl.store(out_ptr + out_at[:, None] + cols[None, :], acc, mask=ok)
    else:
        out_at = tl.multiple_of(pieces * D, OUT_ALIGN)
        tl.store(out_ptr + out_at[:, None] + cols[None, :], acc, mask=piece_ok[:, None] & col_ok)


def _pieces(sorted_keys: torch.Tensor, chunk: int):
    """Cut a sorted key sequence into runs of equal keys, each at most ``chunk`` long: ``(starts with
    the end appended, key of each piece, whether some run was cut)``. One host sync (the count)."""
    n = sorted_keys.numel()
    position = torch.arange(n, device=sorted_keys.device)
    new_key = torch.ones(n, dtype=torch.bool, device=sorted_keys.device)
    new_key[1:] = sorted_keys[1:] != sorted_keys[:-1]
    run_start = torch.cummax(torch.where(new_key, position, 0), dim=0).values
    cut = new_key | ((position - run_start) % chunk == 0)
    num_pieces, num_runs = torch.stack([cut.sum(), new_key.sum()]).tolist()
    starts = torch.nonzero_static(cut, size=num_pieces).reshape(-1)
    return torch.cat([starts, starts.new_tensor([n])]), sorted_keys[starts], num_pieces != num_runs


def _segment_sum(perm, src, starts, keys, out, pad, to_rows):
    num_pieces, dim = starts.numel() - 1, src.shape[1]
    bd = block_d(dim)
    bp = block_n(bd, 2048)
    grid = (triton.cdiv(num_pieces, bp), triton.cdiv(dim, bd))
    a = align(dim, src.element_size(), src.stride(0), col_strides=(src.stride(1),))
    _segment_sum_kernel[grid](perm if perm is not None else starts, src, starts, keys, out, num_pieces,
                              src.stride(0), src.stride(1), pad, D=dim, ALIGN=a,
                              OUT_ALIGN=align(dim, out.element_size()), HAS_PERM=perm is not None,
                              TO_ROWS=to_rows, BLOCK_P=bp, BLOCK_D=bd, num_warps=warps(bp, bd))


@on_its_device
def scatter_add_deterministic(idx: torch.Tensor, grad: torch.Tensor, num_embeddings: int,
                              pad: int = -1, chunk: int = CHUNK) -> torch.Tensor:
    """The same sums as :func:`scatter_add`, added in an order fixed by the indices alone.

    A stable sort brings equal indices together in order of appearance; each run is cut into
    pieces of at most ``chunk`` members, each piece is added in order by one program, and the
    partial sums of a long run are added again, level by level, until one sum per row is left. No
    atomics anywhere, so the result is the same bits on every run.
    """
    n, dim = idx.numel(), grad.shape[1]
    acc = accumulator_dtype(grad.dtype)
    out = torch.zeros((num_embeddings, dim), dtype=acc, device=grad.device)
    if n == 0 or dim == 0 or num_embeddings == 0:
        return out if acc == grad.dtype else out.to(grad.dtype)
    keys = idx.to(torch.int32) if num_embeddings < 2**31 else idx.to(torch.int64)
    sorted_keys, perm = torch.sort(keys, stable=True)
    perm, src = perm, grad
    while True:
        starts, piece_keys, was_cut = _pieces(sorted_keys, chunk)
        if not was_cut:
            _segment_sum(perm, src, starts, piece_keys, out, pad, True)
            break
        partial = torch.empty((starts.numel() - 1, dim), dtype=acc, device=grad.device)
        _segment_sum(perm, src, starts, piece_keys, partial, pad, False)
        perm, src, sorted_keys = None, partial, piece_keys
    return out if acc == grad.dtype else out.to(grad.dtype)


# --------------------------------------------------------------------------------------------------
# Bags: out[b] = sum / mean / max of weight[idx[e]] for e in bag b (padding entries left out)
# --------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["num_bags", "pad"])
def _bag_forward_kernel(idx_ptr, w_ptr, bounds_ptr, psw_ptr, out_ptr, argmax_ptr, count_ptr,
                        num_bags, stride_wr, stride_wc, pad, D: tl.constexpr, ALIGN: tl.constexpr,
                        OUT_ALIGN: tl.constexpr, MODE: tl.constexpr, HAS_PSW: tl.constexpr, SAVE_ARGMAX: tl.constexpr,
                        ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    bags = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    bag_ok = bags < num_bags
    col_ok = (cols < D)[None, :]
    begin = tl.load(bounds_ptr + bags, mask=bag_ok, other=0)
    end = tl.load(bounds_ptr + bags + 1, mask=bag_ok, other=0)
    length = end - begin
    acc = tl.zeros((BLOCK_B, BLOCK_D), dtype=ACC)
    best_at = tl.full((BLOCK_B, BLOCK_D), -1, dtype=tl.int64)
    count = tl.zeros((BLOCK_B,), dtype=tl.int64)
    for k in range(0, tl.max(length)):
        e = begin + k
        row = tl.load(idx_ptr + e, mask=k < length, other=0).to(tl.int64)
        keep = (k < length) & (row != pad)
        ok = keep[:, None] & col_ok
        w_at = tl.multiple_of(row * stride_wr, ALIGN)
        v = tl.load(w_ptr + w_at[:, None] + cols[None, :] * stride_wc, mask=ok, other=0.0).to(acc.dtype)
        count += keep.to(tl.int64)
        if MODE == 2:
            # First maximum wins; a NaN wins over numbers and then stays (torch.maximum's rule).
            better = (v > acc) | (best_at < 0) | ((v != v) & (acc == acc))
            take = ok & better
            acc = tl.where(take, v, acc)
            best_at = tl.where(take, e[:, None], best_at)
        else:
            if HAS_PSW:
                v = v * tl.load(psw_ptr + e, mask=keep, other=0.0).to(acc.dtype)[:, None]
            acc += v
    if MODE == 1:
        acc = acc / tl.maximum(count, 1).to(acc.dtype)[:, None]
    if MODE == 2:
        acc = tl.where(best_at < 0, 0.0, acc)
    ok = bag_ok[:, None] & col_ok
    out_at = tl.multiple_of(bags * D, OUT_ALIGN)
    tl.store(out_ptr + out_at[:, None] + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)
    if SAVE_ARGMAX:
        tl.store(argmax_ptr + out_at[:, None] + cols[None, :], best_at, mask=ok)
    if MODE == 1:
        tl.store(count_ptr + bags, count, mask=bag_ok & (tl.program_id(1) == 0))


@on_its_device
def bag_forward(idx, weight, bounds, psw, pad, mode, save_argmax):
    """``(out, argmax, counts)``: ``argmax`` (entry of each (bag, column) maximum, -1 for none)
    only for mode "max" with ``save_argmax``; ``counts`` (non-padding entries per bag) for "mean"."""
    num_bags, dim = bounds.numel() - 1, weight.shape[1]
    dev = weight.device
    out = torch.empty((num_bags, dim), dtype=weight.dtype, device=dev)
    m = BAG_MODES[mode]
    argmax = torch.empty((num_bags, dim), dtype=torch.int64, device=dev) if m == 2 and save_argmax else None
    counts = torch.empty(num_bags, dtype=torch.int64, device=dev) if m == 1 else None
    if num_bags == 0 or dim == 0:
        return out, argmax, counts
    bd = block_d(dim)
    bb = block_n(bd, 2048)
    grid = (triton.cdiv(num_bags, bb), triton.cdiv(dim, bd))
    dummy = bounds
    _bag_forward_kernel[grid](idx, weight, bounds, psw if psw is not None else dummy, out,
                              argmax if argmax is not None else dummy, counts if counts is not None else dummy,
                              num_bags, weight.stride(0), weight.stride(1), pad, D=dim,
                              ALIGN=align(dim, weight.element_size(), weight.stride(0),
                                          col_strides=(weight.stride(1),)),
                              OUT_ALIGN=align(dim, out.element_size()), MODE=m, HAS_PSW=psw is not None,
                              SAVE_ARGMAX=argmax is not None,
                              ACC=tl.float64 if weight.dtype == torch.float64 else tl.float32,
                              BLOCK_B=bb, BLOCK_D=bd, num_warps=warps(bb, bd))
    return out, argmax, counts


@triton.jit(do_not_specialize=["num_bags", "pad"])
def _bag_backward_kernel(idx_ptr, g_ptr, bounds_ptr, psw_ptr, count_ptr, out_ptr, num_bags,
                         stride_gr, stride_gc, pad, D: tl.constexpr, ALIGN: tl.constexpr,
                         OUT_ALIGN: tl.constexpr, MEAN: tl.constexpr, HAS_PSW: tl.constexpr,
                         BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Sum and mean bags: every entry ``e`` of bag ``b`` adds ``grad[b] * psw[e]`` (or
    ``grad[b] / count[b]``) to row ``idx[e]`` of ``out``, by atomic adds."""
    bags = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    bag_ok = bags < num_bags
    col_ok = (cols < D)[None, :]
    begin = tl.load(bounds_ptr + bags, mask=bag_ok, other=0)
    end = tl.load(bounds_ptr + bags + 1, mask=bag_ok, other=0)
    length = end - begin
    g_at = tl.multiple_of(bags * stride_gr, ALIGN)
    g = tl.load(g_ptr + g_at[:, None] + cols[None, :] * stride_gc, mask=bag_ok[:, None] & col_ok,
                other=0.0).to(out_ptr.dtype.element_ty)
    if MEAN:
        count = tl.load(count_ptr + bags, mask=bag_ok, other=1)
        g = g / tl.maximum(count, 1).to(g.dtype)[:, None]
    for k in range(0, tl.max(length)):
        e = begin + k
        row = tl.load(idx_ptr + e, mask=k < length, other=0).to(tl.int64)
        keep = (k < length) & (row != pad)
        v = g
        if HAS_PSW:
            v = v * tl.load(psw_ptr + e, mask=keep, other=0.0).to(g.dtype)[:, None]
        out_at = tl.multiple_of(row * D, OUT_ALIGN)
        tl.atomic_add(out_ptr + out_at[:, None] + cols[None, :], v, mask=keep[:, None] & col_ok, sem="relaxed")


@on_its_device
def bag_backward(idx, grad, bounds, psw, counts, num_embeddings, pad, mode):
    """Dense ``(V, D)`` gradient of a sum or mean bag w.r.t. the weight, by atomic adds."""
    num_bags, dim = bounds.numel() - 1, grad.shape[1]
    acc = accumulator_dtype(grad.dtype)
    out = torch.zeros((num_embeddings, dim), dtype=acc, device=grad.device)
    if num_bags and dim and num_embeddings and idx.numel():
        bd = block_d(dim)
        bb = block_n(bd, 2048)
        grid = (triton.cdiv(num_bags, bb), triton.cdiv(dim, bd))
        _bag_backward_kernel[grid](idx, grad, bounds, psw if psw is not None else bounds,
                                   counts if counts is not None else bounds, out, num_bags,
                                   grad.stride(0), grad.stride(1), pad, D=dim,
                                   ALIGN=align(dim, grad.element_size(), grad.stride(0), col_strides=(grad.stride(1),)),
                                   OUT_ALIGN=align(dim, out.element_size()), MEAN=mode == "mean",
                                   HAS_PSW=psw is not None, BLOCK_B=bb, BLOCK_D=bd, num_warps=warps(bb, bd))
    return out if acc == grad.dtype else out.to(grad.dtype)
