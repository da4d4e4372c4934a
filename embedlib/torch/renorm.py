"""``max_norm`` in torch: rescale the rows a batch touches, in place (chapter 8)."""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.torch import _tensors
from embedlib.torch._tensors import unchecked_renorm_


def renorm_(weight, indices, max_norm, *, norm_type=2.0):
    """``max_norm`` (chapter 8), in place and outside autograd: every row of ``weight`` named in
    ``indices`` whose norm exceeds
    ``max_norm`` is scaled to norm ``max_norm`` (by ``max_norm / (norm + 1e-7)``), as
    ``torch.embedding_renorm_`` does for ``nn.Embedding(max_norm=...)``. Returns ``weight``."""
    w = _tensors.weight(weight)
    idx = _tensors.indices(indices, w.device)
    limit = _checks.max_norm(max_norm, norm_type)
    if limit is None:
        raise ValueError("max_norm must be a positive number, got None")
    _tensors.in_range(idx, w.shape[0])
    unchecked_renorm_(w, idx, limit, norm_type)
    return weight
