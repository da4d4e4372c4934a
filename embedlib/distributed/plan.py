"""Which rank holds which rows: the row-wise shard boundaries (the chapter on sharded tables).

A table of ``V`` rows over ``W`` ranks is cut into ``W`` contiguous blocks. When ``W`` does not divide
``V`` the first ``V % W`` ranks get one row more than the others (``V // W + 1`` rows against
``V // W``), the same rule as ``torch.tensor_split`` and ``torch.chunk``-like splits of a sequence: for
``V = 10`` and ``W = 4`` the ranks hold rows ``0:3``, ``3:6``, ``6:8`` and ``8:10``. When ``V < W`` the
last ranks hold no rows at all (and still take part in every collective).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from embedlib import _checks


class RowShards(NamedTuple):
    """The row-wise cut of a ``num_embeddings``-row table over ``world_size`` ranks."""

    num_embeddings: int
    world_size: int

    def bounds(self, rank: int) -> tuple[int, int]:
        """``(start, stop)``: rank ``rank`` holds rows ``start:stop`` of the full table."""
        base, extra = divmod(self.num_embeddings, self.world_size)
        start = rank * base + min(rank, extra)
        return start, start + base + (rank < extra)

    def sizes(self) -> list[int]:
        """The number of rows on each rank."""
        return [stop - start for start, stop in map(self.bounds, range(self.world_size))]

    def owner(self, ids: torch.Tensor) -> torch.Tensor:
        """The rank that holds each of the (in-range) ``ids``, same shape, int64."""
        stops = torch.tensor([self.bounds(r)[1] for r in range(self.world_size)], device=ids.device)
        return torch.bucketize(ids.long(), stops, right=True)


class ColumnShards(NamedTuple):
    """The column-wise cut of a ``(num_embeddings, embedding_dim)`` table over ``world_size`` ranks: every
    rank holds every row, and a contiguous block of columns (the first ``embedding_dim % world_size``
    ranks one column more)."""

    num_embeddings: int
    embedding_dim: int
    world_size: int

    def bounds(self, rank: int) -> tuple[int, int]:
        """``(start, stop)``: rank ``rank`` holds columns ``start:stop`` of the full table."""
        return RowShards(self.embedding_dim, self.world_size).bounds(rank)

    def sizes(self) -> list[int]:
        """The number of columns on each rank."""
        return RowShards(self.embedding_dim, self.world_size).sizes()


SHARDINGS = ("row", "column")


def sharding(value) -> str:
    if value not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {value!r}")
    return value


def shards_for(kind: str, num_embeddings: int, embedding_dim: int, world_size: int):
    """The :class:`RowShards` or :class:`ColumnShards` of a table."""
    if sharding(kind) == "row":
        return RowShards(num_embeddings, world_size)
    return ColumnShards(num_embeddings, embedding_dim, world_size)


def shard_block(shards, rank: int, num_embeddings: int, embedding_dim: int) -> tuple[slice, slice]:
    """The rows and columns of the full table that rank ``rank`` holds."""
    start, stop = shards.bounds(rank)
    if isinstance(shards, RowShards):
        return slice(start, stop), slice(0, embedding_dim)
    return slice(0, num_embeddings), slice(start, stop)


def column_shards(num_embeddings, embedding_dim, world_size) -> ColumnShards:
    """The column-wise shard boundaries of a table (the chapter on sharded tables): the first
    ``embedding_dim % world_size`` ranks get one column more."""
    return ColumnShards(_checks.count(num_embeddings, "num_embeddings"), _checks.count(embedding_dim, "embedding_dim"),
                        _checks.positive(world_size, "world_size"))


def row_shards(num_embeddings, world_size) -> RowShards:
    """The row-wise shard boundaries of a table (the chapter on sharded tables): the first
    ``num_embeddings % world_size`` ranks get one row more; ``.bounds(rank)`` gives ``(start, stop)``."""
    return RowShards(_checks.count(num_embeddings, "num_embeddings"), _checks.positive(world_size, "world_size"))
