"""Embedding bags: the sum, mean or max of the rows in each bag (chapters 2 and 8).

A multi-hot vector times the weight matrix is the sum of the selected rows (chapter 2); a bag computes
it without the multi-hot vector, for multi-valued features such as a movie's genres.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays, _segments
from embedlib.numpy.renorm import unchecked_renorm_


class BagPlan(NamedTuple):
    """Which weight row goes into which bag, with which factor; shared by forward and backward."""

    rows: np.ndarray  # (n,) weight row of each kept entry (padding removed)
    bag: np.ndarray  # (n,) bag of each kept entry, non-decreasing
    scale: np.ndarray | None  # (n,) per-sample weight of each kept entry, or None
    counts: np.ndarray | None  # (num_bags,) entries per bag, for "mean"; else None
    num_bags: int
    mode: str


def plan(indices, num_embeddings, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None,
         include_last_offset=False, dtype=np.float32) -> BagPlan:
    """Check every argument of a bag and lay the bags out as flat ``(row, bag, scale)`` entries."""
    idx = _arrays.indices(indices)
    _checks.bag_mode(mode, per_sample_weights is not None)
    _checks.bag_layout(idx.ndim, offsets is not None)
    psw = None
    if per_sample_weights is not None:
        psw = _arrays.floats(per_sample_weights, "per_sample_weights")
        if isinstance(per_sample_weights, np.ndarray) and psw.dtype != np.dtype(dtype):
            # as torch: per-sample weights of another float type are refused, not cast (a list has no type)
            _checks.same_dtype(str(psw.dtype), str(np.dtype(dtype)), "per_sample_weights")
        _checks.same_shape(psw.shape, idx.shape, "per_sample_weights", "one weight per index")
    if idx.ndim == 2:
        num_bags, size = idx.shape
        ends = np.arange(1, num_bags + 1, dtype=np.int64) * size
    else:
        off = _arrays.indices(offsets, "offsets")
        if off.ndim != 1:
            raise ValueError(f"offsets must be 1-D, got shape {off.shape}")
        off = off.astype(np.int64)
        down = np.flatnonzero(np.diff(off) < 0)
        decrease = None if down.size == 0 else (int(down[0]) + 1, int(off[down[0]]), int(off[down[0] + 1]))
        _checks.bag_offsets(off.size, int(off[0]) if off.size else None, decrease,
                            int(off[-1]) if off.size else None, idx.size, include_last_offset)
        ends = off[1:] if include_last_offset else np.r_[off[1:], idx.size]
        num_bags = ends.size
    _arrays.in_range(idx, num_embeddings)
    pad = _checks.padding_idx(padding_idx, num_embeddings)

    rows = idx.reshape(-1).astype(np.int64)
    bag = np.repeat(np.arange(num_bags, dtype=np.int64), np.diff(np.r_[0, ends]))
    scale = None if psw is None else psw.reshape(-1).astype(dtype, copy=False)
    if pad is not None:
        keep = rows != pad
        rows, bag = rows[keep], bag[keep]
        scale = None if scale is None else scale[keep]
    counts = np.bincount(bag, minlength=num_bags) if mode == "mean" else None
    return BagPlan(rows, bag, scale, counts, num_bags, mode)


def forward(p: BagPlan, w: np.ndarray):
    """Bags of ``w`` laid out by plan ``p``: ``(output, argmax)``; ``argmax`` is None except for "max".

    ``argmax[b, d]`` is the entry of ``p`` that gave bag ``b``'s maximum in column ``d`` (the first one
    on ties), which is where the max bag's gradient goes.
    """
    values = np.take(w, p.rows, axis=0)
    if p.mode != "max":
        if p.scale is not None:
            values = values * p.scale[:, None]
        # the sort-based scatter-add of the backward pass (chapter 4): far faster than a 2-D reduceat
        out = _segments.scatter_sum(p.bag, values, p.num_bags)
        if p.mode == "mean":  # sum, then divide, as torch does
            out /= np.maximum(p.counts, 1).astype(out.dtype)[:, None]
        return out, None
    out = np.zeros((p.num_bags, w.shape[1]), dtype=w.dtype)
    if p.rows.size == 0:
        return out, np.zeros(out.shape, np.int64)
    bags, starts = np.unique(p.bag, return_index=True)
    out[bags] = np.maximum.reduceat(values, starts, axis=0)
    best = out[p.bag]  # a NaN wins its column: np.maximum propagates it, and so does the argmax here
    won = (values == best) | (np.isnan(values) & np.isnan(best))
    positions = np.where(won, np.arange(p.rows.size)[:, None], p.rows.size)
    argmax = np.zeros(out.shape, np.int64)
    argmax[bags] = np.minimum.reduceat(positions, starts, axis=0)
    return out, argmax


def backward(p: BagPlan, argmax, grad_output: np.ndarray):
    """The sparse gradient of a bag w.r.t. the weight: ``(rows, sums)`` for the rows it touched."""
    g = np.asarray(grad_output)
    if p.mode == "max":
        nonempty = np.bincount(p.bag, minlength=p.num_bags) > 0
        rows = p.rows[argmax[nonempty]]  # (bags, D): the row that won each column
        dim = g.shape[1]
        flat_rows, inverse = np.unique(rows, return_inverse=True)
        sums = np.zeros((flat_rows.size, dim), dtype=g.dtype)
        np.add.at(sums.reshape(-1), (inverse.reshape(rows.shape) * dim + np.arange(dim)).ravel(),
                  g[nonempty].ravel())
        return flat_rows.astype(np.int64), sums
    values = g[p.bag]
    if p.scale is not None:
        values = values * p.scale[:, None].astype(g.dtype, copy=False)
    if p.mode == "mean":
        values = values / p.counts[p.bag, None].astype(g.dtype)
    return _segments.segment_sum(p.rows, values)


def embedding_bag(indices, weight, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None,
                  include_last_offset=False, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False):
    """Reduce each bag of rows to one vector (chapters 2 and 8), as ``F.embedding_bag`` does.

    ``indices`` is 1-D with ``offsets`` (bag ``i`` is ``indices[offsets[i]:offsets[i+1]]``) or 2-D
    (one bag per row). ``mode`` is "sum", "mean" or "max"; ``per_sample_weights`` scales each entry
    (mode "sum" only); entries equal to ``padding_idx`` are left out, also from the mean's count.
    Empty bags give zeros. Returns ``(num_bags, D)``. With ``max_norm``, as ``F.embedding_bag``: every
    row the indices name whose ``norm_type``-norm exceeds it is rescaled in place in ``weight`` (which
    must then be a NumPy array) first, after every check. ``scale_grad_by_freq`` only matters for
    gradients (the NumPy layer applies it); here it is checked as in torch ("max" refuses it), and so
    is ``sparse`` (the NumPy layer's gradients are sparse rows either way).
    """
    w = _arrays.weight(weight)
    limit = _checks.max_norm(max_norm, norm_type)
    _checks.bag_scale_grad_by_freq(mode, scale_grad_by_freq)
    _checks.sparse_gradients(sparse, mode)
    if limit is not None:
        _arrays.in_place(weight, "max_norm")
    p = plan(indices, w.shape[0], offsets, mode=mode, per_sample_weights=per_sample_weights,
             padding_idx=padding_idx, include_last_offset=include_last_offset, dtype=w.dtype)
    if limit is not None:
        unchecked_renorm_(w, _arrays.indices(indices), limit, float(norm_type))
    return forward(p, w)[0]
