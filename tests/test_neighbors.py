"""nearest_neighbors (chapter 7): against brute force, self excluded, ties by lower row id."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH, random_weights, ref_neighbors

METRICS = ["cosine", "dot", "euclidean"]


def _check(be, w, query, k, metric, native_query):
    res = be.el.nearest_neighbors(be.arr(w), native_query, k, metric=metric)
    idx, scores = res  # a NamedTuple: unpacks...
    assert res.indices is idx and res.scores is scores  # ...and has named fields
    assert be.is_native(idx) and be.is_native(scores)
    ref_idx, ref_scores = ref_neighbors(w, query, k, metric)
    assert tuple(idx.shape) == ref_idx.shape and tuple(scores.shape) == ref_scores.shape
    assert be.np(idx).dtype == np.int64
    np.testing.assert_array_equal(be.np(idx), ref_idx)
    rtol = 1e-4 if w.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(be.np(scores), ref_scores, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("metric", METRICS)
@given(w=random_weights(min_rows=2, max_rows=30, max_dim=6), data=st.data())
def test_row_id_query_matches_brute_force(backend, metric, w, data):
    q = data.draw(st.integers(0, w.shape[0] - 1))
    k = data.draw(st.integers(1, w.shape[0] - 1))
    _check(backend, w, np.int64(q), k, metric, q)


@pytest.mark.parametrize("metric", METRICS)
@given(w=random_weights(min_rows=2, max_rows=30, max_dim=6), data=st.data())
def test_many_row_ids_match_brute_force(backend, metric, w, data):
    ids = np.array(data.draw(st.lists(st.integers(0, w.shape[0] - 1), min_size=1, max_size=5)), dtype=np.int64)
    k = data.draw(st.integers(1, w.shape[0] - 1))
    _check(backend, w, ids, k, metric, backend.arr(ids))


@pytest.mark.parametrize("metric", METRICS)
@given(w=random_weights(min_rows=1, max_rows=30, max_dim=6), data=st.data())
def test_vector_queries_match_brute_force(backend, metric, w, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    single = data.draw(st.booleans())
    q = rng.standard_normal((w.shape[1],) if single else (data.draw(st.integers(1, 4)), w.shape[1]))
    q = q.astype(w.dtype)
    k = data.draw(st.integers(1, w.shape[0]))  # nothing is excluded for vector queries
    _check(backend, w, q, k, metric, backend.arr(q))


@pytest.mark.parametrize("metric", METRICS)
def test_self_is_excluded_but_an_identical_row_is_not(backend, metric):
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    idx = backend.np(backend.el.nearest_neighbors(backend.arr(w), 0, 3, metric=metric).indices)
    assert 0 not in idx
    assert idx[0] == 2  # the duplicate of row 0 is its best match under every metric
    many = backend.np(backend.el.nearest_neighbors(backend.arr(w), backend.arr(np.array([0, 2])), 3,
                                                   metric=metric).indices)
    assert many.shape == (2, 3)
    assert many[0, 0] == 2 and 0 not in many[0]
    assert many[1, 0] == 0 and 2 not in many[1]


@pytest.mark.parametrize("metric", METRICS)
def test_ties_go_to_the_lower_row_id(backend, metric):
    # rows 1, 3, 4 and 6 are the same vector; every score among them is exactly equal
    w = np.array([[5, -1], [1, 2], [-3, 1], [1, 2], [1, 2], [0, -4], [1, 2]], dtype=np.float64)
    res = backend.el.nearest_neighbors(backend.arr(w), backend.arr(np.array([1.0, 2.0])), 4, metric=metric)
    assert backend.np(res.indices).tolist() == [1, 3, 4, 6]
    res = backend.el.nearest_neighbors(backend.arr(w), 4, 3, metric=metric)
    assert backend.np(res.indices).tolist() == [1, 3, 6]
    scores = backend.np(res.scores)
    assert scores[0] == scores[1] == scores[2]


def test_metric_orders_and_scores(backend):
    w = np.array([[10.0, 0.0], [0.9, 0.1], [-1.0, 0.0]], dtype=np.float64)
    q = backend.arr(np.array([1.0, 0.0]))
    dot = backend.el.nearest_neighbors(backend.arr(w), q, 3, metric="dot")
    assert backend.np(dot.indices).tolist() == [0, 1, 2]  # largest dot product first
    np.testing.assert_allclose(backend.np(dot.scores), [10.0, 0.9, -1.0])
    cos = backend.el.nearest_neighbors(backend.arr(w), q, 3, metric="cosine")
    assert backend.np(cos.indices).tolist() == [0, 1, 2]
    np.testing.assert_allclose(backend.np(cos.scores), [1.0, 0.9 / np.hypot(0.9, 0.1), -1.0])
    euc = backend.el.nearest_neighbors(backend.arr(w), q, 3, metric="euclidean")
    assert backend.np(euc.indices).tolist() == [1, 2, 0]  # smallest distance first; scores are distances
    np.testing.assert_allclose(backend.np(euc.scores), [np.hypot(0.1, 0.1), 2.0, 9.0])


def test_default_k_and_metric(backend):
    w = np.random.default_rng(0).standard_normal((20, 4))
    res = backend.el.nearest_neighbors(backend.arr(w), 3)
    assert tuple(res.indices.shape) == (5,)
    np.testing.assert_array_equal(backend.np(res.indices), ref_neighbors(w, np.int64(3), 5, "cosine")[0])


@pytest.mark.parametrize("metric", METRICS)
@given(w=random_weights(min_rows=2, max_rows=25), data=st.data())
def test_backends_agree(metric, w, data):
    ids = np.array(data.draw(st.lists(st.integers(0, w.shape[0] - 1), min_size=1, max_size=4)), dtype=np.int64)
    k = data.draw(st.integers(1, w.shape[0] - 1))
    a = NUMPY.el.nearest_neighbors(w, ids, k, metric=metric)
    b = TORCH.el.nearest_neighbors(torch.from_numpy(w), torch.from_numpy(ids), k, metric=metric)
    np.testing.assert_array_equal(a.indices, b.indices.numpy())
    np.testing.assert_allclose(a.scores, b.scores.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 100.0, 1000.0])
def test_euclidean_is_accurate_away_from_the_origin(backend, offset):
    """Distances between nearby rows must not drown in cancellation when the rows are far from 0
    (|q|^2 - 2 q.w + |w|^2 in float32 loses everything below about 1e-7 * |q|^2)."""
    rng = np.random.default_rng(0)
    w = (offset + rng.standard_normal((20, 4)) * 0.01).astype(np.float32)
    res = backend.el.nearest_neighbors(backend.arr(w), 0, 5, metric="euclidean")
    ref_idx, ref_scores = ref_neighbors(w, np.int64(0), 5, "euclidean")
    np.testing.assert_array_equal(backend.np(res.indices), ref_idx)
    np.testing.assert_allclose(backend.np(res.scores), ref_scores, rtol=1e-3)
    q = backend.arr(w[3] + np.float32(0.001))
    res = backend.el.nearest_neighbors(backend.arr(w), q, 3, metric="euclidean")
    np.testing.assert_array_equal(backend.np(res.indices), ref_neighbors(w, w[3] + np.float32(0.001), 3,
                                                                          "euclidean")[0])


def test_cosine_with_a_zero_row_is_finite(backend):
    """A zero row (a padding row, say) has no direction: its cosine must not be NaN and break the sort."""
    w = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    res = backend.el.nearest_neighbors(backend.arr(w), 1, 3, metric="cosine")
    assert np.isfinite(backend.np(res.scores)).all()
    assert backend.np(res.indices).tolist() == [3, 0, 2]  # cos 0.707, then 0 (zero row, lower id), 0


def test_query_kinds(backend):
    w = np.array([[3.0, 4.0], [0.0, 0.5], [1.0, 0.0]], dtype=np.float32)
    ids = backend.el.nearest_neighbors(backend.arr(w), [1, 0], 2, metric="euclidean")  # a list of ints: row ids
    assert tuple(ids.indices.shape) == (2, 2)
    vec = backend.el.nearest_neighbors(backend.arr(w), [1.0, 0.0], 2, metric="euclidean")  # floats: a vector
    assert backend.np(vec.indices).tolist() == [2, 1]
    scalar = np.int64(2) if backend.name == "numpy" else torch.tensor(2)
    one = backend.el.nearest_neighbors(backend.arr(w), scalar, 2, metric="euclidean")
    assert tuple(one.indices.shape) == (2,) and backend.np(one.indices).tolist() == [1, 0]


def test_euclidean_distance_of_a_row_to_itself_is_zero(backend):
    """Querying with a row's own vector: it comes first at distance 0 (float32 N(0, 1) rows; the
    expanded |q|^2 - 2 q.w + |w|^2 form leaves residues of ~1e-3 here)."""
    w = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    res = backend.el.nearest_neighbors(backend.arr(w), backend.arr(w[:10]), 1, metric="euclidean")
    np.testing.assert_array_equal(backend.np(res.indices)[:, 0], np.arange(10))
    np.testing.assert_allclose(backend.np(res.scores)[:, 0], 0.0, atol=1e-5)
