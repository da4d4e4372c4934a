"""Nearest neighbours in an embedding table, in torch (chapter 7)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from embedlib import _checks
from embedlib.torch import _tensors


class Neighbors(NamedTuple):
    """What ``nearest_neighbors`` returns (chapter 7)."""

    indices: torch.Tensor  # row ids, best first
    scores: torch.Tensor  # similarity ("cosine", "dot") or distance ("euclidean")


@torch.no_grad()
def nearest_neighbors(weight, query, k=5, *, metric="cosine"):
    """Nearest neighbours (chapter 7): the ``k`` rows of ``weight`` closest to ``query``, best
    first, ties broken by lower row id.

    ``query`` is a row id (left out of its own answer), a 1-D tensor of row ids, a vector ``(D,)`` or a
    matrix ``(Q, D)``; ``metric`` is "cosine", "dot" or "euclidean" (scores are then distances).
    Returns ``Neighbors(indices, scores)`` of shape ``(k,)`` or ``(Q, k)``, on weight's device.
    """
    w = _tensors.weight(weight)
    _checks.metric(metric)
    q = query if isinstance(query, torch.Tensor) else torch.as_tensor(query, device=w.device)
    by_id = not (q.dtype.is_floating_point or q.dtype.is_complex)
    if by_id:
        ids = _tensors.indices(q.to(w.device), w.device, "query")
        if ids.dim() > 1:
            raise ValueError(f"query row ids must be a scalar or 1-D, got shape {tuple(ids.shape)}")
        _tensors.in_range(ids, w.shape[0], "query row")
        ids = ids.reshape(-1).long()
        vectors, single = w[ids], q.dim() == 0
    else:
        vectors = _tensors.floats(q, "query", w.device)
        if vectors.dim() not in (1, 2) or vectors.shape[-1] != w.shape[1]:
            raise ValueError(
                f"query vectors must have shape (D,) or (Q, D) with D={w.shape[1]} (weight's embedding_dim), "
                f"got {tuple(vectors.shape)}"
            )
        single = vectors.dim() == 1
        vectors = vectors.reshape(-1, w.shape[1]).to(w.dtype)
    k = _checks.neighbors_k(k, w.shape[0] - (1 if by_id else 0))

    scores = pairwise_scores(vectors, w, metric)
    key = scores if metric == "euclidean" else -scores
    if by_id:
        key[torch.arange(len(ids), device=w.device), ids] = float("inf")
    order = torch.sort(key, dim=1, stable=True).indices[:, :k]
    best = scores.gather(1, order)
    return Neighbors(order[0], best[0]) if single else Neighbors(order, best)


def pairwise_scores(q: torch.Tensor, w: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "dot":
        return q @ w.T
    if metric == "cosine":
        eps = torch.finfo(w.dtype).tiny
        qn = q / q.norm(dim=1, keepdim=True).clamp_min(eps)
        wn = w / w.norm(dim=1, keepdim=True).clamp_min(eps)
        return qn @ wn.T
    # differences, not the |q|^2 - 2 q.w + |w|^2 expansion, which cancels for close points far out
    return torch.cdist(q, w, compute_mode="donot_use_mm_for_euclid_dist")
