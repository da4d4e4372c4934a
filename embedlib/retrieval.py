"""Approximate nearest neighbours for large tables (chapter 14), with chapter 7's contract.

``embedlib.numpy.nearest_neighbors`` scores every row for every query: exact, and fine for
thousands of rows, but a million-row table costs a (Q, 1,000,000) score matrix per batch. An
*inverted file* (IVF) index first clusters the rows with k-means into ``nlist`` cells; a query is
compared with the ``nlist`` cell centres, and only the rows of its ``nprobe`` closest cells are
scored. ``nprobe`` is the knob between speed and recall: ``nprobe=nlist`` scans every row and gives
the exact answer, ``nprobe=1`` scans about ``1/nlist`` of the table.

:class:`ApproximateIndex` wraps faiss's ``IndexIVFFlat`` (faiss-cpu, a CPU NumPy library, imported
only when an index is built: ``import embedlib.retrieval`` does not import it). We chose it by
measurement (``scripts/measure_ann.py``, table in its docstring): on a 1,000,000 x 32 table on two
cores it builds in 6 to 10 seconds, where the HNSW graphs of faiss and hnswlib took 4 to 5 minutes,
and with ``nprobe=16`` it finds 99% of the exact top 10 for 1,000 queries in 0.15 to 0.3 s, 25 to 55
times faster than faiss's exact scan. faiss-cpu ships wheels for every Python we support; hnswlib
0.8.0 only a source archive that needs a C++ compiler.

The search has the same contract as chapter 7's ``nearest_neighbors``: the query is a row id (that
row is left out of its own answer), a 1-D array of row ids, a vector ``(D,)`` or a matrix
``(Q, D)``; the result is ``Neighbors(indices, scores)`` of shape ``(k,)`` or ``(Q, k)``, best
first, with scores as chapter 7 defines them (cosine similarity, dot product or euclidean
distance), recomputed exactly in NumPy for the rows found, ties broken by lower row id. Where the
probed cells hold fewer than ``k`` rows, the missing places are ``-1`` with score NaN (the ranking
metrics of ``embedlib.numpy.ranking`` never count ``-1`` as relevant).

Deterministic: the k-means trains on ``train_rows`` rows drawn with ``seed``, from centres seeded
with ``seed``, so the same table, settings and machine give the same index and the same answers.
"""
from __future__ import annotations

import math

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays
from embedlib.numpy.neighbors import Neighbors, query_vectors

__all__ = ["ApproximateIndex", "Neighbors"]

#: k-means trains on this many rows per cell by default (faiss's own default keeps up to 256; 64
#: gives cells nearly as good, 4x faster: chapter 14's notebook builds a 1M-row index in seconds)
TRAIN_ROWS_PER_CELL = 64
#: ``search``'s default ``nprobe``: recall@10 0.99 with 1,024 cells on the measured 1M-row table
DEFAULT_NPROBE = 16


def default_nlist(num_rows: int) -> int:
    """A power of two near sqrt(num_rows) (1,024 for a million rows), with at least 39 rows per cell
    (fewer leaves k-means cells that are mostly noise; faiss warns below 39)."""
    if num_rows < 2 * 39:
        return 1
    nlist = 2 ** round(math.log2(math.sqrt(num_rows)))
    return max(1, min(nlist, num_rows // 39))


class ApproximateIndex:
    """An inverted-file index over the rows of ``weight`` (chapter 14); ``search`` it like chapter 7's
    ``nearest_neighbors``.

    ``weight``: the ``(V, D)`` float table (copied: later changes to it do not reach the index).
    ``metric``: "cosine", "dot" or "euclidean", as in chapter 7. ``nlist``: the number of k-means
    cells, by default :func:`default_nlist` (1,024 for a million rows). ``train_rows``: how many
    rows, drawn with ``seed``, the k-means trains on (default ``64 * nlist``, at most V).
    ``threads``: the number of threads faiss uses while building and searching (default: faiss's
    own, all cores); the setting is restored afterwards.
    """

    def __init__(self, weight, *, metric="cosine", nlist=None, train_rows=None, seed=0, threads=None):
        w = _arrays.weight(weight)
        _checks.metric(metric)
        v, d = w.shape
        if v == 0 or d == 0:
            raise ValueError(f"weight must have at least one row and one column, got shape {w.shape}")
        nlist = default_nlist(v) if nlist is None else _checks.positive(nlist, "nlist")
        if nlist > v:
            raise ValueError(f"nlist={nlist} cells is more than the {v} rows of weight")
        train_rows = min(v, TRAIN_ROWS_PER_CELL * nlist) if train_rows is None else _checks.positive(
            train_rows, "train_rows")
        if not nlist <= train_rows <= v:
            raise ValueError(f"train_rows must be between nlist={nlist} and the {v} rows of weight, got {train_rows}")
        seed = _checks.count(seed, "seed")
        if seed >= 2**31:
            raise ValueError(f"seed must be below 2**31 (faiss keeps it in a C int), got {seed}")
        self._threads = None if threads is None else _checks.positive(threads, "threads")
        if not np.isfinite(w).all():
            raise ValueError("weight holds NaN or infinite values; an index cannot place them")

        import faiss  # here, not at the top: importing embedlib.retrieval must stay cheap

        self._faiss = faiss
        self.metric = metric
        self.nlist = nlist
        self._weight = np.array(w, copy=True)
        self._weight.flags.writeable = False
        vectors = self._index_vectors(self._weight)
        faiss_metric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
        self._quantizer = faiss.IndexFlatL2(d) if metric == "euclidean" else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(self._quantizer, d, nlist, faiss_metric)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1  # we chose train_rows; no warning about it
        index.cp.max_points_per_centroid = train_rows  # and no second subsampling inside faiss
        rows = np.random.default_rng(seed).choice(v, size=train_rows, replace=False) if train_rows < v else None
        with self._thread_limit():
            index.train(vectors if rows is None else vectors[np.sort(rows)])
            index.add(vectors)
        self._index = index

    @property
    def size(self) -> int:
        """The number of rows indexed (V)."""
        return self._weight.shape[0]

    @property
    def dim(self) -> int:
        """The embedding dimension (D)."""
        return self._weight.shape[1]

    def __len__(self) -> int:
        return self.size

    @property
    def centroids(self) -> np.ndarray:
        """The ``(nlist, D)`` cell centres the k-means found, float32 (for "cosine", in the space of
        unit rows the index searches)."""
        return self._quantizer.reconstruct_n(0, self.nlist)

    @property
    def cell_sizes(self) -> np.ndarray:
        """How many rows each cell holds, ``(nlist,)`` int64; they add up to :attr:`size`."""
        invlists = self._index.invlists
        return np.array([invlists.list_size(c) for c in range(self.nlist)], dtype=np.int64)

    def probed_cells(self, vectors, nprobe=None) -> np.ndarray:
        """The cells ``search`` scans for each query vector, nearest centre first: ``(Q, nprobe)``
        int64 for ``vectors`` ``(Q, D)`` (``(nprobe,)`` for one vector ``(D,)``). With
        :attr:`cell_sizes` it gives how many rows a search scores (chapter 14)."""
        nprobe = self._nprobe(nprobe)
        v = _arrays.floats(vectors, "vectors")
        if v.ndim not in (1, 2) or v.shape[-1] != self.dim:
            raise ValueError(f"vectors must have shape (D,) or (Q, D) with D={self.dim}, got {v.shape}")
        with self._thread_limit():
            _, cells = self._quantizer.search(self._index_vectors(v.reshape(-1, self.dim)), nprobe)
        cells = cells.astype(np.int64)
        return cells[0] if v.ndim == 1 else cells

    def _nprobe(self, nprobe) -> int:
        nprobe = min(DEFAULT_NPROBE, self.nlist) if nprobe is None else _checks.positive(nprobe, "nprobe")
        if nprobe > self.nlist:
            raise ValueError(f"nprobe={nprobe} is more than the index's nlist={self.nlist} cells")
        return nprobe

    def __repr__(self) -> str:
        return f"ApproximateIndex(size={self.size:,}, dim={self.dim}, metric={self.metric!r}, nlist={self.nlist})"

    def search(self, query, k=10, *, nprobe=None):
        """The ``k`` rows closest to ``query`` among those in its ``nprobe`` nearest cells (chapter 14).

        ``query``: a row id (left out of its own answer), a 1-D array of row ids, a vector ``(D,)``
        or a matrix ``(Q, D)``, as in ``nearest_neighbors``. ``nprobe``: how many cells to scan,
        1..nlist (default ``min(16, nlist)``); ``nprobe=nlist`` is exact. Returns
        ``Neighbors(indices, scores)`` of shape ``(k,)`` or ``(Q, k)``: int64 row ids best first
        (ties by lower row id; ``-1`` where fewer than ``k`` rows were found, with score NaN) and
        chapter 7's scores for the metric.
        """
        nprobe = self._nprobe(nprobe)
        vectors, ids, single = query_vectors(self._weight, query)   # chapter 7's query forms
        by_id = ids is not None
        if not by_id and not np.isfinite(vectors).all():
            raise ValueError("query holds NaN or infinite values")
        k = _checks.neighbors_k(k, self.size - (1 if by_id else 0))

        self._index.nprobe = nprobe
        fetch = k + 1 if by_id else k  # one more, for the query row itself
        with self._thread_limit():
            _, found = self._index.search(self._index_vectors(vectors), fetch)
        found = found.astype(np.int64)
        if by_id:
            found[found == ids[:, None]] = -1  # the query row is never its own neighbour
        indices, scores = self._rescore(vectors, found, k)
        return Neighbors(indices[0], scores[0]) if single else Neighbors(indices, scores)

    # ----------------------------------------------------------------------------------------------
    def _index_vectors(self, x: np.ndarray) -> np.ndarray:
        """What faiss stores and searches: float32, C-contiguous, unit rows for cosine (chapter 7's
        normalisation, zero rows stay zero)."""
        if self.metric == "cosine":
            eps = np.finfo(x.dtype).tiny
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _rescore(self, vectors: np.ndarray, found: np.ndarray, k: int):
        """Chapter 7's scores for the candidate rows, in the table's precision, and the best ``k`` of
        them by (score, row id); missing candidates (-1) go last."""
        w = self._weight
        missing = found < 0
        rows = w[np.where(missing, 0, found)]  # (Q, C, D)
        dtype = np.result_type(vectors, w)
        if self.metric == "euclidean":
            scores = np.sqrt(np.einsum("qcd,qcd->qc", vectors[:, None, :] - rows, vectors[:, None, :] - rows))
            key = scores.copy()
        else:
            if self.metric == "cosine":
                eps = np.finfo(w.dtype).tiny
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), eps)
                rows = rows / np.maximum(np.linalg.norm(rows, axis=2, keepdims=True), eps)
            scores = np.einsum("qd,qcd->qc", vectors, rows)
            key = -scores
        scores = scores.astype(dtype, copy=False)
        key = np.where(missing, np.inf, key)
        order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, found), key), axis=1)[:, :k]
        indices = np.take_along_axis(found, order, axis=1)
        best = np.take_along_axis(scores, order, axis=1)
        gone = indices < 0
        if gone.any():
            indices = np.where(gone, -1, indices)
            best = np.where(gone, np.nan, best).astype(dtype, copy=False)
        return indices, best

    def _thread_limit(self):
        return _ThreadLimit(self._faiss, self._threads)


class _ThreadLimit:
    """faiss's OpenMP thread count set for a block and restored after it (a process-wide setting)."""

    def __init__(self, faiss, threads):
        self._faiss, self._threads, self._before = faiss, threads, None

    def __enter__(self):
        if self._threads is not None:
            self._before = self._faiss.omp_get_max_threads()
            self._faiss.omp_set_num_threads(self._threads)

    def __exit__(self, *exc):
        if self._before is not None:
            self._faiss.omp_set_num_threads(self._before)
