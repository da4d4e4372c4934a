"""The layers (chapters 4, 5 and 8): NumPy's forward / sparse backward / SGD step, torch's nn.Modules,
both against torch.nn.Embedding and torch.nn.EmbeddingBag."""
from __future__ import annotations

import warnings

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


# --------------------------------------------------------------------------------------------------
# positional constructor arguments and from_pretrained (issue 12), against torch.nn
# --------------------------------------------------------------------------------------------------
def test_torch_positional_arguments_match_nn():
    """nn.Embedding's and nn.EmbeddingBag's argument order; seed stays keyword-only."""
    ours, theirs = tel.Embedding(10, 3, 2, 1.5, 1.0), nn.Embedding(10, 3, 2, 1.5, 1.0)
    assert (ours.padding_idx, ours.max_norm, ours.norm_type) == (theirs.padding_idx, theirs.max_norm,
                                                                 theirs.norm_type) == (2, 1.5, 1.0)
    assert repr(ours) == repr(theirs) == "Embedding(10, 3, padding_idx=2, max_norm=1.5, norm_type=1.0)"
    ours = tel.EmbeddingBag(10, 3, 1.5, 1.0, False, "max", False, None, True, 4)
    theirs = nn.EmbeddingBag(10, 3, 1.5, 1.0, False, "max", False, None, True, 4)
    for name in ("max_norm", "norm_type", "mode", "include_last_offset", "padding_idx"):
        assert getattr(ours, name) == getattr(theirs, name), name
    w = torch.randn(10, 3, dtype=torch.float64)
    ours, theirs = tel.EmbeddingBag(10, 3, _weight=w, mode="sum"), nn.EmbeddingBag(10, 3, _weight=w, mode="sum")
    assert ours.weight.data_ptr() == theirs.weight.data_ptr() == w.data_ptr() and ours.weight.requires_grad
    frozen = tel.Embedding(10, 3, _weight=w, _freeze=True, padding_idx=0)
    assert frozen.weight.data_ptr() == w.data_ptr() and not frozen.weight.requires_grad
    assert torch.equal(frozen.weight[0], w[0])  # the padding row of a given weight is used as given
    with pytest.raises(TypeError):
        tel.Embedding(10, 3, 0, 1.0, 2.0, False, False, None, False, None, None, 7)  # seed is keyword-only
    assert torch.equal(tel.Embedding(10, 3, seed=7).weight, tel.Embedding(10, 3, seed=7).weight)


@pytest.mark.parametrize("optimizer", ["SGD", "SparseAdam", "Adagrad"])
@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_torch_sparse_layers_train_like_torchs_with_sparse_optimizers(cls, optimizer):
    # sparse=True: the weight's gradient is a sparse COO tensor that torch's sparse optimizers take;
    # three steps give the same table as nn.Embedding / nn.EmbeddingBag with sparse=True
    w = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    opts = dict(padding_idx=1) if cls == "Embedding" else dict(mode="sum", padding_idx=1)
    ours = getattr(tel, cls).from_pretrained(w.clone(), freeze=False, sparse=True, **opts)
    theirs = getattr(nn, cls).from_pretrained(w.clone(), freeze=False, sparse=True, **opts)
    assert ours.sparse and theirs.sparse
    batches = [torch.tensor([[0, 2, 2], [7, 1, 3]]), torch.tensor([[5, 5, 5], [0, 6, 1]]),
               torch.tensor([[4, 2, 0], [3, 3, 7]])]
    for layer in (ours, theirs):
        # (Adagrad builds sparse tensors without saying whether torch should check them: it warns)
        warnings.filterwarnings("ignore", "Sparse invariant checks are implicitly disabled", UserWarning)
        opt = getattr(torch.optim, optimizer)(layer.parameters(), lr=0.1)
        for batch in batches:
            opt.zero_grad()
            layer(batch).pow(2).sum().backward()
            assert layer.weight.grad.is_sparse
            opt.step()
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-12, atol=1e-12)
    assert not torch.equal(ours.weight, w)


def test_sparse_option_is_a_bool_and_numpy_layers_accept_it():
    with pytest.raises(TypeError, match="sparse must be True or False"):
        tel.Embedding(5, 2, sparse="yes")
    e = npel.Embedding(5, 2, sparse=True, seed=0)  # the NumPy gradient is a SparseGrad either way
    assert e.sparse and not npel.Embedding(5, 2).sparse
    e([1, 1, 3])
    grad = e.backward(np.ones((3, 2)))
    assert grad.rows.tolist() == [1, 3] and grad.values.tolist() == [[2, 2], [1, 1]]
    assert npel.EmbeddingBag.from_pretrained(np.ones((3, 2)), sparse=True).sparse


def test_torch_weight_argument_is_checked():
    with pytest.raises(ValueError, match=r"_weight must have shape .*\(4, 3\)"):
        tel.Embedding(4, 3, _weight=torch.randn(3, 4))
    with pytest.raises(ValueError, match="seed"):
        tel.Embedding(4, 3, _weight=torch.randn(4, 3), seed=1)


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_torch_from_pretrained_shares_memory_like_nn(cls, freeze):
    a = torch.randn(6, 4, dtype=torch.float64) * 3
    b = a.clone()
    kw = dict(padding_idx=1, max_norm=2.0, norm_type=1.0)
    if cls == "EmbeddingBag":
        kw["mode"] = "sum"
    ours = getattr(tel, cls).from_pretrained(a, freeze, **kw)
    theirs = getattr(nn, cls).from_pretrained(b, freeze, **kw)
    assert ours.weight.data_ptr() == a.data_ptr()
    assert ours.weight.requires_grad == theirs.weight.requires_grad == (not freeze)
    assert torch.equal(ours.weight[1], b[1]) and b[1].abs().sum() > 0  # padding row not zeroed, as torch
    idx = torch.tensor([[0, 1, 3], [3, 3, 5]])
    out_ours, out_theirs = ours(idx), theirs(idx)
    torch.testing.assert_close(out_ours, out_theirs)
    torch.testing.assert_close(a, b)  # max_norm renormalised the shared tensor itself, as torch's
    assert a.norm(p=1, dim=1)[[0, 3, 5]].le(2.0 + 1e-6).all()
    if not freeze:
        out_ours.sum().backward()
        out_theirs.sum().backward()
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)
    else:
        assert out_ours.grad_fn is None and ours.weight.grad is None


def test_torch_from_pretrained_checks_before_sharing():
    a = torch.randn(4, 3)
    before = a.clone()
    with pytest.raises(ValueError, match="padding_idx"):
        tel.Embedding.from_pretrained(a, padding_idx=4)
    with pytest.raises(ValueError, match="mode"):
        tel.EmbeddingBag.from_pretrained(a, mode="median")
    with pytest.raises(TypeError, match="floating-point"):
        tel.Embedding.from_pretrained(torch.arange(6).reshape(3, 2))
    assert torch.equal(a, before)


def test_numpy_positional_arguments():
    """The NumPy layers take torch's leading positional arguments too (the options they have)."""
    e = npel.Embedding(10, 3, 2, 1.5, 1.0)
    assert (e.padding_idx, e.max_norm, e.norm_type) == (2, 1.5, 1.0)
    b = npel.EmbeddingBag(10, 3, 1.5, 1.0, mode="max")
    assert (b.max_norm, b.norm_type, b.mode) == (1.5, 1.0, "max")


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_numpy_from_pretrained_shares_the_array(cls, freeze):
    a = np.random.default_rng(0).standard_normal((6, 4)) * 3
    ref = torch.tensor(a)
    kw = dict(padding_idx=1, max_norm=2.0)
    if cls == "EmbeddingBag":
        kw["mode"] = "sum"
    ours = getattr(npel, cls).from_pretrained(a, freeze, **kw)
    theirs = getattr(nn, cls).from_pretrained(ref, freeze, **kw)
    assert ours.weight is a
    idx = np.array([[0, 1, 3], [3, 3, 5]])
    out = ours(idx)
    expected = theirs(torch.tensor(idx))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(a, ref.numpy(), rtol=1e-12)  # renormalised in place, as torch's shared tensor
    g = np.ones(out.shape)
    sg = ours.backward(g)
    before = a.copy()
    ours.step(0.1)
    if freeze:
        assert ours.grad is None
        np.testing.assert_array_equal(a, before)
    else:
        expected.backward(torch.tensor(g))
        np.testing.assert_allclose(sg.to_dense(6), theirs.weight.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(a, before - 0.1 * theirs.weight.grad.numpy(), rtol=1e-12)


def test_numpy_from_pretrained_needs_an_array():
    with pytest.raises(TypeError, match="NumPy array"):
        npel.Embedding.from_pretrained([[1.0, 2.0]])
    with pytest.raises(ValueError, match="padding_idx"):
        npel.EmbeddingBag.from_pretrained(np.ones((2, 2)), padding_idx=5)


@pytest.mark.parametrize("kw", [{}, dict(padding_idx=2), dict(max_norm=1.5, norm_type=1.0),
                                dict(padding_idx=0, max_norm=1.0, norm_type=2.0), dict(norm_type=3.0)])
@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_torch_repr_matches_nn(cls, kw):
    assert repr(getattr(tel, cls)(10, 3, **kw)) == repr(getattr(nn, cls)(10, 3, **kw))


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_torch_repr_with_padding_zero_and_scale_grad_by_freq_matches_nn(cls):
    for kw in (dict(padding_idx=0), dict(scale_grad_by_freq=True), dict(scale_grad_by_freq=True, padding_idx=0)):
        assert repr(getattr(tel, cls)(10, 3, **kw)) == repr(getattr(nn, cls)(10, 3, **kw))


@pytest.mark.parametrize("pad", [None, 5])
def test_numpy_embedding_scale_grad_by_freq_like_nn(pad):
    w = np.random.default_rng(1).standard_normal((8, 3))
    idx = np.array([[3, 5, 5], [6, 6, 6], [1, 6, 3]])
    g = np.random.default_rng(2).standard_normal((3, 3, 3))
    ours = npel.Embedding(8, 3, pad, None, 2.0, True, dtype=np.float64)  # torch's positional order
    ours.weight[:] = w
    ours(idx)
    grad = ours.backward(g).to_dense(8)
    ref = nn.Embedding.from_pretrained(torch.tensor(w), freeze=False, padding_idx=pad, scale_grad_by_freq=True)
    ref(torch.tensor(idx)).backward(torch.tensor(g))
    np.testing.assert_allclose(grad, ref.weight.grad.numpy(), rtol=1e-12, atol=1e-15)
    # from_weight and from_pretrained take the option too
    for layer in (npel.Embedding.from_weight(w, padding_idx=pad, scale_grad_by_freq=True),
                  npel.Embedding.from_pretrained(w.copy(), False, pad, scale_grad_by_freq=True)):
        layer(idx)
        np.testing.assert_allclose(layer.backward(g).to_dense(8), grad, rtol=1e-12)


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("pad", [None, 5])
def test_numpy_bag_scale_grad_by_freq_counts_the_whole_input(mode, pad):
    """Each row's gradient divided by its index's count in the whole input: torch's documented rule
    (torch 2.13's CPU kernel divides some rows by another index's count, pytorch/pytorch#190063: the
    reference is its unscaled gradient divided by the counts)."""
    w = np.random.default_rng(1).standard_normal((8, 3))
    idx, offsets = np.array([3, 5, 5, 6, 6, 6, 1, 3]), np.array([0, 2, 2, 6])
    g = np.random.default_rng(2).standard_normal((4, 3))
    ours = npel.EmbeddingBag.from_weight(w, mode=mode, padding_idx=pad, scale_grad_by_freq=True)
    ours(idx, offsets)
    grad = ours.backward(g).to_dense(8)
    w_ref = torch.tensor(w, requires_grad=True)
    nn.functional.embedding_bag(torch.tensor(idx), w_ref, torch.tensor(offsets), mode=mode,
                                padding_idx=pad).backward(torch.tensor(g))
    counts = np.maximum(np.bincount(idx, minlength=8), 1)
    np.testing.assert_allclose(grad, w_ref.grad.numpy() / counts[:, None], rtol=1e-12, atol=1e-15)
    theirs = tel.EmbeddingBag.from_weight(torch.tensor(w), mode=mode, padding_idx=pad, scale_grad_by_freq=True)
    theirs(torch.tensor(idx), torch.tensor(offsets)).backward(torch.tensor(g))
    np.testing.assert_allclose(grad, theirs.weight.grad.numpy(), rtol=1e-12, atol=1e-15)  # both backends agree


def test_numpy_bag_scale_grad_by_freq_refuses_max():
    with pytest.raises(ValueError, match="scale_grad_by_freq is not supported with mode='max'"):
        npel.EmbeddingBag(4, 2, None, 2.0, True, "max")
    with pytest.raises(ValueError, match="scale_grad_by_freq is not supported with mode='max'"):
        npel.EmbeddingBag.from_weight(np.ones((4, 2)), mode="max", scale_grad_by_freq=True)


def test_numpy_constructor_takes_torchs_arguments():
    """The same parameters, in torch's order, as embedlib.torch's layers (``device``: the CPU only)."""
    w = np.random.default_rng(0).standard_normal((5, 2))
    e = npel.Embedding(5, 2, 0, None, 2.0, False, False, w, True)
    assert e.weight is w and e.frozen and w[0].any()  # shared, frozen, padding row used as given
    e([0, 1])
    e.backward(np.ones((2, 2)))
    e.step(1.0)
    assert e.grad is None and np.array_equal(e.weight, w)
    b = npel.EmbeddingBag(5, 2, None, 2.0, False, "sum", False, w, True, 1)
    assert b.weight is w and (b.mode, b.include_last_offset, b.padding_idx) == ("sum", True, 1)
    assert npel.Embedding(5, 2, device="cpu", dtype=np.float64).weight.dtype == np.float64
    with pytest.raises(ValueError, match="device"):
        npel.EmbeddingBag(5, 2, device="cuda")
    with pytest.raises(ValueError, match="_weight must have shape"):
        npel.Embedding(4, 2, _weight=w)
    with pytest.raises(TypeError, match="_weight must be a NumPy array"):
        npel.Embedding(5, 2, _weight=w.tolist())
    with pytest.raises(ValueError, match="seed"):
        npel.Embedding(5, 2, _weight=w, seed=1)
