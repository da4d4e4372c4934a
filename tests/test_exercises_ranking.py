"""Checkers of chapter 14 (embedlib/exercises/ranking.py): right answers pass, classic mistakes get their hint."""
import math

import numpy as np
import pytest
import torch

from embedlib.exercises import CheckResult
from embedlib.exercises.ranking import check_ndcg_at_k, check_recall_at_k


# --- right answers, written the way a student would -----------------------------------------------

def recall_loop(ranked, relevant, k):
    out = []
    for row, rel in zip(ranked, relevant):
        wanted = {int(r) for r in rel if r >= 0}
        out.append(len(wanted & set(row[:k].tolist())) / len(wanted))
    return np.array(out)


def recall_vectorised(ranked, relevant, k):
    rel = np.sort(relevant, axis=1)
    rel[:, 1:][rel[:, 1:] == rel[:, :-1]] = -1  # a repeat counts once
    hit = (ranked[:, :k, None] == rel[:, None, :]) & (rel[:, None, :] >= 0)
    return hit.any(axis=2).sum(axis=1) / (rel >= 0).sum(axis=1)


def recall_torch(ranked, relevant, k):
    r, rel = torch.as_tensor(ranked), torch.as_tensor(relevant)
    out = []
    for row, wanted in zip(r, rel):
        wanted = torch.unique(wanted[wanted >= 0])
        out.append(torch.isin(row[:k], wanted).sum() / len(wanted))
    return torch.stack(out)


def ndcg_loop(ranked, relevant, k):
    out = []
    for row, rel in zip(ranked, relevant):
        wanted = {int(r) for r in rel if r >= 0}
        dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(row[:k]) if int(x) in wanted)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(wanted))))
        out.append(dcg / idcg)
    return np.array(out)


def ndcg_natural_log(ranked, relevant, k):  # the base of the logarithm cancels in DCG / ideal DCG
    out = []
    for row, rel in zip(ranked, relevant):
        wanted = {int(r) for r in rel if r >= 0}
        dcg = sum(1 / math.log(i + 2) for i, x in enumerate(row[:k]) if int(x) in wanted)
        out.append(dcg / sum(1 / math.log(i + 2) for i in range(min(k, len(wanted)))))
    return out


@pytest.mark.parametrize("fn", [recall_loop, recall_vectorised, recall_torch])
def test_right_recall_passes(fn):
    result = check_recall_at_k(fn)
    assert result and isinstance(result, CheckResult), repr(result)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all")


@pytest.mark.parametrize("fn", [ndcg_loop, ndcg_natural_log])
def test_right_ndcg_passes(fn):
    result = check_ndcg_at_k(fn)
    assert result, repr(result)


def test_embedlib_passes_its_own_checkers():
    from embedlib.numpy import ranking
    from embedlib.torch import ranking as tr
    assert check_recall_at_k(lambda r, rel, k: ranking.recall_at_k(r, rel, k, reduction="none"))
    assert check_ndcg_at_k(lambda r, rel, k: tr.ndcg_at_k(r, rel, k, reduction="none"))


# --- classic mistakes ------------------------------------------------------------------------------

def recall_over_k(ranked, relevant, k):
    return np.array([len({int(r) for r in rel if r >= 0} & set(row[:k].tolist())) / k
                     for row, rel in zip(ranked, relevant)])


def recall_counts_padding(ranked, relevant, k):
    return np.array([len({int(r) for r in rel if r >= 0} & set(row[:k].tolist())) / len(rel)
                     for row, rel in zip(ranked, relevant)])


def recall_whole_ranking(ranked, relevant, k):
    return recall_loop(ranked, relevant, ranked.shape[1])


def recall_counts_repeats(ranked, relevant, k):
    out = []
    for row, rel in zip(ranked, relevant):
        rel = [int(r) for r in rel if r >= 0]
        out.append(sum(r in row[:k] for r in rel) / len(rel))
    return np.array(out)


def recall_mean(ranked, relevant, k):
    return recall_loop(ranked, relevant, k).mean()


@pytest.mark.parametrize("wrong, hint", [
    (recall_over_k, "precision@k"),
    (recall_counts_padding, "padding"),
    (recall_whole_ranking, "ranked[:, :k]"),
    (recall_counts_repeats, "listed twice"),
    (recall_mean, "one value per query"),
])
def test_recall_mistakes_get_their_hint(wrong, hint):
    result = check_recall_at_k(wrong)
    assert not result
    assert "✗" in repr(result) and "problem:" in repr(result)
    assert hint in " ".join(repr(result).split()), repr(result)  # the report folds long lines


def _ndcg(ranked, relevant, k, discount=lambda i: 1 / math.log2(i + 2), cut=True, repeats=False):
    out = []
    for row, rel in zip(ranked, relevant):
        rel = [int(r) for r in rel if r >= 0]
        wanted = rel if repeats else sorted(set(rel))
        dcg = sum(discount(i) * sum(1 for r in wanted if r == int(x)) for i, x in enumerate(row[:k]))
        idcg = sum(discount(i) for i in range(min(k, len(wanted)) if cut else len(wanted)))
        out.append(dcg / idcg)
    return np.array(out)


def ndcg_log_i_plus_1(ranked, relevant, k):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _ndcg(ranked, relevant, k, discount=lambda i: np.float64(1) / np.log2(np.float64(i + 1)))


def ndcg_first_two_places_full(ranked, relevant, k):
    return _ndcg(ranked, relevant, k, discount=lambda i: 1 / math.log2(i + 1) if i else 1.0)


@pytest.mark.parametrize("wrong, hint", [
    (ndcg_log_i_plus_1, "log2(i + 1) is 0 at the first place"),
    (ndcg_first_two_places_full, "first two places both got discount 1"),
    (lambda r, rel, k: _ndcg(r, rel, k, cut=False), "cut the ideal ranking at k"),
    (lambda r, rel, k: _ndcg(r, rel, k, repeats=True), "listed twice counts once"),
    (lambda r, rel, k: _ndcg(r, rel, k, discount=lambda i: 1 / (i + 1)), "not 1 / (i + 1)"),
    (lambda r, rel, k: _ndcg(r, rel, r.shape[1]), "ranked[:, :k]"),
])
def test_ndcg_mistakes_get_their_hint(wrong, hint):
    result = check_ndcg_at_k(wrong)
    assert not result
    assert hint in " ".join(repr(result).split()), repr(result)


def test_cases_are_the_same_every_time():
    assert repr(check_recall_at_k(recall_over_k)) == repr(check_recall_at_k(recall_over_k))
    assert repr(check_ndcg_at_k(recall_loop)) == repr(check_ndcg_at_k(recall_loop))


def test_passing_a_call_instead_of_the_function():
    with pytest.raises(TypeError, match="pass your function itself"):
        check_recall_at_k(recall_loop(np.array([[1]]), np.array([[1]]), 1))
