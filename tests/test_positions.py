"""sinusoidal_positions and apply_rope (chapter 12): against their formulas, RoPE's relative-offset
property, torch's gradient, the two backends' agreement and the errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH


def ref_sinusoidal(n, d, base=10000.0):
    out = np.zeros((n, d))
    for t in range(n):
        for j in range(d // 2):
            angle = t / base ** (2 * j / d)
            out[t, 2 * j], out[t, 2 * j + 1] = math.sin(angle), math.cos(angle)
    return out


def ref_rope(x, positions, base=10000.0):
    """Each pair (2j, 2j+1) of each row t multiplied by the 2x2 rotation matrix of its angle."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    d = x.shape[-1]
    for t, m in enumerate(positions):
        for j in range(d // 2):
            a = m * base ** (-2 * j / d)
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            out[..., t, 2 * j:2 * j + 2] = x[..., t, 2 * j:2 * j + 2] @ rot.T
    return out


@given(n=st.integers(0, 40), half=st.integers(1, 8), base=st.sampled_from([10000.0, 100.0, 2.0]))
def test_sinusoidal_positions_match_the_formula(backend, n, half, base):
    out = backend.el.sinusoidal_positions(n, 2 * half, base=base)
    assert backend.is_native(out) and out.dtype == backend.float32 and tuple(out.shape) == (n, 2 * half)
    np.testing.assert_allclose(backend.np(out), ref_sinusoidal(n, 2 * half, base), rtol=0, atol=1e-6)


def test_sinusoidal_positions_dtype(backend):
    out = backend.el.sinusoidal_positions(5, 4, dtype=backend.float64)
    assert out.dtype == backend.float64
    np.testing.assert_allclose(backend.np(out), ref_sinusoidal(5, 4), rtol=0, atol=1e-14)


@given(shape=st.sampled_from([(3, 2), (2, 5, 4), (2, 3, 7, 6)]), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_apply_rope_matches_rotation_matrices(backend, shape, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    pos = rng.integers(-50, 500, size=shape[-2])
    out = backend.el.apply_rope(backend.arr(x), backend.arr(pos))
    assert out.dtype == backend.dtype(dtype) and tuple(out.shape) == shape
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(backend.np(out), ref_rope(x, pos), rtol=tol, atol=tol)
    # rotations keep each row's length
    np.testing.assert_allclose(np.linalg.norm(backend.np(out), axis=-1), np.linalg.norm(x, axis=-1), rtol=tol)


def test_apply_rope_at_position_zero_is_the_identity(backend):
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    out = backend.el.apply_rope(backend.arr(x), backend.arr(np.zeros(4, np.int64)))
    np.testing.assert_array_equal(backend.np(out), x)


def test_rope_score_depends_only_on_the_offset(backend):
    """<R(m) q, R(n) k> = <R(m + s) q, R(n + s) k> for every shift s, on random q and k (float64)."""
    rng = np.random.default_rng(0)
    d = 16
    q, k = rng.standard_normal((1, d)), rng.standard_normal((1, d))
    for m, n in [(0, 3), (5, 2), (17, 17), (100, 40)]:
        scores = []
        for shift in (0, 1, 7, 250, 1000):
            rq = backend.np(backend.el.apply_rope(backend.arr(q), backend.arr(np.array([m + shift]))))
            rk = backend.np(backend.el.apply_rope(backend.arr(k), backend.arr(np.array([n + shift]))))
            scores.append(float(rq[0] @ rk[0]))
        assert max(scores) - min(scores) < 1e-12, (m, n, scores)


def test_torch_apply_rope_gradient():
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([0, 4, 9])
    assert torch.autograd.gradcheck(lambda v: TORCH.el.apply_rope(v, pos, base=100.0), (x,))


def test_backends_agree():
    x = np.random.default_rng(3).standard_normal((2, 9, 10)).astype(np.float32)
    pos = np.arange(9) * 3
    a = NUMPY.el.apply_rope(x, pos, base=500.0)
    b = TORCH.el.apply_rope(torch.from_numpy(x), torch.from_numpy(pos), base=500.0).numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(NUMPY.el.sinusoidal_positions(50, 12), TORCH.el.sinusoidal_positions(50, 12).numpy(),
                               rtol=0, atol=1e-6)


def test_errors(backend):
    el = backend.el
    with pytest.raises(ValueError, match="even"):
        el.sinusoidal_positions(4, 5)
    with pytest.raises(ValueError, match="positive"):
        el.sinusoidal_positions(4, 0)
    with pytest.raises(ValueError, match="num_positions"):
        el.sinusoidal_positions(-1, 4)
    with pytest.raises(ValueError, match="base"):
        el.sinusoidal_positions(4, 4, base=0)
    x = backend.arr(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="even"):
        el.apply_rope(backend.arr(np.ones((3, 5), np.float32)), backend.arr(np.arange(3)))
    with pytest.raises(ValueError, match=r"positions must have shape \(T,\) = \(3,\)"):
        el.apply_rope(x, backend.arr(np.arange(4)))
    with pytest.raises(ValueError, match="at least 2-D"):
        el.apply_rope(backend.arr(np.ones(4, np.float32)), backend.arr(np.arange(1)))
    with pytest.raises(TypeError, match="positions must be integers"):
        el.apply_rope(x, backend.arr(np.arange(3.0)))
    with pytest.raises(TypeError, match="floating-point"):
        el.apply_rope(backend.arr(np.ones((3, 4), np.int64)), backend.arr(np.arange(3)))
