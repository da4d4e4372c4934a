"""Column-wise sharded lookups over ``torch.distributed`` (the chapter on sharded tables).

Each rank holds every row of the table but only a block of its columns
(:class:`embedlib.distributed.plan.ColumnShards`). A lookup:

1. every rank sends its ids to every rank (an all-to-all in which each rank sends the same ids to all);
2. each rank reads its columns of the rows that every rank asked for, and sends each rank its part;
   each rank puts the column blocks it receives side by side.

The backward pass sends each rank's gradient columns to the rank that holds them, which adds them
into the gradient of its own columns (chapter 4's scatter-add) in the order of the ranks' batches
one after the other: the same bits as one process. Each rank receives every rank's ids, so this
suits tables with few rows and wide vectors; row-wise sends each id to one rank only.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from embedlib.distributed import _collectives
from embedlib.distributed.plan import ColumnShards
from embedlib.torch.lookup import scatter_add


class Route(NamedTuple):
    counts: list[int]  # how many ids each rank looks up
    all_ids: torch.Tensor  # every rank's ids, rank 0's first
    widths: list[int]  # how many columns each rank holds
    group: object


def route(flat: torch.Tensor, shards: ColumnShards, group=None) -> Route:
    """Every rank's (checked) ids, on every rank: two all-to-alls (the counts, then the ids)."""
    size = shards.world_size
    counts = _collectives.exchange_counts([flat.numel()] * size, group)
    all_ids = _collectives.exchange(flat.repeat(size), [flat.numel()] * size, counts, group)
    return Route(counts, all_ids, shards.sizes(), group)


class _ColumnwiseLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shard, r: Route, rank: int, padding_idx):
        n, mine = r.counts[rank], shard.shape[1]
        rows = shard.detach().index_select(0, r.all_ids)  # (sum(counts), my columns), by asking rank
        got = _collectives.exchange(rows.reshape(-1), [c * mine for c in r.counts], [n * w for w in r.widths],
                                    r.group)
        ctx.route, ctx.rank, ctx.num_rows, ctx.padding_idx = r, rank, shard.shape[0], padding_idx
        return torch.cat([part.reshape(n, w) for part, w in zip(got.split([n * w for w in r.widths]), r.widths)],
                         dim=1)

    @staticmethod
    def backward(ctx, grad):
        r, rank = ctx.route, ctx.rank
        n, mine = r.counts[rank], r.widths[rank]
        blocks = [block.reshape(-1) for block in grad.split(r.widths, dim=1)]
        got = _collectives.exchange(torch.cat(blocks), [n * w for w in r.widths], [c * mine for c in r.counts],
                                    r.group)
        grad_shard = scatter_add(r.all_ids, got.reshape(r.all_ids.numel(), mine), ctx.num_rows, ctx.padding_idx)
        return grad_shard, None, None, None


def lookup_rows(flat: torch.Tensor, shard: torch.Tensor, shards: ColumnShards, padding_idx=None,
                group=None) -> torch.Tensor:
    """``(n, D)`` rows of the full table for checked flat ids, each rank giving its columns (every rank
    calls it). ``padding_idx``: that row gets no gradient."""
    rank, _ = _collectives.world(group)
    return _ColumnwiseLookup.apply(shard, route(flat, shards, group), rank, padding_idx)
