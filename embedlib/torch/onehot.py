"""One-hot vectors and the one-hot matrix product, in torch (chapters 1, 2 and 5)."""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.torch import _tensors


def one_hot(indices, num_embeddings, *, dtype=torch.float32, device=None, max_bytes=_checks.DEFAULT_MAX_BYTES):
    """One-hot encode ``indices`` (chapter 1): shape ``(*indices.shape, num_embeddings)`` (unlike
    ``torch.nn.functional.one_hot``, floating point by default, so it can multiply a weight).

    Raises ValueError before allocating when the result would exceed ``max_bytes`` (``None``: no limit).
    """
    # an explicit device is where the result goes: lists are built there, tensors moved there
    idx = _tensors.indices(indices, None if isinstance(indices, torch.Tensor) else device)
    if device is not None:
        idx = idx.to(device)
    num_embeddings = _checks.count(num_embeddings, "num_embeddings")
    _tensors.in_range(idx, num_embeddings)
    itemsize = torch.empty((), dtype=dtype).element_size()
    _checks.onehot_size(tuple(idx.shape), num_embeddings, itemsize, str(dtype).replace("torch.", ""), max_bytes)
    out = torch.zeros(*idx.shape, num_embeddings, dtype=dtype, device=idx.device)
    return out.scatter_(-1, idx.long().unsqueeze(-1), 1)


def onehot_matmul(indices, weight, *, max_bytes=_checks.DEFAULT_MAX_BYTES):
    """``one_hot(indices, V) @ weight`` (chapter 2), differentiable w.r.t. ``weight``; equal to :func:`lookup`."""
    w = _tensors.weight(weight)
    return one_hot(indices, w.shape[0], dtype=w.dtype, device=w.device, max_bytes=max_bytes) @ w
