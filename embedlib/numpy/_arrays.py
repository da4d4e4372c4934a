"""Turning user input into validated NumPy arrays (no copies when the input is already fine)."""
from __future__ import annotations

import numpy as np

from embedlib import _checks


def indices(values, what: str = "indices") -> np.ndarray:
    """An integer array, else TypeError. An empty Python list counts as integers."""
    arr = np.asarray(values)
    if arr.size == 0 and not isinstance(values, np.ndarray) and arr.dtype == np.float64:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":  # signed and unsigned integers pass without building a message
        _checks.index_dtype("bool" if arr.dtype.kind == "b" else "other", str(arr.dtype), what)
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


def in_place(weight, option: str) -> None:
    """``option`` changes the weight in place, so it must be a NumPy array (not a list)."""
    if not isinstance(weight, np.ndarray):
        raise TypeError(f"{option} changes weight in place, so it must be a NumPy array, got {type(weight).__name__}")


def floats(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {arr.dtype}")
    return arr


def deterministic(value) -> None:
    """``deterministic=`` is True, False or None in both backends (NumPy is always deterministic)."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"deterministic must be True, False or None, got {value!r}")
