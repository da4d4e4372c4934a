"""Chapter 7's checker (embedlib/exercises/neighbors.py): right answers pass, classic mistakes get their hint."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from embedlib import numpy as el
from embedlib.exercises import CheckResult, check_nearest_neighbors
from embedlib.exercises.neighbors import _cases

TINY = np.finfo(np.float64).tiny


def cosines(weight, query_row):
    norms = np.linalg.norm(weight, axis=1)
    return weight @ weight[query_row] / np.maximum(norms * norms[query_row], TINY)


# --- right answers ---------------------------------------------------------------------------------

def my_neighbors(weight, query_row, k):
    scores = cosines(weight, query_row)
    scores[query_row] = -np.inf                      # never its own neighbour
    ids = np.argsort(-scores, kind="stable")[:k]     # stable: equal cosines keep the lower id first
    return ids, scores[ids]


def normalise_first(weight, query_row, k):
    unit = weight / np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), TINY)
    scores = unit @ unit[query_row]
    order = np.argsort(-scores, kind="stable")
    ids = order[order != query_row][:k]
    return ids, scores[ids]


def one_row_at_a_time(weight, query_row, k):
    ranked = []
    b = weight[query_row]
    for i, a in enumerate(weight):
        if i != query_row:
            length = np.sqrt(a @ a) * np.sqrt(b @ b)
            ranked.append((-(a @ b / length if length > 0 else 0.0), i))
    ranked.sort()
    return [i for _, i in ranked[:k]], [-c for c, _ in ranked[:k]]


def embedlib_itself(weight, query_row, k):
    return el.nearest_neighbors(weight, query_row, k)


RIGHT = [my_neighbors, normalise_first, one_row_at_a_time, embedlib_itself]


@pytest.mark.parametrize("fn", RIGHT)
def test_right_answers_pass(fn):
    result = check_nearest_neighbors(fn)
    assert result, repr(result)
    assert isinstance(result, CheckResult)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_right_answers_pass_for_any_seed(seed):
    for fn in RIGHT:
        result = check_nearest_neighbors(fn, seed=seed)
        assert result, repr(result)


def test_cases_cover_the_edges():
    cases = _cases(np.random.default_rng(0))
    ks = {(w.shape[0], k) for _, w, _, k in cases}
    assert any(k == 1 for _, k in ks) and any(k == v - 1 for v, k in ks)
    tables = [(w, q) for _, w, q, _ in cases]
    assert any((np.linalg.norm(w, axis=1) == 0).any() for w, _ in tables)           # a zero row
    assert any(np.linalg.norm(w[q]) == 0 for w, q in tables)                          # a zero query
    assert any(len(np.unique(w, axis=0)) < len(w) for w, _ in tables)                # duplicated rows
    assert any((cosines(w, q) < 0).any() for w, q in tables)                          # negative cosines


def test_reports_are_the_same_on_every_run():
    assert repr(check_nearest_neighbors(with_itself)) == repr(check_nearest_neighbors(with_itself))


# --- the classic mistakes --------------------------------------------------------------------------

def with_itself(weight, query_row, k):
    scores = cosines(weight, query_row)
    ids = np.argsort(-scores, kind="stable")[:k]
    return ids, scores[ids]


def dot_product(weight, query_row, k):
    scores = weight @ weight[query_row]
    scores[query_row] = -np.inf
    ids = np.argsort(-scores, kind="stable")[:k]
    return ids, scores[ids]


def worst_first(weight, query_row, k):
    scores = cosines(weight, query_row)
    scores[query_row] = np.inf
    ids = np.argsort(scores, kind="stable")[:k]
    return ids, scores[ids]


def reversed_argsort(weight, query_row, k):
    scores = cosines(weight, query_row)
    scores[query_row] = -np.inf
    ids = np.argsort(scores, kind="stable")[::-1][:k]      # best first, but the ties reversed too
    return ids, scores[ids]


def unstable_sort(weight, query_row, k):
    scores = cosines(weight, query_row)
    scores[query_row] = -np.inf
    ids = np.argsort(-scores)[:k]                          # quicksort: ties in any order
    return ids, scores[ids]


def drop_the_first(weight, query_row, k):
    scores = cosines(weight, query_row)
    ids = np.argsort(-scores, kind="stable")[1:k + 1]      # assumes the query row ranks first
    return ids, scores[ids]


def divides_by_zero(weight, query_row, k):
    norms = np.linalg.norm(weight, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = weight @ weight[query_row] / (norms * norms[query_row])
    scores[query_row] = -np.inf
    ids = np.argsort(-scores, kind="stable")[:k]
    return ids, scores[ids]


def euclidean(weight, query_row, k):
    distance = np.linalg.norm(weight - weight[query_row], axis=1)
    distance[query_row] = np.inf
    ids = np.argsort(distance, kind="stable")[:k]
    return ids, distance[ids]


def dot_scores(weight, query_row, k):
    ids, _ = my_neighbors(weight, query_row, k)
    return ids, (weight @ weight[query_row])[ids]


def nan_scores(weight, query_row, k):
    ids, _ = my_neighbors(weight, query_row, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        norms = np.linalg.norm(weight, axis=1)
        return ids, (weight @ weight[query_row] / (norms * norms[query_row]))[ids]


def ids_only(weight, query_row, k):
    return my_neighbors(weight, query_row, k)[0]


@pytest.mark.parametrize("fn, words", [
    (with_itself, "is in its own answer"),
    (dot_product, "by dot product"),
    (worst_first, "LEAST similar"),
    (reversed_argsort, "ordered by the lower row id"),
    (unstable_sort, "kind='stable'"),
    (drop_the_first, "dropping the first entry"),
    (divides_by_zero, "a row of zeros has no direction"),
    (euclidean, "Euclidean distance"),
    (dot_scores, "these are dot products"),
    (nan_scores, "NaN: a row of zeros"),
    (ids_only, "return ids, scores"),
])
def test_classic_mistakes_fail_with_their_hint(fn, words):
    result = check_nearest_neighbors(fn)
    assert not result
    text = repr(result)
    assert text.startswith(f"✗ {fn.__name__} failed hidden case")
    assert "problem:" in text and "hint:" in text
    assert words in text, text


def test_wrong_scores_are_reported_after_right_ids():
    text = repr(check_nearest_neighbors(dot_scores))
    assert "the ids are right; now the scores" in text


def test_errors_in_the_readers_function_are_reported():
    def broken(weight, query_row, k):
        raise IndexError("oops")

    text = repr(check_nearest_neighbors(broken))
    assert "raised IndexError: oops" in text


def test_changing_the_table_in_place_is_caught():
    def normalises_in_place(weight, query_row, k):
        weight /= np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), TINY)
        return my_neighbors(weight, query_row, k)

    text = repr(check_nearest_neighbors(normalises_in_place))
    assert "changed its input `weight` in place" in text


def test_misuse_of_the_checker_is_an_error():
    with pytest.raises(TypeError, match="pass your function itself"):
        check_nearest_neighbors(my_neighbors(np.eye(3), 0, 1))
