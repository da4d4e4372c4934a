"""The embedding lookup and its backward pass, in torch (chapters 2, 4 and 5).

``lookup`` is an autograd Function whose backward is ``lookup_backward``: the scatter-add derived in
chapter 4, visible here instead of hidden inside PyTorch.
"""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.torch import _tensors


def gather(idx: torch.Tensor, weight: torch.Tensor, padding_idx=None) -> torch.Tensor:
    """Lookup without argument checks, for callers that have checked already."""
    return _Lookup.apply(idx, weight, padding_idx)


def scatter_add(idx: torch.Tensor, grad: torch.Tensor, num_embeddings: int, padding_idx=None) -> torch.Tensor:
    """``lookup_backward`` without argument checks: index_add of the gradient rows into zeros."""
    dim = grad.shape[-1]
    out = torch.zeros(num_embeddings, dim, dtype=grad.dtype, device=grad.device)
    out = out.index_add(0, idx.reshape(-1).long(), grad.reshape(-1, dim))
    if padding_idx is not None:
        out = out.index_fill(0, torch.tensor([padding_idx], device=out.device), 0)
    return out


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx, weight, padding_idx):
        ctx.save_for_backward(idx)
        ctx.num_embeddings, ctx.padding_idx = weight.shape[0], padding_idx
        flat = weight.index_select(0, idx.reshape(-1).long())
        return flat.reshape(*idx.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad_output):
        (idx,) = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[1]:
            grad = scatter_add(idx, grad_output, ctx.num_embeddings, ctx.padding_idx)
        return None, grad, None


def lookup(indices, weight, *, padding_idx=None):
    """Rows of ``weight`` selected by ``indices``: shape ``(*indices.shape, D)``, differentiable.

    Same values as ``torch.nn.functional.embedding(indices, weight, padding_idx)``; the
    ``padding_idx`` row receives no gradient. Indices are range-checked before anything runs.
    """
    w = _tensors.weight(weight)
    idx = _tensors.indices(indices, w.device)
    _tensors.in_range(idx, w.shape[0])
    pad = _checks.padding_idx(padding_idx, w.shape[0])
    return gather(idx, w, pad)


def lookup_backward(indices, grad_output, num_embeddings, *, padding_idx=None):
    """Gradient of ``lookup`` w.r.t. the weight: ``one_hot(indices).T @ grad_output``, shape ``(V, D)``.

    Repeated indices add up; the ``padding_idx`` row is zero. Differentiable w.r.t. ``grad_output``.
    """
    num_embeddings = _checks.count(num_embeddings, "num_embeddings")
    g = _tensors.floats(grad_output, "grad_output")
    idx = _tensors.indices(indices, g.device)
    if g.dim() != idx.dim() + 1 or tuple(g.shape[:-1]) != tuple(idx.shape):
        raise ValueError(
            f"grad_output must have shape (*indices.shape, embedding_dim) = {tuple(idx.shape) + ('D',)}, "
            f"got {tuple(g.shape)}"
        )
    _tensors.in_range(idx, num_embeddings)
    pad = _checks.padding_idx(padding_idx, num_embeddings)
    return scatter_add(idx, g, num_embeddings, pad)
