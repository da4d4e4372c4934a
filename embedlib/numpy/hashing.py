"""The hashing trick: categories to a fixed number of rows (chapter 8)."""
from __future__ import annotations

from embedlib import _hashing


def hash_bucket(keys, num_buckets, *, seed=0):
    """The hashing trick (chapter 8): stable bucket ids in ``[0, num_buckets)`` for strings, bytes
    or integers, shaped like ``keys``.

    The same key gives the same bucket in every process and on every platform, unlike Python's
    ``hash()``; a different ``seed`` gives an independent assignment. Integers are hashed by their
    64-bit two's-complement pattern (so ``-1`` and ``2**64 - 1`` share a bucket; wider integers are
    refused). Returns an int64 array.
    """
    return _hashing.hash_keys(keys, num_buckets, seed)
