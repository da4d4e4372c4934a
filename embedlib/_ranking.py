"""Argument checks of the ranking metrics (chapter 14), shared by both backends.

Like :mod:`embedlib._checks`, everything here works on plain Python values (shapes, dtype kinds,
counts found by the backend), so ``embedlib.numpy.ranking`` and ``embedlib.torch.ranking`` raise the
same errors with the same words, before computing anything.
"""
from __future__ import annotations

from embedlib import _checks

REDUCTIONS = ("mean", "none")


def ids_dtype(kind: str, dtype_name: str, name: str) -> None:
    """``kind`` is 'int', 'bool' or 'other'; ranked and relevant ids must be integers."""
    if kind != "int":
        what = "booleans" if kind == "bool" else f"dtype {dtype_name}"
        raise TypeError(f"{name} must hold integer ids, got {what}")


def shapes(ranked_shape: tuple, relevant_shape: tuple, gains_shape: tuple | None = None) -> None:
    if len(ranked_shape) != 2:
        raise ValueError(f"ranked must be 2-D (queries, ranked ids), got shape {tuple(ranked_shape)}")
    if len(relevant_shape) != 2:
        raise ValueError(f"relevant must be 2-D (queries, relevant ids padded with -1), got shape "
                         f"{tuple(relevant_shape)}")
    if ranked_shape[0] != relevant_shape[0]:
        raise ValueError(f"ranked and relevant must have one row per query: ranked has {ranked_shape[0]} "
                         f"rows, relevant {relevant_shape[0]}")
    if gains_shape is not None and tuple(gains_shape) != tuple(relevant_shape):
        raise ValueError(f"gains must have relevant's shape {tuple(relevant_shape)} (one gain per relevant id), "
                         f"got {tuple(gains_shape)}")


def k(value, ranked_columns: int) -> int:
    k = _checks.count(value, "k")  # TypeError for bools and non-integers, ValueError below 0
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > ranked_columns:
        raise ValueError(f"k={k} is more than the {ranked_columns} ids ranked per query")
    return k


def reduction(value) -> None:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {value!r}")


def padding(lowest: int, name: str) -> None:
    """Ids are >= 0; -1 pads ``relevant`` (and marks a missing result in ``ranked``)."""
    if lowest < -1:
        raise ValueError(f"{name} holds the id {lowest}: ids must be >= 0, and -1 is the only padding value")


def ranked_duplicates(row: int | None, value: int | None, k: int) -> None:
    if row is not None:
        raise ValueError(f"ranked lists id {value} twice in the top {k} of query {row}: a ranking names each "
                         "id at most once")


def gains_values(negative: bool, finite: bool, duplicate_row: int | None, value: int | None) -> None:
    if not finite:
        raise ValueError("gains must be finite numbers")
    if negative:
        raise ValueError("gains must be >= 0 (a gain is how relevant an id is; 0 means not at all)")
    if duplicate_row is not None:
        raise ValueError(f"relevant lists id {value} twice in query {duplicate_row} while gains are given: "
                         "give each relevant id once, with its gain")
