"""embedlib.retrieval.ApproximateIndex (chapter 14): exact when every cell is probed, chapter 7's contract."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from embedlib.numpy import nearest_neighbors
from embedlib.numpy.neighbors import Neighbors
from embedlib.retrieval import ApproximateIndex, default_nlist

pytest.importorskip("faiss")

METRICS = ["cosine", "dot", "euclidean"]


def clustered_table(rows=5_000, dim=16, clusters=50, seed=0, dtype=np.float32):
    """Gaussian clusters, so cells and neighbourhoods mean something (as in a trained table)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 2
    which = rng.integers(0, clusters, size=rows)
    return (centres[which] + rng.standard_normal((rows, dim))).astype(dtype)


@pytest.fixture(scope="module")
def table():
    return clustered_table()


@pytest.fixture(scope="module", params=METRICS)
def index(request, table):
    return ApproximateIndex(table, metric=request.param, nlist=32, threads=1)


def test_default_nlist():
    assert default_nlist(1_000_000) == 1024
    assert default_nlist(5_000) == 64
    assert default_nlist(10) == 1
    assert default_nlist(200) == 5  # at least 39 rows per cell


@pytest.mark.parametrize("query_kind", ["row", "rows", "vector", "matrix"])
def test_probing_every_cell_is_exact(index, table, query_kind):
    rng = np.random.default_rng(1)
    query = {"row": 17, "rows": np.array([0, 5, 4_999, 123]),
             "vector": rng.standard_normal(16).astype(np.float32),
             "matrix": rng.standard_normal((7, 16)).astype(np.float32)}[query_kind]
    got = index.search(query, 10, nprobe=index.nlist)
    want = nearest_neighbors(table, query, 10, metric=index.metric)
    assert isinstance(got, Neighbors)
    assert got.indices.shape == want.indices.shape and got.scores.shape == want.scores.shape
    assert got.indices.dtype == np.int64 and got.scores.dtype == want.scores.dtype
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)


def test_row_queries_leave_themselves_out(index, table):
    ids = np.arange(0, 5_000, 250)
    for nprobe in (1, 4, index.nlist):
        found = index.search(ids, 5, nprobe=nprobe).indices
        assert not (found == ids[:, None]).any()
    assert 42 not in index.search(42, 20, nprobe=2).indices


def test_a_duplicate_of_the_query_row_is_its_best_neighbour():
    w = clustered_table(rows=400, dim=8)
    w[300] = w[7]
    for metric in ("cosine", "euclidean"):
        ix = ApproximateIndex(w, metric=metric, nlist=4)
        assert ix.search(7, 3, nprobe=1).indices[0] == 300
        assert ix.search(300, 3, nprobe=1).indices[0] == 7


def test_recall_grows_with_nprobe(table):
    index = ApproximateIndex(table, metric="cosine", nlist=64, threads=1)
    rng = np.random.default_rng(2)
    queries = table[rng.choice(len(table), 200, replace=False)] + 0.5 * rng.standard_normal((200, 16)).astype(np.float32)
    truth = nearest_neighbors(table, queries, 10).indices
    recalls = []
    for nprobe in (1, 4, 16, 64):
        found = index.search(queries, 10, nprobe=nprobe).indices
        recalls.append(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    assert recalls == sorted(recalls) and recalls[0] < recalls[-1] == 1.0
    assert recalls[1] > 0.5  # a few cells already find most neighbours of a clustered table


def test_same_seed_same_answers_and_scores(table):
    queries = np.random.default_rng(3).standard_normal((50, 16)).astype(np.float32)
    runs = [ApproximateIndex(table, nlist=64, seed=5, threads=t).search(queries, 10, nprobe=3) for t in (1, 1, 2)]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0].indices, other.indices)
        assert runs[0].scores.tobytes() == other.scores.tobytes()


def test_determinism_across_processes(table):
    """A fresh interpreter, the same table and seed: the same answers (what a notebook rerun sees)."""
    code = ("import numpy as np, sys; sys.path.insert(0, 'tests'); from test_retrieval import clustered_table;"
            "from embedlib.retrieval import ApproximateIndex;"
            "ix = ApproximateIndex(clustered_table(), nlist=64, seed=5);"
            "print(ix.search(np.arange(0, 5000, 97), 10, nprobe=2).indices.sum())")
    sums = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    here = ApproximateIndex(table, nlist=64, seed=5).search(np.arange(0, 5000, 97), 10, nprobe=2).indices.sum()
    assert sums == {f"{here}\n"}


def test_the_index_keeps_its_own_copy(table):
    w = table[:500].copy()
    ix = ApproximateIndex(w, nlist=4)
    before = ix.search(3, 5)
    w[:] = 0
    after = ix.search(3, 5)
    np.testing.assert_array_equal(before.indices, after.indices)
    np.testing.assert_array_equal(before.scores, after.scores)


def test_too_few_rows_in_the_probed_cells_gives_minus_one():
    w = np.concatenate([np.zeros((5, 2)) + [10, 0], np.zeros((95, 2)) + [-10, 0]]).astype(np.float32)
    w += np.random.default_rng(0).standard_normal(w.shape).astype(np.float32) * 0.01
    ix = ApproximateIndex(w, metric="euclidean", nlist=2, train_rows=100)
    res = ix.search(np.array([10.0, 0.0], dtype=np.float32), 8, nprobe=1)
    assert (res.indices[:5] < 5).all() and (res.indices[5:] == -1).all()
    assert np.isfinite(res.scores[:5]).all() and np.isnan(res.scores[5:]).all()
    assert (ix.search(np.array([10.0, 0.0], dtype=np.float32), 8, nprobe=2).indices >= 0).all()


def test_float64_tables_and_queries():
    w = clustered_table(rows=600, dim=6, dtype=np.float64)
    ix = ApproximateIndex(w, metric="euclidean", nlist=8)
    got = ix.search(w[:3] + 0.1, 4, nprobe=8)
    want = nearest_neighbors(w, w[:3] + 0.1, 4, metric="euclidean")
    assert got.scores.dtype == np.float64
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-12)


def test_size_and_repr(index):
    assert index.size == len(index) == 5_000 and index.dim == 16
    assert "nlist=32" in repr(index) and not hasattr(index, "build_seconds")


def test_importing_embedlib_does_not_import_faiss():
    code = ("import sys, embedlib, embedlib.retrieval, embedlib.numpy;"
            "assert 'faiss' not in sys.modules and 'hnswlib' not in sys.modules, 'imported too early';"
            "import numpy as np; embedlib.retrieval.ApproximateIndex(np.eye(100, 4, dtype=np.float32), nlist=2);"
            "assert 'faiss' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(metric="manhattan"), ValueError, "metric must be one of"),
    (dict(nlist=0), ValueError, "nlist must be positive"),
    (dict(nlist=501), ValueError, "more than the 500 rows"),
    (dict(nlist=1.5), TypeError, "nlist must be an integer"),
    (dict(nlist=8, train_rows=4), ValueError, "train_rows must be between"),
    (dict(seed=-1), ValueError, "seed must be non-negative"),
    (dict(seed=2**31), ValueError, "seed must be below 2"),
    (dict(threads=0), ValueError, "threads must be positive"),
])
def test_bad_build_arguments(table, kwargs, error, words):
    with pytest.raises(error, match=words):
        ApproximateIndex(table[:500], **kwargs)


def test_bad_tables():
    with pytest.raises(ValueError, match="2-D"):
        ApproximateIndex(np.zeros(5, dtype=np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        ApproximateIndex(np.zeros((5, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="at least one row"):
        ApproximateIndex(np.zeros((0, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ApproximateIndex(np.full((5, 2), np.nan, dtype=np.float32))


def test_bad_searches(index):
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(3, 0)
    with pytest.raises(ValueError, match="more than the 4999 candidate rows"):
        index.search(3, 5_000)
    with pytest.raises(TypeError, match="k must be an integer"):
        index.search(3, 2.5)
    with pytest.raises(ValueError, match="nprobe=33 is more than"):
        index.search(3, 5, nprobe=33)
    with pytest.raises(ValueError, match="nprobe must be positive"):
        index.search(3, 5, nprobe=0)
    with pytest.raises(IndexError, match="query row 5000 is out of range"):
        index.search(np.array([1, 5_000]), 5)
    with pytest.raises(IndexError, match="negative"):
        index.search(-1, 5)
    with pytest.raises(ValueError, match="scalar or 1-D"):
        index.search(np.zeros((2, 2), dtype=np.int64), 5)
    with pytest.raises(ValueError, match=r"shape \(D,\) or \(Q, D\) with D=16"):
        index.search(np.zeros(15, dtype=np.float32), 5)
    with pytest.raises(TypeError, match="booleans"):
        index.search(np.array([True, False]), 5)


def test_cells_centres_sizes_and_the_probed_cells(index, table):
    """The cells hold every row once; a search finds only rows of the cells probed_cells names, and
    the probed cells are those whose centres score best against the query (nearest first)."""
    assert index.centroids.shape == (index.nlist, table.shape[1])
    assert index.cell_sizes.sum() == index.size and (index.cell_sizes >= 0).all()
    queries = table[:20] + 0.1
    cells = index.probed_cells(queries, nprobe=3)
    assert cells.shape == (20, 3)
    assert np.array_equal(index.probed_cells(queries[0], nprobe=3), cells[0])
    # the cell of each row: its best centre, as faiss assigned it when the row was added
    home = index.probed_cells(table, nprobe=1)[:, 0]
    assert np.array_equal(np.bincount(home, minlength=index.nlist), index.cell_sizes)
    found = index.search(queries, k=5, nprobe=3).indices
    for q in range(20):
        rows = found[q][found[q] >= 0]
        assert np.isin(home[rows], cells[q]).all()
    every = index.probed_cells(queries, nprobe=index.nlist)
    assert (np.sort(every, axis=1) == np.arange(index.nlist)).all()
    with pytest.raises(ValueError, match="nprobe=33 is more than"):
        index.probed_cells(queries, nprobe=33)
    with pytest.raises(ValueError, match="vectors must have shape"):
        index.probed_cells(queries[:, :3])
