"""The layers as ``torch.nn.Module``s, thin over the functions (chapter 5).

Same outputs and gradients as ``torch.nn.Embedding`` / ``torch.nn.EmbeddingBag`` given the same
weight and options; every argument is checked before the weight can change.
"""
from __future__ import annotations

import torch
from torch import nn

from embedlib import _checks
from embedlib.torch import _tensors, bag, bounds
from embedlib.torch.lookup import deferred, gather
from embedlib.torch._tensors import unchecked_renorm_


class _Table(nn.Module):
    """What both layers share: the weight Parameter, its initialisation and its options."""

    def __init__(self, num_embeddings, embedding_dim, *, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, seed=None, device=None,
                 dtype=None, mode=None, bounds_check="immediate"):
        super().__init__()
        num_embeddings = _checks.count(num_embeddings, "num_embeddings")
        embedding_dim = _checks.count(embedding_dim, "embedding_dim")
        padding_idx = _checks.padding_idx(padding_idx, num_embeddings)
        limit = _checks.max_norm(max_norm, norm_type)
        sparse = _checks.sparse_gradients(sparse, mode)
        if _weight is not None:
            w = _tensors.weight(_weight, "_weight")
            if tuple(w.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"_weight must have shape (num_embeddings, embedding_dim) = "
                                 f"{(num_embeddings, embedding_dim)}, got {tuple(w.shape)}")
            if seed is not None:
                raise ValueError("seed chooses random initial weights: it has no meaning with _weight")
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, limit, float(norm_type)
        self.scale_grad_by_freq, self.sparse = bool(scale_grad_by_freq), sparse
        self.bounds_check = bounds.mode(bounds_check, record_allowed=False)
        if _weight is None:
            self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype),
                                       requires_grad=not _freeze)
            self.reset_parameters(seed)
        else:  # as torch: the Parameter shares _weight's memory, and its padding row is used as given
            self.weight = nn.Parameter(w, requires_grad=not _freeze)
        if self.bounds_check == "deferred":  # the record moves with the layer; it is no part of its state_dict
            self.register_buffer("bounds_state", bounds.empty_state(self.weight.device), persistent=False)
            self._bounds = bounds.BoundsRecord(state=self.bounds_state)

    @torch.no_grad()
    def reset_parameters(self, seed=None) -> None:
        """N(0, 1) entries, as torch's layers; a given ``seed`` makes them reproducible on any device."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.weight.copy_(torch.randn(self.weight.shape, generator=generator, dtype=self.weight.dtype))
        if self.padding_idx is not None:
            self.weight[self.padding_idx].fill_(0)

    @classmethod
    def from_weight(cls, weight, *, padding_idx=None, max_norm=None, norm_type=2.0, **options):
        """A layer whose weight is a trainable copy of ``weight`` (the padding row is used as given)."""
        w = _tensors.weight(weight)
        layer = cls(w.shape[0], w.shape[1], padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                    device=w.device, dtype=w.dtype, **options)
        with torch.no_grad():
            layer.weight.copy_(w)
        return layer

    def check_bounds(self) -> None:
        """With ``bounds_check="deferred"``: wait for the device, then raise the error that an earlier
        call's indices (or offsets) recorded, if any (see :mod:`embedlib.torch.bounds`)."""
        if self.bounds_check == "deferred":
            self._bounds.use(self.bounds_state).check()

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def extra_repr(self) -> str:
        """As torch's layers: the options that differ from the defaults, in torch's order."""
        names = (("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq") if isinstance(self, Embedding)
                 else ("max_norm", "norm_type", "scale_grad_by_freq", "mode", "padding_idx"))
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in names
                        if getattr(self, k, None) is not None and getattr(self, k) is not False
                        and not (k == "norm_type" and self.norm_type == 2))
        return f"{self.num_embeddings}, {self.embedding_dim}{extra}"


class Embedding(_Table):
    """An embedding layer (chapter 5): ``forward(indices)`` returns ``weight[indices]``, matching ``nn.Embedding``
    (zero, never-updated ``padding_idx`` row; ``max_norm`` rescales looked-up rows in place).

    The arguments are ``nn.Embedding``'s, in its order; ``seed`` (keyword only) makes the initial weights
    reproducible. ``sparse=True`` makes the weight's gradient a sparse COO tensor (for
    ``torch.optim.SGD``, ``SparseAdam`` or ``Adagrad``), as in ``nn.Embedding``."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None,
                 *, seed=None, bounds_check="immediate"):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, max_norm=max_norm,
                         norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse,
                         _weight=_weight, _freeze=_freeze, seed=seed, device=device, dtype=dtype,
                         bounds_check=bounds_check)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """As ``nn.Embedding.from_pretrained``: the layer's weight Parameter shares ``embeddings``' memory
        (``max_norm`` and training change ``embeddings`` itself), trainable only with ``freeze=False``;
        the padding row is used as given. :meth:`from_weight` copies instead."""
        w = _tensors.weight(embeddings, "embeddings")
        return cls(w.shape[0], w.shape[1], padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=w, _freeze=freeze)

    def forward(self, indices) -> torch.Tensor:
        idx = _tensors.indices(indices, self.weight.device)
        if self.bounds_check == "deferred":
            return deferred(idx, self.weight, self._bounds.use(self.bounds_state), self.padding_idx, self.max_norm,
                            self.norm_type, None, self.scale_grad_by_freq, self.sparse)
        _tensors.in_range(idx, self.num_embeddings)
        if self.max_norm is not None:
            unchecked_renorm_(self.weight, idx, self.max_norm, self.norm_type)
        return gather(idx, self.weight, self.padding_idx, scale_grad_by_freq=self.scale_grad_by_freq,
                      sparse=self.sparse)


class EmbeddingBag(_Table):
    """A bag layer (chapters 5 and 8): ``forward(indices, offsets=None, per_sample_weights=None)``, matching
    ``nn.EmbeddingBag`` (modes "sum", "mean", "max"; ``padding_idx``; ``include_last_offset``)."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                 mode="mean", sparse=False, _weight=None, include_last_offset=False, padding_idx=None, device=None,
                 dtype=None, *, seed=None, bounds_check="immediate"):
        _checks.bag_mode(mode, False)
        _checks.bag_scale_grad_by_freq(mode, scale_grad_by_freq)
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, max_norm=max_norm,
                         norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse,
                         _weight=_weight, seed=seed, device=device, dtype=dtype, mode=mode, bounds_check=bounds_check)
        self.mode, self.include_last_offset = mode, bool(include_last_offset)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                        mode="mean", sparse=False, include_last_offset=False, padding_idx=None):
        """As ``nn.EmbeddingBag.from_pretrained``: the weight Parameter shares ``embeddings``' memory,
        trainable only with ``freeze=False``; the padding row is used as given."""
        w = _tensors.weight(embeddings, "embeddings")
        layer = cls(w.shape[0], w.shape[1], max_norm=max_norm, norm_type=norm_type,
                    scale_grad_by_freq=scale_grad_by_freq, mode=mode, sparse=sparse, _weight=w,
                    include_last_offset=include_last_offset, padding_idx=padding_idx)
        layer.weight.requires_grad_(not freeze)
        return layer

    def forward(self, indices, offsets=None, per_sample_weights=None) -> torch.Tensor:
        if self.bounds_check == "deferred":
            return bag.deferred(indices, self.weight, offsets, self._bounds.use(self.bounds_state), mode=self.mode,
                                per_sample_weights=per_sample_weights, padding_idx=self.padding_idx,
                                include_last_offset=self.include_last_offset, max_norm=self.max_norm,
                                norm_type=self.norm_type, scale_grad_by_freq=self.scale_grad_by_freq,
                                sparse=self.sparse)
        c = bag.check(indices, self.num_embeddings, offsets, mode=self.mode, per_sample_weights=per_sample_weights,
                      padding_idx=self.padding_idx, include_last_offset=self.include_last_offset,
                      device=self.weight.device, dtype=self.weight.dtype)
        if self.max_norm is not None:  # torch renormalises every row the input names
            unchecked_renorm_(self.weight, c.flat, self.max_norm, self.norm_type)
        return bag.run(c, self.weight, self.mode, self.scale_grad_by_freq, self.sparse)
