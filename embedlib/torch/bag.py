"""Embedding bags in torch: sum, mean or max of the rows in each bag, differentiable (chapters 5, 8).

Every argument is checked here first (:func:`check`); then the bags run on one of three paths, all
with the same results: the Triton kernels of chapter 9 on CUDA (:mod:`embedlib.torch._triton`),
PyTorch's own ``embedding_bag`` kernels on the CPU, and plain torch operations elsewhere (a CUDA
table without Triton, a float type PyTorch's kernels lack, and gradients of gradients).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from embedlib import _checks
from embedlib.torch import _tensors, _triton, bounds
from embedlib.torch.lookup import frequency_scale, gather, index_vector, scatter_add, sparse_rows
from embedlib.torch._tensors import renorm_entries_, unchecked_renorm_

#: PyTorch's numbering of the modes, in its embedding_bag kernels
MODES = {"sum": 0, "mean": 1, "max": 2}
#: The float types that PyTorch's CPU embedding_bag kernels take
NATIVE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class CheckedBag(NamedTuple):
    """A bag's arguments after every check: what every path starts from."""

    flat: torch.Tensor  # (n,) the indices, flattened, range-checked
    bounds: torch.Tensor  # (num_bags + 1,) int64: bag b is flat[bounds[b]:bounds[b + 1]]
    psw: torch.Tensor | None  # (n,) per-sample weights, flattened
    pad: int | None  # padding_idx in [0, V), or None


def check(indices, num_embeddings, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None,
          include_last_offset=False, device=None, dtype=None) -> CheckedBag:
    """Every check of a bag, in a fixed order, with one host sync for all the values they need (the
    index range and the offsets' first, last and any decrease): on CUDA, before any kernel runs."""
    idx, psw, off = _arguments(indices, offsets, mode, per_sample_weights, device, dtype)
    flat = idx.reshape(-1)
    n = flat.numel()
    if flat.dtype == torch.uint64:  # only with a value >= 2**63 (see _tensors.indices): named there
        _tensors.in_range(flat, num_embeddings)
    if idx.dim() == 2:
        bounds = torch.arange(idx.shape[0] + 1, device=idx.device) * idx.shape[1]
    values = _summary(flat, off)
    if off is not None:
        first = last = decrease = None
        if off.numel():
            first, last, has_down = values[-3:]
            if has_down:
                i = int(torch.nonzero(off[1:] < off[:-1])[0, 0]) + 1
                decrease = (i, int(off[i - 1]), int(off[i]))
        _checks.bag_offsets(off.numel(), first, decrease, last, n, include_last_offset)
        bounds = _bounds(off, n, include_last_offset)
    if n:
        _checks.index_range(values[0], values[1], num_embeddings)
    pad = _checks.padding_idx(padding_idx, num_embeddings)
    return CheckedBag(flat, bounds.long(), psw, pad)


def _arguments(indices, offsets, mode, per_sample_weights, device, dtype):
    """The checks that need no value of any tensor: ``(indices, flat per-sample weights or None,
    int64 offsets or None)``."""
    idx = _tensors.indices(indices, device)
    _checks.bag_mode(mode, per_sample_weights is not None)
    _checks.bag_layout(idx.dim(), offsets is not None)
    psw = None
    if per_sample_weights is not None:
        has_dtype = isinstance(per_sample_weights, (torch.Tensor, np.ndarray))
        psw = _tensors.floats(per_sample_weights, "per_sample_weights", idx.device)
        if dtype is not None and psw.dtype != dtype:
            if has_dtype:  # as torch: per-sample weights of another float type are refused, not cast
                _checks.same_dtype(str(psw.dtype).replace("torch.", ""), str(dtype).replace("torch.", ""),
                                   "per_sample_weights")
            psw = psw.to(dtype)  # a Python list has no float type of its own
        _checks.same_shape(tuple(psw.shape), tuple(idx.shape), "per_sample_weights", "one weight per index")
        psw = psw.reshape(-1)
    off = None
    if idx.dim() == 1:
        off = _tensors.indices(offsets, idx.device, "offsets")
        if off.dim() != 1:
            raise ValueError(f"offsets must be 1-D, got shape {tuple(off.shape)}")
        off = off.long()
    return idx, psw, off


def _bounds(off: torch.Tensor, n: int, include_last_offset: bool) -> torch.Tensor:
    """Bag b is entries ``bounds[b]:bounds[b + 1]``: without include_last_offset the last bag runs to
    the end (no offsets at all: one bag)."""
    if include_last_offset:
        return off
    return torch.cat([off if off.numel() else off.new_zeros(1), off.new_tensor([n])])


def _summary(flat: torch.Tensor, off: torch.Tensor | None) -> list:
    """What the checks need, as Python ints: the indices' smallest and largest (if there are any),
    then the offsets' first, last and whether they ever decrease (if there are any). On CUDA in one
    host sync; on the CPU through NumPy (see :func:`embedlib.torch._tensors.min_max`)."""
    if _tensors.numpy_readable(flat):
        values = list(_tensors.min_max(flat)) if flat.numel() else []
        if off is not None and off.numel():
            o = off.numpy()
            values += [int(o[0]), int(o[-1]), int((o[1:] < o[:-1]).any())]
        return values
    summary = list(torch.aminmax(flat)) if flat.numel() else []
    if off is not None and off.numel():
        down = (off[1:] < off[:-1]).any() if off.numel() > 1 else off.new_zeros((), dtype=torch.bool)
        summary += [off[0], off[-1], down]
    return torch.stack([v.long() for v in summary]).tolist() if summary else []


def run(c: CheckedBag, w: torch.Tensor, mode: str, scale_grad_by_freq: bool = False,
        sparse: bool = False) -> torch.Tensor:
    """The bags of arguments that :func:`check` has passed, on the path that suits ``w``
    (``scale_grad_by_freq``: the weight's gradient rows divided by their index's count in the input;
    ``sparse``: the weight's gradient as a sparse COO tensor, one row per non-padding entry)."""
    if _triton.enabled(w) and not (scale_grad_by_freq or sparse):  # CUDA with Triton: chapter 9's kernels
        return _triton.embedding_bag(c.flat, w, c.bounds, c.psw, c.pad, mode)
    psw = None if c.psw is None else c.psw.to(w.dtype)  # differentiable: its gradient comes back in its type
    if w.device.type == "cpu" and w.dtype in NATIVE_DTYPES and w.shape[1]:  # (they fail when D = 0)
        # one index type, as F.embedding_bag makes it; contiguous, as the kernels read them
        flat, bounds = c.flat.long().contiguous(), c.bounds.contiguous()
        psw = None if psw is None else psw.contiguous()
        if w.stride(1) != 1:
            # PyTorch's fast kernels need each row's columns adjacent in memory; its slow ones round
            # differently (float16 and bfloat16 sums in their own type, weighted sums without a fused
            # multiply-add). Copy such a (rare) table, so that its bags do not depend on its layout.
            w = w.contiguous()
        if _triton.differentiable(w) or (psw is not None and _triton.differentiable(psw)):
            return _NativeBag.apply(w, psw, flat, bounds, c.pad, mode, scale_grad_by_freq, sparse)[0]
        return _native_forward(w, psw, flat, bounds, c.pad, mode, False)[0]
    return composite(c.flat, c.bounds, w, psw, c.pad, mode, scale_grad_by_freq, sparse)


# --------------------------------------------------------------------------------------------------
# Plain torch operations: gather the rows, then add them (or pick their maximum) bag by bag
# --------------------------------------------------------------------------------------------------
def _bag_of_entry(bounds: torch.Tensor, n: int) -> torch.Tensor:
    """The bag of each of the ``n`` entries."""
    return torch.repeat_interleave(torch.arange(bounds.numel() - 1, device=bounds.device), torch.diff(bounds),
                                   output_size=n)


def entries(flat, bounds, pad):
    """``(rows, bag, keep)``: the row and bag of every entry that is not padding (``keep`` is None
    without padding, else the mask of those entries)."""
    rows, bag = flat.long(), _bag_of_entry(bounds, flat.numel())
    keep = None
    if pad is not None:
        keep = rows != pad
        rows, bag = rows[keep], bag[keep]
    return rows, bag, keep


def max_winners(values: torch.Tensor, bag: torch.Tensor, num_bags: int,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(best, winner)`` of detached ``values`` (entries, D) grouped by ``bag``: each bag's maximum
    per column and the entry that won it, the first one on ties; ``len(values)`` for empty bags.
    A NaN in a bag wins its column (NaN propagates, as in torch.amax and np.maximum). Entries where
    ``keep`` is False never win (their values should be -inf, so that they do not raise a maximum)."""
    n, dim = values.shape
    where = bag[:, None].expand(-1, dim)
    best = values.new_zeros(num_bags, dim).scatter_reduce(0, where, values, "amax", include_self=False)
    position = torch.arange(n, device=values.device)[:, None].expand(-1, dim)
    best_here = best[bag]
    won = (values == best_here) | (values.isnan() & best_here.isnan())
    if keep is not None:
        won = won & keep[:, None]
    position = torch.where(won, position, n)
    winner = torch.full((num_bags, dim), n, device=values.device).scatter_reduce(0, where, position, "amin")
    return best, winner


def composite(flat, bounds, w, psw, pad, mode, scale_grad_by_freq=False, sparse=False) -> torch.Tensor:
    """Bags of checked arguments from differentiable torch operations, differentiable w.r.t. ``w`` and
    ``psw``: the rows of every entry, then an index_add per bag (or, for "max", a gather of the
    winning entries)."""
    keep = None if pad is None else flat != pad
    return masked_bags(flat, _bag_of_entry(bounds, flat.numel()), keep, bounds.numel() - 1, w, psw, pad, mode,
                       scale_grad_by_freq, sparse)


def masked_bags(flat, bag, keep, num_bags, w, psw, pad, mode, scale_grad_by_freq=False, sparse=False):
    """The bags from tensors of fixed shapes (no host sync, no shape that depends on the values, so
    torch.compile keeps it in one graph): entry ``e`` reads row ``flat[e]`` into bag ``bag[e]`` where
    ``keep[e]`` (None: everywhere); the others (padding, out of range, outside every bag) count for
    nothing, not even in a mean's count, and get no gradient."""
    n, dim = flat.numel(), w.shape[1]
    values = gather(flat, w, pad, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
    if mode == "max":
        # The gradient of a max goes to the entry that won it: gather that entry, so autograd routes it there.
        chosen = values.detach() if keep is None else values.detach().masked_fill(~keep[:, None], float("-inf"))
        _, winner = max_winners(chosen, bag, num_bags, keep)
        return torch.cat([values, values.new_zeros(1, dim)]).gather(0, winner)  # empty bags pick the zero row
    if psw is not None:
        values = values * psw[:, None]
    if keep is not None:
        values = values.masked_fill(~keep[:, None], 0)
    out = values.new_zeros(num_bags, dim).index_add(0, bag, values)
    if mode == "mean":  # sum, then divide, as torch does
        counted = torch.ones(n, dtype=torch.float64, device=flat.device) if keep is None else keep.double()
        count = torch.zeros(num_bags, dtype=torch.float64, device=flat.device).index_add(0, bag, counted)
        out = out / count.clamp(min=1).to(out.dtype)[:, None]
    return out


# --------------------------------------------------------------------------------------------------
# PyTorch's own CPU kernels, with embedlib's max: a NaN wins its column wherever it is in the bag
# --------------------------------------------------------------------------------------------------
def _native_forward(w, psw, flat, bounds, pad, mode, for_backward):
    """PyTorch's embedding_bag: ``(out, offset2bag, bag_size, winners)``, where ``winners`` is the
    row that won each column of a max bag (the first on ties)."""
    w, psw = w.detach(), None if psw is None else psw.detach()
    op = torch.ops.aten._embedding_bag if for_backward else torch.ops.aten._embedding_bag_forward_only
    out, offset2bag, bag_size, winners = op(w, flat, bounds, False, MODES[mode], False, psw, True,
                                            -1 if pad is None else pad)
    if mode == "max" and out.numel():
        _nan_wins(w, flat, bounds, pad, out, winners)
    return out, offset2bag, bag_size, winners


def _nan_wins(w, flat, bounds, pad, out, winners) -> None:
    """Where a NaN in a bag came after its first entry, PyTorch's max skipped it (a comparison with
    NaN is false); embedlib's max lets it win. A column holding a NaN has a NaN sum, so the sums of
    the bags (PyTorch's fast kernel, one more read of the rows) find the few bags to redo, in place."""
    sums = torch.ops.aten._embedding_bag_forward_only(w, flat, bounds, False, MODES["sum"], False, None, True,
                                                      -1 if pad is None else pad)[0]
    if not _has_nan(sums):
        return
    bags = sums.isnan().any(1).nonzero().squeeze(1)  # also bags with +inf and -inf: redone exactly, like the others
    starts, sizes = bounds[bags], bounds[bags + 1] - bounds[bags]
    sub_bounds = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])  # the bags to redo, one after the other
    positions = torch.arange(int(sub_bounds[-1])) + torch.repeat_interleave(starts - sub_bounds[:-1], sizes)
    rows, bag, _ = entries(flat[positions], sub_bounds, pad)
    best, winner = max_winners(w.index_select(0, rows), bag, bags.numel())
    out[bags] = best
    winners[bags] = torch.cat([rows, rows.new_zeros(1)])[winner]


def _has_nan(t: torch.Tensor) -> bool:
    """Whether the CPU tensor ``t`` holds a NaN: through NumPy, on the calling thread, for the types
    NumPy has (see :func:`embedlib.torch._tensors.min_max` for why)."""
    if t.dtype in (torch.float16, torch.float32, torch.float64) and _tensors.numpy_readable(t):
        return bool(np.isnan(t.numpy()).any())
    return bool(t.isnan().any())


class _NativeBag(torch.autograd.Function):
    """PyTorch's embedding_bag kernels and their backward (what F.embedding_bag's autograd runs);
    gradients of gradients come from differentiable torch operations instead. Returns
    ``(out, offset2bag, bag_size, winners)``; only ``out`` is differentiable. Written in the form that
    torch.func accepts, with a jvp: a bag is linear in the weight and in the per-sample weights."""

    @staticmethod
    def forward(weight, psw, flat, bounds, pad, mode, scale_grad_by_freq=False, sparse=False):
        return _native_forward(weight, psw, flat, bounds, pad, mode, True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, psw, flat, bounds, pad, mode, scale_grad_by_freq, sparse = inputs
        _, offset2bag, bag_size, winners = output
        ctx.mark_non_differentiable(offset2bag, bag_size, winners)
        # the weight only for the per-sample weights' gradient (as torch: then it must not change in place)
        weight_if_needed = weight if psw is not None and psw.requires_grad else None
        ctx.save_for_backward(weight_if_needed, psw, flat, bounds, offset2bag, bag_size, winners)
        ctx.save_for_forward(weight, psw, flat, bounds, bag_size, winners)
        ctx.num_embeddings, ctx.pad, ctx.mode = weight.shape[0], pad, mode
        ctx.scale, ctx.sparse = scale_grad_by_freq, sparse

    @staticmethod
    def backward(ctx, grad, *_):
        weight, psw, flat, bounds, offset2bag, bag_size, winners = ctx.saved_tensors
        need_w, need_psw = ctx.needs_input_grad[:2]
        mode, pad, num_embeddings = ctx.mode, ctx.pad, ctx.num_embeddings
        grad = grad.contiguous()
        if torch.is_grad_enabled() or ctx.sparse:  # create_graph=True, or sparse rows (as PyTorch: per entry)
            return (*_differentiable_grads(grad, weight, psw, flat, bounds, bag_size, winners, num_embeddings,
                                           pad, mode, need_w, need_psw, ctx.scale, ctx.sparse),
                    None, None, None, None, None, None)
        if offset2bag.numel() != flat.numel():  # PyTorch's forward leaves it out when it needs no gradient
            offset2bag = _bag_of_entry(bounds, flat.numel())
        grad_w = grad_psw = None
        pad_arg = -1 if pad is None else pad
        if need_w and mode == "max":
            grad_w = _max_grad(grad, winners, bag_size, num_embeddings)
        elif need_w:
            # scale_grad_by_freq is applied here, not by the kernel: torch 2.13's CPU kernel divides some
            # rows by another index's count (pytorch/pytorch#190063)
            grad_w = torch.ops.aten._embedding_bag_dense_backward(grad, flat, offset2bag, bag_size, winners,
                                                                   num_embeddings, False, MODES[mode], psw, pad_arg)
            if ctx.scale:
                counts = torch.bincount(flat, minlength=num_embeddings).clamp(min=1)
                grad_w = grad_w * (1.0 / counts.double()).to(grad_w.dtype)[:, None]
        if need_psw:
            grad_psw = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad, weight.detach(), flat, bounds, offset2bag, MODES[mode], pad_arg)
        return grad_w, grad_psw, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, weight_tangent, psw_tangent, *_):
        weight, psw, flat, bounds, bag_size, winners = ctx.saved_tensors
        if ctx.mode == "max":  # each column's tangent is the winning row's
            tangent = weight_tangent.gather(0, winners.clamp(min=0))
            return tangent.masked_fill((bag_size == 0)[:, None], 0), None, None, None
        tangent = None
        if weight_tangent is not None:
            tangent = _native_forward(weight_tangent, psw, flat, bounds, ctx.pad, ctx.mode, False)[0]
        if psw_tangent is not None:
            more = _native_forward(weight, psw_tangent, flat, bounds, ctx.pad, ctx.mode, False)[0]
            tangent = more if tangent is None else tangent + more
        return tangent, None, None, None


def _max_grad(grad, winners, bag_size, num_embeddings) -> torch.Tensor:
    """Column d of bag b sends its gradient to the row that won it (none for a bag without entries):
    a scatter of single numbers into the flattened (V * D) table. Differentiable w.r.t. ``grad``."""
    dim = grad.shape[1]
    won = bag_size > 0
    target = (winners[won] * dim + torch.arange(dim, device=grad.device)).reshape(-1)
    out = grad.new_zeros(num_embeddings * dim)
    out.index_add_(0, target, grad[won].reshape(-1))  # in place: autograd records it all the same
    return out.reshape(num_embeddings, dim)


def _differentiable_grads(grad, weight, psw, flat, bounds, bag_size, winners, num_embeddings, pad, mode,
                          need_w, need_psw, scale_grad_by_freq=False, sparse=False):
    """The same gradients as the backward above, from differentiable torch operations (with ``sparse``,
    the weight's as sparse rows, one per non-padding entry, as PyTorch makes them)."""
    if mode == "max":  # no per-sample weights with "max"
        return _max_grad(grad, winners, bag_size, num_embeddings) if need_w else None, None
    grad_w = grad_psw = None
    rows, bag, keep = entries(flat, bounds, pad)
    if need_w:
        values = grad[bag]
        if psw is not None:
            values = values * (psw if keep is None else psw[keep])[:, None]
        if mode == "mean":  # times 1 / size, as PyTorch's backward rounds it
            values = values * (1 / bag_size.clamp(min=1).to(values.dtype))[bag, None]
        if scale_grad_by_freq:
            scale = frequency_scale(flat, num_embeddings, values.dtype)
            values = values * (scale if keep is None else scale[keep])[:, None]
        grad_w = sparse_rows(rows, values, num_embeddings) if sparse else scatter_add(rows, values, num_embeddings)
    if need_psw:
        kept = (grad[bag] * gather(rows, weight)).sum(-1)
        grad_psw = kept if keep is None else kept.new_zeros(flat.numel()).masked_scatter(keep, kept)
    return grad_w, grad_psw


def deferred(indices, w, offsets, record, *, mode, per_sample_weights, padding_idx, include_last_offset,
             max_norm, norm_type, scale_grad_by_freq, sparse) -> torch.Tensor:
    """Bags with ``bounds_check="deferred"`` (:mod:`embedlib.torch.bounds`): the checks that need no
    value run now; the index range and the offsets are checked on the device and recorded in
    ``record``. An out-of-range entry is left out of its bag (as a padding entry: with a
    ``padding_idx`` it becomes one; without, a max leaves it out, and a sum or mean weights it by 0,
    so that an infinity or NaN in the row that stands in for it would make its bag NaN).
    Offsets, valid or not, become bags that never read past the indices (the same bags when valid)."""
    idx, psw, off = _arguments(indices, offsets, mode, per_sample_weights, w.device, w.dtype)
    pad = _checks.padding_idx(padding_idx, w.shape[0])
    if off is not None and not off.numel():
        _checks.bag_offsets(0, None, None, None, idx.numel(), include_last_offset)
    record.poll()
    flat = index_vector(idx)
    n = flat.numel()
    if off is None:  # 2-D: one bag per row
        bounds = torch.arange(idx.shape[0] + 1, device=flat.device) * idx.shape[1]
    else:
        if off.numel():
            record.offsets(off, n, include_last_offset)
        # clamped into [0, n], never decreasing, starting at 0: the given offsets when they are valid
        safe_off = torch.cummax(off.clamp(0, n), 0).values
        bounds = _bounds(torch.cat([safe_off.new_zeros(1), safe_off[1:]]), n, include_last_offset)
    safe, bad = record.indices(flat, w.shape[0])
    if max_norm is not None and w.shape[0]:
        renorm_entries_(w, safe, max_norm, float(norm_type), (~bad).any())
    num_bags, psw = bounds.numel() - 1, None if psw is None else psw.to(w.dtype)
    if w.shape[0] == 0:  # every index is out of range: zeros (+ the empty table's sum: in its graph)
        out = w.new_zeros(num_bags, w.shape[1]) + w.sum()
    elif torch.compiler.is_compiling() or (mode == "max" and pad is None):
        # torch operations of fixed shapes (what torch.compile can keep in one graph), every entry masked
        positions = torch.arange(n, device=flat.device)
        bag = (torch.searchsorted(bounds[:-1], positions, right=True) - 1).clamp(min=0)
        keep = ~bad & (positions < bounds[-1]) & (True if pad is None else safe != pad)
        out = masked_bags(safe, bag, keep, num_bags, w, psw, pad, mode, scale_grad_by_freq, sparse)
    elif pad is not None:  # an out-of-range entry becomes a padding entry: left out exactly
        out = run(CheckedBag(torch.where(bad, pad, safe), bounds, psw, pad), w, mode, scale_grad_by_freq, sparse)
    else:  # sum or mean: PyTorch's (or chapter 9's) sum kernels, out-of-range entries weighted by 0
        weights = (~bad).to(w.dtype) if psw is None else torch.where(bad, 0, psw)
        out = run(CheckedBag(safe, bounds, weights, None), w, "sum", scale_grad_by_freq, sparse)
        if mode == "mean":
            kept = torch.cat([bad.new_zeros(1, dtype=torch.int64), torch.cumsum(~bad, 0)])
            out = out / (kept[bounds[1:]] - kept[bounds[:-1]]).clamp(min=1).to(out.dtype)[:, None]
    record.after_call()
    return out


def embedding_bag(indices, weight, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None,
                  include_last_offset=False, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False,
                  bounds_check="immediate"):
    """Reduce each bag of rows to one vector, with the semantics of ``torch.nn.functional.embedding_bag``.

    ``indices`` is 1-D with ``offsets`` or 2-D (one bag per row); ``mode`` is "sum", "mean" or "max";
    ``per_sample_weights`` scales entries (mode "sum" only); ``padding_idx`` entries are left out, also
    from the mean's count; empty bags give zeros (also a 2-D input with no columns, where torch fails);
    a max goes to the first entry on ties, and a NaN in a bag wins its column. Every argument is
    checked before anything runs. Returns ``(num_bags, D)``. On CUDA with Triton the bags run as the
    kernels of chapter 9, whose gradient follows ``torch.are_deterministic_algorithms_enabled()``
    (atomic adds, or fixed-order sums); on the CPU as PyTorch's own embedding_bag kernels.
    With ``max_norm``, as ``F.embedding_bag``: every row the indices name whose ``norm_type``-norm
    exceeds it is rescaled in place in ``weight`` first (outside autograd), after every check.
    With ``scale_grad_by_freq`` ("sum" and "mean"; "max" refuses it, as torch): the gradient of each
    row is divided by the number of times its index appears in the whole input.
    ``bounds_check="deferred"`` checks the indices and offsets on the device, without a host sync,
    and raises at a later call (see :mod:`embedlib.torch.bounds`); the default checks them at once.
    With ``sparse=True`` ("sum" and "mean"; "max" refuses it, as torch): the weight's gradient is a
    sparse COO tensor with one row per non-padding entry, as ``F.embedding_bag`` gives it (with
    ``scale_grad_by_freq`` too, each row divided by its index's count, where torch's backward fails).
    """
    w = _tensors.weight(weight)
    limit = _checks.max_norm(max_norm, norm_type)
    _checks.bag_scale_grad_by_freq(mode, scale_grad_by_freq)
    sparse = _checks.sparse_gradients(sparse, mode)
    if bounds.mode(bounds_check) == "deferred":
        return deferred(indices, w, offsets, bounds.record_for(bounds_check, w.device), mode=mode,
                        per_sample_weights=per_sample_weights, padding_idx=padding_idx,
                        include_last_offset=include_last_offset, max_norm=limit, norm_type=norm_type,
                        scale_grad_by_freq=bool(scale_grad_by_freq), sparse=sparse)
    c = check(indices, w.shape[0], offsets, mode=mode, per_sample_weights=per_sample_weights,
              padding_idx=padding_idx, include_last_offset=include_last_offset, device=w.device, dtype=w.dtype)
    if limit is not None:
        unchecked_renorm_(w, c.flat, limit, float(norm_type))
    return run(c, w, mode, bool(scale_grad_by_freq), sparse)
