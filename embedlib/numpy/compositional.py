"""Smaller tables (chapter 14): quotient-remainder (compositional) embeddings and hashed embeddings.

A table of V rows costs V x D numbers. Two ways to keep fewer rows, both trainable with the sparse
SGD step of chapter 4:

* **Hashed** (chapter 8's hashing trick as a layer): id ``i`` reads row ``hash_bucket(i)`` of a
  table of B < V rows. Ids that land in the same bucket share that whole row, so the model cannot
  tell them apart at all.
* **Quotient-remainder** (Shi et al. 2020, "Compositional Embeddings Using Complementary Partitions
  for Memory-Efficient Recommendation Systems"): id ``i`` reads row ``i // R`` of a quotient table
  (``ceil(V / R)`` rows) and row ``i % R`` of a remainder table (R rows), and combines the two,
  by default element-wise product. Ids share rows too (all ids with the same remainder share a
  remainder row), but every id has its own *pair* ``(i // R, i % R)``: no two ids share both rows,
  so every id still gets an embedding of its own. With R near sqrt(V) the two tables hold about
  ``2 sqrt(V)`` rows instead of V.

``embedlib.torch.compositional`` has the same names and meaning in PyTorch.
"""
from __future__ import annotations

import numpy as np

from embedlib import _checks, _compositional
from embedlib.numpy import _arrays
from embedlib.numpy.hashing import hash_bucket
from embedlib.numpy.layers import Embedding, SparseGrad
from embedlib.numpy.lookup import lookup_backward

__all__ = ["qr_indices", "qr_lookup", "qr_lookup_backward", "QREmbedding", "hashed_lookup", "HashEmbedding"]


# --------------------------------------------------------------------------------------------------
# Quotient-remainder: functions
# --------------------------------------------------------------------------------------------------
def qr_indices(indices, num_remainders):
    """The complementary partitions of chapter 14: ``(indices // R, indices % R)`` as int64 arrays
    shaped like ``indices``, for ``R = num_remainders``.

    Id ``i`` is the pair ``(q, r)`` with ``i = q * R + r``: the map is one-to-one, so two ids never
    have the same pair, though many share a quotient (R consecutive ids) or a remainder (every R-th
    id). Negative ids are refused (IndexError).
    """
    idx = _arrays.indices(indices)
    num_remainders = _checks.positive(num_remainders, "num_remainders")
    if idx.size:
        _compositional.non_negative(int(idx.min()))
    idx = idx.astype(np.int64, copy=False)
    return idx // num_remainders, idx % num_remainders


def _checked(indices, quotient_weight, remainder_weight, operation):
    """The checks of every quotient-remainder function: ``(idx, wq, wr, D)``, or the error."""
    op = _compositional.operation(operation)
    idx = _arrays.indices(indices)
    wq = _arrays.floats(quotient_weight, "quotient_weight")
    wr = _arrays.floats(remainder_weight, "remainder_weight")
    dim = _compositional.tables(wq.shape, wr.shape, str(wq.dtype), str(wr.dtype), op)
    if idx.size:
        _compositional.qr_range(int(idx.min()), int(idx.max()), wq.shape[0], wr.shape[0])
    return idx, wq, wr, dim


def _combine(rows_q, rows_r, operation):
    if operation == "mult":
        return rows_q * rows_r
    if operation == "add":
        return rows_q + rows_r
    return np.concatenate([rows_q, rows_r], axis=-1)


def _split_gradient(grad, rows_q, rows_r, operation):
    """The chain rule through the combination: the gradients w.r.t. the quotient and remainder rows."""
    if operation == "mult":  # d(q * r)/dq = r, d(q * r)/dr = q, entry by entry
        return grad * rows_r, grad * rows_q
    if operation == "add":
        return grad, grad
    return grad[..., :rows_q.shape[-1]], grad[..., rows_q.shape[-1]:]


def qr_lookup(indices, quotient_weight, remainder_weight, *, operation="mult"):
    """The quotient-remainder embedding (chapter 14): ``Wq[i // R] (op) Wr[i % R]``, shape
    ``(*indices.shape, D)``, with R the remainder table's rows.

    ``operation`` "mult" (element-wise product, the default, as Shi et al.) or "add" need two tables
    of the same width D; "concat" joins a ``(Q, Dq)`` and an ``(R, Dr)`` table into ``D = Dq + Dr``.
    An id whose quotient has no row (``i >= Q * R``) is an IndexError naming the id and ``Q * R``.
    Many ids share each row, but no two share both (see the module docstring).
    """
    idx, wq, wr, _ = _checked(indices, quotient_weight, remainder_weight, operation)
    q, r = qr_indices(idx, wr.shape[0])
    return _combine(np.take(wq, q, axis=0), np.take(wr, r, axis=0), operation)


def qr_lookup_backward(indices, grad_output, quotient_weight, remainder_weight, *, operation="mult"):
    """Gradients of :func:`qr_lookup` w.r.t. both tables (chapter 14), dense: ``(grad_quotient,
    grad_remainder)`` of shapes ``(Q, Dq)`` and ``(R, Dr)``.

    The chain rule, then chapter 4's scatter-add: with "mult", the quotient rows' gradient is
    ``grad_output * Wr[i % R]`` and goes to rows ``i // R`` (``lookup_backward``), the remainder rows'
    is ``grad_output * Wq[i // R]`` and goes to rows ``i % R``; with "add" both get ``grad_output``;
    with "concat" each gets its own columns.
    """
    idx, wq, wr, dim = _checked(indices, quotient_weight, remainder_weight, operation)
    g = _arrays.floats(grad_output, "grad_output")
    _checks.same_shape(g.shape, idx.shape + (dim,), "grad_output", "(*indices.shape, D), like qr_lookup's output")
    q, r = qr_indices(idx, wr.shape[0])
    grad_q, grad_r = _split_gradient(g, np.take(wq, q, axis=0), np.take(wr, r, axis=0), operation)
    return lookup_backward(q, grad_q, wq.shape[0]), lookup_backward(r, grad_r, wr.shape[0])


# --------------------------------------------------------------------------------------------------
# Quotient-remainder: the layer
# --------------------------------------------------------------------------------------------------
class QREmbedding:
    """A quotient-remainder embedding layer (chapter 14): two small :class:`Embedding` layers,
    ``.quotient`` (``ceil(V / R)`` rows) and ``.remainder`` (R rows), standing for a V-row table.

    ``forward(ids)`` is :func:`qr_lookup`; ``backward(grad_output)`` pushes the chain rule's
    gradients into the two layers' own ``backward``, so each holds a :class:`SparseGrad` of the rows
    the batch touched, and ``step(lr)`` changes only those rows. No two ids share both rows (the
    module docstring says why), unlike :class:`HashEmbedding`, where colliding ids share a whole row.

    The initial tables come from ``np.random.default_rng(seed)`` (the torch layer draws the same
    numbers) and give the full table entries of spread about ``init_std``: with "mult" the
    remainder is N(0, init_std^2) and the quotient 1 + N(0, 0.1^2), so a fresh table is close to a
    plain table of R rows and the gradient reaches both factors at full size from the first step
    (two small random factors would make a tiny product and tiny gradients); with "add" both are
    N(0, init_std^2 / 2); with "concat" (quotient ``ceil(D / 2)`` columns, remainder the rest) both
    N(0, init_std^2). The reference code of Shi et al. (facebookresearch/dlrm,
    ``tricks/qr_embedding_bag.py``) calls ``nn.init.uniform_(w, sqrt(1 / V))``, whose second argument
    is the *lower* bound: both tables U(1/sqrt(V), 1), all positive; not copied here.
    """

    def __init__(self, num_embeddings, embedding_dim, num_remainders, *, operation="mult", init_std=1.0,
                 seed=None, dtype=np.float32):
        v, _, r, q, dq, dr = _compositional.qr_shape(num_embeddings, embedding_dim, num_remainders, operation,
                                                    init_std)
        dtype = _float_dtype(dtype)
        wq, wr = _compositional.initial_qr(q, r, dq, dr, operation, float(init_std), seed)
        self._setup(Embedding.from_weight(wq.astype(dtype)), Embedding.from_weight(wr.astype(dtype)), v, operation)

    def _setup(self, quotient, remainder, num_embeddings, operation):
        self.quotient, self.remainder = quotient, remainder
        self.num_embeddings, self.operation = num_embeddings, operation
        self._saved = None

    @classmethod
    def from_weights(cls, quotient_weight, remainder_weight, *, operation="mult", num_embeddings=None):
        """A layer holding copies of the two tables; it stands for ``num_embeddings`` ids (by
        default all ``Q * R`` the pair can represent)."""
        op = _compositional.operation(operation)
        wq = _arrays.floats(quotient_weight, "quotient_weight")
        wr = _arrays.floats(remainder_weight, "remainder_weight")
        _compositional.tables(wq.shape, wr.shape, str(wq.dtype), str(wr.dtype), op)
        v = _compositional.represented(num_embeddings, wq.shape[0], wr.shape[0])
        layer = cls.__new__(cls)
        layer._setup(Embedding.from_weight(wq), Embedding.from_weight(wr), v, op)
        return layer

    @property
    def num_remainders(self) -> int:
        return self.remainder.num_embeddings

    @property
    def embedding_dim(self) -> int:
        dq, dr = self.quotient.embedding_dim, self.remainder.embedding_dim
        return dq + dr if self.operation == "concat" else dq

    @property
    def weight(self) -> np.ndarray:
        """The full ``(V, D)`` table the two stand for, built on each access; read-only (change the
        tables ``.quotient.weight`` and ``.remainder.weight`` instead)."""
        out = qr_lookup(np.arange(self.num_embeddings), self.quotient.weight, self.remainder.weight,
                        operation=self.operation)
        out.flags.writeable = False
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of both tables (the full table would take ``V * D * itemsize``)."""
        return self.quotient.weight.nbytes + self.remainder.weight.nbytes

    def __call__(self, indices):
        return self.forward(indices)

    def forward(self, indices) -> np.ndarray:
        idx = _arrays.indices(indices)
        _arrays.in_range(idx, self.num_embeddings)
        q, r = qr_indices(idx, self.num_remainders)
        rows_q, rows_r = self.quotient(q), self.remainder(r)
        self._saved = (idx.shape, rows_q, rows_r)
        return _combine(rows_q, rows_r, self.operation)

    def backward(self, grad_output) -> tuple[SparseGrad, SparseGrad]:
        """Add the gradient of the last forward's output to both tables' sparse gradients; returns
        them, ``(quotient.grad, remainder.grad)``."""
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first: it uses the indices of the last forward")
        shape, rows_q, rows_r = self._saved
        g = _arrays.floats(grad_output, "grad_output")
        _checks.same_shape(g.shape, shape + (self.embedding_dim,), "grad_output", "the shape of the last output")
        grad_q, grad_r = _split_gradient(g, rows_q, rows_r, self.operation)
        return self.quotient.backward(grad_q), self.remainder.backward(grad_r)

    def step(self, lr) -> None:
        """Plain SGD on the rows of both tables that the gradients touched."""
        self.quotient.step(lr)
        self.remainder.step(lr)

    def zero_grad(self) -> None:
        self.quotient.zero_grad()
        self.remainder.zero_grad()

    def __repr__(self) -> str:
        return (f"QREmbedding({self.num_embeddings}, {self.embedding_dim}, num_remainders={self.num_remainders}, "
                f"operation={self.operation!r})")


# --------------------------------------------------------------------------------------------------
# Hashed tables
# --------------------------------------------------------------------------------------------------
def hashed_lookup(indices, weight, *, num_embeddings=None, hash_seed=0):
    """The hashing trick as a lookup (chapter 14; hashing is chapter 8): ``weight[hash_bucket(indices, B,
    seed=hash_seed)]`` for a table of B rows, shape ``(*indices.shape, D)``.

    Ids that hash to the same bucket read the same whole row: the model cannot tell them apart.
    Without ``num_embeddings`` any integer id is hashed (an open vocabulary); with it, ids must lie
    in ``[0, num_embeddings)``, as in :class:`HashEmbedding`.
    """
    idx = _arrays.indices(indices)
    w = _arrays.weight(weight)
    if w.shape[0] == 0:
        raise ValueError("weight must have at least one row: its rows are the hash buckets")
    if num_embeddings is not None:
        _arrays.in_range(idx, _checks.count(num_embeddings, "num_embeddings"))
    return np.take(w, hash_bucket(idx, w.shape[0], seed=hash_seed), axis=0)


class HashEmbedding:
    """A hashed embedding layer (chapter 14; the hashing trick of chapter 8): ids ``0 .. V-1`` read
    the rows ``hash_bucket(id, num_buckets, seed=hash_seed)`` of one :class:`Embedding` of
    ``num_buckets`` rows, ``.table``.

    The V bucket ids are computed once, here (``.buckets``), so ``forward`` is two gathers.
    Colliding ids share a whole row, and so its gradient: the baseline that
    :class:`QREmbedding` improves on. ``backward`` returns the table's :class:`SparseGrad` (rows
    are buckets) and ``step`` changes only those rows. The initial table is N(0, init_std^2) from
    ``np.random.default_rng(seed)`` (the torch layer draws the same numbers).
    """

    def __init__(self, num_embeddings, embedding_dim, num_buckets, *, hash_seed=0, init_std=1.0, seed=None,
                 dtype=np.float32):
        num_embeddings = _checks.positive(num_embeddings, "num_embeddings")
        embedding_dim = _checks.positive(embedding_dim, "embedding_dim")
        num_buckets = _checks.positive(num_buckets, "num_buckets")
        _compositional.init_std_(init_std)
        dtype = _float_dtype(dtype)
        buckets = hash_bucket(np.arange(num_embeddings), num_buckets, seed=hash_seed)  # checks hash_seed
        w = _compositional.initial_hashed(num_buckets, embedding_dim, float(init_std), seed).astype(dtype)
        self._setup(Embedding.from_weight(w), buckets, hash_seed)

    def _setup(self, table, buckets, hash_seed):
        self.table, self.buckets, self.hash_seed = table, buckets, hash_seed

    @classmethod
    def from_weight(cls, weight, num_embeddings, *, hash_seed=0):
        """A layer holding a copy of ``weight`` (its rows are the buckets) for ids ``0 .. num_embeddings-1``."""
        w = _arrays.weight(weight)
        num_embeddings = _checks.positive(num_embeddings, "num_embeddings")
        if w.shape[0] == 0:
            raise ValueError("weight must have at least one row: its rows are the hash buckets")
        layer = cls.__new__(cls)
        layer._setup(Embedding.from_weight(w), hash_bucket(np.arange(num_embeddings), w.shape[0], seed=hash_seed),
                     hash_seed)
        return layer

    @property
    def num_embeddings(self) -> int:
        return self.buckets.shape[0]

    @property
    def num_buckets(self) -> int:
        return self.table.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.table.embedding_dim

    @property
    def weight(self) -> np.ndarray:
        """The full ``(V, D)`` table it stands for (colliding ids show the same row); read-only."""
        out = np.take(self.table.weight, self.buckets, axis=0)
        out.flags.writeable = False
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the table. The id-to-bucket map ``.buckets`` (8 bytes an id) is not counted: it
        only saves hashing on each call, and could be recomputed instead."""
        return self.table.weight.nbytes

    def __call__(self, indices):
        return self.forward(indices)

    def forward(self, indices) -> np.ndarray:
        idx = _arrays.indices(indices)
        _arrays.in_range(idx, self.num_embeddings)
        return self.table(np.take(self.buckets, idx))

    def backward(self, grad_output) -> SparseGrad:
        """Add the gradient of the last forward's output to the table's sparse gradient (rows are buckets)."""
        return self.table.backward(grad_output)

    def step(self, lr) -> None:
        self.table.step(lr)

    def zero_grad(self) -> None:
        self.table.zero_grad()

    def __repr__(self) -> str:
        return f"HashEmbedding({self.num_embeddings}, {self.embedding_dim}, num_buckets={self.num_buckets})"


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating-point type, got {dtype}")
    return dtype
