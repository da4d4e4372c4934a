"""lookup and lookup_backward (chapters 2 and 4), against one-hot algebra and torch's F.embedding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import (NUMPY, TORCH, indices, lookup_cases, random_weights, ref_lookup_backward, ref_one_hot,
                      tol, weights)


@given(case=lookup_cases())
def test_lookup_equals_onehot_matmul(backend, case):
    idx, w = case
    out = backend.el.lookup(backend.arr(idx), backend.arr(w))
    assert backend.is_native(out)
    assert out.dtype == backend.dtype(w.dtype)
    assert tuple(out.shape) == idx.shape + (w.shape[1],)
    np.testing.assert_array_equal(backend.np(out), w[idx])
    np.testing.assert_array_equal(backend.np(out), backend.np(backend.el.onehot_matmul(backend.arr(idx),
                                                                                       backend.arr(w))))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])
def test_numpy_lookup_accepts_every_integer_dtype(dtype):
    w = np.arange(12, dtype=np.float32).reshape(6, 2)
    idx = np.array([[5, 0], [3, 3]], dtype=dtype)
    np.testing.assert_array_equal(NUMPY.el.lookup(idx, w), w[idx.astype(np.int64)])


TORCH_INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8] + [
    getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)]


@pytest.mark.parametrize("dtype", TORCH_INT_DTYPES, ids=str)
def test_torch_lookup_accepts_every_integer_dtype(dtype):
    """uint8 tensors are masks to torch's own indexing; here they must still be row ids."""
    w = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    idx = torch.tensor([[5, 0], [3, 3]], dtype=dtype)
    expected = w.numpy()[[[5, 0], [3, 3]]]
    np.testing.assert_array_equal(TORCH.el.lookup(idx, w).numpy(), expected)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])
def test_torch_lookup_converts_numpy_and_list_indices(dtype):
    w = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    idx = np.array([4, 1, 1], dtype=dtype)
    out = TORCH.el.lookup(idx, w)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), w.numpy()[[4, 1, 1]])
    np.testing.assert_array_equal(TORCH.el.lookup([[4], [1]], w).numpy(), w.numpy()[[[4], [1]]])


def test_lookup_empty_list_and_empty_arrays(backend):
    w = backend.arr(np.ones((3, 2), dtype=np.float32))
    assert tuple(backend.el.lookup([], w).shape) == (0, 2)
    assert tuple(backend.el.lookup(backend.arr(np.zeros((2, 0), dtype=np.int64)), w).shape) == (2, 0, 2)
    assert tuple(backend.el.lookup([[], []], w).shape) == (2, 0, 2)
    g = backend.el.lookup_backward([], backend.arr(np.zeros((0, 2), dtype=np.float32)), 3)
    np.testing.assert_array_equal(backend.np(g), np.zeros((3, 2)))
    np.testing.assert_array_equal(backend.np(backend.el.embedding_bag([], w, [0])), np.zeros((1, 2)))
    np.testing.assert_array_equal(backend.np(backend.el.embedding_bag([[], []], w)), np.zeros((2, 2)))


def test_lookup_scalar_index_gives_a_row(backend):
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = backend.el.lookup(backend.arr(np.array(2)), backend.arr(w))
    assert tuple(out.shape) == (2,)
    np.testing.assert_array_equal(backend.np(out), w[2])


def test_lookup_padding_idx_does_not_change_the_forward(backend):
    w = np.arange(8, dtype=np.float32).reshape(4, 2) + 1
    for pad in (1, -3):
        out = backend.el.lookup(backend.arr(np.array([1, 2, 1])), backend.arr(w), padding_idx=pad)
        np.testing.assert_array_equal(backend.np(out), w[[1, 2, 1]])


# --------------------------------------------------------------------------------------------------
# lookup_backward
# --------------------------------------------------------------------------------------------------
@given(data=st.data(), w=random_weights())
def test_lookup_backward_is_one_hot_transpose_times_grad(backend, data, w):
    v, d = w.shape
    idx = data.draw(indices(v))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    grad = rng.standard_normal(idx.shape + (d,)).astype(w.dtype)
    out = backend.el.lookup_backward(backend.arr(idx), backend.arr(grad), v)
    assert out.dtype == backend.dtype(w.dtype)
    assert tuple(out.shape) == (v, d)
    one_hot = ref_one_hot(idx, v).reshape(-1, v)
    expected = one_hot.T @ grad.reshape(-1, d).astype(np.float64)
    np.testing.assert_allclose(backend.np(out), expected, **tol(w.dtype))
    np.testing.assert_allclose(backend.np(out), ref_lookup_backward(idx, grad, v), **tol(w.dtype))


def test_lookup_backward_sums_repeats_that_fancy_assignment_loses(backend):
    """Chapter 4: `W[idx] += g` keeps one of the repeated updates; the gradient needs all of them."""
    idx = np.array([2, 0, 2, 2])
    grad = np.array([[1.0], [10.0], [100.0], [1000.0]], dtype=np.float64)
    out = backend.np(backend.el.lookup_backward(backend.arr(idx), backend.arr(grad), 3))
    np.testing.assert_array_equal(out, [[10.0], [0.0], [1101.0]])
    lossy = np.zeros((3, 1))
    lossy[idx] += grad
    assert lossy[2, 0] != out[2, 0]


@given(data=st.data(), w=random_weights())
def test_lookup_backward_padding_row_is_zero(backend, data, w):
    v, d = w.shape
    idx = data.draw(indices(v))
    pad = data.draw(st.integers(-v, v - 1))
    grad = np.random.default_rng(0).standard_normal(idx.shape + (d,)).astype(w.dtype)
    out = backend.np(backend.el.lookup_backward(backend.arr(idx), backend.arr(grad), v, padding_idx=pad))
    expected = ref_lookup_backward(idx, grad, v, padding_idx=pad)
    assert (out[pad % v] == 0).all()
    np.testing.assert_allclose(out, expected, **tol(w.dtype))


# --------------------------------------------------------------------------------------------------
# torch: autograd equals F.embedding, and equals lookup_backward
# --------------------------------------------------------------------------------------------------
@given(case=lookup_cases(random=True), data=st.data())
def test_torch_lookup_matches_F_embedding_forward_and_grad(case, data):
    idx, w = case
    v = w.shape[0]
    pad = data.draw(st.one_of(st.none(), st.integers(-v, v - 1)))
    idx_t = torch.from_numpy(idx.astype(np.int64))
    mine = torch.from_numpy(w).requires_grad_()
    ref = torch.from_numpy(w.copy()).requires_grad_()
    out = TORCH.el.lookup(idx_t, mine, padding_idx=pad)
    expected = F.embedding(idx_t, ref, padding_idx=pad)
    assert torch.equal(out, expected)
    g = torch.from_numpy(np.random.default_rng(1).standard_normal(out.shape).astype(w.dtype))
    out.backward(g)
    expected.backward(g)
    np.testing.assert_allclose(mine.grad.numpy(), ref.grad.numpy(), **tol(w.dtype))
    # and autograd's gradient is lookup_backward
    np.testing.assert_allclose(mine.grad.numpy(), TORCH.el.lookup_backward(idx_t, g, v, padding_idx=pad).numpy(),
                               **tol(w.dtype))


@given(case=lookup_cases(random=True))
def test_torch_onehot_matmul_grad_equals_lookup_grad(case):
    idx, w = case
    idx_t = torch.from_numpy(idx)
    a = torch.from_numpy(w).requires_grad_()
    b = torch.from_numpy(w.copy()).requires_grad_()
    g = torch.from_numpy(np.random.default_rng(2).standard_normal(idx.shape + (w.shape[1],)).astype(w.dtype))
    TORCH.el.onehot_matmul(idx_t, a).backward(g)
    TORCH.el.lookup(idx_t, b).backward(g)
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tol(w.dtype))


@given(case=lookup_cases(random=True))
def test_backends_agree_on_lookup_and_backward(case):
    idx, w = case
    v, d = w.shape
    grad = np.random.default_rng(3).standard_normal(idx.shape + (d,)).astype(w.dtype)
    np.testing.assert_array_equal(NUMPY.el.lookup(idx, w), TORCH.el.lookup(torch.from_numpy(idx),
                                                                           torch.from_numpy(w)).numpy())
    np.testing.assert_allclose(NUMPY.el.lookup_backward(idx, grad, v, padding_idx=0),
                               TORCH.el.lookup_backward(torch.from_numpy(idx), torch.from_numpy(grad), v,
                                                        padding_idx=0).numpy(), **tol(w.dtype))


def test_numpy_lookup_does_not_alias_or_change_the_weight():
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    before = w.copy()
    out = NUMPY.el.lookup(np.array([0, 1]), w)
    out[:] = -1
    np.testing.assert_array_equal(w, before)


def test_torch_lookup_gradient_sums_repeats():
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([1, 1, 4])
    out = TORCH.el.lookup(idx, w)
    assert out.requires_grad
    out.sum().backward()
    expected = torch.zeros(5, 3, dtype=torch.float64)
    expected[1] = 2
    expected[4] = 1
    assert torch.equal(w.grad, expected)


# --------------------------------------------------------------------------------------------------
# gradcheck (float64)
# --------------------------------------------------------------------------------------------------
@given(w=weights(dtype=np.float64, max_rows=6, max_dim=3), data=st.data())
def test_lookup_gradcheck(w, data):
    v = w.shape[0]
    idx = torch.from_numpy(data.draw(indices(v, max_dims=2, min_side=1, max_side=4)).astype(np.int64))
    wt = torch.tensor(w / 1e3, requires_grad=True)
    # (padding_idx deliberately breaks the true Jacobian, as in F.embedding: checked against it above)
    assert torch.autograd.gradcheck(lambda x: TORCH.el.lookup(idx, x), (wt,))


@given(data=st.data(), v=st.integers(1, 6), d=st.integers(1, 3))
def test_lookup_backward_gradcheck_wrt_grad_output(data, v, d):
    idx_np = data.draw(indices(v, max_dims=2, min_side=1, max_side=4)).astype(np.int64)
    pad = data.draw(st.one_of(st.none(), st.integers(0, v - 1)))
    g = torch.tensor(np.random.default_rng(4).standard_normal(idx_np.shape + (d,)), requires_grad=True)
    idx = torch.from_numpy(idx_np)
    assert torch.autograd.gradcheck(lambda x: TORCH.el.lookup_backward(idx, x, v, padding_idx=pad), (g,))


def test_torch_lookup_gradient_on_the_cpu_is_pytorchs_bit_for_bit():
    """On the CPU the backward runs PyTorch's own embedding backward (what F.embedding's autograd
    runs), in the order of the indices: the same bits as F.embedding and as an index_add. The
    autograd node keeps embedlib's name (chapter 5 shows it)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(40, 6, generator=gen)
    idx = torch.randint(0, 40, (5, 30), generator=gen)
    g = torch.randn(5, 30, 6, generator=gen) * 1e3
    for pad in (None, 3):
        mine, ref = w.clone().requires_grad_(), w.clone().requires_grad_()
        out = TORCH.el.lookup(idx, mine, padding_idx=pad)
        assert type(out.grad_fn).__name__ == "_LookupBackward"
        out.backward(g)
        F.embedding(idx, ref, padding_idx=pad).backward(g)
        assert torch.equal(mine.grad, ref.grad)
        added = torch.zeros(40, 6).index_add_(0, idx.reshape(-1), g.reshape(-1, 6))
        if pad is not None:
            added[pad] = 0
        for deterministic in (True, False):
            grad = TORCH.el.lookup_backward(idx, g, 40, padding_idx=pad, deterministic=deterministic)
            assert torch.equal(grad, added)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_torch_lookup_backward_takes_narrow_index_types(dtype):
    g = torch.arange(8.0).reshape(4, 2)
    grad = TORCH.el.lookup_backward(torch.tensor([2, 0, 2, 1], dtype=dtype), g, 3)
    assert torch.equal(grad, torch.tensor([[2.0, 3.0], [6.0, 7.0], [4.0, 6.0]]))  # row 2: rows 0 and 2 of g


# --------------------------------------------------------------------------------------------------
# max_norm / norm_type in the function (issue 12), as F.embedding
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1.5])
def test_lookup_max_norm_renormalises_in_place_like_f_embedding(backend, max_norm, norm_type):
    gen = torch.Generator().manual_seed(3)
    ref_w = torch.randn(7, 4, generator=gen, dtype=torch.float64) * 2
    idx = torch.tensor([[0, 2, 2], [5, 0, 1]])
    if backend is TORCH:
        w = ref_w.clone().requires_grad_()
    else:
        w = ref_w.numpy().copy()
    out = backend.el.lookup(idx.numpy() if backend is NUMPY else idx, w, max_norm=max_norm, norm_type=norm_type)
    ref = F.embedding(idx, ref_w, max_norm=max_norm, norm_type=norm_type)
    np.testing.assert_allclose(np.asarray(out.detach() if backend is TORCH else out), ref.numpy(), rtol=1e-12)
    table = w.detach().numpy() if backend is TORCH else w
    np.testing.assert_allclose(table, ref_w.numpy(), rtol=1e-12)  # the same rows rescaled, in place
    assert not np.allclose(table[3], 0) and np.array_equal(table[[3, 4, 6]], ref_w.numpy()[[3, 4, 6]])


def test_torch_lookup_max_norm_gradient_like_f_embedding():
    w = (torch.randn(5, 3, dtype=torch.float64) * 3).requires_grad_()
    ref_w = w.detach().clone().requires_grad_()
    idx = torch.tensor([0, 1, 1, 4])
    g = torch.randn(4, 3, dtype=torch.float64)
    TORCH.el.lookup(idx, w, max_norm=1.0, padding_idx=1).backward(g)
    F.embedding(idx, ref_w, max_norm=1.0, padding_idx=1).backward(g)
    torch.testing.assert_close(w.grad, ref_w.grad)
    torch.testing.assert_close(w.detach(), ref_w.detach())


@pytest.mark.parametrize("bad", [dict(max_norm=0.0), dict(max_norm=-1.0), dict(max_norm=1.0, norm_type=0),
                                 dict(max_norm=1.0, padding_idx=9), dict(max_norm=1.0, deterministic="yes"),
                                 dict(max_norm=1.0, indices=[0, 7])])
def test_lookup_max_norm_errors_leave_the_weight_unchanged(backend, bad):
    bad = dict(bad)
    idx = bad.pop("indices", [0, 1])
    w = np.random.default_rng(0).standard_normal((5, 3)) * 4
    w = torch.tensor(w) if backend is TORCH else w
    before = w.clone() if backend is TORCH else w.copy()
    with pytest.raises((ValueError, TypeError, IndexError)):
        backend.el.lookup(idx, w, **bad)
    assert np.array_equal(w.numpy() if backend is TORCH else w, before.numpy() if backend is TORCH else before)


def test_numpy_lookup_max_norm_needs_an_array():
    with pytest.raises(TypeError, match="max_norm changes weight in place"):
        NUMPY.el.lookup([0], [[3.0, 4.0]], max_norm=1.0)
    assert NUMPY.el.lookup([0], [[3.0, 4.0]]).tolist() == [[3.0, 4.0]]  # without max_norm a list is fine


# --------------------------------------------------------------------------------------------------
# scale_grad_by_freq (issue 12), as F.embedding / nn.Embedding
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [False, True], ids=["function", "layer"])
@pytest.mark.parametrize("pad", [None, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_scale_grad_by_freq_like_f_embedding(layer, pad, dtype):
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(8, 3, generator=gen, dtype=dtype)
    idx = torch.tensor([[3, 5, 5], [6, 6, 6], [1, 6, 3]])
    g = torch.randn(3, 3, 3, generator=gen, dtype=dtype)
    ref = nn.Embedding.from_pretrained(w.clone(), freeze=False, padding_idx=pad, scale_grad_by_freq=True)
    ref(idx).backward(g)
    if layer:
        ours = TORCH.el.Embedding.from_weight(w, padding_idx=pad, scale_grad_by_freq=True)
        ours(idx).backward(g)
        grad = ours.weight.grad
    else:
        w_el = w.clone().requires_grad_()
        TORCH.el.lookup(idx, w_el, padding_idx=pad, scale_grad_by_freq=True).backward(g)
        grad = w_el.grad
    torch.testing.assert_close(grad, ref.weight.grad)
    counts = torch.bincount(idx.reshape(-1), minlength=8).clamp(min=1)
    plain = TORCH.el.lookup_backward(idx, g, 8, padding_idx=pad)
    torch.testing.assert_close(grad, plain / counts[:, None].to(dtype))  # the definition


def test_torch_scale_grad_by_freq_double_backward_like_f_embedding():
    """(gradcheck does not apply: the scaled gradient is deliberately not the derivative.) With
    create_graph the same gradient as F.embedding's, itself differentiable w.r.t. grad_output: entry j
    gets ``v[idx[j]] / count(idx[j])``, the derivative of the scaled sum. (torch 2.13's double backward
    leaves the scale out and gives ``v[idx[j]]``: embedlib differs there, on purpose.)"""
    w = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([0, 2, 2, 5, 2])
    v = torch.randn(6, 2, dtype=torch.float64)
    grads = []
    for fn in (TORCH.el.lookup, F.embedding):
        g = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        (gw,) = torch.autograd.grad(fn(idx, w, scale_grad_by_freq=True), w, g, create_graph=True)
        (gw * v).sum().backward()
        grads.append((gw.detach(), g.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    counts = torch.bincount(idx, minlength=6)[idx].double()
    torch.testing.assert_close(grads[0][1], v[idx] / counts[:, None])
    torch.testing.assert_close(grads[1][1], v[idx])  # torch's, without the scale


# torch: sparse=True gradients and forward-mode AD (issue 12)
# --------------------------------------------------------------------------------------------------
@given(case=lookup_cases(random=True), data=st.data())
def test_torch_sparse_lookup_gradient_is_F_embeddings_bit_for_bit(case, data):
    idx, w = case
    v = w.shape[0]
    pad = data.draw(st.one_of(st.none(), st.integers(-v, v - 1)))
    freq = data.draw(st.booleans())
    idx_t = torch.from_numpy(idx.astype(np.int64))
    g = torch.from_numpy(np.random.default_rng(1).standard_normal(idx.shape + (w.shape[1],)).astype(w.dtype))
    mine, dense, ref = (torch.from_numpy(w.copy()).requires_grad_() for _ in range(3))
    TORCH.el.lookup(idx_t, mine, padding_idx=pad, sparse=True, scale_grad_by_freq=freq).backward(g)
    TORCH.el.lookup(idx_t, dense, padding_idx=pad, scale_grad_by_freq=freq).backward(g)
    assert mine.grad.is_sparse and mine.grad.shape == w.shape
    np.testing.assert_allclose(mine.grad.to_dense().numpy(), dense.grad.numpy(), **tol(w.dtype))
    if freq or (idx.ndim == 0 and pad is not None):
        # torch's backward refuses sparse=True with scale_grad_by_freq, and fails ("too many indices for
        # tensor of dimension 0") on one index with a padding_idx: compared with the dense one only
        return
    F.embedding(idx_t, ref, padding_idx=pad, sparse=True).backward(g)
    assert torch.equal(mine.grad._indices(), ref.grad._indices())
    assert torch.equal(mine.grad._values(), ref.grad._values())


def test_torch_sparse_lookup_gradient_of_gradient_like_f_embedding():
    w = torch.randn(6, 3, dtype=torch.float64)
    idx = torch.tensor([[1, 2, 1], [5, 2, 0]])
    grads = []
    for fn in (TORCH.el.lookup, F.embedding):
        weight = w.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(idx, weight, sparse=True).pow(2).sum(), weight, create_graph=True)
        g.to_dense().pow(2).sum().backward()
        grads.append((g.to_dense(), weight.grad.to_dense()))
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs)


@given(case=lookup_cases(random=True), data=st.data())
def test_torch_lookup_forward_mode_ad_like_f_embedding(case, data):
    idx, w = case
    v = w.shape[0]
    pad = data.draw(st.one_of(st.none(), st.integers(-v, v - 1)))
    idx_t, w_t = torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(w)
    tangent = torch.from_numpy(np.random.default_rng(3).standard_normal(w.shape).astype(w.dtype))
    mine = torch.func.jvp(lambda x: TORCH.el.lookup(idx_t, x, padding_idx=pad), (w_t,), (tangent,))
    theirs = torch.func.jvp(lambda x: F.embedding(idx_t, x, padding_idx=pad), (w_t,), (tangent,))
    assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1])
    with torch.autograd.forward_ad.dual_level():  # the other forward-mode API: dual tensors
        out = TORCH.el.lookup(idx_t, torch.autograd.forward_ad.make_dual(w_t, tangent), padding_idx=pad)
        assert torch.equal(torch.autograd.forward_ad.unpack_dual(out).tangent, theirs[1])


@given(data=st.data(), v=st.integers(1, 6), d=st.integers(1, 3))
def test_torch_lookup_backward_forward_mode_ad_is_lookup_backward_of_the_tangent(data, v, d):
    idx = torch.from_numpy(data.draw(indices(v)).astype(np.int64))
    g, tangent = torch.randn(*idx.shape, d, dtype=torch.float64), torch.randn(*idx.shape, d, dtype=torch.float64)
    pad = data.draw(st.one_of(st.none(), st.integers(0, v - 1)))
    out, out_tangent = torch.func.jvp(lambda x: TORCH.el.lookup_backward(idx, x, v, padding_idx=pad), (g,), (tangent,))
    assert torch.equal(out_tangent, TORCH.el.lookup_backward(idx, tangent, v, padding_idx=pad))


def test_lookup_sparse_must_be_a_bool(backend=None):
    with pytest.raises(TypeError, match="sparse must be True or False"):
        TORCH.el.lookup([1], torch.zeros(2, 2), sparse="yes")
