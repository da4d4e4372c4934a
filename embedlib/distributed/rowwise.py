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
from embedlib.distributed.plan import RowShards
from embedlib.torch import _tensors
from embedlib.torch import bag as _bag
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


def route(flat: torch.Tensor, shards: RowShards, group=None) -> Route:
    """Send each (checked) id to the rank that owns it: two all-to-alls (the counts, then the ids)."""
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


def lookup_rows(flat: torch.Tensor, shard: torch.Tensor, shards: RowShards, padding_idx=None,
                group=None) -> torch.Tensor:
    """``(n, D)`` rows of the full table for checked flat ids, from the shards of every rank (every rank
    calls it). ``padding_idx`` (in the full table's numbering): that row gets no gradient."""
    rank, _ = _collectives.world(group)
    start, stop = shards.bounds(rank)
    local_pad = padding_idx - start if padding_idx is not None and start <= padding_idx < stop else None
    return _RowwiseLookup.apply(shard, route(flat, shards, group), local_pad)


def sharded_lookup(indices, shard: torch.Tensor, num_embeddings: int, *, padding_idx=None, group=None):
    """The row-wise sharded lookup (the chapter on sharded tables): the same values as
    ``embedlib.torch.lookup(indices, full_table)``, shape ``(*indices.shape, D)``, where ``shard`` is
    this rank's block of rows of a ``num_embeddings``-row table cut by :func:`row_shards`. Every rank of
    ``group`` must call it, each with its own ``indices`` (any number of them, none included).
    The gradient reaches ``shard`` only: the rows of this rank's block that any rank looked up.
    Bad input on any rank raises on every rank, before anything is sent."""
    def check():
        shards = _table(shard, num_embeddings, group)
        pad = _checks.padding_idx(padding_idx, num_embeddings)
        return shards, pad, checked_ids(indices, num_embeddings, shard.device)

    shards, pad, idx = _collectives.agree(check, group)
    out = lookup_rows(index_vector(idx).long(), shard, shards, pad, group)
    return out.reshape(*idx.shape, shard.shape[1])


def sharded_embedding_bag(indices, shard: torch.Tensor, num_embeddings: int, offsets=None, *, mode="mean",
                          per_sample_weights=None, padding_idx=None, include_last_offset=False, group=None):
    """Row-wise sharded bags (the chapter on sharded tables), with the semantics of
    ``embedlib.torch.embedding_bag`` on the full table: the rows of every entry are looked up from their
    owners (:func:`sharded_lookup`'s all-to-alls; padding entries are not sent), then each bag is
    reduced here, on the rank that asked, by ``embedlib.torch``'s own bag code, with
    ``per_sample_weights`` (mode "sum") applied here too. Bad input on any rank raises on every rank."""
    def check():
        shards = _table(shard, num_embeddings, group)
        checked_ids(indices, num_embeddings, shard.device)
        return shards, _bag.check(indices, num_embeddings, offsets, mode=mode, per_sample_weights=per_sample_weights,
                          padding_idx=padding_idx, include_last_offset=include_last_offset, device=shard.device,
                          dtype=shard.dtype)

    shards, c = _collectives.agree(check, group)
    flat = c.flat.long()
    if c.pad is None:
        rows = lookup_rows(flat, shard, shards, None, group)
        local = torch.arange(flat.numel(), device=flat.device)
    else:  # padding entries read a zero row of our own, and are left out as padding by the bag code
        keep = flat != c.pad
        rows = lookup_rows(flat[keep], shard, shards, None, group)
        rows = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])
        local = torch.full_like(flat, rows.shape[0] - 1)
        local[keep] = torch.arange(rows.shape[0] - 1, device=flat.device)
    pad = None if c.pad is None else rows.shape[0] - 1
    return _bag.run(_bag.CheckedBag(local, c.bounds, c.psw, pad), rows, mode)


def _table(shard, num_embeddings, group) -> RowShards:
    """The row shards, after checking that ``shard`` is this rank's block (no collective)."""
    rank, size = _collectives.world(group)
    w = _tensors.weight(shard, "shard")
    num_embeddings = _checks.count(num_embeddings, "num_embeddings")
    shards = RowShards(num_embeddings, size)
    start, stop = shards.bounds(rank)
    if w.shape[0] != stop - start:
        raise ValueError(f"rank {rank} of {size} holds rows {start}:{stop} of num_embeddings={num_embeddings}, "
                         f"{stop - start} rows, but its shard has {w.shape[0]}")
    return shards
