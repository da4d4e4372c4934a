"""Stable hashing of categories into buckets, shared by both backends (chapter 8).

Python's built-in ``hash()`` of a string changes from one process to the next (PYTHONHASHSEED), so a
model trained with it would look up different rows after a restart. Here strings and bytes go through
BLAKE2b (64-bit digest, keyed by the seed) and integers through the SplitMix64 finaliser, vectorised in
NumPy: both are fixed functions of the key's bytes, the same in every process and on every platform.
"""
from __future__ import annotations

import hashlib
import numbers

import numpy as np

from embedlib import _checks

_MASK = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 (wrapping arithmetic): a bijection that mixes all bits."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _hash_ints(x: np.ndarray, seed: int) -> np.ndarray:
    salt = _splitmix64(np.array(seed & _MASK, dtype=np.uint64))
    return _splitmix64(x ^ salt)


def _hash_strings(keys, shape, seed: int) -> np.ndarray:
    key = (seed & _MASK).to_bytes(8, "little")
    out = np.empty(len(keys), dtype=np.uint64)
    for i, k in enumerate(keys):
        data = k.encode("utf-8") if isinstance(k, str) else bytes(k)
        out[i] = int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "little")
    return out.reshape(shape)


def _kind(value) -> str:
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        return "str"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    return type(value).__name__


def hash_keys(keys, num_buckets, seed=0) -> np.ndarray:
    """Bucket ids in ``[0, num_buckets)`` as an int64 array shaped like ``keys``."""
    num_buckets = _checks.positive(num_buckets, "num_buckets")
    seed = _checks.count(seed, "seed")
    if seed > _MASK:
        raise ValueError(f"seed must fit in 64 bits (0 .. 2**64-1), got {seed}")
    if isinstance(keys, np.ndarray) and keys.dtype != object:
        arr = keys
    else:
        arr = np.empty((), dtype=object)
        arr[()] = keys
        if not isinstance(keys, (str, bytes)) and np.ndim(keys) > 0:
            arr = np.asarray(keys, dtype=object)
    if arr.dtype.kind in "iu":
        bits = arr.astype(np.uint64) if arr.dtype.kind == "u" else arr.astype(np.int64).view(np.uint64)
        mixed = _hash_ints(bits, seed)
    elif arr.dtype.kind in "US":
        mixed = _hash_strings(arr.reshape(-1).tolist(), arr.shape, seed)
    elif arr.dtype == object:
        flat = arr.reshape(-1).tolist()
        kinds = {_kind(k) for k in flat}
        if kinds == {"str"}:
            mixed = _hash_strings(flat, arr.shape, seed)
        elif kinds == {"int"}:
            ints = [int(k) for k in flat]
            bad = next((k for k in ints if not -(1 << 63) <= k <= _MASK), None)
            if bad is not None:  # wrapping it would silently share a bucket with bad mod 2**64
                raise ValueError(f"integer keys must fit in 64 bits (-2**63 .. 2**64-1), got {bad}")
            mixed = _hash_ints(np.array([k & _MASK for k in ints], dtype=np.uint64).reshape(arr.shape), seed)
        elif not kinds:
            mixed = np.zeros(arr.shape, dtype=np.uint64)
        else:
            raise TypeError(
                f"keys must be all strings/bytes or all integers, got {', '.join(sorted(kinds))}"
            )
    else:
        raise TypeError(f"keys must be strings, bytes or integers, got dtype {arr.dtype}")
    return np.asarray(mixed % np.uint64(num_buckets)).astype(np.int64)
