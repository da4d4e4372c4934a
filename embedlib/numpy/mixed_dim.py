"""Mixed-dimension embedding tables (chapter 14): popular ids get wide rows, the long tail narrow ones.

Ginart et al. (2021), "Mixed Dimension Embeddings with Application to Memory-Efficient
Recommendation Systems". The ids are ranked by frequency, most frequent first, and the ranking is
cut into K blocks. Block ``k`` stores its ``n_k`` rows at a width ``d_k <= D`` in a table ``E_k``
``(n_k, d_k)`` and maps them to the common width ``D`` with a projection ``P_k`` ``(d_k, D)``:

    row of id i = E_k[rank[i] - start_k] @ P_k,    k the block that holds position rank[i]

where ``start_k = n_1 + ... + n_{k-1}``. Every part is a lookup followed by a small matrix
product, so a batch touches only its ids' rows of the ``E_k`` (sparse gradients, as chapter 4's
layer) plus the K projections (dense, but only ``d_k x D`` numbers each).

Memory: ``sum_k n_k d_k + d_k D`` numbers instead of ``V D``. ``embedlib.torch.mixed_dim`` is the
same in PyTorch, with the same names, the same initial numbers for the same seed, and autograd.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays, _segments
from embedlib.numpy.layers import Embedding, SparseGrad


# --------------------------------------------------------------------------------------------------
# The plan: ranks, blocks and their widths
# --------------------------------------------------------------------------------------------------
class MixedDimPlan(NamedTuple):
    """Where each id's row lives and how wide each block is (chapter 14).

    ``rank[i]`` is id ``i``'s position in frequency order (most frequent first, ties by lower id):
    the row of the concatenated blocks that holds it. Block ``k`` covers positions
    ``[start_k, start_k + block_sizes[k])`` and stores them at width ``block_dims[k]``.
    """

    rank: np.ndarray  # (V,) int64, a permutation of 0..V-1
    block_sizes: np.ndarray  # (K,) int64, positive, summing to V
    block_dims: np.ndarray  # (K,) int64, non-increasing, in [min_dim, D]


def mixed_dim_plan(counts, block_sizes, embedding_dim, *, alpha=0.5, min_dim=1) -> MixedDimPlan:
    """Rank the ids by ``counts`` and give each block of the ranking its width (chapter 14).

    ``counts`` (V,) are the ids' frequencies (non-negative, integers or floats); ``block_sizes``
    cut the ranking into K blocks of ``n_1, ..., n_K`` ids (positive, summing to V), the first
    block holding the most frequent ids. Block ``k`` gets width

        d_k = round(D * (p_k / p_1) ** alpha),  clipped to [min_dim, D]

    with ``p_k`` the mean count of block ``k``'s ids (``round`` to the nearest integer, halves
    up). This is Ginart et al.'s power-law rule ``d_k = lambda * p_k ** alpha``, ``p_k`` the
    probability that a query names a given id of block ``k`` (proportional to the mean count),
    with ``lambda`` chosen so that the most popular block gets the full width ``D``: the form of
    the ``d0`` option of ``md_solver`` in facebookresearch/dlrm, which applies it across whole
    tables, with a table's queries per row as its popularity, and rounds halves to even or to
    powers of 2. ``alpha = 0`` gives every block width ``D`` (a plain table); a larger ``alpha``
    narrows the tail faster. Since the blocks follow the ranking, the ``p_k`` never increase and
    neither do the widths. If every count is zero all blocks get ``D``.

    Returns a :class:`MixedDimPlan`; ``MixedDimEmbedding.from_plan`` builds the layer.
    """
    c = np.asarray(counts)
    if c.dtype.kind not in "iuf" or c.dtype.kind == "b":
        raise TypeError(f"counts must be numbers (integers or floats), got dtype {c.dtype}")
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D (one count per id), got shape {c.shape}")
    c = c.astype(np.float64) if c.dtype.kind == "f" else c.astype(np.int64)
    if c.size and (not np.all(np.isfinite(c)) or c.min() < 0):
        raise ValueError("counts must be finite and non-negative")
    sizes = _block_sizes(block_sizes)
    if int(sizes.sum()) != c.size:
        raise ValueError(f"block_sizes must add up to the number of ids, len(counts) = {c.size}, got "
                         f"{int(sizes.sum())} ({sizes.tolist()})")
    if np.any(sizes == 0):
        raise ValueError(f"every block must hold at least one id (its width comes from its ids' mean count), "
                         f"got block_sizes {sizes.tolist()}")
    dim = _checks.positive(embedding_dim, "embedding_dim")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not 0 <= alpha < float("inf"):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    min_dim = _checks.positive(min_dim, "min_dim")
    if min_dim > dim:
        raise ValueError(f"min_dim must be at most embedding_dim = {dim}, got {min_dim}")
    # most frequent first, ties by lower id: a stable sort of the negated counts
    order = np.argsort(-c, kind="stable")
    rank = np.empty(c.size, dtype=np.int64)
    rank[order] = np.arange(c.size, dtype=np.int64)
    ends = np.cumsum(sizes)
    sums = np.add.reduceat(c[order].astype(np.float64), ends - sizes)
    means = sums / sizes
    ratio = means / means[0] if means[0] > 0 else np.ones_like(means)
    dims = np.floor(dim * ratio ** float(alpha) + 0.5).astype(np.int64)
    return MixedDimPlan(rank, sizes, np.clip(dims, min_dim, dim))


def _block_sizes(block_sizes, name="block_sizes") -> np.ndarray:
    """A 1-D int64 array of non-negative integers, one per block, at least one block."""
    s = np.asarray(block_sizes)
    if s.size == 0 and s.dtype == np.float64:
        s = s.astype(np.int64)
    if s.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {s.dtype}")
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{name} must be 1-D with at least one block, got shape {s.shape}")
    if s.min() < 0:
        raise ValueError(f"{name} must be non-negative, got {s.tolist()}")
    return s.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Shared checks (on plain shapes; the torch backend calls them too)
# --------------------------------------------------------------------------------------------------
def check_blocks(table_shapes, projection_shapes, table_dtypes, projection_dtypes):
    """``tables[k]`` (n_k, d_k), ``projections[k]`` (d_k, D), one D, one float dtype: ``(sizes, dims, D)``."""
    if len(table_shapes) != len(projection_shapes):
        raise ValueError(f"there must be one projection per table, got {len(table_shapes)} tables and "
                         f"{len(projection_shapes)} projections")
    if not table_shapes:
        raise ValueError("a mixed-dimension table needs at least one block, got 0 tables")
    for k, (t, p) in enumerate(zip(table_shapes, projection_shapes)):
        if len(t) != 2:
            raise ValueError(f"tables[{k}] must be 2-D (n_k, d_k), got shape {tuple(t)}")
        if len(p) != 2 or p[0] != t[1]:
            raise ValueError(f"projections[{k}] must have shape (d_k, D) with d_k = {t[1]} (the width of "
                             f"tables[{k}]), got {tuple(p)}")
        if p[1] != projection_shapes[0][1]:
            raise ValueError(f"every projection must map to the same width D = {projection_shapes[0][1]}, "
                             f"got projections[{k}] of shape {tuple(p)}")
    dtype = table_dtypes[0]
    for k, d in enumerate(table_dtypes):
        _checks.same_dtype(d, dtype, f"tables[{k}]")
    for k, d in enumerate(projection_dtypes):
        _checks.same_dtype(d, dtype, f"projections[{k}]")
    sizes = [int(t[0]) for t in table_shapes]
    dims = [int(t[1]) for t in table_shapes]
    return sizes, dims, int(projection_shapes[0][1])


def check_rank(rank_shape, rank_kind: str, dtype_name: str, lowest_count_highest, total: int):
    """``rank`` is a permutation of ``0..total-1``. ``rank_kind`` is 'int', 'bool' or 'other';
    ``lowest_count_highest`` = (its minimum, its number of distinct values, its maximum)."""
    _checks.index_dtype(rank_kind, dtype_name, "rank")
    if tuple(rank_shape) != (total,):
        raise ValueError(f"rank must have shape (V,) = ({total},), one position per id, got {tuple(rank_shape)}")
    lo, distinct, hi = lowest_count_highest
    if total and (lo < 0 or hi >= total or distinct != total):
        raise ValueError(f"rank must be a permutation of 0..{total - 1} (each id its own row of the blocks)")


def _tables_and_projections(tables, projections):
    t = [_arrays.weight(x, f"tables[{k}]") for k, x in enumerate(tables)]
    p = [_arrays.floats(x, f"projections[{k}]") for k, x in enumerate(projections)]
    sizes, dims, dim = check_blocks([x.shape for x in t], [x.shape for x in p],
                                    [str(x.dtype) for x in t], [str(x.dtype) for x in p])
    return t, p, sizes, dim


def _split(flat_positions: np.ndarray, sizes):
    """For each block ``k``: ``(where, rows)``, the entries of ``flat_positions`` it holds and their
    rows in its table. One pass to find each entry's block, then one selection per block."""
    ends = np.cumsum(sizes)
    block = np.searchsorted(ends, flat_positions, side="right")
    out = []
    for k, (start, end) in enumerate(zip((ends - np.asarray(sizes)).tolist(), ends.tolist())):
        where = np.flatnonzero(block == k) if len(sizes) > 1 else np.arange(flat_positions.size)
        out.append((where, flat_positions[where] - start))
    return out


# --------------------------------------------------------------------------------------------------
# The functions
# --------------------------------------------------------------------------------------------------
def mixed_dim_lookup(positions, tables, projections) -> np.ndarray:
    """The rows at ``positions`` of a mixed-dimension table (chapter 14): shape ``(*positions.shape, D)``.

    ``positions`` are rows of the concatenated blocks, in ``[0, n_1 + ... + n_K)`` (ids already
    mapped through the plan's ``rank``); block ``k`` covers ``[start_k, start_k + n_k)`` and
    position ``p`` in it gives ``tables[k][p - start_k] @ projections[k]``. ``tables[k]`` is
    ``(n_k, d_k)``, ``projections[k]`` ``(d_k, D)``, all of one float dtype, which the result has.
    Equal to ``onehot_matmul(positions, W)`` with ``W`` the blocks' rows stacked,
    ``concatenate([E_k @ P_k])``, without building ``W``.
    """
    idx = _arrays.indices(positions, "positions")
    t, p, sizes, dim = _tables_and_projections(tables, projections)
    _arrays.in_range(idx, sum(sizes), "position")
    flat = idx.reshape(-1).astype(np.int64)
    out = np.zeros((flat.size, dim), dtype=t[0].dtype)
    for (where, rows), table, projection in zip(_split(flat, sizes), t, p):
        out[where] = np.take(table, rows, axis=0) @ projection
    return out.reshape(idx.shape + (dim,))


def mixed_dim_lookup_backward(positions, grad_output, tables, projections):
    """Gradients of :func:`mixed_dim_lookup` w.r.t. its blocks (chapter 14): ``(grad_tables,
    grad_projections)``, two lists of dense arrays shaped like ``tables`` and ``projections``.

    With ``g`` the rows of ``grad_output`` at block ``k``'s positions and ``rows`` their rows in
    it, the chain rule through ``E_k[rows] @ P_k`` gives ``grad E_k = lookup_backward(rows,
    g @ P_k.T, n_k)`` (a scatter-add: repeated positions add up) and ``grad P_k = E_k[rows].T @ g``.
    """
    idx = _arrays.indices(positions, "positions")
    t, p, sizes, dim = _tables_and_projections(tables, projections)
    g = _arrays.floats(grad_output, "grad_output")
    _checks.same_shape(g.shape, idx.shape + (dim,), "grad_output", "(*positions.shape, D)")
    _arrays.in_range(idx, sum(sizes), "position")
    flat, g = idx.reshape(-1).astype(np.int64), g.reshape(idx.size, dim)
    grad_tables, grad_projections = [], []
    for (where, rows), table, projection in zip(_split(flat, sizes), t, p):
        gk = g[where]
        grad_tables.append(_segments.scatter_sum(rows, gk @ projection.T, table.shape[0]).astype(table.dtype))
        grad_projections.append((np.take(table, rows, axis=0).T @ gk).astype(table.dtype))
    return grad_tables, grad_projections


# --------------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------------
def initial_blocks(block_sizes, block_dims, embedding_dim, *, init_std=0.1, seed=None):
    """The starting blocks, float64, from one NumPy generator (so both backends start alike).

    ``P_k`` has orthonormal rows (``P_k P_k^T = I``: the Q of a QR factorisation of a Gaussian
    matrix, signs fixed so it is uniformly distributed) and ``E_k ~ N(0, init_std^2 D / d_k)``.
    A row ``e P_k`` then has squared norm ``|e|^2``, expected ``D init_std^2``, and its entries have
    mean variance ``init_std^2``: the scale of a plain ``N(0, init_std^2)`` table of width ``D``
    (chapter 6's initialisation); a full-width block (``d_k = D``) is exactly such a table in
    distribution, ``P_k`` being a rotation. Why orthonormal rows and not, say, ``P_k ~ N(0, 1/d_k)``:
    SGD moves a row ``e P`` by ``-lr g P^T P`` through ``E_k``, and ``P^T P`` is then a projection,
    so a narrow block never steps further than a plain table would at the same learning rate
    (a Gaussian ``P`` of the same output variance has ``P^T P`` of size ``D / d_k``).
    """
    sizes, dims = _block_sizes(block_sizes), _block_sizes(block_dims, "block_dims")
    dim = _checks.positive(embedding_dim, "embedding_dim")
    if sizes.shape != dims.shape:
        raise ValueError(f"block_sizes and block_dims must have one entry per block, got {sizes.size} and "
                         f"{dims.size}")
    if dims.max() > dim or dims.min() == 0:
        raise ValueError(f"block_dims must lie in [1, embedding_dim = {dim}], got {dims.tolist()}")
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float, np.integer, np.floating)) \
            or not 0 <= init_std < float("inf"):
        raise ValueError(f"init_std must be a non-negative number, got {init_std!r}")
    rng = np.random.default_rng(seed)
    tables, projections = [], []
    for n, d in zip(sizes.tolist(), dims.tolist()):
        tables.append(init_std * np.sqrt(dim / d) * rng.standard_normal((n, d)))
        q, r = np.linalg.qr(rng.standard_normal((dim, d)))
        projections.append((q * np.where(np.diag(r) < 0, -1.0, 1.0)).T.copy())
    return tables, projections


class MixedDimEmbedding:
    """A mixed-dimension embedding layer in NumPy (chapter 14): the interface of chapter 4's
    ``Embedding`` (forward, sparse backward, ``step``, ``zero_grad``, ``weight``) over K blocks.

    ``MixedDimEmbedding(block_sizes, block_dims, embedding_dim, *, rank=None, init_std=0.1,
    seed=None, dtype=float64)``: ``forward(ids)`` maps ids through ``rank`` (the identity if None)
    and returns their rows, ``(*ids.shape, D)``; see :func:`mixed_dim_lookup`. Each block's table
    is an :class:`~embedlib.numpy.Embedding` (``blocks[k]``), so ``backward`` gives it a
    :class:`SparseGrad` of the rows the batch touched and ``step`` changes only those; the
    projections (``projections[k]``, ``(d_k, D)``) get dense gradients (``projection_grads``).
    The initial numbers are :func:`initial_blocks`'s. float64 by default, as chapter 6's model.
    """

    def __init__(self, block_sizes, block_dims, embedding_dim, *, rank=None, init_std=0.1, seed=None,
                 dtype=np.float64):
        tables, projections = initial_blocks(block_sizes, block_dims, embedding_dim, init_std=init_std,
                                             seed=seed)
        self._setup([t.astype(dtype) for t in tables], [p.astype(dtype) for p in projections], rank)

    @classmethod
    def from_plan(cls, plan: MixedDimPlan, embedding_dim, *, init_std=0.1, seed=0, dtype=np.float64):
        """A fresh layer laid out as ``plan`` (:func:`mixed_dim_plan`), ids mapped by ``plan.rank``."""
        return cls(plan.block_sizes, plan.block_dims, embedding_dim, rank=plan.rank, init_std=init_std,
                   seed=seed, dtype=dtype)

    @classmethod
    def from_weights(cls, tables, projections, *, rank=None):
        """A layer holding copies of ``tables[k]`` (n_k, d_k) and ``projections[k]`` (d_k, D)."""
        layer = cls.__new__(cls)
        t, p, _, _ = _tables_and_projections(tables, projections)
        layer._setup([x.copy() for x in t], [x.copy() for x in p], rank)
        return layer

    def _setup(self, tables, projections, rank):
        t, p, sizes, dim = _tables_and_projections(tables, projections)
        total = sum(sizes)
        if rank is not None:
            r = np.asarray(rank)
            kind = "bool" if r.dtype.kind == "b" else "int" if r.dtype.kind in "iu" else "other"
            distinct = np.unique(r).size if kind == "int" and r.ndim == 1 else -1
            stats = (int(r.min()), distinct, int(r.max())) if r.size and kind == "int" else (0, r.size, 0)
            check_rank(r.shape, kind, str(r.dtype), stats, total)
            rank = r.astype(np.int64)
        self.blocks = [Embedding.from_weight(x) for x in t]
        self.projections = p
        self.projection_grads = [None] * len(p)
        self.rank = rank
        self._dim = dim
        self._saved = None

    @property
    def num_embeddings(self) -> int:
        return sum(b.num_embeddings for b in self.blocks)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    @property
    def block_sizes(self) -> tuple:
        return tuple(b.num_embeddings for b in self.blocks)

    @property
    def block_dims(self) -> tuple:
        return tuple(b.embedding_dim for b in self.blocks)

    @property
    def dtype(self):
        return self.projections[0].dtype

    @property
    def nbytes(self) -> int:
        """Bytes of all block tables and projections (what the layer stores, ``rank`` aside)."""
        return sum(b.weight.nbytes for b in self.blocks) + sum(p.nbytes for p in self.projections)

    @property
    def weight(self) -> np.ndarray:
        """The full ``(V, D)`` table it represents, in id order (row ``i`` is ``forward(i)``): a
        read-only array computed on each access, ``V x D`` numbers; for a few rows use ``forward``."""
        full = np.concatenate([b.weight @ p for b, p in zip(self.blocks, self.projections)])
        out = full if self.rank is None else np.take(full, self.rank, axis=0)
        out.flags.writeable = False
        return out

    def __call__(self, ids):
        return self.forward(ids)

    def forward(self, ids) -> np.ndarray:
        """Rows of ``ids``, shape ``(*ids.shape, D)``; remembers what ``backward`` needs."""
        idx = _arrays.indices(ids, "ids")
        _arrays.in_range(idx, self.num_embeddings)
        flat = idx.reshape(-1).astype(np.int64)
        positions = flat if self.rank is None else np.take(self.rank, flat)
        out = np.zeros((flat.size, self._dim), dtype=self.dtype)
        saved = []
        for (where, rows), block, projection in zip(_split(positions, self.block_sizes), self.blocks,
                                                    self.projections):
            looked_up = block.forward(rows)  # the block layer remembers its rows for its backward
            out[where] = looked_up @ projection
            saved.append((where, looked_up))
        self._saved = (idx.shape, saved)
        return out.reshape(idx.shape + (self._dim,))

    def backward(self, grad_output):
        """Add the gradient of the last forward's output to the blocks' sparse gradients and the
        projections' dense ones (they accumulate until ``zero_grad``). Returns ``(block_grads,
        projection_grads)``: the blocks' :class:`SparseGrad` and the projections' arrays."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first: it uses the ids of the last forward")
        shape, saved = self._saved
        g = _arrays.floats(grad_output, "grad_output")
        _checks.same_shape(g.shape, shape + (self._dim,), "grad_output", "the shape of the last output")
        g = g.reshape(-1, self._dim)
        block_grads = []
        for k, ((where, looked_up), block, projection) in enumerate(zip(saved, self.blocks, self.projections)):
            gk = g[where]
            block_grads.append(block.backward(gk @ projection.T))
            grad = (looked_up.T @ gk).astype(projection.dtype)
            self.projection_grads[k] = grad if self.projection_grads[k] is None else self.projection_grads[k] + grad
        return block_grads, list(self.projection_grads)

    def step(self, lr) -> None:
        """Plain SGD: the touched rows of each block, and every projection that has a gradient."""
        for block in self.blocks:
            block.step(lr)
        for projection, grad in zip(self.projections, self.projection_grads):
            if grad is not None:
                projection -= np.asarray(lr, dtype=projection.dtype) * grad

    def zero_grad(self) -> None:
        for block in self.blocks:
            block.zero_grad()
        self.projection_grads = [None] * len(self.projections)

    def __repr__(self) -> str:
        return (f"MixedDimEmbedding({self.num_embeddings}, {self._dim}, block_sizes={list(self.block_sizes)}, "
                f"block_dims={list(self.block_dims)})")


__all__ = ["MixedDimEmbedding", "MixedDimPlan", "SparseGrad", "initial_blocks", "mixed_dim_lookup",
           "mixed_dim_lookup_backward", "mixed_dim_plan"]
