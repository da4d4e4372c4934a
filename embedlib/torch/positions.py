"""Position encodings, in torch: sinusoidal tables and rotary embeddings (RoPE) (chapter 12).

The same numbers as the NumPy backend (the angles in float64, then cast); :func:`apply_rope` is
differentiable w.r.t. ``x`` (a rotation's backward is the opposite rotation, which autograd finds).
"""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.torch import _tensors


def sinusoidal_positions(num_positions, dim, *, base=10000.0, dtype=torch.float32, device=None):
    """The sinusoidal position table of Vaswani et al. (2017), shape ``(num_positions, dim)`` (chapter 12).

    ``PE[t, 2j] = sin(t / base**(2j / dim))``, ``PE[t, 2j + 1] = cos(t / base**(2j / dim))``; ``dim``
    must be even (``ValueError`` otherwise). A constant: no gradient.
    """
    n = _checks.count(num_positions, "num_positions")
    d = _checks.even_dim(dim)
    angles = _angles(torch.arange(n, dtype=torch.float64, device=device), d, _checks.rope_base(base))
    out = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(n, d)
    return out.to(dtype)


def apply_rope(x, positions, *, base=10000.0):
    """Rotary position embedding (RoFormer, Su et al. 2021) of ``x`` (..., T, D), D even (chapter 12):
    the same shape and dtype, differentiable w.r.t. ``x``.

    Pair ``(x[..., t, 2j], x[..., t, 2j + 1])`` is rotated by the angle ``positions[t] * base**(-2j / D)``
    (``positions``: T integers), so ``<R(m) q, R(n) k>`` depends only on ``n - m``. The paper's
    interleaved pairs; Hugging Face's LLaMA code uses the "rotate half" convention (column ``j`` with
    ``j + D/2``), a fixed permutation of the columns, the same thing otherwise.
    """
    v = _tensors.floats(x, "x")
    pos = _tensors.indices(positions, v.device, "positions")
    _checks.rope_shapes(tuple(v.shape), tuple(pos.shape))
    angles = _angles(pos.to(torch.float64), v.shape[-1], _checks.rope_base(base))
    cos, sin = torch.cos(angles).to(v.dtype), torch.sin(angles).to(v.dtype)
    even, odd = v[..., 0::2], v[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).reshape(v.shape)


def _angles(t: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """``t[:, None] * base**(-2j / dim)``, float64, shape ``(len(t), dim // 2)``."""
    j = torch.arange(0, dim, 2, dtype=torch.float64, device=t.device)
    return t[:, None] * base ** (-j / dim)
