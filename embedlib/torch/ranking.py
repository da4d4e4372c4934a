"""Ranking metrics in torch (chapter 14): the same functions, names and conventions as
``embedlib.numpy.ranking`` (read its module docstring), on CPU or CUDA tensors.

``ranked`` and ``relevant`` (and ``gains``) must be on the same device; NumPy arrays and lists are
accepted too and converted to tensors on ``ranked``'s device (the CPU for a NumPy ``ranked``). The
result is a float64 tensor on that device: one value per query (``reduction="none"``, NaN for a
query without relevant ids) or their mean (``"mean"``, a 0-d tensor).
"""
from __future__ import annotations

import torch

from embedlib import _ranking

#: Queries are matched against their relevant ids in blocks of about this many (ranked x relevant) pairs.
_BLOCK = 1 << 22


@torch.no_grad()
def recall_at_k(ranked, relevant, k, *, reduction="mean"):
    """Recall@k (chapter 14): per query, ``|ranked[q, :k] ∩ relevant[q]| / |relevant[q]|``.

    See ``embedlib.numpy.ranking.recall_at_k``: the same definition, conventions and errors.
    """
    top, rel, k = _prepare(ranked, relevant, k, reduction)
    rel = _as_set(rel)
    found = _place_gains(top, rel, (rel >= 0).double()).sum(dim=1)
    count = (rel >= 0).sum(dim=1)
    per_query = torch.where(count > 0, found / count.clamp_min(1), torch.full_like(found, float("nan")))
    return _reduce(per_query, reduction)


@torch.no_grad()
def ndcg_at_k(ranked, relevant, k, *, gains=None, reduction="mean"):
    """NDCG@k (chapter 14): ``sum_{i<k} gain(ranked[q, i]) / log2(i + 2)`` over the ideal DCG.

    See ``embedlib.numpy.ranking.ndcg_at_k``: the same definition, conventions and errors.
    """
    top, rel, k = _prepare(ranked, relevant, k, reduction)
    if gains is None:
        rel = _as_set(rel)
        g = (rel >= 0).double()
    else:
        g = gains if isinstance(gains, torch.Tensor) else torch.as_tensor(gains, device=top.device)
        _ranking.shapes(tuple(top.shape), tuple(rel.shape), tuple(g.shape))
        if g.dtype == torch.bool or g.dtype.is_complex:
            raise TypeError(f"gains must hold numbers, got dtype {str(g.dtype).replace('torch.', '')}")
        if g.device != top.device:
            raise ValueError(f"gains are on {g.device} but ranked is on {top.device}; move one of them")
        g = torch.where(rel >= 0, g.double(), torch.zeros((), dtype=torch.float64, device=g.device))
        row, value = _first_duplicate(rel)
        _ranking.gains_values(bool((g < 0).any()), bool(torch.isfinite(g).all()), row, value)
    discount = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64, device=top.device) + 2.0)
    dcg = _place_gains(top, rel, g) @ discount
    ideal = torch.sort(g, dim=1, descending=True).values[:, :k]
    idcg = ideal @ discount[: ideal.shape[1]]
    per_query = torch.where(idcg > 0, dcg / torch.where(idcg > 0, idcg, 1.0), torch.full_like(dcg, float("nan")))
    return _reduce(per_query, reduction)


def _ids(values, name, device):
    if isinstance(values, torch.Tensor):
        t = values
    else:
        import numpy as np

        arr = np.asarray(values)
        if arr.size == 0 and arr.dtype == np.float64 and arr.ndim == 2:
            arr = arr.astype(np.int64)  # [[]] or np.zeros((Q, 0)): no ids at all
        if arr.dtype.kind not in "biuf":
            _ranking.ids_dtype("other", str(arr.dtype), name)
        t = torch.as_tensor(arr, device=device)
    if t.dtype == torch.bool:
        kind = "bool"
    elif t.dtype.is_floating_point or t.dtype.is_complex:
        kind = "other"
    else:
        kind = "int"
    _ranking.ids_dtype(kind, str(t.dtype).replace("torch.", ""), name)
    return t


def _prepare(ranked, relevant, k, reduction):
    """Checks shared by both metrics; returns ``ranked[:, :k]`` and ``relevant`` as int64 and ``k``."""
    ranked = _ids(ranked, "ranked", None)
    relevant = _ids(relevant, "relevant", ranked.device)
    if relevant.device != ranked.device:
        raise ValueError(f"relevant is on {relevant.device} but ranked is on {ranked.device}; move one of them")
    _ranking.shapes(tuple(ranked.shape), tuple(relevant.shape))
    k = _ranking.k(k, ranked.shape[1])
    _ranking.reduction(reduction)
    top = ranked[:, :k].long()
    relevant = relevant.long()
    for name, t in (("ranked", top), ("relevant", relevant)):
        if t.numel():
            _ranking.padding(int(t.min()), name)
    row, value = _first_duplicate(top)
    _ranking.ranked_duplicates(row, value, k)
    return top, relevant, k


def _first_duplicate(ids: torch.Tensor):
    """``(row, id)`` of the first id >= 0 that a row lists twice, or ``(None, None)``."""
    if ids.shape[1] < 2:
        return None, None
    s = torch.sort(ids, dim=1).values
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if not bool(dup.any()):
        return None, None
    row, col = torch.nonzero(dup)[0].tolist()
    return int(row), int(s[row, col + 1])


def _as_set(rel: torch.Tensor) -> torch.Tensor:
    """``relevant`` with every repeat of an id in a row replaced by -1 padding (rows get sorted)."""
    if rel.shape[1] < 2:
        return rel
    s = torch.sort(rel, dim=1).values
    repeat = torch.zeros_like(s, dtype=torch.bool)
    repeat[:, 1:] = s[:, 1:] == s[:, :-1]
    return s.masked_fill(repeat, -1)


def _place_gains(top: torch.Tensor, rel: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """``(Q, k)``: the gain of the id at each place (0 when not relevant), ``rel`` holding no repeats."""
    q, k = top.shape
    out = torch.zeros((q, k), dtype=torch.float64, device=top.device)
    step = max(1, _BLOCK // max(1, k * rel.shape[1]))
    for s in range(0, q, step):
        r = rel[s:s + step]
        match = (top[s:s + step, :, None] == r[:, None, :]) & (r[:, None, :] >= 0)
        out[s:s + step] = (match * gain[s:s + step, None, :]).sum(dim=2)
    return out


def _reduce(per_query: torch.Tensor, reduction: str):
    if reduction == "none":
        return per_query
    kept = per_query[~torch.isnan(per_query)]
    return kept.mean() if kept.numel() else torch.tensor(float("nan"), dtype=torch.float64, device=per_query.device)
