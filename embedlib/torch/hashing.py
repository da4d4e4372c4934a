"""The hashing trick in torch: the same buckets as the NumPy backend, as an int64 tensor (chapter 8)."""
from __future__ import annotations

import torch

from embedlib import _hashing


def hash_bucket(keys, num_buckets, *, seed=0, device=None):
    """The hashing trick (chapter 8): stable bucket ids in ``[0, num_buckets)`` for strings, bytes
    or integers (lists, arrays or
    integer tensors), as an int64 tensor shaped like ``keys``; the same in every process."""
    if isinstance(keys, torch.Tensor):
        if keys.dtype.is_floating_point or keys.dtype == torch.bool or keys.dtype.is_complex:
            raise TypeError(f"keys must be strings, bytes or integers, got dtype {keys.dtype}")
        device = keys.device if device is None else device
        keys = keys.detach().cpu().numpy()
    return torch.from_numpy(_hashing.hash_keys(keys, num_buckets, seed)).to(device)
