"""The layers: weights plus forward, backward and an SGD step, thin over the functions (chapter 4)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays, _segments, bag
from embedlib.numpy.renorm import unchecked_renorm_


class SparseGrad(NamedTuple):
    """The gradient of a table where only some rows are non-zero: ``weight_grad[rows] == values``."""

    rows: np.ndarray  # (n,) distinct row ids, ascending
    values: np.ndarray  # (n, D)

    def to_dense(self, num_embeddings: int) -> np.ndarray:
        out = np.zeros((num_embeddings, self.values.shape[1]), dtype=self.values.dtype)
        out[self.rows] = self.values
        return out


class _Table:
    """What both layers share: the weight, its options, the sparse gradient and the SGD step."""

    def __init__(self, num_embeddings, embedding_dim, *, padding_idx=None, max_norm=None, norm_type=2.0,
                 seed=None, dtype=np.float32):
        num_embeddings = _checks.count(num_embeddings, "num_embeddings")
        embedding_dim = _checks.count(embedding_dim, "embedding_dim")
        weight = np.random.default_rng(seed).standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        self._setup(weight, padding_idx, max_norm, norm_type)
        if self.padding_idx is not None:
            self.weight[self.padding_idx] = 0

    def _setup(self, weight, padding_idx, max_norm, norm_type):
        self.padding_idx = _checks.padding_idx(padding_idx, weight.shape[0])
        self.max_norm = _checks.max_norm(max_norm, norm_type)
        self.norm_type = float(norm_type)
        self.weight = weight
        self.grad = None
        self._saved = None

    @classmethod
    def from_weight(cls, weight, *, padding_idx=None, max_norm=None, norm_type=2.0, **options):
        """A layer holding a copy of ``weight`` (the padding row is used as given, not zeroed)."""
        layer = cls.__new__(cls)
        for name, value in options.items():
            setattr(layer, name, value)
        layer._setup(_arrays.weight(weight).copy(), padding_idx, max_norm, norm_type)
        return layer

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _accumulate(self, rows, values):
        """Add a sparse gradient to ``self.grad`` (gradients accumulate until ``zero_grad``, as in torch)."""
        if self.padding_idx is not None:
            keep = rows != self.padding_idx
            rows, values = rows[keep], values[keep]
        if self.grad is not None:
            rows, values = _segments.segment_sum(np.r_[self.grad.rows, rows], np.concatenate([self.grad.values, values]))
        self.grad = SparseGrad(rows, values.astype(self.weight.dtype, copy=False))
        return self.grad

    def _saved_or_raise(self):
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first: it uses the indices of the last forward")
        return self._saved

    def step(self, lr: float) -> None:
        """Plain SGD on the touched rows only: ``weight[rows] -= lr * grad`` (rows are distinct)."""
        if self.grad is not None:
            self.weight[self.grad.rows] -= np.asarray(lr, dtype=self.weight.dtype) * self.grad.values

    def zero_grad(self) -> None:
        self.grad = None

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("padding_idx", "max_norm", "mode")
                        if getattr(self, k, None) is not None)
        return f"{type(self).__name__}({self.num_embeddings}, {self.embedding_dim}{extra})"


class Embedding(_Table):
    """An embedding layer in NumPy (chapter 4): ``forward`` looks rows up, ``backward`` returns their sparse
    gradient, ``step`` updates only those rows.

    Matches ``torch.nn.Embedding``: N(0, 1) initial weights, a zero and never-updated ``padding_idx``
    row, and ``max_norm`` rescaling the looked-up rows in place during ``forward``.
    """

    def forward(self, indices):
        idx = _arrays.indices(indices)
        _arrays.in_range(idx, self.num_embeddings)
        if self.max_norm is not None:
            unchecked_renorm_(self.weight, idx, self.max_norm, self.norm_type)
        self._saved = idx
        return np.take(self.weight, idx, axis=0)

    def backward(self, grad_output) -> SparseGrad:
        """Add the gradient of the last forward's output to ``self.grad`` (touched rows only)."""
        idx = self._saved_or_raise()
        g = _arrays.floats(grad_output, "grad_output")
        _checks.same_shape(g.shape, idx.shape + (self.embedding_dim,), "grad_output", "the shape of the last output")
        return self._accumulate(*_segments.segment_sum(idx.reshape(-1), g.reshape(idx.size, self.embedding_dim)))


class EmbeddingBag(_Table):
    """A bag layer in NumPy (chapters 4 and 8): each bag of indices becomes the sum, mean or max of its rows.

    Matches ``torch.nn.EmbeddingBag``: ``forward(indices, offsets=None, per_sample_weights=None)``.
    """

    def __init__(self, num_embeddings, embedding_dim, *, mode="mean", padding_idx=None, max_norm=None,
                 norm_type=2.0, include_last_offset=False, seed=None, dtype=np.float32):
        _checks.bag_mode(mode, False)
        self.mode, self.include_last_offset = mode, bool(include_last_offset)
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, max_norm=max_norm,
                         norm_type=norm_type, seed=seed, dtype=dtype)

    @classmethod
    def from_weight(cls, weight, *, mode="mean", padding_idx=None, max_norm=None, norm_type=2.0,
                    include_last_offset=False):
        _checks.bag_mode(mode, False)
        return super().from_weight(weight, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                                   mode=mode, include_last_offset=bool(include_last_offset))

    def forward(self, indices, offsets=None, per_sample_weights=None):
        p = bag.plan(indices, self.num_embeddings, offsets, mode=self.mode, per_sample_weights=per_sample_weights,
                     padding_idx=self.padding_idx, include_last_offset=self.include_last_offset,
                     dtype=self.weight.dtype)
        if self.max_norm is not None:  # torch renormalises every row the input names
            unchecked_renorm_(self.weight, np.asarray(indices), self.max_norm, self.norm_type)
        out, argmax = bag.forward(p, self.weight)
        self._saved = (p, argmax)
        return out

    def backward(self, grad_output) -> SparseGrad:
        p, argmax = self._saved_or_raise()
        g = _arrays.floats(grad_output, "grad_output")
        _checks.same_shape(g.shape, (p.num_bags, self.embedding_dim), "grad_output", "the shape of the last output")
        return self._accumulate(*bag.backward(p, argmax, g))
