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


def _divide_by_counts(rows, sums, all_rows):
    """``scale_grad_by_freq``: each summed row divided by the number of times it appears in ``all_rows``."""
    if rows.size == 0:
        return sums
    counts = np.bincount(np.asarray(all_rows, dtype=np.int64), minlength=int(rows.max()) + 1)[rows]
    return sums / counts.astype(sums.dtype)[:, None]


class _Table:
    """What both layers share: the weight, its options, the sparse gradient and the SGD step."""

    #: divide each row's gradient by the number of times its index appears in the batch (as torch)
    scale_grad_by_freq = False
    #: accepted as in torch (where torch accepts it); the NumPy gradient is a SparseGrad either way
    sparse = False

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None,
                 dtype=np.float32, *, seed=None):
        num_embeddings = _checks.count(num_embeddings, "num_embeddings")
        embedding_dim = _checks.count(embedding_dim, "embedding_dim")
        _checks.padding_idx(padding_idx, num_embeddings)
        _checks.max_norm(max_norm, norm_type)
        # the NumPy backward always returns a SparseGrad; sparse=True is refused where torch refuses it
        sparse = _checks.sparse_gradients(sparse, getattr(self, "mode", None))
        if device not in (None, "cpu"):
            raise ValueError(f"the NumPy layers live on the CPU: device must be None or 'cpu', got {device!r}")
        if _weight is not None:  # as torch: the layer holds _weight itself, padding row as given
            if not isinstance(_weight, np.ndarray):
                raise TypeError(f"_weight must be a NumPy array (it is shared, not copied), got "
                                f"{type(_weight).__name__}")
            weight = _arrays.weight(_weight, "_weight")
            if weight.shape != (num_embeddings, embedding_dim):
                raise ValueError(f"_weight must have shape (num_embeddings, embedding_dim) = "
                                 f"{(num_embeddings, embedding_dim)}, got {weight.shape}")
            if seed is not None:
                raise ValueError("seed chooses random initial weights: it has no meaning with _weight")
        else:
            weight = np.random.default_rng(seed).standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        self.scale_grad_by_freq, self.sparse = bool(scale_grad_by_freq), sparse
        self._setup(weight, padding_idx, max_norm, norm_type)
        self.frozen = bool(_freeze)
        if self.padding_idx is not None and _weight is None:
            self.weight[self.padding_idx] = 0

    def _setup(self, weight, padding_idx, max_norm, norm_type):
        self.padding_idx = _checks.padding_idx(padding_idx, weight.shape[0])
        self.max_norm = _checks.max_norm(max_norm, norm_type)
        self.norm_type = float(norm_type)
        self.weight = weight
        self.grad = None
        self._saved = None
        self.frozen = False

    @classmethod
    def from_weight(cls, weight, *, padding_idx=None, max_norm=None, norm_type=2.0, **options):
        """A layer holding a copy of ``weight`` (the padding row is used as given, not zeroed)."""
        options["scale_grad_by_freq"] = bool(options.get("scale_grad_by_freq", False))
        layer = cls.__new__(cls)
        for name, value in options.items():
            setattr(layer, name, value)
        layer._setup(_arrays.weight(weight).copy(), padding_idx, max_norm, norm_type)
        return layer

    @classmethod
    def _pretrained(cls, embeddings, freeze, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                    **options):
        if not isinstance(embeddings, np.ndarray):
            raise TypeError(f"from_pretrained shares the array embeddings, so it must be a NumPy array, got "
                            f"{type(embeddings).__name__} (from_weight copies any array-like)")
        w = _arrays.weight(embeddings, "embeddings")
        padding_idx = _checks.padding_idx(padding_idx, w.shape[0])
        _checks.max_norm(max_norm, norm_type)
        sparse = _checks.sparse_gradients(sparse, options.get("mode"))
        layer = cls.__new__(cls)
        for name, value in options.items():
            setattr(layer, name, value)
        layer.scale_grad_by_freq, layer.sparse = bool(scale_grad_by_freq), sparse
        layer._setup(w, padding_idx, max_norm, norm_type)
        layer.frozen = bool(freeze)
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
        """Add a sparse gradient to ``self.grad`` (gradients accumulate until ``zero_grad``, as in torch).
        A frozen layer (``from_pretrained(..., freeze=True)``) keeps no gradient: it is returned only."""
        if self.padding_idx is not None:
            keep = rows != self.padding_idx
            rows, values = rows[keep], values[keep]
        if self.frozen:
            return SparseGrad(rows, values.astype(self.weight.dtype, copy=False))
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

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """As ``nn.Embedding.from_pretrained``: the layer holds the NumPy array ``embeddings`` itself (no
        copy: ``max_norm`` and ``step`` change it), and with ``freeze=True`` keeps no gradient, so ``step``
        leaves it unchanged. The padding row is used as given. :meth:`from_weight` copies instead."""
        return cls._pretrained(embeddings, freeze, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)

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
        rows, sums = _segments.segment_sum(idx.reshape(-1), g.reshape(idx.size, self.embedding_dim))
        if self.scale_grad_by_freq:
            sums = _divide_by_counts(rows, sums, idx.reshape(-1))
        return self._accumulate(rows, sums)


class EmbeddingBag(_Table):
    """A bag layer in NumPy (chapters 4 and 8): each bag of indices becomes the sum, mean or max of its rows.

    Matches ``torch.nn.EmbeddingBag``: ``forward(indices, offsets=None, per_sample_weights=None)``.
    """

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                 mode="mean", sparse=False, _weight=None, include_last_offset=False, padding_idx=None, device=None,
                 dtype=np.float32, *, seed=None):
        _checks.bag_mode(mode, False)
        _checks.bag_scale_grad_by_freq(mode, scale_grad_by_freq)
        self.mode, self.include_last_offset = mode, bool(include_last_offset)
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, max_norm=max_norm,
                         norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=_weight,
                         device=device, dtype=dtype, seed=seed)

    @classmethod
    def from_weight(cls, weight, *, mode="mean", padding_idx=None, max_norm=None, norm_type=2.0,
                    include_last_offset=False, scale_grad_by_freq=False):
        _checks.bag_mode(mode, False)
        _checks.bag_scale_grad_by_freq(mode, scale_grad_by_freq)
        return super().from_weight(weight, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                                   mode=mode, include_last_offset=bool(include_last_offset),
                                   scale_grad_by_freq=scale_grad_by_freq)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                        mode="mean", sparse=False, include_last_offset=False, padding_idx=None):
        """As ``nn.EmbeddingBag.from_pretrained`` (see :meth:`Embedding.from_pretrained`): shares the array."""
        _checks.bag_mode(mode, False)
        _checks.bag_scale_grad_by_freq(mode, scale_grad_by_freq)
        return cls._pretrained(embeddings, freeze, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse, mode=mode,
                               include_last_offset=bool(include_last_offset))

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
        rows, sums = bag.backward(p, argmax, g)
        if self.scale_grad_by_freq:  # counts over the whole input (a padding row gets no gradient anyway)
            sums = _divide_by_counts(rows, sums, p.rows)
        return self._accumulate(rows, sums)
