"""Nearest neighbours in an embedding table (chapter 7)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays


class Neighbors(NamedTuple):
    """What ``nearest_neighbors`` returns (chapter 7)."""

    indices: np.ndarray  # row ids, best first
    scores: np.ndarray  # similarity ("cosine", "dot") or distance ("euclidean")


def nearest_neighbors(weight, query, k=5, *, metric="cosine"):
    """Nearest neighbours (chapter 7): the ``k`` rows of ``weight`` closest to ``query``, best
    first, ties broken by lower row id.

    ``query`` is a row id (that row is left out of its own answer), a 1-D array of row ids, a vector
    ``(D,)`` or a matrix ``(Q, D)``. ``metric`` is "cosine" or "dot" (largest first) or "euclidean"
    (smallest distance first). Returns ``Neighbors(indices, scores)`` of shape ``(k,)`` or ``(Q, k)``.
    """
    w = _arrays.weight(weight)
    _checks.metric(metric)
    vectors, ids, single = query_vectors(w, query)
    by_id = ids is not None
    k = _checks.neighbors_k(k, w.shape[0] - (1 if by_id else 0))

    scores = pairwise_scores(vectors, w, metric)
    key = scores if metric == "euclidean" else -scores
    if by_id:
        key[np.arange(len(vectors)), ids.reshape(-1)] = np.inf
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    return Neighbors(order[0], best[0]) if single else Neighbors(order, best)


def query_vectors(w: np.ndarray, query):
    """A query as chapter 7's search takes it: ``(vectors (Q, D), ids (Q,) or None, single)``.

    ``query`` is a row id, a 1-D array of row ids (``ids`` holds them; each row is left out of its
    own answer), a vector ``(D,)`` or a matrix ``(Q, D)``; ``single`` says whether one query came in
    (a scalar id or a vector). Shared with ``embedlib.retrieval.ApproximateIndex.search`` (chapter 14).
    """
    q = np.asarray(query)
    if np.issubdtype(q.dtype, np.integer) or q.dtype == np.bool_:
        ids = _arrays.indices(q, "query")
        if ids.ndim > 1:
            raise ValueError(f"query row ids must be a scalar or 1-D, got shape {ids.shape}")
        _arrays.in_range(ids, w.shape[0], "query row")
        return w[ids.reshape(-1)], ids.reshape(-1).astype(np.int64), ids.ndim == 0
    vectors = _arrays.floats(q, "query")
    if vectors.ndim not in (1, 2) or vectors.shape[-1] != w.shape[1]:
        raise ValueError(
            f"query vectors must have shape (D,) or (Q, D) with D={w.shape[1]} (weight's embedding_dim), "
            f"got {vectors.shape}"
        )
    return vectors.reshape(-1, w.shape[1]), None, vectors.ndim == 1


def pairwise_scores(q: np.ndarray, w: np.ndarray, metric: str) -> np.ndarray:
    """``(Q, V)`` scores between query vectors and every row."""
    if metric == "dot":
        return q @ w.T
    if metric == "cosine":
        eps = np.finfo(w.dtype).tiny
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), eps)
        wn = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), eps)
        return qn @ wn.T
    # Differences, not |q|^2 - 2 q.w + |w|^2: that expansion cancels catastrophically for close
    # points far from the origin. Queries go in chunks so the (chunk, V, D) block stays ~32 MB.
    chunk = max(1, (1 << 22) // max(1, w.size))
    out = np.empty((q.shape[0], w.shape[0]), dtype=np.result_type(q, w))
    for s in range(0, q.shape[0], chunk):
        diff = q[s : s + chunk, None, :] - w[None, :, :]
        out[s : s + chunk] = np.sqrt(np.einsum("qvd,qvd->qv", diff, diff))
    return out
