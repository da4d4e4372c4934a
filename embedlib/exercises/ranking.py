"""Checkers for chapter 14's ranking metrics: recall@k and NDCG@k, one value per query.

The student writes ``fn(ranked, relevant, k)`` returning a NumPy array (or tensor, or list) of
shape ``(Q,)``, one value per query:

- ``ranked``: int ``(Q, N)``, each query's ids best first (no id twice in a row), ``N >= k``;
- ``relevant``: int ``(Q, R)``, each query's relevant ids in any order, padded with ``-1``; an id may
  be listed twice (the same item clicked twice) and still counts once. Every query of the hidden
  cases has at least one relevant id.

:func:`check_recall_at_k` expects ``|ranked[q, :k] ∩ relevant[q]| / |relevant[q]|``;
:func:`check_ndcg_at_k` expects ``DCG / ideal DCG`` with gain 1 for a relevant id, discount
``1 / log2(i + 2)`` at place ``i = 0, 1, ...`` and the ideal DCG of the query's relevant ids cut at
``k`` places. The references are ``embedlib.numpy.ranking``'s functions with ``reduction="none"``.
"""
from __future__ import annotations

import math

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import Case, CheckResult
from embedlib.numpy import ranking

NAMES = ("ranked", "relevant", "k")


def _fixed_cases():
    """Small hand-made cases, each where the classic mistakes give different numbers."""
    return [
        ("two queries, three relevant ids each, k = 3", [[7, 3, 9, 1, 5], [2, 4, 6, 8, 0]],
         [[3, 1, 5], [8, 2, 0]], 3),
        ("relevant padded with -1, k = 2", [[4, 1, 2, 0], [0, 3, 2, 1]], [[2, 1, -1], [3, -1, -1]], 2),
        ("a relevant id listed twice", [[5, 6, 7, 8]], [[6, 6, 9]], 3),
        ("more relevant ids than places", [[0, 1, 2, 3, 4, 5]], [[0, 2, 4, 6, 8, 10]], 2),
        ("k = 1", [[3, 1, 2], [1, 2, 3]], [[1, 3], [2, -1]], 1),
        ("nothing relevant in the top k", [[9, 8, 7, 1]], [[1, 2]], 3),
    ]


def _random_cases(rng):
    out = []
    for _ in range(6):
        q, n, universe = int(rng.integers(2, 6)), int(rng.integers(4, 10)), int(rng.integers(12, 40))
        r, k = int(rng.integers(1, 8)), int(rng.integers(1, n))  # k < n: the ranking goes past k
        ranked = np.stack([rng.permutation(universe)[:n] for _ in range(q)])
        relevant = rng.integers(0, universe, size=(q, r))
        relevant = np.where(rng.random((q, r)) < 0.3, -1, relevant)
        relevant[:, 0] = ranked[:, int(rng.integers(0, n))]  # at least one relevant id, sometimes found
        if r > 1 and rng.random() < 0.5:
            relevant[0, 1] = relevant[0, 0]  # an id listed twice
        out.append((f"{q} random queries, {n} ranked ids, k = {k}", ranked, relevant, k))
    return out


def _cases(seed, reference, hint_for):
    rng = np.random.default_rng(seed)
    cases = []
    for description, ranked, relevant, k in _fixed_cases() + _random_cases(rng):
        ranked, relevant = np.asarray(ranked, dtype=np.int64), np.asarray(relevant, dtype=np.int64)
        expected = reference(ranked, relevant, k, reduction="none")
        cases.append(Case(description, (ranked, relevant, k), expected, names=NAMES,
                          hint=hint_for(ranked, relevant, k, expected)))
    return cases


def _matching(candidates, expected):
    """A hint whose wrong answer ``got`` equals, and only it among the candidates that differ from the
    right answer."""
    def hint(got):
        if got.shape != expected.shape:
            if got.ndim == 0:
                return "return one value per query (shape (Q,)), not their mean"
            return None
        found = [text for value, text in candidates
                 if value.shape == expected.shape and not np.allclose(value, expected, equal_nan=True)
                 and np.allclose(got, value, rtol=1e-6, atol=1e-9, equal_nan=True)]
        return found[0] if len(found) == 1 else None
    return hint


# --- recall@k -------------------------------------------------------------------------------------

def _recall_variant(ranked, relevant, k, *, denominator="relevant", keep_repeats=False):
    out = []
    for row, rel in zip(ranked, relevant):
        rel = [int(r) for r in rel if r >= 0]
        wanted = rel if keep_repeats else sorted(set(rel))
        hits = sum(1 for r in wanted if r in set(row[:k].tolist()))
        size = {"relevant": len(wanted), "k": k, "width": len(relevant[0]), "min": min(k, len(wanted))}[denominator]
        out.append(hits / size)
    return np.array(out)


def _recall_hint(ranked, relevant, k, expected):
    return _matching([
        (_recall_variant(ranked, relevant, k, denominator="k"),
         "that divides by k, which is precision@k; recall divides by the number of relevant ids"),
        (_recall_variant(ranked, relevant, k, denominator="width"),
         "the -1 entries are padding, not relevant ids: count only the ids >= 0 of each row"),
        (_recall_variant(ranked, relevant, ranked.shape[1]),
         f"only the first k = {k} ranked ids count: use ranked[:, :k], not the whole ranking"),
        (_recall_variant(ranked, relevant, k, keep_repeats=True),
         "a relevant id listed twice is one relevant item: make each row of relevant a set first"),
        (_recall_variant(ranked, relevant, k, denominator="min"),
         "dividing by min(k, |relevant|) is another metric (capped recall); here divide by |relevant|"),
    ], expected)


def check_recall_at_k(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(ranked, relevant, k)``: recall@k of each query (chapter 14); see the module docstring."""
    cases = _cases(seed, ranking.recall_at_k, _recall_hint)
    return _harness.run(_harness.name_of(fn), fn, cases, summary="padding, repeated relevant ids, k = 1, "
                        "more relevant ids than places, nothing found", rtol=1e-6, atol=1e-7)  # float32 answers pass


# --- NDCG@k ---------------------------------------------------------------------------------------

def _ndcg_variant(ranked, relevant, k, *, discount=lambda i: 1 / math.log2(i + 2), truncate_ideal=True,
                  repeats_in_dcg=False, repeats_in_ideal=False, ideal_from_ranking=False):
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for row, rel in zip(ranked, relevant):
            rel = [int(r) for r in rel if r >= 0]
            counts = {r: rel.count(r) for r in rel}
            gain = [(counts.get(int(x), 0) if repeats_in_dcg else float(int(x) in counts)) for x in row[:k]]
            dcg = sum(np.float64(g) * np.float64(discount(i)) for i, g in enumerate(gain))
            n_ideal = len(rel) if repeats_in_ideal else len(counts)
            if ideal_from_ranking:
                n_ideal = sum(1 for g in gain if g)
            places = range(n_ideal if not truncate_ideal else min(n_ideal, k))
            idcg = sum(np.float64(discount(i)) for i in places)
            out.append(np.float64(dcg) / np.float64(idcg) if idcg else np.nan)
    return np.array(out, dtype=np.float64)


def _ndcg_hint(ranked, relevant, k, expected):
    def one_based_log(i):  # log2(i + 1) with the first place patched to 1: places 0 and 1 both get 1
        return 1 / math.log2(i + 1) if i else 1.0

    candidates = [
        (_ndcg_variant(ranked, relevant, k, truncate_ideal=False),
         f"the ideal DCG is that of a perfect top k: cut the ideal ranking at k = {k} places too "
         "(otherwise a query with more than k relevant ids can never reach 1)"),
        (_ndcg_variant(ranked, relevant, k, repeats_in_dcg=True, repeats_in_ideal=True),
         "a relevant id listed twice counts once: make each row of relevant a set first"),
        (_ndcg_variant(ranked, relevant, k, repeats_in_ideal=True),
         "a relevant id listed twice is one relevant item; the ideal DCG counted it twice"),
        (_ndcg_variant(ranked, relevant, k, repeats_in_dcg=True),
         "a relevant id listed twice gains 1, not 2: make each row of relevant a set first"),
        (_ndcg_variant(ranked, relevant, k, ideal_from_ranking=True),
         "the ideal DCG puts all of the query's relevant ids first, not only those the ranking found"),
        (_ndcg_variant(ranked, relevant, k, discount=lambda i: 1 / (i + 1)),
         "the discount is logarithmic: 1 / log2(i + 2) at place i = 0, 1, ..., not 1 / (i + 1)"),
        (_ndcg_variant(ranked, relevant, ranked.shape[1]),
         f"only the first k = {k} ranked ids count: use ranked[:, :k], not the whole ranking"),
    ]
    base = _matching(candidates, expected)
    wrong_log = _ndcg_variant(ranked, relevant, k, discount=one_based_log)

    def hint(got):
        if got.shape == expected.shape and np.isfinite(expected).all() and not np.isfinite(got).all():
            return ("NaN or infinity: with places counted from i = 0, the discount is 1 / log2(i + 2); "
                    "log2(i + 1) is 0 at the first place")
        if got.shape == expected.shape and np.allclose(got, wrong_log, equal_nan=True):
            return ("the first two places both got discount 1: at place i = 0, 1, ... the discount is "
                    "1 / log2(i + 2), so place 1 counts 1 / log2(3)")
        return base(got)
    return hint


def check_ndcg_at_k(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(ranked, relevant, k)``: NDCG@k of each query with gain 1 per relevant id (chapter 14)."""
    cases = _cases(seed, ranking.ndcg_at_k, _ndcg_hint)
    return _harness.run(_harness.name_of(fn), fn, cases, summary="padding, repeated relevant ids, k = 1, "
                        "more relevant ids than places, nothing found", rtol=1e-6, atol=1e-7)  # float32 answers pass
