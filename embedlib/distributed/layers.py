"""Sharded layers (the chapter on sharded tables): each rank's module holds its block of the table
(rows for ``sharding="row"``, columns for ``"column"``, all or nothing for ``"table"``) as its ``weight``
Parameter, so an optimiser built on each rank steps its own shard only.

Every rank of the group must build the layer with the same arguments, and call ``forward`` (and
``backward``) the same number of times, each with its own batch.
"""
from __future__ import annotations

import torch
from torch import nn

from embedlib import _checks
from embedlib.distributed import _collectives
from embedlib.distributed import plan
from embedlib.distributed.ops import sharded_embedding_bag, sharded_lookup
from embedlib.torch import _tensors


class _ShardedTable(nn.Module):
    """What both sharded layers share: the shard, where it lies in the full table, and the group."""

    def __init__(self, num_embeddings, embedding_dim, *, padding_idx=None, sharding="row", table_rank=0, group=None,
                 seed=None, device=None, dtype=None):
        super().__init__()
        self.sharding = plan.sharding(sharding)
        self.num_embeddings = _checks.count(num_embeddings, "num_embeddings")
        self.embedding_dim = _checks.count(embedding_dim, "embedding_dim")
        self.padding_idx = _checks.padding_idx(padding_idx, self.num_embeddings)
        self.group = group
        self.rank, self.world_size = _collectives.world(group)
        self.table_rank = table_rank
        self.shards = plan.shards_for(sharding, self.num_embeddings, self.embedding_dim, self.world_size, table_rank)
        rows, cols = plan.shard_block(self.shards, self.rank, self.num_embeddings, self.embedding_dim)
        self.row_start, self.row_stop, self.col_start, self.col_stop = rows.start, rows.stop, cols.start, cols.stop
        self.weight = nn.Parameter(torch.empty(self.row_stop - self.row_start, self.col_stop - self.col_start,
                                               device=device, dtype=dtype))
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed=None) -> None:
        """N(0, 1) entries (the padding row zero). With ``seed``, reproducible: rank ``r`` draws from a
        generator seeded with ``seed + r`` (not the single-process table's numbers: use
        :meth:`from_full` to start from a given table)."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device="cpu").manual_seed(int(seed) + self.rank)
        self.weight.copy_(torch.randn(self.weight.shape, generator=gen, dtype=self.weight.dtype))
        if self.padding_idx is not None and self.row_start <= self.padding_idx < self.row_stop:  # (its columns here)
            self.weight[self.padding_idx - self.row_start] = 0

    @classmethod
    def from_full(cls, weight, *, group=None, **options):
        """The layer holding this rank's rows of the full table ``weight`` (copied); every rank passes the
        same table. For tables that fit on one rank (tests, examples); :func:`load_sharded` reads only
        the rank's own rows from a file."""
        w = _tensors.weight(weight)
        layer = cls(w.shape[0], w.shape[1], group=group, device=w.device, dtype=w.dtype, **options)
        with torch.no_grad():
            layer.weight.copy_(w[layer.block()])
        return layer

    def block(self) -> tuple[slice, slice]:
        """The rows and columns of the full table that this rank holds."""
        return slice(self.row_start, self.row_stop), slice(self.col_start, self.col_stop)

    def config(self) -> dict:
        """The arguments that rebuild the layer (what :func:`save_sharded` stores beside the table)."""
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "sharding": self.sharding, "table_rank": self.table_rank}

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return (f"{self.num_embeddings}, {self.embedding_dim}, sharding={self.sharding!r}, rows {self.row_start}:"
                f"{self.row_stop}, columns {self.col_start}:{self.col_stop} on rank {self.rank} of {self.world_size}"
                + pad)


class ShardedEmbedding(_ShardedTable):
    """A row-wise sharded ``Embedding`` (the chapter on sharded tables): ``forward(indices)`` gives the same
    values and, on each rank's shard, the same gradient rows as ``embedlib.torch.Embedding`` on the full
    table for the ranks' batches taken together. Rank ``r`` holds rows ``row_start:row_stop``; when the
    world size ``W`` does not divide ``num_embeddings`` the first ``num_embeddings % W`` ranks hold one
    row more (:func:`embedlib.distributed.row_shards`). With ``sharding="column"`` every rank holds every
    row and columns ``col_start:col_stop`` instead (:func:`embedlib.distributed.column_shards`); with
    ``sharding="table"`` rank ``table_rank`` holds the whole table and the others nothing (several such
    layers, placed by :func:`embedlib.distributed.place_tables`, spread a model's tables over the ranks).
    ``padding_idx`` as in ``nn.Embedding``."""

    def forward(self, indices) -> torch.Tensor:
        return sharded_lookup(indices, self.weight, self.num_embeddings, embedding_dim=self.embedding_dim,
                              sharding=self.sharding, table_rank=self.table_rank, padding_idx=self.padding_idx,
                              group=self.group)


class ShardedEmbeddingBag(_ShardedTable):
    """A row-wise sharded ``EmbeddingBag`` (the chapter on sharded tables):
    ``forward(indices, offsets=None, per_sample_weights=None)`` with the semantics of
    ``embedlib.torch.EmbeddingBag`` (modes "sum", "mean", "max"; ``padding_idx``; ``include_last_offset``).
    The rows come from their owners by all-to-all; each bag is reduced on the rank that asked for it.
    Shards as in :class:`ShardedEmbedding`."""

    def __init__(self, num_embeddings, embedding_dim, *, mode="mean", padding_idx=None, include_last_offset=False,
                 sharding="row", table_rank=0, group=None, seed=None, device=None, dtype=None):
        _checks.bag_mode(mode, False)
        self.mode, self.include_last_offset = mode, bool(include_last_offset)
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, sharding=sharding,
                         table_rank=table_rank, group=group, seed=seed, device=device, dtype=dtype)

    def forward(self, indices, offsets=None, per_sample_weights=None) -> torch.Tensor:
        return sharded_embedding_bag(indices, self.weight, self.num_embeddings, offsets, mode=self.mode,
                                     per_sample_weights=per_sample_weights, padding_idx=self.padding_idx,
                                     include_last_offset=self.include_last_offset, embedding_dim=self.embedding_dim,
                                     sharding=self.sharding, table_rank=self.table_rank, group=self.group)

    def config(self) -> dict:
        return {**super().config(), "mode": self.mode, "include_last_offset": self.include_last_offset}
