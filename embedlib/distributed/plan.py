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
    """The row-wise cut of a ``num_embeddings``-row table over ``world_size`` ranks (the chapter on sharded
    tables)."""

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
    """The column-wise cut (the chapter on sharded tables) of a ``(num_embeddings, embedding_dim)`` table
    over ``world_size`` ranks: every
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


class TableShards(NamedTuple):
    """Table-wise placement (the chapter on sharded tables): the whole table on rank ``table_rank``,
    nothing on the others (which still look rows up, from that rank). Several tables placed on
    different ranks (:func:`place_tables`) spread a model's tables over the ranks."""

    num_embeddings: int
    world_size: int
    table_rank: int

    def bounds(self, rank: int) -> tuple[int, int]:
        return (0, self.num_embeddings) if rank == self.table_rank else (0, 0)

    def sizes(self) -> list[int]:
        return [self.bounds(r)[1] for r in range(self.world_size)]

    def owner(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.full_like(ids, self.table_rank, dtype=torch.int64)


def place_tables(sizes, world_size) -> list[int]:
    """Table-wise placement (the chapter on sharded tables) of tables of ``sizes`` (rows times columns,
    or bytes): the rank of each table, largest first onto the rank with the least so far (a greedy
    balance of memory; ties to the lowest rank). Lookups are not balanced by this: a table that every
    batch reads heavily loads its rank."""
    world_size = _checks.positive(world_size, "world_size")
    load, ranks = [0] * world_size, [0] * len(sizes)
    for t in sorted(range(len(sizes)), key=lambda t: -sizes[t]):
        r = min(range(world_size), key=lambda r: load[r])
        ranks[t], load[r] = r, load[r] + sizes[t]
    return ranks


SHARDINGS = ("row", "column", "table")


def sharding(value) -> str:
    if value not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {value!r}")
    return value


def shards_for(kind: str, num_embeddings: int, embedding_dim: int, world_size: int, table_rank: int = 0):
    """The :class:`RowShards`, :class:`ColumnShards` or :class:`TableShards` of a table."""
    if sharding(kind) == "row":
        return RowShards(num_embeddings, world_size)
    if kind == "table":
        if isinstance(table_rank, bool) or not isinstance(table_rank, int) or not 0 <= table_rank < world_size:
            raise ValueError(f"table_rank must be a rank in [0, {world_size}), got {table_rank!r}")
        return TableShards(num_embeddings, world_size, table_rank)
    return ColumnShards(num_embeddings, embedding_dim, world_size)


def shard_block(shards, rank: int, num_embeddings: int, embedding_dim: int) -> tuple[slice, slice]:
    """The rows and columns of the full table that rank ``rank`` holds."""
    start, stop = shards.bounds(rank)
    if not isinstance(shards, ColumnShards):
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
