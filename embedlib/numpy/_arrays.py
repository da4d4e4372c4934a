"""Turning user input into validated NumPy arrays (no copies when the input is already fine)."""
from __future__ import annotations

import numpy as np

from embedlib import _checks


def indices(values, what: str = "indices") -> np.ndarray:
    """An integer array, else TypeError. An empty Python list counts as integers."""
    arr = np.asarray(values)
    if arr.size == 0 and not isinstance(values, np.ndarray) and arr.dtype == np.float64:
        arr = arr.astype(np.int64)
    kind = "bool" if arr.dtype == np.bool_ else "int" if np.issubdtype(arr.dtype, np.integer) else "other"
    _checks.index_dtype(kind, str(arr.dtype), what)
    return arr


def in_range(idx: np.ndarray, num_embeddings: int, what: str = "index") -> None:
    if idx.size:
        _checks.index_range(int(idx.min()), int(idx.max()), num_embeddings, what)


def weight(values, name: str = "weight") -> np.ndarray:
    arr = np.asarray(values)
    _checks.weight_shape(arr.shape)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {arr.dtype}")
    return arr


def floats(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {arr.dtype}")
    return arr


def segment_sum(keys: np.ndarray, values: np.ndarray, *, keys_sorted: bool = False):
    """Sum the rows of ``values`` that share a key: ``(unique_keys, sums)``, keys ascending.

    This is the scatter-add at the heart of every backward pass (chapter 4). A stable sort groups
    equal keys, then ``np.add.reduceat`` adds each group in one vectorised pass: several times faster
    than ``np.add.at`` on a 2-D array, and the summation order is fixed, so results are reproducible.
    """
    if keys.size == 0:
        return keys.astype(np.int64), np.zeros((0,) + values.shape[1:], dtype=values.dtype)
    if not keys_sorted:
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts].astype(np.int64), np.add.reduceat(values, starts, axis=0)
