"""The layers (chapters 4, 5 and 8): NumPy's forward / sparse backward / SGD step, torch's nn.Modules,
both against torch.nn.Embedding and torch.nn.EmbeddingBag."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from conftest import (NUMPY, TORCH, bag_cases, bitwise_equal, lookup_cases, ref_embedding_bag, ref_lookup_backward, tol)

npel, tel = NUMPY.el, TORCH.el


def _grad_for(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _max_norms():
    return st.one_of(st.none(), st.floats(0.3, 2.5))


# --------------------------------------------------------------------------------------------------
# construction (both backends)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_init_is_standard_normal_and_reproducible(backend, cls):
    make = getattr(backend.el, cls)
    layer = make(2000, 8, seed=0)
    w = backend.np(layer.weight)
    assert w.shape == (2000, 8) and w.dtype == np.float32
    assert abs(w.mean()) < 0.05 and abs(w.std() - 1) < 0.05  # 16,000 N(0, 1) draws: std error ~0.008
    assert bitwise_equal(w, backend.np(make(2000, 8, seed=0).weight))
    assert not np.array_equal(w, backend.np(make(2000, 8, seed=1).weight))


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
@pytest.mark.parametrize("pad", [3, -2])
def test_init_zeroes_the_padding_row(backend, cls, pad):
    layer = getattr(backend.el, cls)(6, 4, padding_idx=pad, seed=0)
    w = backend.np(layer.weight)
    np.testing.assert_array_equal(w[pad % 6], 0)
    assert np.all(np.delete(w, pad % 6, axis=0) != 0)


def test_init_dtype(backend):
    layer = backend.el.Embedding(5, 3, seed=0, dtype=backend.float64)
    assert layer.weight.dtype == backend.float64


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_from_weight_copies(backend, cls):
    w = np.arange(12, dtype=np.float64).reshape(4, 3)
    given_w = backend.arr(w)
    layer = getattr(backend.el, cls).from_weight(given_w)
    np.testing.assert_array_equal(backend.np(layer.weight), w)
    assert layer.weight.dtype == backend.float64
    with torch.no_grad():
        given_w[0, 0] = 100.0
    assert backend.np(layer.weight)[0, 0] == 0.0  # a copy, not a view


# --------------------------------------------------------------------------------------------------
# NumPy Embedding: forward, sparse backward, step, zero_grad
# --------------------------------------------------------------------------------------------------
@given(case=lookup_cases(random=True), data=st.data())
def test_numpy_embedding_forward_and_sparse_backward(case, data):
    idx, w = case
    v, d = w.shape
    pad = data.draw(st.one_of(st.none(), st.integers(-v, v - 1)))
    layer = npel.Embedding.from_weight(w, padding_idx=pad)
    out = layer(idx)
    np.testing.assert_array_equal(out, w[idx])
    np.testing.assert_array_equal(layer.forward(idx), out)
    g = _grad_for(out.shape, w.dtype)
    sg = layer.backward(g)
    rows, values = sg
    touched = np.unique(idx)
    if pad is not None:
        touched = touched[touched != pad % v]
    np.testing.assert_array_equal(rows, touched)  # only touched rows, unique, sorted, padding excluded
    assert values.shape == (len(touched), d) and values.dtype == w.dtype
    np.testing.assert_allclose(values, ref_lookup_backward(idx, g, v)[touched], **tol(w.dtype))
    assert layer.grad is not None
    np.testing.assert_array_equal(layer.grad.rows, rows)
    np.testing.assert_array_equal(layer.grad.values, values)


@given(case=lookup_cases(random=True), data=st.data())
def test_numpy_embedding_step_is_a_dense_sgd_update(case, data):
    idx, w = case
    v = w.shape[0]
    pad = data.draw(st.one_of(st.none(), st.integers(0, v - 1)))
    lr = data.draw(st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    layer = npel.Embedding.from_weight(w, padding_idx=pad)
    out = layer(idx)
    g = _grad_for(out.shape, w.dtype, seed=7)
    layer.backward(g)
    layer.step(lr)
    dense = ref_lookup_backward(idx, g, v, padding_idx=pad)
    expected = w.astype(np.float64) - lr * dense
    np.testing.assert_allclose(layer.weight, expected, **tol(w.dtype))
    untouched = np.setdiff1d(np.arange(v), np.unique(idx))
    if pad is not None:
        untouched = np.union1d(untouched, [pad])
    assert bitwise_equal(layer.weight[untouched], w[untouched])  # no row outside the batch moves at all


def test_numpy_step_accumulates_repeated_rows():
    """Chapter 4: three uses of row 1 in a batch move it three times as far."""
    layer = npel.Embedding.from_weight(np.zeros((3, 2), dtype=np.float64))
    layer(np.array([1, 1, 1]))
    layer.backward(np.ones((3, 2)))
    np.testing.assert_array_equal(layer.grad.rows, [1])
    np.testing.assert_array_equal(layer.grad.values, [[3.0, 3.0]])
    layer.step(0.5)
    np.testing.assert_array_equal(layer.weight, [[0, 0], [-1.5, -1.5], [0, 0]])


def test_numpy_zero_grad():
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    layer = npel.Embedding.from_weight(w)
    layer(np.array([0, 2]))
    layer.backward(np.ones((2, 2), dtype=np.float32))
    layer.zero_grad()
    assert layer.grad is None or len(layer.grad.rows) == 0
    layer.step(1.0)
    assert bitwise_equal(layer.weight, w)


@pytest.mark.parametrize("pad", [None, 2])
@pytest.mark.parametrize("max_norm", [None, 1.5])
@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_numpy_training_equals_torch_sgd_on_nn_embedding(pad, max_norm, norm_type):
    """Several batches of forward / backward / SGD step, gradients accumulated across two batches
    before one step (as torch does until zero_grad)."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((7, 3)).astype(np.float32)
    mine = npel.Embedding.from_weight(w, padding_idx=pad, max_norm=max_norm, norm_type=norm_type)
    ref = nn.Embedding.from_pretrained(torch.from_numpy(w.copy()), freeze=False, padding_idx=pad,
                                       max_norm=max_norm, norm_type=norm_type)
    opt = torch.optim.SGD(ref.parameters(), lr=0.3)
    for step in range(4):
        opt.zero_grad()
        mine.zero_grad()
        for _ in range(2):
            idx = rng.integers(0, 7, size=(3, 4))
            g = rng.standard_normal((3, 4, 3)).astype(np.float32)
            out = mine(idx)
            out_ref = ref(torch.from_numpy(idx))
            np.testing.assert_allclose(out, out_ref.detach().numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(mine.weight, ref.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
            mine.backward(g)
            out_ref.backward(torch.from_numpy(g))
        np.testing.assert_allclose(_dense(mine.grad, 7), ref.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
        mine.step(0.3)
        opt.step()
        np.testing.assert_allclose(mine.weight, ref.weight.detach().numpy(), rtol=1e-5, atol=1e-5)


def _dense(sg, v):
    out = np.zeros((v, sg.values.shape[1]), dtype=sg.values.dtype)
    out[sg.rows] = sg.values
    return out


@given(case=lookup_cases(random=True), max_norm=st.floats(0.3, 2.5))
def test_numpy_max_norm_renormalises_looked_up_rows_like_nn_embedding(case, max_norm):
    idx, w = case
    layer = npel.Embedding.from_weight(w, max_norm=max_norm)
    ref = nn.Embedding.from_pretrained(torch.from_numpy(w.copy()), max_norm=max_norm)
    out = layer(idx)
    out_ref = ref(torch.from_numpy(idx.astype(np.int64)))
    np.testing.assert_allclose(layer.weight, ref.weight.numpy(), **tol(w.dtype))
    np.testing.assert_allclose(out, out_ref.numpy(), **tol(w.dtype))
    norms = np.linalg.norm(layer.weight[np.unique(idx)].astype(np.float64), axis=1)
    assert np.all(norms <= max_norm * (1 + 1e-5))
    untouched = np.setdiff1d(np.arange(w.shape[0]), np.unique(idx))
    assert bitwise_equal(layer.weight[untouched], w[untouched])


def test_numpy_backward_before_forward_is_an_error():
    layer = npel.Embedding(4, 2, seed=0)
    with pytest.raises(Exception):
        layer.backward(np.ones((1, 2), dtype=np.float32))


def test_numpy_backward_checks_grad_shape():
    layer = npel.Embedding(4, 2, seed=0)
    layer(np.array([0, 1, 2]))
    before = layer.weight.copy()
    with pytest.raises(ValueError, match=r"grad_output"):
        layer.backward(np.ones((2, 2), dtype=np.float32))
    assert layer.grad is None
    assert bitwise_equal(layer.weight, before)


# --------------------------------------------------------------------------------------------------
# NumPy EmbeddingBag
# --------------------------------------------------------------------------------------------------
@given(case=bag_cases())
def test_numpy_embedding_bag_layer_forward_backward_matches_torch(case):
    layer = npel.EmbeddingBag.from_weight(case.weight, mode=case.mode, padding_idx=case.padding_idx,
                                          include_last_offset=case.include_last_offset)
    out = layer(case.indices, case.offsets, case.per_sample_weights)
    np.testing.assert_allclose(out, ref_embedding_bag(case), **tol(case.weight.dtype))
    np.testing.assert_allclose(out, npel.embedding_bag(case.indices, case.weight, case.offsets, **case.kwargs()),
                               **tol(case.weight.dtype))
    g = _grad_for(out.shape, case.weight.dtype, seed=3)
    rows, values = layer.backward(g)
    assert np.all(np.diff(rows) > 0)  # unique and sorted
    named = np.unique(case.indices)
    if case.padding_idx is not None:
        named = named[named != case.padding_idx % case.weight.shape[0]]
    assert np.isin(rows, named).all()  # only rows that the input names (padding excluded)
    dense = _dense(layer.grad, case.weight.shape[0])
    # torch's autograd on the same bag is the reference gradient
    w_ref = torch.from_numpy(case.weight.copy()).requires_grad_()
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets.astype(np.int64))
    if case.indices.ndim == 2 and case.indices.shape[1] == 0:
        np.testing.assert_array_equal(dense, 0)
        return
    ref = torch.nn.functional.embedding_bag(
        torch.from_numpy(case.indices.astype(np.int64)), w_ref, offsets, mode=case.mode,
        per_sample_weights=None if case.per_sample_weights is None else torch.from_numpy(case.per_sample_weights),
        padding_idx=case.padding_idx, include_last_offset=case.include_last_offset)
    ref.backward(torch.from_numpy(g))
    np.testing.assert_allclose(dense, w_ref.grad.numpy(), **tol(case.weight.dtype))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("max_norm", [None, 1.2])
def test_numpy_bag_training_equals_torch_sgd_on_nn_embedding_bag(mode, max_norm):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((9, 4)).astype(np.float32)
    mine = npel.EmbeddingBag.from_weight(w, mode=mode, padding_idx=0, max_norm=max_norm)
    ref = nn.EmbeddingBag.from_pretrained(torch.from_numpy(w.copy()), freeze=False, mode=mode, padding_idx=0,
                                          max_norm=max_norm)
    opt = torch.optim.SGD(ref.parameters(), lr=0.2)
    for _ in range(4):
        idx = rng.integers(0, 9, size=12)
        offsets = np.array([0, 3, 3, 7])
        psw = rng.standard_normal(12).astype(np.float32) if mode == "sum" else None
        out = mine(idx, offsets, psw)
        out_ref = ref(torch.from_numpy(idx), torch.from_numpy(offsets),
                      None if psw is None else torch.from_numpy(psw))
        np.testing.assert_allclose(out, out_ref.detach().numpy(), rtol=1e-5, atol=1e-5)
        g = rng.standard_normal(out.shape).astype(np.float32)
        mine.zero_grad()
        opt.zero_grad()
        mine.backward(g)
        out_ref.backward(torch.from_numpy(g))
        mine.step(0.2)
        opt.step()
        np.testing.assert_allclose(mine.weight, ref.weight.detach().numpy(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# torch layers are nn.Modules matching nn.Embedding / nn.EmbeddingBag
# --------------------------------------------------------------------------------------------------
def test_torch_layers_are_modules_with_one_parameter():
    for layer, ref in ((tel.Embedding(5, 3, seed=0), nn.Embedding(5, 3)),
                       (tel.EmbeddingBag(5, 3, seed=0), nn.EmbeddingBag(5, 3))):
        assert isinstance(layer, nn.Module)
        assert isinstance(layer.weight, nn.Parameter) and layer.weight.requires_grad
        assert [n for n, _ in layer.named_parameters()] == ["weight"]
        assert list(layer.state_dict()) == list(ref.state_dict())
        layer.load_state_dict(ref.state_dict())  # interchangeable checkpoints
        assert torch.equal(layer.weight, ref.weight)


@given(case=lookup_cases(random=True), data=st.data())
def test_torch_embedding_matches_nn_embedding(case, data):
    idx, w = case
    v = w.shape[0]
    pad = data.draw(st.one_of(st.none(), st.integers(-v, v - 1)))
    max_norm = data.draw(_max_norms())
    norm_type = data.draw(st.sampled_from([1.0, 2.0, 3.0]))
    mine = tel.Embedding.from_weight(torch.from_numpy(w), padding_idx=pad, max_norm=max_norm, norm_type=norm_type)
    ref = nn.Embedding.from_pretrained(torch.from_numpy(w.copy()), freeze=False, padding_idx=pad,
                                       max_norm=max_norm, norm_type=norm_type)
    idx_t = torch.from_numpy(idx.astype(np.int64))
    out, out_ref = mine(idx_t), ref(idx_t)
    t = tol(w.dtype)
    np.testing.assert_allclose(out.detach().numpy(), out_ref.detach().numpy(), **t)
    np.testing.assert_allclose(mine.weight.detach().numpy(), ref.weight.detach().numpy(), **t)  # renorm
    g = torch.from_numpy(_grad_for(tuple(out.shape), w.dtype, seed=9))
    out.backward(g)
    out_ref.backward(g)
    np.testing.assert_allclose(mine.weight.grad.numpy(), ref.weight.grad.numpy(), **t)


@given(case=bag_cases(), data=st.data())
def test_torch_embedding_bag_matches_nn_embedding_bag(case, data):
    max_norm = data.draw(_max_norms())
    if case.indices.ndim == 2 and case.indices.shape[1] == 0:
        case.indices = np.zeros((case.indices.shape[0], 1), dtype=np.int64)  # torch fails on (B, 0)
        if case.per_sample_weights is not None:
            case.per_sample_weights = np.ones((case.indices.shape[0], 1), dtype=case.weight.dtype)
    w = case.weight
    mine = tel.EmbeddingBag.from_weight(torch.from_numpy(w), mode=case.mode, padding_idx=case.padding_idx,
                                        max_norm=max_norm, include_last_offset=case.include_last_offset)
    ref = nn.EmbeddingBag.from_pretrained(torch.from_numpy(w.copy()), freeze=False, mode=case.mode,
                                          padding_idx=case.padding_idx, max_norm=max_norm,
                                          include_last_offset=case.include_last_offset)
    idx = torch.from_numpy(case.indices.astype(np.int64))
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets.astype(np.int64))
    psw = psw_ref = None
    if case.per_sample_weights is not None:
        psw = torch.from_numpy(case.per_sample_weights.copy()).requires_grad_()
        psw_ref = torch.from_numpy(case.per_sample_weights.copy()).requires_grad_()
    out = mine(idx, offsets, psw)
    out_ref = ref(idx, offsets, psw_ref)
    t = tol(w.dtype)
    np.testing.assert_allclose(out.detach().numpy(), out_ref.detach().numpy(), **t)
    np.testing.assert_allclose(mine.weight.detach().numpy(), ref.weight.detach().numpy(), **t)
    g = torch.from_numpy(_grad_for(tuple(out.shape), w.dtype, seed=4))
    out.backward(g)
    out_ref.backward(g)
    np.testing.assert_allclose(mine.weight.grad.numpy(), ref.weight.grad.numpy(), **t)
    if psw is not None:
        np.testing.assert_allclose(psw.grad.numpy(), psw_ref.grad.numpy(), **t)


def test_torch_padding_row_never_trains():
    layer = tel.Embedding(5, 2, padding_idx=1, seed=0)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.tensor([[1, 2], [1, 1]])).pow(2).sum().backward()
        opt.step()
    assert torch.equal(layer.weight[1].detach(), torch.zeros(2))


def test_torch_layer_accepts_lists_and_numpy_indices():
    layer = tel.Embedding.from_weight(torch.arange(6.0).reshape(3, 2))
    assert torch.equal(layer([2, 0]), torch.tensor([[4.0, 5.0], [0.0, 1.0]]))
    assert torch.equal(layer(np.array([2, 0], dtype=np.int32)), torch.tensor([[4.0, 5.0], [0.0, 1.0]]))


@given(case=lookup_cases(random=True), data=st.data())
def test_layers_agree_across_backends(case, data):
    idx, w = case
    pad = data.draw(st.one_of(st.none(), st.integers(0, w.shape[0] - 1)))
    max_norm = data.draw(_max_norms())
    a = npel.Embedding.from_weight(w, padding_idx=pad, max_norm=max_norm)
    b = tel.Embedding.from_weight(torch.from_numpy(w), padding_idx=pad, max_norm=max_norm)
    out_a, out_b = a(idx), b(torch.from_numpy(idx))
    np.testing.assert_allclose(out_a, out_b.detach().numpy(), **tol(w.dtype))
    g = _grad_for(out_a.shape, w.dtype, seed=2)
    a.backward(g)
    out_b.backward(torch.from_numpy(g))
    np.testing.assert_allclose(_dense(a.grad, w.shape[0]), b.weight.grad.numpy(), **tol(w.dtype))


@pytest.mark.parametrize("mode", [None, "sum", "mean", "max"])
def test_zero_dimensional_embeddings_have_empty_gradients(backend, mode):
    # D = 0 is legal (a model may drop a table by giving it no columns); shapes must still work out.
    if mode is None:
        layer = backend.el.Embedding(5, 0, seed=0)
        out = layer(backend.arr(np.array([1, 2, 2])))
        expected = (3, 0)
    else:
        layer = backend.el.EmbeddingBag(5, 0, mode=mode, seed=0)
        out = layer(backend.arr(np.array([1, 2, 2])), backend.arr(np.array([0, 1])))
        expected = (2, 0)
    assert tuple(out.shape) == expected
    if backend.name == "numpy":
        grad = layer.backward(np.ones(expected, np.float32))
        assert grad.values.shape[1] == 0
        assert grad.to_dense(5).shape == (5, 0)
    else:
        out.sum().backward()
        assert tuple(layer.weight.grad.shape) == (5, 0)


def test_zero_dimensional_lookup_backward(backend):
    grad = backend.el.lookup_backward(backend.arr(np.array([1, 2, 2])), backend.arr(np.ones((3, 0))), 5)
    assert tuple(grad.shape) == (5, 0)
