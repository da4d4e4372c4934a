"""image_patches and patch_embedding (chapter 12): a convolution whose kernel equals its stride is a
linear layer on flattened patches; checked against F.conv2d and nn.Conv2d, in both backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH


@st.composite
def patch_cases(draw):
    p = draw(st.integers(1, 4))
    n, c, d = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    gh, gw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    images = rng.standard_normal((n, c, gh * p, gw * p)).astype(dtype)
    weight = rng.standard_normal((d, c, p, p)).astype(dtype)
    bias = rng.standard_normal(d).astype(dtype) if draw(st.booleans()) else None
    return images, weight, bias


def conv_reference(images, weight, bias):
    p = weight.shape[-1]
    t = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    return F.conv2d(t(images), t(weight), t(bias), stride=p).flatten(2).transpose(1, 2).numpy()


@given(case=patch_cases())
def test_patch_embedding_equals_conv2d_with_stride_equal_to_kernel(backend, case):
    images, weight, bias = case
    out = backend.el.patch_embedding(backend.arr(images), backend.arr(weight),
                                     None if bias is None else backend.arr(bias))
    n, _, h, w = images.shape
    p = weight.shape[-1]
    assert tuple(out.shape) == (n, (h // p) * (w // p), weight.shape[0]) and out.dtype == backend.dtype(images.dtype)
    tol = 1e-10 if images.dtype == np.float64 else 1e-4
    np.testing.assert_allclose(backend.np(out), conv_reference(images, weight, bias), rtol=tol, atol=tol)


@given(case=patch_cases())
def test_image_patches_order(backend, case):
    """Patch r * (W/p) + c is the block at grid row r, column c, flattened in (C, p, p) order."""
    images, weight, _ = case
    p = weight.shape[-1]
    out = backend.np(backend.el.image_patches(backend.arr(images), p))
    n, c, h, w = images.shape
    for r in range(h // p):
        for col in range(w // p):
            block = images[:, :, r * p:(r + 1) * p, col * p:(col + 1) * p]
            np.testing.assert_array_equal(out[:, r * (w // p) + col], block.reshape(n, -1))


def test_torch_patch_embedding_matches_nn_conv2d_with_gradients():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 16, kernel_size=4, stride=4).double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    ours = TORCH.el.patch_embedding(x, conv.weight, conv.bias)
    ref = conv(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(ours, (x, conv.weight, conv.bias), g)
    grads_ref = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_backends_agree():
    rng = np.random.default_rng(2)
    images = rng.standard_normal((3, 2, 8, 12)).astype(np.float32)
    weight = rng.standard_normal((7, 2, 4, 4)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    a = NUMPY.el.patch_embedding(images, weight, bias)
    b = TORCH.el.patch_embedding(*map(torch.from_numpy, (images, weight, bias))).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(NUMPY.el.image_patches(images, 2),
                                  TORCH.el.image_patches(torch.from_numpy(images), 2))


def test_errors(backend):
    el = backend.el
    img = backend.arr(np.ones((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="divisible by patch_size 3"):
        el.image_patches(img, 3)
    with pytest.raises(ValueError, match="4-D"):
        el.image_patches(backend.arr(np.ones((2, 8, 8), np.float32)), 2)
    with pytest.raises(ValueError, match="positive"):
        el.image_patches(img, 0)
    with pytest.raises(ValueError, match="square Conv2d kernel"):
        el.patch_embedding(img, backend.arr(np.ones((4, 2, 2, 4), np.float32)))
    with pytest.raises(ValueError, match="3 input channels but the images have 2"):
        el.patch_embedding(img, backend.arr(np.ones((4, 3, 2, 2), np.float32)))
    with pytest.raises(ValueError, match=r"bias must have shape \(D,\) = \(4,\)"):
        el.patch_embedding(img, backend.arr(np.ones((4, 2, 2, 2), np.float32)), backend.arr(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="images must be 4-D"):
        el.patch_embedding(backend.arr(np.ones((2, 8, 8), np.float32)), backend.arr(np.ones((4, 2, 2, 2), np.float32)))


def test_dtypes_must_match(backend):
    img = backend.arr(np.ones((1, 1, 4, 4), np.float32))
    with pytest.raises(TypeError, match="images must have the weight's dtype float64"):
        backend.el.patch_embedding(img, backend.arr(np.ones((2, 1, 2, 2), np.float64)))
    with pytest.raises(TypeError, match="bias must have the weight's dtype float32"):
        backend.el.patch_embedding(img, backend.arr(np.ones((2, 1, 2, 2), np.float32)), backend.arr(np.ones(2)))
