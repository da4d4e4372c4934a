"""When ``embedlib.torch`` uses its Triton kernels, and the autograd glue around them (chapter 9).

The kernels (:mod:`embedlib.torch._triton.kernels`) run when the weight is a CUDA tensor and
``triton`` imports; everywhere else the torch backend uses PyTorch's own operations, with the same
results. The functions here take arguments that their callers (:mod:`embedlib.torch.lookup`,
:mod:`embedlib.torch.bag`) have checked already, and import nothing from them: imports only point
down, from the operations to their kernels. Two switches, both read from the environment at each call:

* ``EMBEDLIB_TRITON=0`` turns the kernels off (the benchmark uses it to time the fallback);
* ``TRITON_INTERPRET=1``, Triton's own debugging switch, makes the kernels run on CPU tensors too,
  through Triton's interpreter: slow, but it is how the tests check every kernel without a GPU.
  It must be set before ``triton`` is first imported.

``import embedlib.torch`` never imports ``triton``; the first call that wants a kernel does.
"""
from __future__ import annotations

import functools
import os

import torch


@functools.lru_cache(maxsize=None)
def importable() -> bool:
    """Whether ``triton`` imports here (checked once per process)."""
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install that fails while loading its backends
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def enabled(weight: torch.Tensor) -> bool:
    """Use the kernels for this weight? CUDA tensors when triton imports; CPU tensors only under
    Triton's interpreter; never with ``EMBEDLIB_TRITON=0``."""
    if os.environ.get("EMBEDLIB_TRITON", "1") == "0":
        return False
    if weight.device.type == "cuda":
        return importable()
    return weight.device.type == "cpu" and interpreting() and importable()


def deterministic_mode(deterministic) -> bool:
    """``deterministic=None`` follows ``torch.are_deterministic_algorithms_enabled()``."""
    if deterministic is None:
        return torch.are_deterministic_algorithms_enabled()
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be True, False or None, got {deterministic!r}")
    return deterministic


def differentiable(t: torch.Tensor) -> bool:
    """Whether an operation on ``t`` must go through its autograd Function: a gradient to record (grad
    mode on and ``t.requires_grad``), or a forward-mode tangent (``torch.func.jvp`` and the other
    torch.func transforms wrap their tensors; ``torch.autograd.forward_ad`` makes dual tensors)."""
    if torch.is_grad_enabled() and t.requires_grad:
        return True
    if torch._C._functorch.is_functorch_wrapped_tensor(t):
        return True
    return torch.autograd.forward_ad._current_level >= 0 and torch.autograd.forward_ad.unpack_dual(t).tangent is not None


def _kernels():
    from embedlib.torch._triton import kernels
    return kernels


def flat_index(idx: torch.Tensor) -> torch.Tensor:
    """Indices as one contiguous int32/int64 vector, the two types the kernels are built for."""
    flat = idx.reshape(-1)
    if flat.dtype not in (torch.int32, torch.int64):
        flat = flat.long()
    return flat.contiguous()


def gather(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight[idx]``, shape ``(*idx.shape, D)``; indices already range-checked."""
    return _kernels().gather(flat_index(idx), weight).reshape(*idx.shape, weight.shape[1])


def scatter_add(idx: torch.Tensor, grad: torch.Tensor, num_embeddings: int, padding_idx=None,
                deterministic: bool = False) -> torch.Tensor:
    """Dense ``(V, D)`` gradient of a lookup: atomic adds, or a sort and fixed-order sums."""
    k = _kernels()
    flat = flat_index(idx)
    g = grad.reshape(flat.numel(), grad.shape[-1])
    pad = -1 if padding_idx is None else padding_idx
    if deterministic:
        return k.scatter_add_deterministic(flat, g, num_embeddings, pad)
    return k.scatter_add(flat, g, num_embeddings, pad)


# --------------------------------------------------------------------------------------------------
# Bags
# --------------------------------------------------------------------------------------------------
def embedding_bag(flat: torch.Tensor, weight: torch.Tensor, bounds: torch.Tensor, psw: torch.Tensor | None,
                  padding_idx: int | None, mode: str) -> torch.Tensor:
    """``(num_bags, D)`` bags through the bag kernels, from arguments that the caller has checked
    (:func:`embedlib.torch.bag.check`): the flattened indices, in range; the bag bounds (bag ``b`` is
    ``flat[bounds[b]:bounds[b + 1]]``); flattened per-sample weights or None; ``padding_idx`` in
    ``[0, V)`` or None; ``mode`` "sum", "mean" or "max". The kernels read the bounds, not per-entry
    bag ids. The gradient follows ``torch.are_deterministic_algorithms_enabled()``."""
    flat_psw = None if psw is None else psw.contiguous()
    pad = -1 if padding_idx is None else padding_idx
    save_argmax = mode == "max" and differentiable(weight)  # for the gradient or the jvp
    return _Bag.apply(weight, flat_psw, flat_index(flat), bounds.contiguous(), pad, mode,
                      torch.are_deterministic_algorithms_enabled(), save_argmax)[0]


class _Bag(torch.autograd.Function):
    """The bag kernels as an autograd Function: ``(out, argmax, counts)``, only ``out`` differentiable.
    In the form that torch.func accepts, with a jvp (a bag is linear in the weight and in the
    per-sample weights; a max passes on the winning row's tangent)."""

    @staticmethod
    def forward(weight, psw, flat, bounds, pad, mode, deterministic, save_argmax):
        return _kernels().bag_forward(flat, weight, bounds, psw, pad, mode, save_argmax)

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, psw, flat, bounds, pad, mode, deterministic, _ = inputs
        _, argmax, counts = output
        ctx.mark_non_differentiable(*(t for t in (argmax, counts) if t is not None))
        ctx.save_for_backward(weight, psw, flat, bounds, argmax, counts)
        ctx.save_for_forward(weight, psw, flat, bounds, argmax)
        ctx.pad, ctx.mode, ctx.deterministic = pad, mode, deterministic

    @staticmethod
    def jvp(ctx, weight_tangent, psw_tangent, *_):
        weight, psw, flat, bounds, argmax = ctx.saved_tensors
        if ctx.mode == "max":  # column d of bag b follows the row that won it (zero for an empty bag)
            rows = flat[argmax.clamp(min=0)].long()
            return weight_tangent.gather(0, rows).masked_fill(argmax < 0, 0), None, None
        # the tangents are torch.func's wrapped tensors here: through the Function again, not a bare kernel
        tangent = None
        if weight_tangent is not None:
            tangent = _Bag.apply(weight_tangent.contiguous(), psw, flat, bounds, ctx.pad, ctx.mode, ctx.deterministic,
                                 False)[0]
        if psw_tangent is not None:
            more = _Bag.apply(weight, psw_tangent.contiguous(), flat, bounds, ctx.pad, ctx.mode, ctx.deterministic,
                              False)[0]
            tangent = more if tangent is None else tangent + more
        return tangent, None, None

    @staticmethod
    def backward(ctx, grad_out, *_):
        weight, psw, flat, bounds, argmax, counts = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        k = _kernels()
        num_embeddings, dim = weight.shape
        grad_w = grad_psw = None
        bag_of_entry = None
        if ctx.needs_input_grad[0]:
            if ctx.mode == "max":
                # Column d of bag b sends its gradient to the entry that won it (none for empty bags):
                # a scatter of single numbers into the flattened (V * D) table.
                won = argmax >= 0
                cols = torch.arange(dim, device=argmax.device).expand_as(argmax)[won]
                target = flat[argmax[won]].long() * dim + cols
                values = grad_out[won].reshape(-1, 1)
                scatter = k.scatter_add_deterministic if ctx.deterministic else k.scatter_add
                grad_w = scatter(target.contiguous(), values, num_embeddings * dim, -1).reshape(num_embeddings, dim)
            elif ctx.deterministic:
                bag_of_entry = _bag_of_entry(bounds, flat.numel())
                values = grad_out[bag_of_entry]
                if psw is not None:
                    values = values * psw[:, None].to(values.dtype)
                if ctx.mode == "mean":
                    values = values / counts.clamp(min=1)[bag_of_entry, None].to(values.dtype)
                grad_w = k.scatter_add_deterministic(flat, values, num_embeddings, ctx.pad)
            else:
                grad_w = k.bag_backward(flat, grad_out, bounds, psw, counts, num_embeddings, ctx.pad, ctx.mode)
        if ctx.needs_input_grad[1]:
            # d out[b] / d psw[e] = grad[b] . weight[flat[e]] for the non-padding entries.
            bag_of_entry = _bag_of_entry(bounds, flat.numel()) if bag_of_entry is None else bag_of_entry
            rows = k.gather(flat, weight.detach())
            grad_psw = (grad_out[bag_of_entry].to(rows.dtype) * rows).sum(-1)
            grad_psw = torch.where(flat == ctx.pad, 0, grad_psw).to(psw.dtype)
        return grad_w, grad_psw, None, None, None, None, None, None


def _bag_of_entry(bounds: torch.Tensor, n: int) -> torch.Tensor:
    """The bag of each entry; entries past the last bag (none, after the checks) would get none."""
    sizes = torch.diff(bounds)
    return torch.repeat_interleave(torch.arange(sizes.numel(), device=bounds.device), sizes, output_size=n)
