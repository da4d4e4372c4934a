"""Scatter-adds by sorting: the sums of rows that share a key (chapter 4's backward pass).

Repeated indices must add up; a stable sort brings equal keys together, rows seen once are copied
and repeated ones summed in an order fixed by the keys, so the result is the same bits every run.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from embedlib.numpy._threads import copy_rows


class Groups(NamedTuple):
    """Equal keys brought together: ``keys[order]`` is sorted, group ``g`` is
    ``order[starts[g]:starts[g] + sizes[g]]`` (in order of appearance) and has key ``rows[g]``."""

    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    rows: np.ndarray


def group(keys: np.ndarray) -> Groups:
    """Sort ``keys`` stably and find where each run of equal keys starts.

    A stable sort of 64-bit integers is a merge sort in NumPy; the default sort is several times
    faster but unstable. Sorting ``key * n + position`` instead makes every sort key distinct, so
    the fast sort returns exactly the stable order.
    """
    keys = keys.reshape(-1)
    n = keys.size
    lo, hi = (int(keys.min()), int(keys.max())) if n else (0, 0)
    if lo >= 0 and hi < (2**63 - 1) // max(n, 1) - 1:
        order = np.argsort(keys.astype(np.int64) * n + np.arange(n, dtype=np.int64))
    else:
        order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.empty(n, dtype=bool)
    first[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, n))
    return Groups(order, starts, sizes, sorted_keys[starts].astype(np.int64))


#: Groups with at least this many members are summed with one ``np.add.reduce`` each; smaller ones
#: all together, pairwise, by :func:`_sum_repeated`.
LARGE_GROUP = 32


def _sum_repeated(g: Groups, values: np.ndarray):
    """Sums of the groups with more than one member: ``(which groups, their sums)``.

    The members of those groups are gathered side by side, in order of appearance. Small groups are
    then added pairwise, all of them at once: at step ``s`` = 1, 2, 4, ... the member of rank ``r``
    (a multiple of ``2s``) adds the one of rank ``r + s``, one vectorised add over distinct rows, so
    a group of ``m`` members takes ``log2(m)`` steps and the work is one add per member. A large
    group is a contiguous block by then, which ``np.add.reduce`` sums at memory speed. The order of
    additions depends only on the keys: the same input gives the same bits every time.
    """
    multi = np.flatnonzero(g.sizes > 1)
    sizes = g.sizes[multi]
    total = int(sizes.sum())
    local_starts = np.cumsum(sizes) - sizes  # where each group begins among the gathered members
    members = np.take(g.order, np.repeat(g.starts[multi] - local_starts, sizes) + np.arange(total))
    x = np.take(values, members, axis=0)
    large = sizes >= LARGE_GROUP
    small_sizes = sizes[~large]
    if small_sizes.size:
        size_of = np.repeat(sizes, sizes)
        rank = np.arange(total, dtype=np.int64) - np.repeat(local_starts, sizes)
        candidates = np.flatnonzero(size_of < LARGE_GROUP)
        step = 1
        while step < small_sizes.max():
            candidates = candidates[rank[candidates] % (2 * step) == 0]
            active = candidates[rank[candidates] + step < size_of[candidates]]
            x[active] += x[active + step]
            step *= 2
    for start, size in zip(local_starts[large].tolist(), sizes[large].tolist()):
        x[start] = np.add.reduce(x[start:start + size], axis=0)
    return multi, x[local_starts]


def segment_sum(keys: np.ndarray, values: np.ndarray, *, keys_sorted: bool = False):
    """Sum the rows of ``values`` that share a key: ``(unique_keys, sums)``, keys ascending.

    This is the scatter-add at the heart of every backward pass (chapter 4). Keys are grouped by a
    sort; a key seen once keeps its row as it is, and the rows of a repeated key are added pairwise
    (:func:`_sum_repeated`), so results are reproducible bit for bit. ``keys_sorted`` is accepted
    for callers that know their keys are sorted; the grouping is the same either way.
    """
    if keys.size == 0:
        return keys.reshape(-1).astype(np.int64), np.zeros((0,) + values.shape[1:], dtype=values.dtype)
    g = group(keys)
    sums = np.take(values, g.order[g.starts], axis=0)
    if g.starts.size < keys.size:
        which, repeated = _sum_repeated(g, values)
        sums[which] = repeated
    return g.rows, sums


def scatter_sum(keys: np.ndarray, values: np.ndarray, num_rows: int) -> np.ndarray:
    """Dense ``(num_rows, *values.shape[1:])`` array whose row ``k`` is the sum of the ``values``
    rows with key ``k`` (zeros elsewhere): ``segment_sum`` written straight into its rows.

    Equal to ``out = zeros(...); np.add.at(out, keys, values)`` up to the order of additions, and
    several times faster: ``np.add.at`` on a 2-D array adds one element at a time.
    """
    out = np.zeros((num_rows,) + values.shape[1:], dtype=values.dtype)
    if keys.size == 0:
        return out
    g = group(keys)
    single = g.sizes == 1
    if single.all():
        copy_rows(out, g.rows, values, g.order)
        return out
    copy_rows(out, g.rows[single], values, g.order[g.starts[single]])
    which, repeated = _sum_repeated(g, values)
    out[g.rows[which]] = repeated
    return out
