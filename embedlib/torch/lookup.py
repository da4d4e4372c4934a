"""The embedding lookup and its backward pass, in torch (chapters 2, 4, 5 and 9).

``lookup`` is an autograd Function whose backward is ``lookup_backward``: the scatter-add derived in
chapter 4, visible here instead of hidden inside PyTorch. On CUDA, when Triton is installed, both
run as the Triton kernels of chapter 9 (:mod:`embedlib.torch._triton`); elsewhere as torch
operations. The results are the same either way.
"""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.torch import _tensors, _triton, bounds
from embedlib.torch._tensors import renorm_entries_, unchecked_renorm_


def gather(idx: torch.Tensor, weight: torch.Tensor, padding_idx=None, deterministic=None,
           scale_grad_by_freq: bool = False, sparse: bool = False) -> torch.Tensor:
    """Lookup without argument checks, for callers that have checked already."""
    # torch.compile cannot trace a Function with a jvp: the same Function without one, when compiling
    function = _LookupWithoutJvp if torch.compiler.is_compiling() else _Lookup
    return function.apply(idx, weight, padding_idx, _triton.deterministic_mode(deterministic),
                          bool(scale_grad_by_freq), bool(sparse))


def frequency_scale(idx: torch.Tensor, num_embeddings: int, dtype) -> torch.Tensor:
    """``scale_grad_by_freq``: ``1 / count`` of each entry's index among all of ``idx``, shape ``idx.shape``
    (what torch multiplies each gradient row by before adding it into the table's gradient)."""
    flat = idx.reshape(-1).long()
    counts = torch.zeros(num_embeddings, dtype=torch.float64, device=idx.device).index_add_(
        0, flat, torch.ones_like(flat, dtype=torch.float64))  # a bincount of static shape
    return (1.0 / counts[flat]).to(dtype).reshape(idx.shape)


def scatter_add(idx: torch.Tensor, grad: torch.Tensor, num_embeddings: int, padding_idx=None,
                deterministic: bool = False) -> torch.Tensor:
    """``lookup_backward`` without argument checks: the gradient rows added into zeros.

    With ``deterministic`` the additions happen in an order fixed by the indices, so the result is
    the same bits on every run; otherwise the GPU may add repeated rows in any order (atomics).
    Differentiable w.r.t. ``grad``, in both modes: the backward of a scatter-add is a gather.
    """
    return _ScatterAdd.apply(idx, grad, num_embeddings, padding_idx, deterministic)


def sparse_rows(idx: torch.Tensor, grad: torch.Tensor, num_embeddings: int, padding_idx=None) -> torch.Tensor:
    """The same gradient as :func:`scatter_add`, as PyTorch's ``sparse=True`` gives it: a sparse COO
    ``(V, D)`` tensor holding one row per entry of ``idx`` (not added up: repeated indices stay
    repeated, ``coalesce()`` adds them), the entries at ``padding_idx`` left out. Differentiable
    w.r.t. ``grad``."""
    flat, rows = idx.reshape(-1).long(), grad.reshape(idx.numel(), grad.shape[-1])
    if padding_idx is not None:
        keep = flat != padding_idx
        flat, rows = flat[keep], rows[keep]
    return torch.sparse_coo_tensor(flat[None], rows, (num_embeddings, grad.shape[-1]), check_invariants=False)


def index_vector(idx: torch.Tensor) -> torch.Tensor:
    """Indices as one int32/int64 vector: the two index types PyTorch's kernels take."""
    flat = idx.reshape(-1)
    return flat if flat.dtype in (torch.int32, torch.int64) else flat.long()


def _gather(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if _triton.enabled(weight):
        return _triton.gather(idx, weight)
    return weight.index_select(0, index_vector(idx)).reshape(*idx.shape, weight.shape[1])


def _scatter_add(idx, grad, num_embeddings, padding_idx, deterministic):
    if _triton.enabled(grad):
        return _triton.scatter_add(idx, grad, num_embeddings, padding_idx, deterministic)
    dim = grad.shape[-1]
    flat_idx, flat_grad = index_vector(idx), grad.reshape(idx.numel(), dim)
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


# The autograd Functions are written in the form that torch.func accepts (a forward without ctx, then
# setup_context), with a jvp for forward-mode AD: both operations are linear in their tensor argument,
# so the tangent goes through the same operation. (_LookupWithoutJvp is _Lookup for torch.compile,
# which cannot trace a Function that has a jvp.)
class _ScatterAdd(torch.autograd.Function):
    @staticmethod
    def forward(idx, grad, num_embeddings, padding_idx, deterministic):
        return _scatter_add(idx, grad, num_embeddings, padding_idx, deterministic)

    @staticmethod
    def setup_context(ctx, inputs, output):
        idx, _, num_embeddings, padding_idx, deterministic = inputs
        ctx.save_for_backward(idx)
        ctx.save_for_forward(idx)
        ctx.num_embeddings, ctx.padding_idx, ctx.deterministic = num_embeddings, padding_idx, deterministic

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[1]:
            grad = _Lookup.apply(idx, grad_out, None, ctx.deterministic, False, False)
            if ctx.padding_idx is not None:  # the padding row was dropped, so its entries get nothing
                grad = grad.masked_fill((idx == ctx.padding_idx).unsqueeze(-1), 0)
        return None, grad, None, None, None

    @staticmethod
    def jvp(ctx, _, grad_tangent, *__):
        (idx,) = ctx.saved_tensors
        return _ScatterAdd.apply(idx, grad_tangent, ctx.num_embeddings, ctx.padding_idx, ctx.deterministic)


class _LookupWithoutJvp(torch.autograd.Function):
    @staticmethod
    def forward(idx, weight, padding_idx, deterministic, scale_grad_by_freq=False, sparse=False):
        return _gather(idx, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        idx, weight, padding_idx, deterministic, scale_grad_by_freq, sparse = inputs
        ctx.save_for_backward(idx)
        ctx.save_for_forward(idx)
        ctx.num_embeddings, ctx.padding_idx, ctx.deterministic = weight.shape[0], padding_idx, deterministic
        ctx.scale_grad_by_freq, ctx.sparse = scale_grad_by_freq, sparse

    @staticmethod
    def backward(ctx, grad_output):
        (idx,) = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[1]:
            if ctx.scale_grad_by_freq:  # each row's gradient divided by how often its index appears
                grad_output = grad_output * frequency_scale(idx, ctx.num_embeddings, grad_output.dtype)[..., None]
            if ctx.sparse:
                grad = sparse_rows(idx, grad_output, ctx.num_embeddings, ctx.padding_idx)
            else:
                grad = scatter_add(idx, grad_output, ctx.num_embeddings, ctx.padding_idx, ctx.deterministic)
        return None, grad, None, None, None, None



class _Lookup(_LookupWithoutJvp):
    @staticmethod
    def jvp(ctx, _, weight_tangent, *__):
        (idx,) = ctx.saved_tensors  # (the tangent is torch.func's wrapped tensor: through the Function again)
        return _Lookup.apply(idx, weight_tangent, None, ctx.deterministic, False, False)


def deferred(idx, w, record, pad, limit, norm_type, deterministic, scale_grad_by_freq, sparse) -> torch.Tensor:
    """A lookup with ``bounds_check="deferred"`` (:mod:`embedlib.torch.bounds`): out-of-range indices
    are recorded in ``record`` and read zero rows that send no gradient; no host sync."""
    record.poll()
    flat = index_vector(idx)
    safe, bad = record.indices(flat, w.shape[0])
    if w.shape[0] == 0:  # every index is out of range: zeros (+ the empty table's sum: in its graph)
        out = w.new_zeros(*idx.shape, w.shape[1]) + w.sum()
    else:
        if limit is not None:
            renorm_entries_(w, safe, limit, norm_type, (~bad).any())
        out = gather(safe.reshape(idx.shape), w, pad, deterministic, scale_grad_by_freq, sparse)
        out = out.masked_fill(bad.reshape(*idx.shape, 1), 0)
    record.after_call()
    return out


def lookup(indices, weight, *, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
           sparse=False, deterministic=None, bounds_check="immediate"):
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
    of times its index appears in ``indices``. With ``sparse=True``, as ``F.embedding``: the weight's
    gradient is a sparse COO tensor with one row per index (see :func:`sparse_rows`), which
    ``torch.optim.SGD``, ``SparseAdam`` and ``Adagrad`` take (with ``scale_grad_by_freq`` too, each row
    divided by its index's count, where torch's backward fails).
    ``bounds_check="deferred"`` checks the indices on the device, without a host sync, and raises at a
    later call (see :mod:`embedlib.torch.bounds`); the default, "immediate", raises before anything runs.
    """
    w = _tensors.weight(weight)
    sparse = _checks.sparse_gradients(sparse)
    idx = _tensors.indices(indices, w.device)
    if bounds.mode(bounds_check) == "deferred":
        return deferred(idx, w, bounds.record_for(bounds_check, w.device), _checks.padding_idx(padding_idx, w.shape[0]),
                        _checks.max_norm(max_norm, norm_type), float(norm_type),
                        _triton.deterministic_mode(deterministic), bool(scale_grad_by_freq), sparse)
    _tensors.in_range(idx, w.shape[0])
    pad = _checks.padding_idx(padding_idx, w.shape[0])
    limit = _checks.max_norm(max_norm, norm_type)
    mode = _triton.deterministic_mode(deterministic)
    if limit is not None:
        unchecked_renorm_(w, idx, limit, float(norm_type))
    return gather(idx, w, pad, mode, bool(scale_grad_by_freq), sparse)


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
