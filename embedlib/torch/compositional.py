"""Smaller tables in PyTorch (chapter 14): quotient-remainder and hashed embeddings as ``nn.Module``s.

The same names and meaning as ``embedlib.numpy.compositional`` (whose docstring explains both
ideas and what collides in each), with autograd in place of the hand-written backward: the layers
hold ``embedlib.torch`` :class:`Embedding` submodules, whose weights train like any parameter.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from embedlib import _checks, _compositional
from embedlib.numpy.compositional import _float_dtype
from embedlib.torch import _tensors
from embedlib.torch.hashing import hash_bucket
from embedlib.torch.layers import Embedding
from embedlib.torch.lookup import gather, lookup_backward

__all__ = ["qr_indices", "qr_lookup", "qr_lookup_backward", "QREmbedding", "hashed_lookup", "HashEmbedding"]


# --------------------------------------------------------------------------------------------------
# Quotient-remainder: functions
# --------------------------------------------------------------------------------------------------
def qr_indices(indices, num_remainders):
    """The complementary partitions of chapter 14: ``(indices // R, indices % R)`` as int64 tensors
    shaped like ``indices``, for ``R = num_remainders``; one-to-one, so no two ids share both.
    Negative ids are refused (IndexError)."""
    idx = _tensors.indices(indices)
    num_remainders = _checks.positive(num_remainders, "num_remainders")
    if idx.numel():
        _compositional.non_negative(_tensors.min_max(idx)[0])
    idx = idx.long()
    return torch.div(idx, num_remainders, rounding_mode="floor"), torch.remainder(idx, num_remainders)


def _table(w, name: str) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.dtype.is_floating_point:
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {w.dtype}")
    return w


def _check_tables(quotient_weight, remainder_weight, op) -> tuple[torch.Tensor, torch.Tensor, int]:
    wq, wr = _table(quotient_weight, "quotient_weight"), _table(remainder_weight, "remainder_weight")
    dim = _compositional.tables(tuple(wq.shape), tuple(wr.shape), str(wq.dtype).replace("torch.", ""),
                                str(wr.dtype).replace("torch.", ""), op)
    if wq.device != wr.device:
        raise ValueError(f"quotient_weight is on {wq.device} but remainder_weight on {wr.device}; move one of them")
    return wq, wr, dim


def _checked(indices, quotient_weight, remainder_weight, operation):
    """The checks of every quotient-remainder function: ``(idx, wq, wr, D)``, or the error."""
    op = _compositional.operation(operation)
    wq, wr, dim = _check_tables(quotient_weight, remainder_weight, op)
    idx = _tensors.indices(indices, wq.device)
    if idx.numel():
        _compositional.qr_range(*_tensors.min_max(idx), wq.shape[0], wr.shape[0])
    return idx, wq, wr, dim


def _split(idx: torch.Tensor, num_remainders: int):
    """``qr_indices`` without checks, for ids already checked."""
    idx = idx.long()
    return torch.div(idx, num_remainders, rounding_mode="floor"), torch.remainder(idx, num_remainders)


def _combine(rows_q, rows_r, operation):
    if operation == "mult":
        return rows_q * rows_r
    if operation == "add":
        return rows_q + rows_r
    return torch.cat([rows_q, rows_r], dim=-1)


def qr_lookup(indices, quotient_weight, remainder_weight, *, operation="mult"):
    """The quotient-remainder embedding (chapter 14): ``Wq[i // R] (op) Wr[i % R]``, shape
    ``(*indices.shape, D)``, differentiable w.r.t. both tables; see
    ``embedlib.numpy.compositional.qr_lookup``. Many ids share each row, but no two share both.
    """
    idx, wq, wr, _ = _checked(indices, quotient_weight, remainder_weight, operation)
    q, r = _split(idx, wr.shape[0])
    return _combine(gather(q, wq), gather(r, wr), operation)


def qr_lookup_backward(indices, grad_output, quotient_weight, remainder_weight, *, operation="mult"):
    """Gradients of :func:`qr_lookup` w.r.t. both tables (chapter 14), dense ``(grad_quotient,
    grad_remainder)``: the chain rule through the combination, then ``lookup_backward`` (chapter 4)."""
    idx, wq, wr, dim = _checked(indices, quotient_weight, remainder_weight, operation)
    g = _tensors.floats(grad_output, "grad_output", wq.device)
    _checks.same_shape(tuple(g.shape), tuple(idx.shape) + (dim,), "grad_output",
                       "(*indices.shape, D), like qr_lookup's output")
    q, r = _split(idx, wr.shape[0])
    if operation == "mult":
        grad_q, grad_r = g * gather(r, wr), g * gather(q, wq)
    elif operation == "add":
        grad_q, grad_r = g, g
    else:
        grad_q, grad_r = g[..., :wq.shape[1]], g[..., wq.shape[1]:]
    return lookup_backward(q, grad_q, wq.shape[0]), lookup_backward(r, grad_r, wr.shape[0])


# --------------------------------------------------------------------------------------------------
# Quotient-remainder: the layer
# --------------------------------------------------------------------------------------------------
def _torch_dtype(dtype):
    """``dtype`` as a torch dtype (None: torch's default), floating point only."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    return torch.from_numpy(np.zeros(0, dtype=_float_dtype(dtype))).dtype


class QREmbedding(nn.Module):
    """A quotient-remainder embedding layer (chapter 14): ``nn.Module`` with two ``embedlib.torch``
    :class:`Embedding` submodules, ``.quotient`` (``ceil(V / R)`` rows) and ``.remainder`` (R rows),
    standing for a V-row table; ``forward(ids)`` is :func:`qr_lookup` and autograd trains both.

    Same arguments, initial tables (drawn by NumPy from ``seed``: the same numbers as the NumPy
    layer) and meaning as ``embedlib.numpy.QREmbedding``, whose docstring explains the default
    initialisation; plus ``device``. No two ids share both rows, unlike :class:`HashEmbedding`.
    """

    def __init__(self, num_embeddings, embedding_dim, num_remainders, *, operation="mult", init_std=1.0,
                 seed=None, device=None, dtype=None):
        super().__init__()
        v, _, r, q, dq, dr = _compositional.qr_shape(num_embeddings, embedding_dim, num_remainders, operation,
                                                    init_std)
        dtype = _torch_dtype(dtype)
        wq, wr = _compositional.initial_qr(q, r, dq, dr, operation, float(init_std), seed)
        self.quotient = Embedding.from_weight(torch.as_tensor(wq, dtype=dtype, device=device))
        self.remainder = Embedding.from_weight(torch.as_tensor(wr, dtype=dtype, device=device))
        self.num_embeddings, self.operation = v, operation

    @classmethod
    def from_weights(cls, quotient_weight, remainder_weight, *, operation="mult", num_embeddings=None):
        """A layer whose tables are trainable copies of the two tensors; it stands for
        ``num_embeddings`` ids (by default all ``Q * R`` the pair can represent)."""
        op = _compositional.operation(operation)
        wq, wr, _ = _check_tables(quotient_weight, remainder_weight, op)
        v = _compositional.represented(num_embeddings, wq.shape[0], wr.shape[0])
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.quotient, layer.remainder = Embedding.from_weight(wq), Embedding.from_weight(wr)
        layer.num_embeddings, layer.operation = v, op
        return layer

    @property
    def num_remainders(self) -> int:
        return self.remainder.num_embeddings

    @property
    def embedding_dim(self) -> int:
        dq, dr = self.quotient.embedding_dim, self.remainder.embedding_dim
        return dq + dr if self.operation == "concat" else dq

    @property
    def weight(self) -> torch.Tensor:
        """The full ``(V, D)`` table the two stand for, built on each access, without gradient (change
        ``.quotient.weight`` and ``.remainder.weight`` instead)."""
        with torch.no_grad():
            ids = torch.arange(self.num_embeddings, device=self.quotient.weight.device)
            q, r = _split(ids, self.num_remainders)
            return _combine(gather(q, self.quotient.weight), gather(r, self.remainder.weight), self.operation)

    @property
    def nbytes(self) -> int:
        """Bytes of both tables (the full table would take ``V * D * element_size``)."""
        return sum(p.numel() * p.element_size() for p in (self.quotient.weight, self.remainder.weight))

    def forward(self, indices) -> torch.Tensor:
        idx = _tensors.indices(indices, self.quotient.weight.device)
        _tensors.in_range(idx, self.num_embeddings)
        q, r = _split(idx, self.num_remainders)
        return _combine(self.quotient(q), self.remainder(r), self.operation)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, num_remainders={self.num_remainders}, "
                f"operation={self.operation!r}")


# --------------------------------------------------------------------------------------------------
# Hashed tables
# --------------------------------------------------------------------------------------------------
def hashed_lookup(indices, weight, *, num_embeddings=None, hash_seed=0):
    """The hashing trick as a lookup (chapter 14; hashing is chapter 8): ``weight[hash_bucket(indices, B,
    seed=hash_seed)]``, differentiable w.r.t. ``weight``; ids in the same bucket share a whole row.
    See ``embedlib.numpy.compositional.hashed_lookup``."""
    w = _tensors.weight(weight)
    idx = _tensors.indices(indices, w.device)
    if w.shape[0] == 0:
        raise ValueError("weight must have at least one row: its rows are the hash buckets")
    if num_embeddings is not None:
        _tensors.in_range(idx, _checks.count(num_embeddings, "num_embeddings"))
    return gather(hash_bucket(idx, w.shape[0], seed=hash_seed), w)


class HashEmbedding(nn.Module):
    """A hashed embedding layer (chapter 14; the hashing trick of chapter 8): ids ``0 .. V-1`` read
    the rows ``hash_bucket(id, num_buckets, seed=hash_seed)`` of one ``embedlib.torch``
    :class:`Embedding`, ``.table``; the V bucket ids are computed once (the buffer ``.buckets``).

    Colliding ids share a whole row, and its gradient. Same arguments, initial table (drawn by
    NumPy from ``seed``) and meaning as ``embedlib.numpy.HashEmbedding``; plus ``device``.
    """

    def __init__(self, num_embeddings, embedding_dim, num_buckets, *, hash_seed=0, init_std=1.0, seed=None,
                 device=None, dtype=None):
        super().__init__()
        num_embeddings = _checks.positive(num_embeddings, "num_embeddings")
        embedding_dim = _checks.positive(embedding_dim, "embedding_dim")
        num_buckets = _checks.positive(num_buckets, "num_buckets")
        _compositional.init_std_(init_std)
        dtype = _torch_dtype(dtype)
        buckets = hash_bucket(np.arange(num_embeddings), num_buckets, seed=hash_seed, device=device)
        w = _compositional.initial_hashed(num_buckets, embedding_dim, float(init_std), seed)
        self.table = Embedding.from_weight(torch.as_tensor(w, dtype=dtype, device=device))
        self.register_buffer("buckets", buckets, persistent=False)  # derived from hash_seed: not state
        self.hash_seed = hash_seed

    @classmethod
    def from_weight(cls, weight, num_embeddings, *, hash_seed=0):
        """A layer whose table is a trainable copy of ``weight`` (its rows are the buckets), for ids
        ``0 .. num_embeddings-1``."""
        w = _tensors.weight(weight)
        num_embeddings = _checks.positive(num_embeddings, "num_embeddings")
        if w.shape[0] == 0:
            raise ValueError("weight must have at least one row: its rows are the hash buckets")
        buckets = hash_bucket(np.arange(num_embeddings), w.shape[0], seed=hash_seed, device=w.device)
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.table = Embedding.from_weight(w)
        layer.register_buffer("buckets", buckets, persistent=False)
        layer.hash_seed = hash_seed
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
    def weight(self) -> torch.Tensor:
        """The full ``(V, D)`` table it stands for (colliding ids show the same row), without gradient."""
        with torch.no_grad():
            return self.table.weight.index_select(0, self.buckets)

    @property
    def nbytes(self) -> int:
        """Bytes of the table; the id-to-bucket buffer (8 bytes an id) is not counted."""
        return self.table.weight.numel() * self.table.weight.element_size()

    def forward(self, indices) -> torch.Tensor:
        idx = _tensors.indices(indices, self.buckets.device)
        _tensors.in_range(idx, self.num_embeddings)
        return self.table(self.buckets[idx.long()])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, num_buckets={self.num_buckets}"
