"""quantize and quantize_backward (chapter 12): nearest codewords against a brute-force loop, ties
to the lowest index, and torch's gradients (straight through to the vectors, the lookup's
scatter-add to the codebook)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH


def brute_force_codes(vectors, codebook):
    flat = vectors.reshape(-1, codebook.shape[1]).astype(np.float64)
    codes = []
    for v in flat:
        best, best_d = 0, None
        for k, c in enumerate(codebook.astype(np.float64)):
            d = float(((v - c) ** 2).sum())
            if best_d is None or d < best_d:  # strict: the lowest index wins a tie
                best, best_d = k, d
        codes.append(best)
    return np.array(codes, dtype=np.int64).reshape(vectors.shape[:-1])


@st.composite
def quantize_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    k, d = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=2))) + (d,)
    if draw(st.booleans()):  # small integers: many exact ties, duplicate codewords
        codebook = rng.integers(-2, 3, size=(k, d)).astype(np.float32)
        vectors = rng.integers(-2, 3, size=shape).astype(np.float32)
    else:
        codebook = rng.standard_normal((k, d)).astype(np.float32)
        vectors = rng.standard_normal(shape).astype(np.float32)
    return vectors, codebook


@given(case=quantize_cases())
def test_quantize_picks_the_nearest_codeword_lowest_index_on_ties(backend, case):
    vectors, codebook = case
    codes, quantized = backend.el.quantize(backend.arr(vectors), backend.arr(codebook))
    codes_np = backend.np(codes)
    assert codes_np.dtype == np.int64 and codes_np.shape == vectors.shape[:-1]
    np.testing.assert_array_equal(codes_np, brute_force_codes(vectors, codebook))
    np.testing.assert_array_equal(backend.np(quantized), codebook[codes_np])


def test_ties_go_to_the_lowest_index(backend):
    codebook = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], np.float32)
    codes, _ = backend.el.quantize(backend.arr(np.array([[0.0, 0.0], [2.0, 0.0]], np.float32)), backend.arr(codebook))
    np.testing.assert_array_equal(backend.np(codes), [0, 0])


def test_quantize_chunks_give_the_same_codes(monkeypatch, backend):
    rng = np.random.default_rng(5)
    vectors, codebook = rng.standard_normal((37, 3)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)
    whole = backend.np(backend.el.quantize(backend.arr(vectors), backend.arr(codebook))[0])
    monkeypatch.setattr(sys.modules[backend.el.quantize.__module__], "CHUNK_ENTRIES", 20)  # one vector a block
    chunked = backend.np(backend.el.quantize(backend.arr(vectors), backend.arr(codebook))[0])
    np.testing.assert_array_equal(whole, chunked)


def test_torch_gradients_flow_straight_through_and_into_the_chosen_codewords():
    rng = np.random.default_rng(0)
    v = torch.tensor(rng.standard_normal((4, 5, 3)), requires_grad=True)
    c = torch.tensor(rng.standard_normal((6, 3)), requires_grad=True)
    codes, q = TORCH.el.quantize(v, c)
    g = torch.tensor(rng.standard_normal((4, 5, 3)))
    gv, gc = torch.autograd.grad(q, (v, c), g)
    torch.testing.assert_close(gv, g)  # straight through: the identity
    expected = torch.zeros_like(c).index_add_(0, codes.reshape(-1), g.reshape(-1, 3))
    torch.testing.assert_close(gc, expected)  # the lookup's scatter-add
    for be in (TORCH, NUMPY):
        hv, hc = be.el.quantize_backward(be.arr(codes.numpy()), be.arr(g.numpy()), 6)
        np.testing.assert_allclose(be.np(hv), g.numpy(), rtol=0, atol=0)
        np.testing.assert_allclose(be.np(hc), gc.numpy(), rtol=1e-12, atol=1e-12)
    unused = sorted(set(range(6)) - set(codes.reshape(-1).tolist()))
    assert all((gc[k] == 0).all() for k in unused)


def test_backends_agree():
    rng = np.random.default_rng(9)
    vectors, codebook = rng.standard_normal((50, 4)).astype(np.float32), rng.standard_normal((16, 4)).astype(np.float32)
    a_codes, a_q = NUMPY.el.quantize(vectors, codebook)
    b_codes, b_q = TORCH.el.quantize(torch.from_numpy(vectors), torch.from_numpy(codebook))
    np.testing.assert_array_equal(a_codes, b_codes.numpy())
    np.testing.assert_array_equal(a_q, b_q.numpy())


def test_errors(backend):
    el = backend.el
    v = backend.arr(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="at least one codeword"):
        el.quantize(v, backend.arr(np.ones((0, 2), np.float32)))
    with pytest.raises(ValueError, match=r"D = 3"):
        el.quantize(v, backend.arr(np.ones((4, 3), np.float32)))
    with pytest.raises(ValueError, match="codebook must be 2-D"):
        el.quantize(v, backend.arr(np.ones(2, np.float32)))
    with pytest.raises(TypeError, match="dtype"):
        el.quantize(v, backend.arr(np.ones((4, 2), np.float64)))
    with pytest.raises(TypeError, match="floating-point"):
        el.quantize(backend.arr(np.ones((3, 2), np.int64)), backend.arr(np.ones((4, 2), np.float32)))
    with pytest.raises(IndexError, match="out of range"):
        el.quantize_backward(backend.arr(np.array([0, 5])), backend.arr(np.ones((2, 2), np.float32)), 4)
