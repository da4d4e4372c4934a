"""Embedding bags in torch: sum, mean or max of the rows in each bag, differentiable (chapters 5, 8)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from embedlib import _checks
from embedlib.torch import _tensors, _triton
from embedlib.torch.lookup import gather


class BagPlan(NamedTuple):
    rows: torch.Tensor  # (n,) weight row of each kept entry (padding removed)
    bag: torch.Tensor  # (n,) bag of each kept entry, non-decreasing
    scale: torch.Tensor | None  # (n,) per-sample weight of each kept entry (keeps its autograd graph)
    counts: torch.Tensor | None  # (num_bags,) entries per bag, for "mean"
    num_bags: int
    mode: str


class CheckedBag(NamedTuple):
    """A bag's arguments after every check: what both the torch-ops path and the kernels start from."""

    flat: torch.Tensor  # (n,) the indices, flattened, range-checked
    bounds: torch.Tensor  # (num_bags + 1,) int64: bag b is flat[bounds[b]:bounds[b + 1]]
    psw: torch.Tensor | None  # (n,) per-sample weights, flattened
    pad: int | None  # padding_idx in [0, V), or None


def check(indices, num_embeddings, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None,
          include_last_offset=False, device=None) -> CheckedBag:
    """Every check of a bag, in a fixed order, with one host sync for all the values they need (the
    index range and the offsets' first, last and any decrease): on CUDA, before any kernel runs."""
    idx = _tensors.indices(indices, device)
    _checks.bag_mode(mode, per_sample_weights is not None)
    _checks.bag_layout(idx.dim(), offsets is not None)
    psw = None
    if per_sample_weights is not None:
        psw = _tensors.floats(per_sample_weights, "per_sample_weights", idx.device)
        _checks.same_shape(tuple(psw.shape), tuple(idx.shape), "per_sample_weights", "one weight per index")
    flat = idx.reshape(-1)
    n = flat.numel()
    if flat.dtype == torch.uint64:  # only with a value >= 2**63 (see _tensors.indices): named there
        _tensors.in_range(flat, num_embeddings)
    summary = list(torch.aminmax(flat)) if n else []  # fetched from the device together, below
    off = None
    if idx.dim() == 2:
        bounds = torch.arange(idx.shape[0] + 1, device=idx.device) * idx.shape[1]
    else:
        off = _tensors.indices(offsets, idx.device, "offsets")
        if off.dim() != 1:
            raise ValueError(f"offsets must be 1-D, got shape {tuple(off.shape)}")
        off = off.long()
        if off.numel():
            down = (off[1:] < off[:-1]).any() if off.numel() > 1 else off.new_zeros((), dtype=torch.bool)
            summary += [off[0], off[-1], down]
    values = torch.stack([v.long() for v in summary]).tolist() if summary else []
    if off is not None:
        first = last = decrease = None
        if off.numel():
            first, last, has_down = values[-3:]
            if has_down:
                i = int(torch.nonzero(off[1:] < off[:-1])[0, 0]) + 1
                decrease = (i, int(off[i - 1]), int(off[i]))
        _checks.bag_offsets(off.numel(), first, decrease, last, n, include_last_offset)
        # without include_last_offset the last bag runs to the end (no offsets at all: one bag)
        bounds = off if include_last_offset else torch.cat([off if off.numel() else off.new_zeros(1),
                                                             off.new_tensor([n])])
    if n:
        _checks.index_range(values[0], values[1], num_embeddings)
    pad = _checks.padding_idx(padding_idx, num_embeddings)
    return CheckedBag(flat, bounds.long(), None if psw is None else psw.reshape(-1), pad)


def plan(indices, num_embeddings, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None,
         include_last_offset=False, device=None) -> BagPlan:
    """Check every argument of a bag and lay the bags out as flat ``(row, bag, scale)`` entries."""
    c = check(indices, num_embeddings, offsets, mode=mode, per_sample_weights=per_sample_weights,
              padding_idx=padding_idx, include_last_offset=include_last_offset, device=device)
    rows, scale, num_bags = c.flat.long(), c.psw, c.bounds.numel() - 1
    bag = torch.repeat_interleave(torch.arange(num_bags, device=rows.device), torch.diff(c.bounds),
                                  output_size=rows.numel())
    if c.pad is not None:
        keep = rows != c.pad
        rows, bag = rows[keep], bag[keep]
        scale = None if scale is None else scale[keep]
    counts = torch.bincount(bag, minlength=num_bags) if mode == "mean" else None
    return BagPlan(rows, bag, scale, counts, num_bags, mode)


def forward(p: BagPlan, w: torch.Tensor) -> torch.Tensor:
    """Bags of ``w`` laid out by plan ``p``, differentiable w.r.t. ``w`` and the per-sample weights."""
    values = gather(p.rows, w)
    dim = w.shape[1]
    if p.mode == "max":
        # The gradient of a max goes to the entry that won it (the first on ties, as torch does):
        # find that entry per (bag, column), then gather it, so autograd routes the gradient there.
        # A NaN in a bag wins its column (NaN propagates, as in torch.amax and np.maximum).
        n = values.shape[0]
        where = p.bag[:, None].expand(-1, dim)
        detached = values.detach()
        best = detached.new_zeros(p.num_bags, dim).scatter_reduce(0, where, detached, "amax", include_self=False)
        position = torch.arange(n, device=w.device)[:, None].expand(-1, dim)
        best_here = best[p.bag]
        won = (detached == best_here) | (detached.isnan() & best_here.isnan())
        position = torch.where(won, position, n)
        winner = torch.full((p.num_bags, dim), n, device=w.device).scatter_reduce(0, where, position, "amin")
        return torch.cat([values, values.new_zeros(1, dim)]).gather(0, winner)  # empty bags pick the zero row
    if p.scale is not None:
        values = values * p.scale[:, None].to(values.dtype)
    out = values.new_zeros(p.num_bags, dim).index_add(0, p.bag, values)
    if p.mode == "mean":  # sum, then divide, as torch does
        out = out / p.counts.clamp(min=1).to(out.dtype)[:, None]
    return out


def embedding_bag(indices, weight, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None,
                  include_last_offset=False):
    """Reduce each bag of rows to one vector, with the semantics of ``torch.nn.functional.embedding_bag``.

    ``indices`` is 1-D with ``offsets`` or 2-D (one bag per row); ``mode`` is "sum", "mean" or "max";
    ``per_sample_weights`` scales entries (mode "sum" only); ``padding_idx`` entries are left out, also
    from the mean's count; empty bags give zeros (also a 2-D input with no columns, where torch fails).
    Every argument is checked before anything runs. Returns ``(num_bags, D)``. On CUDA with Triton
    the bags run as the kernels of chapter 9; the gradient follows
    ``torch.are_deterministic_algorithms_enabled()`` (atomic adds, or fixed-order sums).
    """
    w = _tensors.weight(weight)
    if _triton.enabled(w):  # CUDA with Triton: the bag kernels of chapter 9, same checks and results
        return _triton.embedding_bag(indices, w, offsets, mode=mode, per_sample_weights=per_sample_weights,
                                     padding_idx=padding_idx, include_last_offset=include_last_offset)
    p = plan(indices, w.shape[0], offsets, mode=mode, per_sample_weights=per_sample_weights,
             padding_idx=padding_idx, include_last_offset=include_last_offset, device=w.device)
    return forward(p, w)
