"""The layers as ``torch.nn.Module``s, thin over the functions (chapter 5).

Same outputs and gradients as ``torch.nn.Embedding`` / ``torch.nn.EmbeddingBag`` given the same
weight and options; every argument is checked before the weight can change.
"""
from __future__ import annotations

import torch
from torch import nn

from embedlib import _checks
from embedlib.torch import _tensors, bag
from embedlib.torch.lookup import gather
from embedlib.torch.renorm import unchecked_renorm_


class _Table(nn.Module):
    """What both layers share: the weight Parameter, its initialisation and its options."""

    def __init__(self, num_embeddings, embedding_dim, *, padding_idx=None, max_norm=None, norm_type=2.0,
                 seed=None, device=None, dtype=None):
        super().__init__()
        num_embeddings = _checks.count(num_embeddings, "num_embeddings")
        embedding_dim = _checks.count(embedding_dim, "embedding_dim")
        self.padding_idx = _checks.padding_idx(padding_idx, num_embeddings)
        self.max_norm = _checks.max_norm(max_norm, norm_type)
        self.norm_type = float(norm_type)
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters(seed)

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

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight.shape[1]

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("padding_idx", "max_norm", "mode")
                        if getattr(self, k, None) is not None)
        return f"{self.num_embeddings}, {self.embedding_dim}{extra}"


class Embedding(_Table):
    """An embedding layer (chapter 5): ``forward(indices)`` returns ``weight[indices]``, matching ``nn.Embedding``
    (zero, never-updated ``padding_idx`` row; ``max_norm`` rescales looked-up rows in place)."""

    def forward(self, indices) -> torch.Tensor:
        idx = _tensors.indices(indices, self.weight.device)
        _tensors.in_range(idx, self.num_embeddings)
        if self.max_norm is not None:
            unchecked_renorm_(self.weight, idx, self.max_norm, self.norm_type)
        return gather(idx, self.weight, self.padding_idx)


class EmbeddingBag(_Table):
    """A bag layer (chapters 5 and 8): ``forward(indices, offsets=None, per_sample_weights=None)``, matching
    ``nn.EmbeddingBag`` (modes "sum", "mean", "max"; ``padding_idx``; ``include_last_offset``)."""

    def __init__(self, num_embeddings, embedding_dim, *, mode="mean", padding_idx=None, max_norm=None,
                 norm_type=2.0, include_last_offset=False, seed=None, device=None, dtype=None):
        _checks.bag_mode(mode, False)
        self.mode, self.include_last_offset = mode, bool(include_last_offset)
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, max_norm=max_norm,
                         norm_type=norm_type, seed=seed, device=device, dtype=dtype)

    def forward(self, indices, offsets=None, per_sample_weights=None) -> torch.Tensor:
        c = bag.check(indices, self.num_embeddings, offsets, mode=self.mode, per_sample_weights=per_sample_weights,
                      padding_idx=self.padding_idx, include_last_offset=self.include_last_offset,
                      device=self.weight.device)
        if self.max_norm is not None:  # torch renormalises every row the input names
            unchecked_renorm_(self.weight, c.flat, self.max_norm, self.norm_type)
        return bag.run(c, self.weight, self.mode)
