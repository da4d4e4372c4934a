"""Saving a sharded table to one file and loading it onto any number of ranks (the chapter on sharded
tables).

The file is an ordinary ``torch.save`` archive: ``{"format": "embedlib.sharded", "version": 1,
"layer": "ShardedEmbedding" or "ShardedEmbeddingBag", "config": {...}, "saved_world_size": W,
"weight": the full (V, D) table}``, so one process reads it with ``torch.load`` alone. Saving gathers
the shards on rank 0 of the group, which writes the file; loading reads the file on every rank (it must
be visible to all of them, e.g. on a shared file system) through a memory map, and keeps only the
rank's own rows, cut for the world size of the loading group, whatever the saving one was.
"""
from __future__ import annotations

import os

import torch

from embedlib.distributed import _collectives
from embedlib.distributed.layers import ShardedEmbedding, ShardedEmbeddingBag

FORMAT, VERSION = "embedlib.sharded", 1
_LAYERS = {cls.__name__: cls for cls in (ShardedEmbedding, ShardedEmbeddingBag)}


def gather_table(module) -> torch.Tensor | None:
    """The full table of a sharded layer, on rank 0 of its group; None on the other ranks (the chapter on
    sharded tables). Every rank calls it."""
    if module.sharding != "column":
        return _collectives.gather_rows(module.weight, module.shards.sizes(), module.group)
    # the column blocks, as the rows of the transposed shards
    full = _collectives.gather_rows(module.weight.detach().t().contiguous(), module.shards.sizes(), module.group)
    return None if full is None else full.t().contiguous()


def save_sharded(module, path) -> None:
    """Gather ``module``'s shards (a :class:`ShardedEmbedding` or :class:`ShardedEmbeddingBag`) on rank 0
    of its group and write the full table and the layer's arguments to ``path`` (the chapter on sharded
    tables). Every rank calls it; it returns on every rank once the file is written, and if writing
    fails, every rank raises."""
    if type(module).__name__ not in _LAYERS:
        raise TypeError(f"save_sharded saves a ShardedEmbedding or ShardedEmbeddingBag, got {type(module).__name__}")
    full = gather_table(module)

    def write():
        if full is None:
            return
        payload = {"format": FORMAT, "version": VERSION, "layer": type(module).__name__, "config": module.config(),
                   "saved_world_size": module.world_size, "weight": full}
        tmp = f"{os.fspath(path)}.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, path)  # never a half-written file under the real name

    _collectives.agree(write, module.group)


def load_sharded(path, *, group=None, sharding=None, table_rank=None, device=None):
    """The layer saved by :func:`save_sharded` in ``path``, sharded over ``group`` (the default group when
    None; one process without one): each rank reads only its own rows (the chapter on sharded tables).
    ``sharding`` ("row", "column" or "table") and ``table_rank`` override the saved layer's. Every
    rank calls it; a missing or foreign file raises on every rank."""

    def read():
        payload = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a table saved by embedlib.distributed.save_sharded")
        if payload.get("version") != VERSION or payload.get("layer") not in _LAYERS:
            raise ValueError(f"{path} holds a sharded table of an unknown version or layer: "
                             f"version {payload.get('version')!r}, layer {payload.get('layer')!r}")
        return payload

    payload = _collectives.agree(read, group)
    config, full = dict(payload["config"]), payload["weight"]
    cls = _LAYERS[payload["layer"]]
    if sharding is not None:
        config["sharding"] = sharding
    if table_rank is not None:
        config["table_rank"] = table_rank
    num_embeddings, embedding_dim = config.pop("num_embeddings"), config.pop("embedding_dim")
    layer = cls(num_embeddings, embedding_dim, group=group, device=device, dtype=full.dtype, **config)
    with torch.no_grad():
        layer.weight.copy_(full[layer.block()])
    return layer
