"""Position encodings: sinusoidal tables and rotary embeddings (RoPE) (chapter 12).

A lookup of token ids gives the same vector to a word wherever it stands; a transformer adds (or
applies) something that depends on the position. Chapter 12 compares three ways: a learned table
(a plain :func:`~embedlib.numpy.lookup` of ``arange(T)``), the fixed sinusoids of Vaswani et al.
(2017), :func:`sinusoidal_positions`, and the rotations of RoFormer (Su et al. 2021),
:func:`apply_rope`, under which a query-key score depends only on the offset between the two
positions (chapter 12 proves it). The angles are computed in float64, then cast.
"""
from __future__ import annotations

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays


def sinusoidal_positions(num_positions, dim, *, base=10000.0, dtype=np.float32):
    """The sinusoidal position table of Vaswani et al. (2017), shape ``(num_positions, dim)`` (chapter 12).

    ``PE[t, 2j] = sin(t / base**(2j / dim))`` and ``PE[t, 2j + 1] = cos(t / base**(2j / dim))``: pair
    ``j`` turns at frequency ``base**(-2j / dim)``, from one radian per position down to about
    ``1 / base``. ``dim`` must be even (``ValueError`` otherwise).
    """
    n = _checks.count(num_positions, "num_positions")
    d = _checks.even_dim(dim)
    angles = _angles(np.arange(n, dtype=np.float64), d, _checks.rope_base(base))
    out = np.empty((n, d), dtype=np.float64)
    out[:, 0::2], out[:, 1::2] = np.sin(angles), np.cos(angles)
    return out.astype(dtype)


def apply_rope(x, positions, *, base=10000.0):
    """Rotary position embedding (RoFormer, Su et al. 2021) of ``x``, shape ``(..., T, D)``, D even
    (chapter 12): the same shape and dtype.

    Each pair of columns ``(x[..., t, 2j], x[..., t, 2j + 1])`` is rotated by the angle
    ``positions[t] * base**(-2j / D)``; ``positions`` holds ``T`` integers. Rotations keep lengths,
    and ``<R(m) q, R(n) k>`` depends only on ``n - m``. This is the interleaved-pairs convention of
    the paper; Hugging Face's LLaMA code uses the "rotate half" convention, which pairs column ``j``
    with column ``j + D/2`` instead: a fixed permutation of the columns, the same thing otherwise.
    """
    v = _arrays.floats(x, "x")
    pos = _arrays.indices(positions, "positions")
    _checks.rope_shapes(v.shape, pos.shape)
    angles = _angles(pos.astype(np.float64), v.shape[-1], _checks.rope_base(base))
    cos, sin = np.cos(angles).astype(v.dtype), np.sin(angles).astype(v.dtype)
    even, odd = v[..., 0::2], v[..., 1::2]
    out = np.empty_like(v)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def _angles(t: np.ndarray, dim: int, base: float) -> np.ndarray:
    """``t[:, None] * base**(-2j / dim)`` for ``j = 0 .. dim/2 - 1``, float64, shape ``(len(t), dim // 2)``."""
    return t[:, None] * base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
