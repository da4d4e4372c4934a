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


def row_shards(num_embeddings, world_size) -> RowShards:
    """The row-wise shard boundaries of a table (the chapter on sharded tables): the first
    ``num_embeddings % world_size`` ranks get one row more; ``.bounds(rank)`` gives ``(start, stop)``."""
    return RowShards(_checks.count(num_embeddings, "num_embeddings"), _checks.positive(world_size, "world_size"))
