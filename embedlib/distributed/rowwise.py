"""Row-wise sharded lookups and bags over ``torch.distributed`` (the chapter on sharded tables).

Each rank holds a contiguous block of the table's rows (:mod:`embedlib.distributed.plan`). A lookup
runs in two all-to-alls with uneven splits:

1. every rank sorts its ids by the rank that owns them and sends each owner its ids;
2. each owner reads the rows it was asked for from its shard and sends them back, in the order it
   received them; the requesting rank puts them back into the order of its own ids.

The backward pass is the same trip in reverse: the gradient rows go back to the owners, which add
them into a gradient of their own shard only (chapter 4's scatter-add, on the rows they hold). For
the same global batch (the ranks' batches one after the other) every row receives the same
gradient rows in the same order as in one process, so the results are the same bits.

Every check runs before the first collective, and the ranks agree on its outcome with one small
``all_reduce`` (:func:`embedlib.distributed._collectives.agree`): an out-of-range id raises our
``IndexError`` on the rank that sent it, and every other rank raises too, instead of waiting.
Every rank must call the lookup (and its backward) the same number of times, as with any collective.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from embedlib import _checks
from embedlib.distributed import _collectives
from embedlib.distributed._collectives import InputError
from embedlib.torch import _tensors
from embedlib.torch.lookup import index_vector, scatter_add


class Route(NamedTuple):
    """Where a batch of ids went: what the backward pass needs to send the gradient back."""

    order: torch.Tensor  # (n,) positions of this rank's ids, sorted by their owner (stable)
    send: list[int]  # how many of this rank's ids each rank owns
    recv: list[int]  # how many ids each rank asked this rank for
    local_ids: torch.Tensor  # (sum(recv),) the rows asked for, numbered within this rank's shard
    group: object


def checked_ids(indices, num_embeddings: int, device) -> torch.Tensor:
    """The ids as one int64 vector, range-checked; raises :class:`InputError` (for ``agree``)."""
    idx = _tensors.indices(indices, device)
    flat = index_vector(idx).long()
    if flat.numel():
        lo, hi = _tensors.min_max(flat)
        bad = lo if lo < 0 else hi if hi >= num_embeddings else None
        if bad is not None:
            raise InputError(_checks.out_of_range(bad, num_embeddings), bad, num_embeddings)
    return idx


def route(flat: torch.Tensor, shards, group=None) -> Route:
    """Send each (checked) id to the rank that owns it (``shards``: a :class:`RowShards`, or a
    :class:`TableShards`, whose one owner holds every row): two all-to-alls (the counts, then the ids)."""
    rank, _ = _collectives.world(group)
    owner = shards.owner(flat)
    order = torch.argsort(owner, stable=True)
    send = torch.bincount(owner, minlength=shards.world_size).tolist()
    recv = _collectives.exchange_counts(send, group)
    ids = _collectives.exchange(flat[order], send, recv, group)
    return Route(order, send, recv, ids - shards.bounds(rank)[0], group)


class _RowwiseLookup(torch.autograd.Function):
    """Rows of the sharded table for this rank's ids; the gradient, for this rank's shard only."""

    @staticmethod
    def forward(ctx, shard, r: Route, local_padding_idx):
        rows = shard.detach().index_select(0, r.local_ids)
        back = _collectives.exchange(rows, r.recv, r.send, r.group)  # in the order of r.order
        ctx.route, ctx.num_rows, ctx.padding_idx = r, shard.shape[0], local_padding_idx
        return torch.empty_like(back).index_copy_(0, r.order, back)

    @staticmethod
    def backward(ctx, grad):
        r = ctx.route
        to_owners = grad.contiguous().index_select(0, r.order)
        mine = _collectives.exchange(to_owners, r.send, r.recv, r.group)
        grad_shard = scatter_add(r.local_ids, mine, ctx.num_rows, ctx.padding_idx)
        return grad_shard, None, None


def lookup_rows(flat: torch.Tensor, shard: torch.Tensor, shards, padding_idx=None,
                group=None) -> torch.Tensor:
    """``(n, D)`` rows of the full table for checked flat ids, from the shards of every rank (every rank
    calls it). ``padding_idx`` (in the full table's numbering): that row gets no gradient."""
    rank, _ = _collectives.world(group)
    start, stop = shards.bounds(rank)
    local_pad = padding_idx - start if padding_idx is not None and start <= padding_idx < stop else None
    return _RowwiseLookup.apply(shard, route(flat, shards, group), local_pad)
