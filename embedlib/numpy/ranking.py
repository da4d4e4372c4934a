"""Ranking metrics (chapter 14): how many of a query's relevant ids a ranking finds, and how high.

A retrieval system (an exact scan, :class:`embedlib.retrieval.ApproximateIndex`, a recommender)
returns, per query, ids best first: ``ranked``, an integer array ``(Q, N)``. What it should have
found is ``relevant``, an integer array ``(Q, R)``: query ``q``'s relevant ids in row ``q``, in any
order, padded with ``-1`` (sets of different sizes as one padded matrix). Conventions, the same in
``embedlib.torch.ranking``:

- ``relevant`` is a set: an id listed twice in a row counts once (a user who clicked an item twice
  still has one relevant item), except with ``gains``, where a repeated id is an error (which gain?);
- an id appears at most once in each row of ``ranked[:, :k]`` (ValueError otherwise); ``-1`` there
  is a missing result (an approximate index that found fewer than k rows) and is never relevant;
- a query with no relevant id (a row of ``relevant`` that is all ``-1``) has no defined recall or
  NDCG: NaN with ``reduction="none"``, and left out of the mean with ``reduction="mean"`` (the mean
  over no query at all is NaN);
- results are float64, one per query (``reduction="none"``) or their mean (``"mean"``, a 0-d array).
"""
from __future__ import annotations

import numpy as np

from embedlib import _ranking

#: Queries are matched against their relevant ids in blocks of about this many (ranked x relevant) pairs.
_BLOCK = 1 << 22


def recall_at_k(ranked, relevant, k, *, reduction="mean"):
    """Recall@k (chapter 14): per query, the share of its relevant ids found in the top ``k``.

    ``|ranked[q, :k] ∩ relevant[q]| / |relevant[q]|``: 1 when every relevant id made the top ``k``;
    at most ``k / |relevant[q]|`` when a query has more relevant ids than places (dividing by ``k``
    instead would be precision@k). See the module docstring for ``ranked``, ``relevant``, padding,
    duplicates, queries without relevant ids (NaN) and ``reduction`` ("mean" or "none").
    """
    top, rel, k = _prepare(ranked, relevant, k, reduction)
    rel = _as_set(rel)
    found = _place_gains(top, rel, (rel >= 0).astype(np.float64)).sum(axis=1)
    count = (rel >= 0).sum(axis=1)
    per_query = np.full(len(top), np.nan)
    some = count > 0
    per_query[some] = found[some] / count[some]
    return _reduce(per_query, reduction)


def ndcg_at_k(ranked, relevant, k, *, gains=None, reduction="mean"):
    """NDCG@k (chapter 14): discounted cumulative gain of the top ``k``, divided by the best possible.

    ``DCG = sum_{i < k} gain(ranked[q, i]) / log2(i + 2)`` (place 0 counts fully, place 1 by
    1/log2(3), ...), where an id's gain is 1 if it is relevant and 0 otherwise, or, with ``gains``
    (float ``(Q, R)``, aligned with ``relevant``, >= 0), its graded relevance. The ideal DCG is the
    DCG of the query's own gains sorted from largest to smallest and cut at ``k`` places; NDCG is
    DCG / ideal DCG, between 0 and 1, 1 for a perfect top ``k``. A query whose ideal DCG is 0 (no
    relevant id, or only gains of 0) gives NaN. See the module docstring for the conventions.
    """
    top, rel, k = _prepare(ranked, relevant, k, reduction)
    if gains is None:
        rel = _as_set(rel)
        g = (rel >= 0).astype(np.float64)
    else:
        g = np.asarray(gains)
        _ranking.shapes(np.shape(ranked), rel.shape, g.shape)
        if not (np.issubdtype(g.dtype, np.floating) or np.issubdtype(g.dtype, np.integer)) or g.dtype == np.bool_:
            raise TypeError(f"gains must hold numbers, got dtype {g.dtype}")
        g = np.where(rel >= 0, g.astype(np.float64), 0.0)
        row, value = _first_duplicate(rel)
        _ranking.gains_values(bool((g < 0).any()), bool(np.isfinite(g).all()), row, value)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = _place_gains(top, rel, g) @ discount
    ideal = -np.sort(-g, axis=1)[:, :k]
    idcg = ideal @ discount[: ideal.shape[1]]
    per_query = np.full(len(top), np.nan)
    some = idcg > 0
    per_query[some] = dcg[some] / idcg[some]
    return _reduce(per_query, reduction)


def _prepare(ranked, relevant, k, reduction):
    """Checks shared by both metrics; returns ``ranked[:, :k]`` and ``relevant`` as int64 and ``k``."""
    ranked, relevant = np.asarray(ranked), np.asarray(relevant)
    if relevant.size == 0 and relevant.dtype == np.float64 and relevant.ndim == 2:
        relevant = relevant.astype(np.int64)  # np.zeros((Q, 0)) or [[]]: no relevant ids at all
    for name, arr in (("ranked", ranked), ("relevant", relevant)):
        kind = "int" if arr.dtype.kind in "iu" else "bool" if arr.dtype.kind == "b" else "other"
        _ranking.ids_dtype(kind, str(arr.dtype), name)
    _ranking.shapes(ranked.shape, relevant.shape)
    k = _ranking.k(k, ranked.shape[1])
    _ranking.reduction(reduction)
    top = ranked[:, :k].astype(np.int64)
    relevant = relevant.astype(np.int64)
    for name, arr in (("ranked", top), ("relevant", relevant)):
        if arr.size:
            _ranking.padding(int(arr.min()), name)
    row, value = _first_duplicate(top)
    _ranking.ranked_duplicates(row, value, k)
    return top, relevant, k


def _first_duplicate(ids: np.ndarray):
    """``(row, id)`` of the first id >= 0 that a row lists twice, or ``(None, None)``."""
    if ids.shape[1] < 2:
        return None, None
    s = np.sort(ids, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if not dup.any():
        return None, None
    row, col = np.argwhere(dup)[0]
    return int(row), int(s[row, col + 1])


def _as_set(rel: np.ndarray) -> np.ndarray:
    """``relevant`` with every repeat of an id in a row replaced by -1 padding (rows get sorted)."""
    if rel.shape[1] < 2:
        return rel
    s = np.sort(rel, axis=1)
    s[:, 1:][s[:, 1:] == s[:, :-1]] = -1
    return s


def _place_gains(top: np.ndarray, rel: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``(Q, k)``: the gain of the id at each place (0 when not relevant), ``rel`` holding no repeats."""
    q, k = top.shape
    out = np.zeros((q, k))
    step = max(1, _BLOCK // max(1, k * rel.shape[1]))
    for s in range(0, q, step):
        r = rel[s:s + step]
        match = (top[s:s + step, :, None] == r[:, None, :]) & (r[:, None, :] >= 0)
        out[s:s + step] = (match * gain[s:s + step, None, :]).sum(axis=2)
    return out


def _reduce(per_query: np.ndarray, reduction: str):
    if reduction == "none":
        return per_query
    kept = per_query[~np.isnan(per_query)]
    return np.asarray(kept.mean() if kept.size else np.nan)
