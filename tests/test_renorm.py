"""renorm_ (max_norm, chapter 8): against torch.embedding_renorm_, in place, only the named rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH, bitwise_equal, indices, random_weights, tol


def torch_renorm(w: np.ndarray, idx: np.ndarray, max_norm: float, norm_type: float) -> np.ndarray:
    ref = torch.from_numpy(w.copy())
    with torch.no_grad():
        torch.embedding_renorm_(ref, torch.from_numpy(idx.astype(np.int64)).reshape(-1), max_norm, norm_type)
    return ref.numpy()


@given(w=random_weights(), data=st.data())
def test_renorm_matches_torch_embedding_renorm(backend, w, data):
    w = (w * data.draw(st.sampled_from([0.5, 1.0, 3.0]))).astype(w.dtype)
    idx = data.draw(indices(w.shape[0]))
    max_norm = data.draw(st.floats(0.1, 3.0))
    norm_type = data.draw(st.sampled_from([1.0, 2.0, 3.0]))
    weight = backend.arr(w)
    out = backend.el.renorm_(weight, backend.arr(idx), max_norm, norm_type=norm_type)
    assert out is weight  # in place, returns the weight
    expected = torch_renorm(w, idx, max_norm, norm_type)
    np.testing.assert_allclose(backend.np(weight), expected, **tol(w.dtype))
    named = np.unique(idx)
    untouched = np.setdiff1d(np.arange(w.shape[0]), named)
    assert bitwise_equal(backend.np(weight)[untouched], w[untouched])
    norms = np.linalg.norm(w.astype(np.float64), ord=norm_type, axis=1)
    small = np.intersect1d(named, np.flatnonzero(norms <= max_norm))
    assert bitwise_equal(backend.np(weight)[small], w[small])  # rows within the limit are not touched
    new_norms = np.linalg.norm(backend.np(weight)[named].astype(np.float64), ord=norm_type, axis=1)
    assert np.all(new_norms <= max_norm * (1 + 1e-5))


def test_repeated_indices_rescale_once(backend):
    w = backend.arr(np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float64))
    backend.el.renorm_(w, backend.arr(np.array([0, 0, 0, 1])), 1.0)
    scale = 1.0 / (5.0 + 1e-7)
    np.testing.assert_allclose(backend.np(w), [[3.0 * scale, 4.0 * scale], [0.3, 0.4]], rtol=1e-12)


def test_renorm_scale_formula(backend):
    """scale = max_norm / (norm + 1e-7), like torch: the new norm is a hair below max_norm."""
    w = backend.arr(np.array([[6.0, 8.0]], dtype=np.float64))
    backend.el.renorm_(w, backend.arr(np.array([0])), 2.0)
    np.testing.assert_allclose(backend.np(w), [[6.0 * 2.0 / (10.0 + 1e-7), 8.0 * 2.0 / (10.0 + 1e-7)]], rtol=1e-14)


def test_renorm_empty_indices_changes_nothing(backend):
    w = np.array([[30.0, 40.0]], dtype=np.float32)
    weight = backend.arr(w)
    backend.el.renorm_(weight, backend.arr(np.zeros(0, dtype=np.int64)), 1.0)
    assert bitwise_equal(weight, w)


def test_torch_renorm_works_on_a_parameter_without_autograd():
    """nn.Embedding renormalises a Parameter in place in its forward; renorm_ must allow the same."""
    p = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    TORCH.el.renorm_(p, torch.tensor([0]), 1.0)
    assert p.grad is None
    np.testing.assert_allclose(p.detach().numpy(), [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    (p * 2).sum().backward()  # the Parameter is still usable by autograd
    assert torch.equal(p.grad, torch.full((2, 2), 2.0))


@given(w=random_weights(), data=st.data())
def test_renorm_backends_agree(w, data):
    w = (w * 2).astype(w.dtype)
    idx = data.draw(indices(w.shape[0]))
    a = w.copy()
    b = torch.from_numpy(w.copy())
    NUMPY.el.renorm_(a, idx, 1.5)
    TORCH.el.renorm_(b, torch.from_numpy(idx), 1.5)
    np.testing.assert_allclose(a, b.numpy(), **tol(w.dtype))


@pytest.mark.parametrize("bad", [0, -1.0, None])
def test_renorm_rejects_non_positive_max_norm(backend, bad):
    w = np.ones((2, 2), dtype=np.float32)
    weight = backend.arr(w)
    with pytest.raises((ValueError, TypeError), match="max_norm"):
        backend.el.renorm_(weight, backend.arr(np.array([0])), bad)
    assert bitwise_equal(weight, w)


@given(w=random_weights(), data=st.data())
def test_renorm_then_lookup_is_F_embedding_with_max_norm(w, data):
    """F.embedding(max_norm=...) = renorm_ the named rows in place, then look them up."""
    w = (w * 2).astype(w.dtype)
    idx = data.draw(indices(w.shape[0]))
    max_norm = data.draw(st.floats(0.2, 3.0))
    mine = torch.from_numpy(w.copy())
    ref = torch.from_numpy(w.copy())
    idx_t = torch.from_numpy(idx.astype(np.int64))
    out = TORCH.el.lookup(idx_t, TORCH.el.renorm_(mine, idx_t, max_norm))
    expected = torch.nn.functional.embedding(idx_t, ref, max_norm=max_norm)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), **tol(w.dtype))
    np.testing.assert_allclose(mine.numpy(), ref.numpy(), **tol(w.dtype))  # both changed the table alike
