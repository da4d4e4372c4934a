"""``max_norm``: rescale the rows a batch touches so that none is longer than a limit (chapter 8)."""
from __future__ import annotations

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays


def renorm_(weight, indices, max_norm, *, norm_type=2.0):
    """``max_norm`` (chapter 8), in place: every row of ``weight`` named in ``indices`` whose norm
    exceeds ``max_norm`` is scaled
    down to norm ``max_norm`` (by ``max_norm / (norm + 1e-7)``, as torch's ``embedding_renorm_``).

    Returns ``weight``. Rows not named are left alone, which is why ``nn.Embedding(max_norm=...)``
    changes its weight during the forward pass.
    """
    if not isinstance(weight, np.ndarray):
        raise TypeError(f"renorm_ changes weight in place, so it must be a NumPy array, got {type(weight).__name__}")
    w = _arrays.weight(weight)
    idx = _arrays.indices(indices)
    limit = _checks.max_norm(max_norm, norm_type)
    if limit is None:
        raise ValueError("max_norm must be a positive number, got None")
    _arrays.in_range(idx, w.shape[0])
    unchecked_renorm_(w, idx, limit, norm_type)
    return weight


def unchecked_renorm_(w: np.ndarray, idx: np.ndarray, max_norm: float, norm_type: float) -> None:
    rows = np.unique(idx)
    if rows.size == 0:
        return
    norms = np.linalg.norm(w[rows].astype(np.float64), ord=norm_type, axis=1)
    big = norms > max_norm
    # the scale is computed in float64 and applied in the weight's dtype, as torch does
    scale = (max_norm / (norms[big] + 1e-7)).astype(w.dtype)
    w[rows[big]] *= scale[:, None]
