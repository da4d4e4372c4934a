"""One-hot vectors and the one-hot matrix product (chapters 1 and 2)."""
from __future__ import annotations

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays


def one_hot(indices, num_embeddings, *, dtype=np.float32, max_bytes=_checks.DEFAULT_MAX_BYTES):
    """One-hot encode ``indices``: shape ``(*indices.shape, num_embeddings)``, a single 1 per vector.

    Chapter 1 builds fireweed's 300,000-long vector with it. Raises ValueError before allocating when
    the result would exceed ``max_bytes`` (pass ``None`` for no limit).
    """
    idx = _arrays.indices(indices)
    num_embeddings = _checks.count(num_embeddings, "num_embeddings")
    _arrays.in_range(idx, num_embeddings)
    dtype = np.dtype(dtype)
    _checks.onehot_size(idx.shape, num_embeddings, dtype.itemsize, dtype.name, max_bytes)
    out = np.zeros(idx.shape + (num_embeddings,), dtype=dtype)
    np.put_along_axis(out, idx[..., None].astype(np.intp), 1, axis=-1)
    return out


def onehot_matmul(indices, weight, *, max_bytes=_checks.DEFAULT_MAX_BYTES):
    """``one_hot(indices, V) @ weight``: the definition of an embedding lookup (chapter 2).

    Exactly equal to :func:`lookup` for finite weights, and far slower: it multiplies every zero.
    """
    w = _arrays.weight(weight)
    return one_hot(indices, w.shape[0], dtype=w.dtype, max_bytes=max_bytes) @ w
