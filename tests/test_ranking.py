"""Ranking metrics (chapter 14): recall@k and NDCG@k against naive loops, both backends."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH
from embedlib.numpy import ranking as np_ranking
from embedlib.torch import ranking as torch_ranking

MODULES = {"numpy": np_ranking, "torch": torch_ranking}


@pytest.fixture(scope="module", params=["numpy", "torch"])
def rk(request):
    """(backend converter, ranking module)."""
    be = NUMPY if request.param == "numpy" else TORCH
    return be, MODULES[request.param]


# ---- naive references: one query at a time, Python sets and loops --------------------------------
def ref_recall(ranked, relevant, k):
    out = []
    for row, rel in zip(ranked, relevant):
        wanted = {int(r) for r in rel if r >= 0}
        out.append(len(wanted & {int(x) for x in row[:k]}) / len(wanted) if wanted else math.nan)
    return np.array(out)


def ref_ndcg(ranked, relevant, k, gains=None):
    out = []
    for q, (row, rel) in enumerate(zip(ranked, relevant)):
        gain = {}
        for j, r in enumerate(rel):
            if r >= 0:
                gain[int(r)] = 1.0 if gains is None else float(gains[q][j])
        dcg = sum(gain.get(int(x), 0.0) / math.log2(i + 2) for i, x in enumerate(row[:k]))
        best = sorted(gain.values(), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(best))
        out.append(dcg / idcg if idcg > 0 else math.nan)
    return np.array(out)


@st.composite
def ranking_cases(draw, graded=False, duplicates=True):
    """ranked (Q, N) without repeats (a few -1 for missing results), relevant (Q, R) padded with -1."""
    q = draw(st.integers(1, 6))
    n = draw(st.integers(1, 8))
    r = draw(st.integers(0, 7))
    universe = draw(st.integers(n, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ranked = np.stack([rng.permutation(universe)[:n] for _ in range(q)])
    if draw(st.booleans()):  # missing results at the end of some rows
        cut = rng.integers(0, n + 1, size=q)
        ranked = np.where(np.arange(n) >= cut[:, None], -1, ranked)
    relevant = rng.integers(-1, universe, size=(q, r))
    if not duplicates:
        relevant = np.stack([np.where(np.r_[True, row[1:] != row[:-1]], row, -1)
                             for row in np.sort(relevant, axis=1)]) if r else relevant
        relevant = np.stack([rng.permutation(row) for row in relevant]) if r else relevant
    k = draw(st.integers(1, n))
    gains = rng.integers(0, 4, size=(q, r)).astype(np.float64) if graded else None
    dtype = draw(st.sampled_from([np.int64, np.int32]))
    return ranked.astype(dtype), relevant.astype(dtype), k, gains


def as_np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@given(case=ranking_cases())
def test_recall_matches_the_naive_loop(rk, case):
    be, m = rk
    ranked, relevant, k, _ = case
    got = m.recall_at_k(be.arr(ranked), be.arr(relevant), k, reduction="none")
    assert be.is_native(got) and as_np(got).dtype == np.float64
    np.testing.assert_allclose(as_np(got), ref_recall(ranked, relevant, k), rtol=1e-12, equal_nan=True)
    mean = as_np(m.recall_at_k(be.arr(ranked), be.arr(relevant), k))
    ref = ref_recall(ranked, relevant, k)
    assert mean.shape == ()
    if np.isnan(ref).all():
        assert np.isnan(mean)
    else:
        assert math.isclose(float(mean), float(np.nanmean(ref)), rel_tol=1e-12)


@given(case=ranking_cases())
def test_ndcg_matches_the_naive_loop(rk, case):
    be, m = rk
    ranked, relevant, k, _ = case
    got = as_np(m.ndcg_at_k(be.arr(ranked), be.arr(relevant), k, reduction="none"))
    np.testing.assert_allclose(got, ref_ndcg(ranked, relevant, k), rtol=1e-12, equal_nan=True)


@given(case=ranking_cases(graded=True, duplicates=False))
def test_graded_ndcg_matches_the_naive_loop(rk, case):
    be, m = rk
    ranked, relevant, k, gains = case
    got = as_np(m.ndcg_at_k(be.arr(ranked), be.arr(relevant), k, gains=be.arr(gains), reduction="none"))
    np.testing.assert_allclose(got, ref_ndcg(ranked, relevant, k, gains), rtol=1e-12, equal_nan=True)


@given(case=ranking_cases(graded=True, duplicates=False))
def test_bounds_and_the_perfect_ranking(rk, case):
    be, m = rk
    ranked, relevant, k, gains = case
    for value in (m.recall_at_k(be.arr(ranked), be.arr(relevant), k, reduction="none"),
                  m.ndcg_at_k(be.arr(ranked), be.arr(relevant), k, gains=be.arr(gains), reduction="none")):
        v = as_np(value)
        assert ((v >= 0) & (v <= 1 + 1e-12) | np.isnan(v)).all()
    # the relevant ids by decreasing gain, then other ids: NDCG 1 wherever it is defined
    perfect = []
    width = max(relevant.shape[1], 1)
    for rel, g in zip(relevant, gains):
        keep = rel >= 0
        order = rel[keep][np.argsort(-g[keep], kind="stable")]
        perfect.append(np.r_[order, 1000 + np.arange(width - len(order))])
    perfect = np.array(perfect, dtype=np.int64).reshape(len(relevant), width)
    kk = min(k, width)
    v = as_np(m.ndcg_at_k(be.arr(perfect), be.arr(relevant), kk, gains=be.arr(gains), reduction="none"))
    defined = ~np.isnan(ref_ndcg(perfect, relevant, kk, gains))
    np.testing.assert_allclose(v[defined], 1.0, rtol=1e-12)
    r = as_np(m.recall_at_k(be.arr(perfect), be.arr(relevant), width, reduction="none"))
    assert np.all((r == 1) | np.isnan(r))


@given(case=ranking_cases(graded=True, duplicates=False))
def test_numpy_and_torch_agree(case):
    ranked, relevant, k, gains = case
    for fn, kwargs in (("recall_at_k", {}), ("ndcg_at_k", {}), ("ndcg_at_k", {"gains": gains})):
        a = getattr(np_ranking, fn)(ranked, relevant, k, reduction="none", **kwargs)
        tk = {key: torch.from_numpy(v) for key, v in kwargs.items()}
        b = getattr(torch_ranking, fn)(torch.from_numpy(ranked), torch.from_numpy(relevant), k, reduction="none", **tk)
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-14, equal_nan=True)


# ---- hand-computed examples ---------------------------------------------------------------------
def test_hand_computed_examples(rk):
    be, m = rk
    ranked = be.arr(np.array([[7, 3, 9, 1], [2, 4, 6, 8]]))
    relevant = be.arr(np.array([[3, 1, 5], [8, -1, -1]]))
    # query 0: 3 at place 1 and 1 at place 3 of {3, 1, 5}; query 1: 8 at place 3 of {8}
    np.testing.assert_allclose(as_np(m.recall_at_k(ranked, relevant, 2, reduction="none")), [1 / 3, 0.0])
    np.testing.assert_allclose(as_np(m.recall_at_k(ranked, relevant, 4, reduction="none")), [2 / 3, 1.0])
    assert math.isclose(float(as_np(m.recall_at_k(ranked, relevant, 4))), (2 / 3 + 1) / 2)
    dcg0 = 1 / math.log2(3) + 1 / math.log2(5)  # places 1 and 3
    idcg0 = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # three relevant ids in the first three places
    dcg1, idcg1 = 1 / math.log2(5), 1.0
    np.testing.assert_allclose(as_np(m.ndcg_at_k(ranked, relevant, 4, reduction="none")),
                               [dcg0 / idcg0, dcg1 / idcg1], rtol=1e-12)
    # k = 2: the ideal DCG is cut at two places too
    np.testing.assert_allclose(as_np(m.ndcg_at_k(ranked, relevant, 2, reduction="none")),
                               [(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 0.0], rtol=1e-12)


def test_graded_example(rk):
    be, m = rk
    # gains 3 (id 10), 2 (id 20), 1 (id 30); the ranking puts them as 20, 10, 30
    got = m.ndcg_at_k(be.arr(np.array([[20, 10, 30]])), be.arr(np.array([[10, 20, 30]])), 3,
                      gains=be.arr(np.array([[3.0, 2.0, 1.0]])), reduction="none")
    dcg = 2 + 3 / math.log2(3) + 1 / 2
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    assert math.isclose(float(as_np(got)[0]), dcg / idcg, rel_tol=1e-12)


def test_no_relevant_ids_give_nan_and_are_left_out_of_the_mean(rk):
    be, m = rk
    ranked = be.arr(np.array([[1, 2], [3, 4], [5, 6]]))
    relevant = be.arr(np.array([[1, -1], [-1, -1], [9, -1]]))
    for fn in (m.recall_at_k, m.ndcg_at_k):
        per = as_np(fn(ranked, relevant, 2, reduction="none"))
        assert per[0] == 1 and np.isnan(per[1]) and per[2] == 0
        assert float(as_np(fn(ranked, relevant, 2))) == 0.5
        nothing = be.arr(np.full((3, 2), -1))
        assert np.isnan(as_np(fn(ranked, nothing, 2))) and np.isnan(as_np(fn(ranked, nothing, 2, reduction="none"))).all()
        assert np.isnan(as_np(fn(ranked, be.arr(np.zeros((3, 0), dtype=np.int64)), 1))).all()
    gains = be.arr(np.zeros((3, 2)))  # all gains 0: the ideal DCG is 0 too
    assert np.isnan(as_np(m.ndcg_at_k(ranked, relevant, 2, gains=gains, reduction="none"))).all()


def test_a_relevant_id_listed_twice_counts_once(rk):
    be, m = rk
    ranked, relevant = be.arr(np.array([[4, 5, 6]])), be.arr(np.array([[4, 4, 9]]))
    assert float(as_np(m.recall_at_k(ranked, relevant, 3))) == 0.5
    assert math.isclose(float(as_np(m.ndcg_at_k(ranked, relevant, 3))), 1 / (1 + 1 / math.log2(3)))
    with pytest.raises(ValueError, match="lists id 4 twice in query 0 while gains are given"):
        m.ndcg_at_k(ranked, relevant, 3, gains=be.arr(np.ones((1, 3))))


def test_missing_results_are_never_relevant(rk):
    be, m = rk
    ranked, relevant = be.arr(np.array([[3, -1, -1]])), be.arr(np.array([[3, -1]]))
    assert float(as_np(m.recall_at_k(ranked, relevant, 3))) == 1.0
    assert float(as_np(m.ndcg_at_k(ranked, relevant, 3))) == 1.0
    assert float(as_np(m.recall_at_k(be.arr(np.array([[-1, -1]])), relevant, 2))) == 0.0


def test_lists_and_numpy_inputs_are_accepted(rk):
    _, m = rk
    assert float(as_np(m.recall_at_k([[1, 2, 3]], [[3, 7]], 3))) == 0.5
    assert float(as_np(m.ndcg_at_k(np.array([[1, 2]]), [[1]], 1))) == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_on_cuda():
    ranked = torch.tensor([[7, 3, 9, 1], [2, 4, 6, 8]], device="cuda")
    relevant = torch.tensor([[3, 1, 5], [8, -1, -1]], device="cuda")
    for fn in ("recall_at_k", "ndcg_at_k"):
        got = getattr(torch_ranking, fn)(ranked, relevant, 3, reduction="none")
        assert got.device.type == "cuda"
        np.testing.assert_allclose(got.cpu().numpy(), getattr(np_ranking, fn)(ranked.cpu().numpy(),
                                   relevant.cpu().numpy(), 3, reduction="none"), rtol=1e-12)


# ---- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", ["recall_at_k", "ndcg_at_k"])
def test_errors(rk, fn):
    be, m = rk
    f = getattr(m, fn)
    ranked, relevant = be.arr(np.array([[1, 2, 3], [4, 5, 6]])), be.arr(np.array([[1], [2]]))
    with pytest.raises(ValueError, match="k must be at least 1"):
        f(ranked, relevant, 0)
    with pytest.raises(ValueError, match="k=4 is more than the 3 ids ranked"):
        f(ranked, relevant, 4)
    with pytest.raises(TypeError, match="k must be an integer"):
        f(ranked, relevant, 2.0)
    with pytest.raises(ValueError, match="one row per query"):
        f(ranked, be.arr(np.array([[1]])), 2)
    with pytest.raises(ValueError, match="ranked must be 2-D"):
        f(be.arr(np.array([1, 2, 3])), relevant, 2)
    with pytest.raises(ValueError, match="relevant must be 2-D"):
        f(ranked, be.arr(np.array([1, 2])), 2)
    with pytest.raises(TypeError, match="ranked must hold integer ids"):
        f(be.arr(np.array([[1.0, 2.0]])), relevant[:1], 1)
    with pytest.raises(TypeError, match="relevant must hold integer ids, got booleans"):
        f(ranked, be.arr(np.array([[True], [False]])), 1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        f(ranked, relevant, 2, reduction="sum")
    with pytest.raises(ValueError, match="ranked lists id 2 twice in the top 3 of query 1"):
        f(be.arr(np.array([[1, 2, 3], [2, 5, 2]])), relevant, 3)
    f(be.arr(np.array([[1, 2, 3], [2, 5, 2]])), relevant, 2)  # the repeat is past k: fine
    with pytest.raises(ValueError, match="-1 is the only padding value"):
        f(ranked, be.arr(np.array([[1], [-2]])), 2)


def test_gains_errors(rk):
    be, m = rk
    ranked, relevant = be.arr(np.array([[1, 2]])), be.arr(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="gains must have relevant's shape"):
        m.ndcg_at_k(ranked, relevant, 2, gains=be.arr(np.ones((1, 3))))
    with pytest.raises(ValueError, match="gains must be >= 0"):
        m.ndcg_at_k(ranked, relevant, 2, gains=be.arr(np.array([[1.0, -1.0]])))
    with pytest.raises(ValueError, match="finite"):
        m.ndcg_at_k(ranked, relevant, 2, gains=be.arr(np.array([[1.0, np.nan]])))
    with pytest.raises(TypeError, match="gains must hold numbers"):
        m.ndcg_at_k(ranked, relevant, 2, gains=be.arr(np.array([[True, False]])))
