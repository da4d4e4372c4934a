"""The embedding lookup and its backward pass, in torch (chapters 2, 4, 5 and 9).

``lookup`` is an autograd Function whose backward is ``lookup_backward``: the scatter-add derived in
chapter 4, visible here instead of hidden inside PyTorch. On CUDA, when Triton is installed, both
run as the Triton kernels of chapter 9 (:mod:`embedlib.torch._triton`); elsewhere as torch
operations. The results are the same either way.
"""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.torch import _tensors, _triton
from embedlib.torch._tensors import unchecked_renorm_


def gather(idx: torch.Tensor, weight: torch.Tensor, padding_idx=None, deterministic=None,
           scale_grad_by_freq: bool = False) -> torch.Tensor:
    """Lookup without argument checks, for callers that have checked already."""
    return _Lookup.apply(idx, weight, padding_idx, _triton.deterministic_mode(deterministic),
                         bool(scale_grad_by_freq))


def frequency_scale(idx: torch.Tensor, num_embeddings: int, dtype) -> torch.Tensor:
    """``scale_grad_by_freq``: ``1 / count`` of each entry's index among all of ``idx``, shape ``idx.shape``
    (what torch multiplies each gradient row by before adding it into the table's gradient)."""
    flat = idx.reshape(-1).long()
    counts = torch.bincount(flat, minlength=num_embeddings)
    return (1.0 / counts[flat].double()).to(dtype).reshape(idx.shape)


def scatter_add(idx: torch.Tensor, grad: torch.Tensor, num_embeddings: int, padding_idx=None,
                deterministic: bool = False) -> torch.Tensor:
    """``lookup_backward`` without argument checks: the gradient rows added into zeros.

    With ``deterministic`` the additions happen in an order fixed by the indices, so the result is
    the same bits on every run; otherwise the GPU may add repeated rows in any order (atomics).
    Differentiable w.r.t. ``grad``: the backward of a scatter-add is a gather.
    """
    return _ScatterAdd.apply(idx, grad, num_embeddings, padding_idx, deterministic)


def _index_vector(idx: torch.Tensor) -> torch.Tensor:
    """Indices as one int32/int64 vector: the two index types PyTorch's kernels take."""
    flat = idx.reshape(-1)
    return flat if flat.dtype in (torch.int32, torch.int64) else flat.long()


def _scatter_add(idx, grad, num_embeddings, padding_idx, deterministic):
    if _triton.enabled(grad):
        return _triton.scatter_add(idx, grad, num_embeddings, padding_idx, deterministic)
    dim = grad.shape[-1]
    flat_idx, flat_grad = _index_vector(idx), grad.reshape(idx.numel(), dim)
    if grad.device.type == "cpu" or deterministic:
        # PyTorch's own embedding backward (what F.embedding's autograd runs): on the CPU it adds the
        # rows in the order of the indices, the same bits as index_add and as fast; on CUDA it sorts
        # instead of using atomics, so the result is deterministic. The padding row gets nothing.
        return torch.ops.aten.embedding_dense_backward(flat_grad, flat_idx, num_embeddings,
                                                       -1 if padding_idx is None else padding_idx, False)
    out = torch.zeros(num_embeddings, dim, dtype=grad.dtype, device=grad.device)
    out.index_add_(0, flat_idx, flat_grad)  # atomics on CUDA
    if padding_idx is not None:
        out[padding_idx] = 0
    return out


class _ScatterAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx, grad, num_embeddings, padding_idx, deterministic):
        ctx.save_for_backward(idx)
        ctx.padding_idx, ctx.deterministic = padding_idx, deterministic
        return _scatter_add(idx, grad, num_embeddings, padding_idx, deterministic)

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[1]:
            grad = _Lookup.apply(idx, grad_out, None, ctx.deterministic)
            if ctx.padding_idx is not None:  # the padding row was dropped, so its entries get nothing
                grad = grad.masked_fill((idx == ctx.padding_idx).unsqueeze(-1), 0)
        return None, grad, None, None, None


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx, weight, padding_idx, deterministic, scale_grad_by_freq=False):
        ctx.save_for_backward(idx)
        ctx.num_embeddings, ctx.padding_idx, ctx.deterministic = weight.shape[0], padding_idx, deterministic
        ctx.scale_grad_by_freq = scale_grad_by_freq
        if _triton.enabled(weight):
            return _triton.gather(idx, weight)
        return weight.index_select(0, _index_vector(idx)).reshape(*idx.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad_output):
        (idx,) = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[1]:
            if ctx.scale_grad_by_freq:  # each row's gradient divided by how often its index appears
                grad_output = grad_output * frequency_scale(idx, ctx.num_embeddings, grad_output.dtype)[..., None]
            grad = scatter_add(idx, grad_output, ctx.num_embeddings, ctx.padding_idx, ctx.deterministic)
        return None, grad, None, None, None


def lookup(indices, weight, *, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
           deterministic=None):
    """The lookup (chapters 2 and 5): rows of ``weight`` selected by ``indices``, shape
    ``(*indices.shape, D)``, differentiable.

    Same values as ``torch.nn.functional.embedding(indices, weight, padding_idx)``; the
    ``padding_idx`` row receives no gradient. Indices are range-checked before anything runs.
    ``deterministic`` chooses the backward: True adds repeated rows in a fixed order (the same bits
    on every run), False lets the GPU use atomic adds (faster), None (the default) follows
    ``torch.are_deterministic_algorithms_enabled()``. On the CPU every choice is deterministic.
    With ``max_norm``, as ``F.embedding``: the rows named by ``indices`` whose ``norm_type``-norm
    exceeds it are rescaled in place in ``weight`` first (outside autograd), after every check.
    With ``scale_grad_by_freq``, as ``F.embedding``: the gradient of each row is divided by the number
    of times its index appears in ``indices``.
    """
    w = _tensors.weight(weight)
    idx = _tensors.indices(indices, w.device)
    _tensors.in_range(idx, w.shape[0])
    pad = _checks.padding_idx(padding_idx, w.shape[0])
    limit = _checks.max_norm(max_norm, norm_type)
    mode = _triton.deterministic_mode(deterministic)
    if limit is not None:
        unchecked_renorm_(w, idx, limit, float(norm_type))
    return gather(idx, w, pad, mode, bool(scale_grad_by_freq))


def lookup_backward(indices, grad_output, num_embeddings, *, padding_idx=None, deterministic=None):
    """The backward pass (chapter 4), gradient of ``lookup`` w.r.t. the weight:
    ``one_hot(indices).T @ grad_output``, shape ``(V, D)``.

    Repeated indices add up; the ``padding_idx`` row is zero. Differentiable w.r.t. ``grad_output``.
    ``deterministic`` as in :func:`lookup`.
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
    return scatter_add(idx, g, num_embeddings, pad, _triton.deterministic_mode(deterministic))
