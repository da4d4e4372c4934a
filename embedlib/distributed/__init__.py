"""Embedding tables sharded over ``torch.distributed`` (the chapter on sharded tables).

Row-wise sharding: each rank holds a contiguous block of rows (:func:`row_shards`); lookups and bags
send ids to their owners and rows back with all-to-alls of uneven sizes, and the backward pass sends
the gradient rows back the same way, so each rank's gradient covers its own shard only. Column-wise
sharding (``sharding="column"``): each rank holds every row and a block of columns
(:func:`column_shards`); every rank's ids go to every rank, and the column blocks come back.
Table-wise sharding (``sharding="table"``): one rank holds the whole table (:func:`place_tables`
spreads several tables), and every id goes to it. Works with
any backend that has ``all_to_all_single`` with uneven splits (gloo on the CPU, NCCL on GPUs).

* :func:`sharded_lookup`, :func:`sharded_embedding_bag`: the functions, on this rank's shard;
* :class:`ShardedEmbedding`, :class:`ShardedEmbeddingBag`: the layers;
* :func:`save_sharded`, :func:`load_sharded`: one file, and back onto any number of ranks.

Bad input on any rank raises on every rank (the rank that sent it raises embedlib's own error), so
no rank is left waiting in a collective.
"""
from embedlib.distributed._collectives import Traffic, count_traffic
from embedlib.distributed.checkpoint import load_sharded, save_sharded
from embedlib.distributed.layers import ShardedEmbedding, ShardedEmbeddingBag
from embedlib.distributed.ops import sharded_embedding_bag, sharded_lookup
from embedlib.distributed.plan import ColumnShards, RowShards, TableShards, column_shards, place_tables, row_shards

__all__ = [
    "ColumnShards",
    "RowShards",
    "ShardedEmbedding",
    "ShardedEmbeddingBag",
    "TableShards",
    "Traffic",
    "column_shards",
    "count_traffic",
    "load_sharded",
    "place_tables",
    "row_shards",
    "save_sharded",
    "sharded_embedding_bag",
    "sharded_lookup",
]
