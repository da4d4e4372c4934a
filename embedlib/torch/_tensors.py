"""Turning user input into validated tensors on the right device (checks run before any kernel)."""
from __future__ import annotations

import numpy as np
import torch

from embedlib import _checks


def indices(values, device=None, what: str = "indices") -> torch.Tensor:
    """An integer tensor on ``device``, else TypeError. Lists and NumPy arrays are converted there;
    a tensor on another device is refused (moving it silently would hide a costly copy)."""
    if isinstance(values, torch.Tensor):
        t = values
        if device is not None and t.device != torch.device(device):
            raise ValueError(f"{what} are on {t.device} but the weight is on {device}; move one of them")
    else:
        arr = np.asarray(values)
        if arr.size == 0 and not isinstance(values, np.ndarray) and arr.dtype == np.float64:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be integers, got dtype {arr.dtype}")
        t = torch.as_tensor(arr, device=device)
    dt = t.dtype
    kind = "bool" if dt == torch.bool else "other" if (dt.is_floating_point or dt.is_complex) else "int"
    _checks.index_dtype(kind, str(dt).replace("torch.", ""), what)
    if dt in (torch.uint16, torch.uint32):  # torch has few kernels for these: widen, losslessly
        t = t.long()
    elif dt == torch.uint64 and not (t.view(torch.int64) < 0).any():
        t = t.view(torch.int64)  # every value fits; one at 2**63 or above is left for in_range to name
    return t


def in_range(idx: torch.Tensor, num_embeddings: int, what: str = "index") -> None:
    """Range check as one reduction and one host sync: on CUDA this runs before any gather kernel,
    because an out-of-range gather would trip a device-side assert that poisons the whole process."""
    if idx.numel() and idx.dtype == torch.uint64:  # only when a value is >= 2**63 (see indices)
        _checks.index_range(0, int(idx.cpu().numpy().max()), num_embeddings, what)
    if idx.numel():
        _checks.index_range(*min_max(idx), num_embeddings, what)


def min_max(idx: torch.Tensor) -> tuple[int, int]:
    """The smallest and the largest of a non-empty integer tensor, as Python ints.

    On CUDA one reduction (``aminmax``) and one host sync. On the CPU through NumPy, on the calling
    thread: a reduction in torch's thread pool waits for every one of its threads, and on a busy
    machine that wait (milliseconds) costs a hundred times the two passes over the indices."""
    if numpy_readable(idx):
        values = idx.numpy()
        return int(values.min()), int(values.max())
    lo, hi = torch.aminmax(idx.reshape(-1))
    lo, hi = torch.stack([lo.long(), hi.long()]).tolist()
    return lo, hi


def numpy_readable(t: torch.Tensor) -> bool:
    """Whether NumPy can read ``t`` in place: a CPU tensor, outside torch.func's transforms (under
    them, even a tensor that no transform wraps refuses to hand out its memory)."""
    return t.device.type == "cpu" and torch._C._functorch.peek_interpreter_stack() is None


def weight(w, name: str = "weight") -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    _checks.weight_shape(tuple(w.shape))
    if not w.dtype.is_floating_point:
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {w.dtype}")
    return w


def floats(t, name: str, device=None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(np.asarray(t), device=device)
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {t.dtype}")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} is on {t.device} but the weight is on {device}; move one of them")
    return t


@torch.no_grad()
def unchecked_renorm_(w: torch.Tensor, idx: torch.Tensor, max_norm: float, norm_type: float) -> None:
    """``max_norm`` without checks (here, low on the ladder, for lookup, bag, renorm and the layers).
    The values change in place, not any forward-mode tangent (as torch's embedding_renorm_)."""
    w = w.detach()
    rows = torch.unique(idx.reshape(-1).long())
    norms = torch.linalg.vector_norm(w[rows], ord=norm_type, dim=1, dtype=torch.float64)
    scale = torch.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).to(w.dtype)
    w[rows] = w[rows] * scale[:, None]


@torch.no_grad()
def renorm_entries_(w: torch.Tensor, flat: torch.Tensor, max_norm: float, norm_type: float,
                    apply: torch.Tensor) -> None:
    """``max_norm`` as :func:`unchecked_renorm_` (the same numbers), from tensors of fixed shapes: each
    entry's row is rescaled and written back (an entry naming a row twice writes the same values
    twice). For the deferred bounds check, whose replaced indices repeat an index of the same call;
    ``apply`` (a 0-d bool tensor) False leaves every row as it is (when no index was in range)."""
    w = w.detach()
    rows = w.index_select(0, flat)
    norms = torch.linalg.vector_norm(rows, ord=norm_type, dim=1, dtype=torch.float64)
    scale = torch.where((norms > max_norm) & apply, max_norm / (norms + 1e-7), 1.0).to(w.dtype)
    w.index_copy_(0, flat.long(), rows * scale[:, None])
