"""Checks and sizes of the smaller tables of chapter 14, shared by both backends.

Plain Python values in (shapes, dtype names, the smallest and largest id), the same errors out:
each backend pulls those values from its own arrays and calls in here before computing anything.
"""
from __future__ import annotations

import numpy as np

from embedlib import _checks

#: How a quotient row and a remainder row make one embedding (Shi et al. 2020).
OPERATIONS = ("mult", "add", "concat")

#: The spread of the quotient table's entries around 1 in a fresh "mult" table (see
#: ``QREmbedding``): small, so that the product stays close to the remainder row at first.
QUOTIENT_NOISE = 0.1


def operation(name) -> str:
    if name not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}, got {name!r}")
    return name


def num_quotients(num_embeddings: int, num_remainders: int) -> int:
    """``ceil(V / R)``: the rows of the quotient table, so that ids ``0 .. V-1`` all have a quotient row."""
    return -(-num_embeddings // num_remainders)


def tables(q_shape: tuple, r_shape: tuple, q_dtype: str, r_dtype: str, op: str) -> int:
    """Two 2-D tables that fit ``op``; returns the width D of the embeddings they make."""
    for name, shape in (("quotient_weight", q_shape), ("remainder_weight", r_shape)):
        if len(shape) != 2:
            raise ValueError(f"{name} must be 2-D (rows, embedding_dim), got {len(shape)}-D with shape "
                             f"{tuple(shape)}")
    if r_shape[0] == 0:
        raise ValueError("remainder_weight must have at least one row: its row count R is the divisor of "
                         "i // R and i % R")
    if q_dtype != r_dtype:
        raise ValueError(f"quotient_weight and remainder_weight must have the same dtype, got {q_dtype} and "
                         f"{r_dtype}")
    if op == "concat":
        return int(q_shape[1]) + int(r_shape[1])
    if q_shape[1] != r_shape[1]:
        raise ValueError(f"with operation={op!r} both tables must have the same width, got quotient_weight "
                         f"{tuple(q_shape)} and remainder_weight {tuple(r_shape)} (operation='concat' "
                         "joins tables of different widths)")
    return int(q_shape[1])


def qr_range(lowest: int, highest: int, num_quotients_: int, num_remainders: int) -> None:
    """Every id needs a quotient row: ``0 <= i < Q * R``; name the first bad id found."""
    capacity = num_quotients_ * num_remainders
    if lowest < 0:
        raise _checks.out_of_range(lowest, capacity)
    if highest >= capacity:
        raise IndexError(
            f"index {highest} is out of range: a quotient table of {num_quotients_} rows and a remainder "
            f"table of {num_remainders} rows represent {capacity} ids, 0..{capacity - 1} (the quotient "
            f"{highest} // {num_remainders} = {highest // num_remainders} has no row)"
        )


def non_negative(lowest: int) -> None:
    if lowest < 0:
        raise IndexError(f"index {lowest} is negative: ids are 0, 1, 2, ... (i // R would silently give it "
                         "a negative quotient, which NumPy reads as a row counted from the end)")


def qr_shape(num_embeddings, embedding_dim, num_remainders, op, init_std) -> tuple[int, int, int, int, int, int]:
    """``(V, D, R, Q, Dq, Dr)`` of a new ``QREmbedding``, checked. "concat" gives the quotient table
    ``ceil(D / 2)`` columns and the remainder table the rest."""
    num_embeddings = _checks.positive(num_embeddings, "num_embeddings")
    embedding_dim = _checks.positive(embedding_dim, "embedding_dim")
    num_remainders = _checks.positive(num_remainders, "num_remainders")
    operation(op)
    init_std_(init_std)
    if op == "concat" and embedding_dim < 2:
        raise ValueError("operation='concat' splits embedding_dim between the two tables: it must be at least 2")
    dq = embedding_dim - embedding_dim // 2 if op == "concat" else embedding_dim
    dr = embedding_dim // 2 if op == "concat" else embedding_dim
    return num_embeddings, embedding_dim, num_remainders, num_quotients(num_embeddings, num_remainders), dq, dr


def init_std_(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"init_std must be a finite non-negative number, got {value!r}")
    return float(value)


def represented(num_embeddings, num_quotients_: int, num_remainders: int) -> int:
    """``num_embeddings`` given to ``from_weights``: at most ``Q * R`` (default ``Q * R``)."""
    capacity = num_quotients_ * num_remainders
    if num_embeddings is None:
        return capacity
    num_embeddings = _checks.positive(num_embeddings, "num_embeddings")
    if num_embeddings > capacity:
        raise ValueError(f"num_embeddings={num_embeddings} is more than the {num_quotients_} x {num_remainders} "
                         f"= {capacity} ids the two tables can represent")
    return num_embeddings


def initial_qr(num_quotients_: int, num_remainders: int, dq: int, dr: int, op: str, init_std: float, seed):
    """The starting ``(quotient_weight, remainder_weight)`` of a ``QREmbedding``, float64, drawn from
    ``np.random.default_rng(seed)`` in both backends (so the same seed gives the same tables).

    Each is chosen so that the full table's entries have spread about ``init_std``, like a plain
    table's N(0, init_std^2), and no two ids start with the same row:

    * "mult": remainder N(0, init_std^2), quotient 1 + N(0, 0.1^2). A fresh product is then the
      remainder row, nudged by 10%: it starts out as a plain table of R rows whose copies differ a
      little, and the gradient reaches both factors (the remainder's is ``g * quotient``, about ``g``;
      the quotient's ``g * remainder``). Two small random factors instead would give a product of
      spread ``init_std^2`` and gradients of the same small size: a slow start.
    * "add": both N(0, init_std^2 / 2), so the sum has variance init_std^2.
    * "concat": both N(0, init_std^2).
    """
    rng = np.random.default_rng(seed)
    remainder = rng.standard_normal((num_remainders, dr))
    quotient = rng.standard_normal((num_quotients_, dq))
    if op == "mult":
        return 1.0 + QUOTIENT_NOISE * quotient, init_std * remainder
    scale = init_std / np.sqrt(2.0) if op == "add" else init_std
    return scale * quotient, scale * remainder


def initial_hashed(num_buckets: int, embedding_dim: int, init_std: float, seed):
    """The starting table of a ``HashEmbedding``: N(0, init_std^2), float64, from
    ``np.random.default_rng(seed)`` in both backends."""
    return init_std * np.random.default_rng(seed).standard_normal((num_buckets, embedding_dim))
