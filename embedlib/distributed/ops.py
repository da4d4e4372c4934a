"""The sharded lookup and bags as functions on this rank's shard (the chapter on sharded tables): every
check first, an agreement on the outcome across the ranks, then the lookup of the sharding chosen
(:mod:`embedlib.distributed.rowwise`, :mod:`embedlib.distributed.columnwise`), and for bags the
reduction on the rank that asked, by ``embedlib.torch``'s own bag code.

Every rank of ``group`` must call these functions (and the backward of what they return) the same
number of times, each with its own input (any number of ids, none included).
"""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.distributed import _collectives, columnwise, rowwise
from embedlib.distributed.plan import ColumnShards, shard_block, shards_for
from embedlib.distributed.rowwise import checked_ids
from embedlib.torch import _tensors
from embedlib.torch import bag as _bag
from embedlib.torch.lookup import index_vector


def _lookup_rows(flat, shard, shards, pad, group):
    if isinstance(shards, ColumnShards):
        return columnwise.lookup_rows(flat, shard, shards, pad, group)
    return rowwise.lookup_rows(flat, shard, shards, pad, group)  # row-wise, and table-wise: one owner


def sharded_lookup(indices, shard: torch.Tensor, num_embeddings: int, *, embedding_dim=None, sharding="row",
                   table_rank=0, padding_idx=None, group=None):
    """The sharded lookup (the chapter on sharded tables): the same values as
    ``embedlib.torch.lookup(indices, full_table)``, shape ``(*indices.shape, embedding_dim)``, where
    ``shard`` is this rank's block of a ``(num_embeddings, embedding_dim)`` table cut by
    :func:`row_shards` (``sharding="row"``) or :func:`column_shards` (``"column"``; then
    ``embedding_dim`` is required), or held whole by rank ``table_rank`` (``"table"``: the other ranks
    pass an empty ``(0, embedding_dim)`` shard). The gradient reaches ``shard`` only. Bad input on any rank raises
    on every rank, before anything is sent: our ``IndexError`` naming the value on the rank that sent
    it, an ``IndexError`` naming that rank and value on the others."""

    def check():
        shards = _table(shard, num_embeddings, embedding_dim, sharding, table_rank, group)
        pad = _checks.padding_idx(padding_idx, num_embeddings)
        return shards, pad, checked_ids(indices, num_embeddings, shard.device)

    shards, pad, idx = _collectives.agree(check, group)
    out = _lookup_rows(index_vector(idx).long(), shard, shards, pad, group)
    return out.reshape(*idx.shape, out.shape[-1])


def sharded_embedding_bag(indices, shard: torch.Tensor, num_embeddings: int, offsets=None, *, mode="mean",
                          per_sample_weights=None, padding_idx=None, include_last_offset=False, embedding_dim=None,
                          sharding="row", table_rank=0, group=None):
    """Sharded bags (the chapter on sharded tables), with the semantics of
    ``embedlib.torch.embedding_bag`` on the full table: the rows of every entry are looked up as in
    :func:`sharded_lookup` (padding entries are not sent), then each bag is reduced here, on the rank
    that asked, with ``per_sample_weights`` (mode "sum") applied here too.

    Outputs are the same bits as ``embedlib.torch.embedding_bag`` on the full table. The gradient is
    the same bits as one process that looks the rows up and then reduces them (each row's gradient
    adds its entries in batch order); PyTorch's CPU bag backward, which ``EmbeddingBag`` uses, adds a
    row's repeated entries in the order of an unstable sort, so against it the last bits may differ."""

    def check():
        shards = _table(shard, num_embeddings, embedding_dim, sharding, table_rank, group)
        checked_ids(indices, num_embeddings, shard.device)
        return shards, _bag.check(indices, num_embeddings, offsets, mode=mode, per_sample_weights=per_sample_weights,
                                  padding_idx=padding_idx, include_last_offset=include_last_offset,
                                  device=shard.device, dtype=shard.dtype)

    shards, c = _collectives.agree(check, group)
    flat = c.flat.long()
    if c.pad is None:
        rows = _lookup_rows(flat, shard, shards, None, group)
        local = torch.arange(flat.numel(), device=flat.device)
    else:  # padding entries read a zero row of our own, and are left out as padding by the bag code
        keep = flat != c.pad
        rows = _lookup_rows(flat[keep], shard, shards, None, group)
        rows = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])
        local = torch.full_like(flat, rows.shape[0] - 1)
        local[keep] = torch.arange(rows.shape[0] - 1, device=flat.device)
    pad = None if c.pad is None else rows.shape[0] - 1
    return _bag.run(_bag.CheckedBag(local, c.bounds, c.psw, pad), rows, mode)


def _table(shard, num_embeddings, embedding_dim, sharding, table_rank, group):
    """The shards, after checking that ``shard`` is this rank's block (no collective)."""
    rank, size = _collectives.world(group)
    w = _tensors.weight(shard, "shard")
    num_embeddings = _checks.count(num_embeddings, "num_embeddings")
    if embedding_dim is None:
        if sharding == "column":
            raise ValueError("a column-wise shard needs embedding_dim, the full table's number of columns")
        embedding_dim = w.shape[1]
    embedding_dim = _checks.count(embedding_dim, "embedding_dim")
    shards = shards_for(sharding, num_embeddings, embedding_dim, size, table_rank)
    rows, cols = shard_block(shards, rank, num_embeddings, embedding_dim)
    expected = (rows.stop - rows.start, cols.stop - cols.start)
    if tuple(w.shape) != expected:
        raise ValueError(f"rank {rank} of {size} holds rows {rows.start}:{rows.stop} and columns {cols.start}:"
                         f"{cols.stop} of a ({num_embeddings}, {embedding_dim}) table sharded by {sharding}, shape "
                         f"{expected}, but its shard has shape {tuple(w.shape)}")
    return shards
