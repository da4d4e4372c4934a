"""Smaller tables (chapter 14): quotient-remainder and hashed embeddings, both backends, against the
definition (the full table, then a one-hot product), torch autograd through F.embedding, each other,
and trained inside chapter 6's MatrixFactorization."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import NUMPY, TORCH, bitwise_equal, ref_one_hot, tol
from embedlib.numpy import compositional as np_comp
from embedlib.numpy.hashing import hash_bucket
from embedlib.torch import compositional as torch_comp

OPERATIONS = ("mult", "add", "concat")


def comp(be):
    """The backend's compositional module (the lead exports its names from embedlib.numpy / .torch)."""
    return np_comp if be.name == "numpy" else torch_comp


def ref_full_table(wq, wr, operation):
    """The (Q * R, D) table a quotient-remainder pair stands for, row by row, in float64."""
    wq, wr = np.asarray(wq, dtype=np.float64), np.asarray(wr, dtype=np.float64)
    rows = []
    for i in range(wq.shape[0] * wr.shape[0]):
        a, b = wq[i // wr.shape[0]], wr[i % wr.shape[0]]
        rows.append(a * b if operation == "mult" else a + b if operation == "add" else np.concatenate([a, b]))
    return np.array(rows).reshape(wq.shape[0] * wr.shape[0], -1)


@st.composite
def qr_cases(draw, operations=OPERATIONS):
    """(indices, quotient_weight, remainder_weight, operation): small tables, so ids share rows."""
    op = draw(st.sampled_from(operations))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    q, r = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dq = draw(st.integers(1, 4))
    dr = draw(st.integers(1, 4)) if op == "concat" else dq
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    wq, wr = rng.standard_normal((q, dq)).astype(dtype), rng.standard_normal((r, dr)).astype(dtype)
    idx = draw(hnp.arrays(st.sampled_from([np.int64, np.int32, np.uint8]),
                          hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                          elements=st.integers(0, q * r - 1)))
    return idx, wq, wr, op


def torch_reference(idx, wq, wr, op, grad):
    """Output and table gradients by torch autograd through F.embedding (float64)."""
    tq = torch.tensor(wq, dtype=torch.float64, requires_grad=True)
    tr = torch.tensor(wr, dtype=torch.float64, requires_grad=True)
    i = torch.as_tensor(np.asarray(idx, dtype=np.int64))
    a, b = F.embedding(i // wr.shape[0], tq), F.embedding(i % wr.shape[0], tr)
    out = a * b if op == "mult" else a + b if op == "add" else torch.cat([a, b], dim=-1)
    (out * torch.as_tensor(grad, dtype=torch.float64)).sum().backward()
    return out.detach().numpy(), tq.grad.numpy(), tr.grad.numpy()


def out_dim(wq, wr, op):
    return wq.shape[1] + wr.shape[1] if op == "concat" else wq.shape[1]


# --------------------------------------------------------------------------------------------------
# qr_indices
# --------------------------------------------------------------------------------------------------
def test_qr_indices_are_a_one_to_one_pairing(backend):
    ids = np.arange(23)
    q, r = (backend.np(a) for a in comp(backend).qr_indices(backend.arr(ids), 5))
    np.testing.assert_array_equal(q, ids // 5)
    np.testing.assert_array_equal(r, ids % 5)
    assert q.dtype == r.dtype == np.int64
    assert len(set(zip(q.tolist(), r.tolist()))) == ids.size  # no two ids share both rows
    np.testing.assert_array_equal(q * 5 + r, ids)
    q0, r0 = comp(backend).qr_indices(backend.arr(np.array(7, dtype=np.uint8)), 3)
    assert backend.np(q0).shape == () and (int(q0), int(r0)) == (2, 1)


def test_qr_indices_refuse_bad_input(backend):
    with pytest.raises(IndexError, match="index -2 is negative"):
        comp(backend).qr_indices(backend.arr(np.array([3, -2])), 4)
    with pytest.raises(TypeError, match="integers"):
        comp(backend).qr_indices(backend.arr(np.array([1.0])), 4)
    with pytest.raises(ValueError, match="num_remainders must be positive"):
        comp(backend).qr_indices(backend.arr(np.array([1])), 0)


# --------------------------------------------------------------------------------------------------
# qr_lookup and its backward: the definition, torch autograd, the two backends
# --------------------------------------------------------------------------------------------------
@given(case=qr_cases())
def test_qr_lookup_is_the_full_table_times_a_one_hot(backend, case):
    idx, wq, wr, op = case
    got = backend.np(comp(backend).qr_lookup(backend.arr(idx), backend.arr(wq), backend.arr(wr), operation=op))
    full = ref_full_table(wq, wr, op)
    assert got.shape == idx.shape + (out_dim(wq, wr, op),) and got.dtype == wq.dtype
    np.testing.assert_allclose(got, ref_one_hot(idx, full.shape[0]) @ full, **tol(wq.dtype))


@given(case=qr_cases(), seed=st.integers(0, 2**16))
def test_qr_lookup_backward_is_torch_autograd_through_embedding(backend, case, seed):
    idx, wq, wr, op = case
    wq, wr = wq.astype(np.float64), wr.astype(np.float64)
    grad = np.random.default_rng(seed).standard_normal(idx.shape + (out_dim(wq, wr, op),))
    out, grad_q, grad_r = torch_reference(idx, wq, wr, op, grad)
    got_q, got_r = comp(backend).qr_lookup_backward(backend.arr(idx), backend.arr(grad), backend.arr(wq),
                                                    backend.arr(wr), operation=op)
    np.testing.assert_allclose(backend.np(got_q), grad_q, **tol(np.float64))
    np.testing.assert_allclose(backend.np(got_r), grad_r, **tol(np.float64))
    assert backend.np(got_q).shape == wq.shape and backend.np(got_r).shape == wr.shape
    np.testing.assert_allclose(backend.np(comp(backend).qr_lookup(backend.arr(idx), backend.arr(wq), backend.arr(wr),
                                                                  operation=op)), out, **tol(np.float64))


@given(case=qr_cases(), seed=st.integers(0, 2**16))
def test_torch_qr_lookup_autograd_matches_its_backward(case, seed):
    idx, wq, wr, op = case
    tq, tr = torch.tensor(wq, requires_grad=True), torch.tensor(wr, requires_grad=True)
    out = torch_comp.qr_lookup(torch.as_tensor(idx), tq, tr, operation=op)
    grad = torch.as_tensor(np.random.default_rng(seed).standard_normal(tuple(out.shape)).astype(wq.dtype))
    (out * grad).sum().backward()
    want_q, want_r = torch_comp.qr_lookup_backward(torch.as_tensor(idx), grad, tq.detach(), tr.detach(), operation=op)
    np.testing.assert_allclose(tq.grad.numpy(), want_q.numpy(), **tol(wq.dtype))
    np.testing.assert_allclose(tr.grad.numpy(), want_r.numpy(), **tol(wq.dtype))


@given(case=qr_cases(), seed=st.integers(0, 2**16))
def test_numpy_and_torch_agree(case, seed):
    idx, wq, wr, op = case
    outs = [be.np(comp(be).qr_lookup(be.arr(idx), be.arr(wq), be.arr(wr), operation=op)) for be in (NUMPY, TORCH)]
    assert bitwise_equal(*outs)  # the same gathers and one product, sum or copy: the same bits
    grad = np.random.default_rng(seed).standard_normal(outs[0].shape).astype(wq.dtype)
    grads = [[be.np(g) for g in comp(be).qr_lookup_backward(be.arr(idx), be.arr(grad), be.arr(wq), be.arr(wr),
                                                            operation=op)] for be in (NUMPY, TORCH)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, **tol(wq.dtype))


def test_qr_lookup_by_hand(backend):
    """Id 7 with R = 3 is quotient row 2 and remainder row 1."""
    wq = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    wr = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    ids = backend.arr(np.array([7, 0]))
    expected = {"mult": [[150.0, 240.0], [10.0, 40.0]], "add": [[35.0, 46.0], [11.0, 22.0]],
                "concat": [[5.0, 6.0, 30.0, 40.0], [1.0, 2.0, 10.0, 20.0]]}
    for op, want in expected.items():
        got = comp(backend).qr_lookup(ids, backend.arr(wq), backend.arr(wr), operation=op)
        np.testing.assert_array_equal(backend.np(got), want)


# --------------------------------------------------------------------------------------------------
# Bad input to the functions: clear errors, before anything is computed
# --------------------------------------------------------------------------------------------------
def test_qr_lookup_errors(backend):
    c = comp(backend)
    wq, wr = backend.arr(np.ones((4, 3))), backend.arr(np.ones((5, 3)))
    with pytest.raises(IndexError, match=r"index 20 is out of range.*4 rows.*5 rows represent 20 ids"):
        c.qr_lookup(backend.arr(np.array([3, 20, 1])), wq, wr)
    with pytest.raises(IndexError, match=r"index -1 is out of range for num_embeddings=20"):
        c.qr_lookup(backend.arr(np.array([-1, 3])), wq, wr)
    with pytest.raises(TypeError, match="indices must be integers"):
        c.qr_lookup(backend.arr(np.array([1.0])), wq, wr)
    with pytest.raises(TypeError, match="booleans"):
        c.qr_lookup(backend.arr(np.array([True])), wq, wr)
    with pytest.raises(ValueError, match="same width"):
        c.qr_lookup(backend.arr(np.array([1])), wq, backend.arr(np.ones((5, 2))))
    with pytest.raises(ValueError, match="remainder_weight must be 2-D"):
        c.qr_lookup(backend.arr(np.array([1])), wq, backend.arr(np.ones(5)))
    with pytest.raises(ValueError, match="at least one row"):
        c.qr_lookup(backend.arr(np.array([], dtype=np.int64)), wq, backend.arr(np.ones((0, 3))))
    with pytest.raises(ValueError, match="same dtype"):
        c.qr_lookup(backend.arr(np.array([1])), wq, backend.arr(np.ones((5, 3), dtype=np.float32)))
    with pytest.raises(TypeError, match="quotient_weight must hold floating-point"):
        c.qr_lookup(backend.arr(np.array([1])), backend.arr(np.ones((4, 3), dtype=np.int64)), wr)
    with pytest.raises(ValueError, match="operation must be one of"):
        c.qr_lookup(backend.arr(np.array([1])), wq, wr, operation="max")
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3\)"):
        c.qr_lookup_backward(backend.arr(np.array([1, 2])), backend.arr(np.ones((2, 4))), wq, wr)
    with pytest.raises(IndexError, match="index 20 is out of range"):
        c.qr_lookup_backward(backend.arr(np.array([20])), backend.arr(np.ones((1, 3))), wq, wr)
    empty = c.qr_lookup(backend.arr(np.zeros((0, 2), dtype=np.int64)), wq, wr)
    assert tuple(empty.shape) == (0, 2, 3)


# --------------------------------------------------------------------------------------------------
# QREmbedding
# --------------------------------------------------------------------------------------------------
@given(case=qr_cases(), data=st.data())
def test_qr_layer_is_its_weight_looked_up(backend, case, data):
    idx, wq, wr, op = case
    v = data.draw(st.integers((wq.shape[0] - 1) * wr.shape[0] + 1, wq.shape[0] * wr.shape[0]))
    idx = np.minimum(idx.astype(np.int64), v - 1)
    layer = comp(backend).QREmbedding.from_weights(backend.arr(wq), backend.arr(wr), operation=op, num_embeddings=v)
    assert (layer.num_embeddings, layer.embedding_dim, layer.num_remainders) == (v, out_dim(wq, wr, op), wr.shape[0])
    full = backend.np(layer.weight)
    np.testing.assert_allclose(full, ref_full_table(wq, wr, op)[:v], **tol(wq.dtype))
    assert bitwise_equal(backend.np(layer(backend.arr(idx))), full[idx])
    assert layer.nbytes == wq.nbytes + wr.nbytes


@given(case=qr_cases(), seed=st.integers(0, 2**16), lr=st.sampled_from([0.1, 1.0]))
def test_numpy_qr_layer_gradient_is_sparse_and_step_moves_only_used_rows(case, seed, lr):
    idx, wq, wr, op = case
    layer = np_comp.QREmbedding.from_weights(wq, wr, operation=op)
    out = layer(idx)
    grad = np.random.default_rng(seed).standard_normal(out.shape).astype(wq.dtype)
    sparse_q, sparse_r = layer.backward(grad)
    dense_q, dense_r = np_comp.qr_lookup_backward(idx, grad, wq, wr, operation=op)
    q, r = np.unique(idx // wr.shape[0]), np.unique(idx % wr.shape[0])
    np.testing.assert_array_equal(sparse_q.rows, q)  # only the rows the batch used
    np.testing.assert_array_equal(sparse_r.rows, r)
    np.testing.assert_allclose(sparse_q.values, dense_q[q], **tol(wq.dtype))
    np.testing.assert_allclose(sparse_r.values, dense_r[r], **tol(wq.dtype))
    assert layer.quotient.grad is sparse_q and layer.remainder.grad is sparse_r
    layer.step(lr)
    np.testing.assert_allclose(layer.quotient.weight, wq - lr * dense_q, **tol(wq.dtype))
    np.testing.assert_allclose(layer.remainder.weight, wr - lr * dense_r, **tol(wq.dtype))
    for table, before, used in ((layer.quotient.weight, wq, q), (layer.remainder.weight, wr, r)):
        untouched = np.setdiff1d(np.arange(before.shape[0]), used)
        assert bitwise_equal(table[untouched], before[untouched])
    layer.zero_grad()
    assert layer.quotient.grad is None and layer.remainder.grad is None


def test_numpy_qr_layer_gradients_accumulate_until_zero_grad():
    layer = np_comp.QREmbedding(10, 3, 4, seed=0, dtype=np.float64)
    g = np.ones((2, 3))
    layer(np.array([1, 6]))
    layer.backward(g)
    layer(np.array([1, 6]))
    layer.backward(g)
    dense_q, dense_r = np_comp.qr_lookup_backward(np.array([1, 6]), 2 * g, layer.quotient.weight,
                                                  layer.remainder.weight)
    np.testing.assert_allclose(layer.quotient.grad.to_dense(3), dense_q)
    np.testing.assert_allclose(layer.remainder.grad.to_dense(4), dense_r)


@given(case=qr_cases(), seed=st.integers(0, 2**16))
def test_torch_qr_layer_autograd_is_qr_lookup_backward(case, seed):
    idx, wq, wr, op = case
    layer = torch_comp.QREmbedding.from_weights(torch.tensor(wq), torch.tensor(wr), operation=op)
    assert [n for n, _ in layer.named_parameters()] == ["quotient.weight", "remainder.weight"]
    out = layer(torch.as_tensor(idx))
    grad = np.random.default_rng(seed).standard_normal(tuple(out.shape)).astype(wq.dtype)
    (out * torch.as_tensor(grad)).sum().backward()
    dense_q, dense_r = np_comp.qr_lookup_backward(idx, grad, wq, wr, operation=op)
    np.testing.assert_allclose(layer.quotient.weight.grad.numpy(), dense_q, **tol(wq.dtype))
    np.testing.assert_allclose(layer.remainder.weight.grad.numpy(), dense_r, **tol(wq.dtype))


@pytest.mark.parametrize("op", OPERATIONS)
def test_default_init(backend, op):
    """Seeded, the same numbers in both backends; entries of spread about init_std; every id its own row."""
    dtype = backend.float64
    layer = comp(backend).QREmbedding(5000, 8, 71, operation=op, init_std=0.5, seed=3, dtype=dtype)
    assert (layer.quotient.num_embeddings, layer.remainder.num_embeddings) == (71, 71)  # ceil(5000 / 71)
    full = backend.np(layer.weight)
    assert full.shape == (5000, 8) and full.dtype == np.float64
    assert abs(full.std() - 0.5) < 0.05 and abs(full.mean()) < 0.05
    assert np.unique(full, axis=0).shape[0] == 5000
    other = comp(TORCH if backend is NUMPY else NUMPY).QREmbedding(5000, 8, 71, operation=op, init_std=0.5, seed=3,
                                                                  dtype=np.float64)
    other_full = other.weight.numpy() if isinstance(other.weight, torch.Tensor) else other.weight
    assert bitwise_equal(full, other_full)
    if op == "mult":  # the quotient starts near 1: a fresh table is close to a plain table of R rows
        q = backend.np(layer.quotient.weight)
        assert abs(q.mean() - 1) < 0.01 and abs(q.std() - 0.1) < 0.01
    if op == "concat":
        assert (layer.quotient.embedding_dim, layer.remainder.embedding_dim) == (4, 4)
    assert not bitwise_equal(full, backend.np(comp(backend).QREmbedding(5000, 8, 71, operation=op, init_std=0.5,
                                                                        seed=4, dtype=dtype).weight))
    assert comp(backend).QREmbedding(10, 3, 4).weight.dtype == backend.float32


def test_qr_layer_saves_memory_and_no_two_ids_share_both_rows(backend):
    v, d = 10_000, 16
    layer = comp(backend).QREmbedding(v, d, 100, seed=0)
    assert layer.nbytes == (100 + 100) * d * 4  # against 10,000 * 16 * 4 for the plain table
    q, r = (backend.np(a) for a in comp(backend).qr_indices(backend.arr(np.arange(v)), 100))
    assert len(set(zip(q.tolist(), r.tolist()))) == v


def test_qr_layer_errors_change_nothing(backend):
    c = comp(backend)
    layer = c.QREmbedding.from_weights(backend.arr(np.ones((4, 3))), backend.arr(np.full((5, 3), 2.0)),
                                       num_embeddings=18)
    before = [backend.copy(layer.quotient.weight), backend.copy(layer.remainder.weight)]
    with pytest.raises(IndexError, match="index 18 is out of range for num_embeddings=18"):
        layer(backend.arr(np.array([0, 18])))  # below Q * R = 20, but not one of the 18 ids
    with pytest.raises(TypeError, match="integers"):
        layer(backend.arr(np.array([0.5])))
    if backend is NUMPY:
        with pytest.raises(RuntimeError, match="forward"):
            layer.backward(np.ones((1, 3)))
        layer(np.array([1, 7]))
        with pytest.raises(ValueError, match="grad_output must have shape"):
            layer.backward(np.ones((3, 3)))
        assert layer.quotient.grad is None and layer.remainder.grad is None
        layer.backward(np.ones((2, 3)))  # the last forward is still the one backward uses
        np.testing.assert_array_equal(layer.quotient.grad.rows, [0, 1])
    assert all(bitwise_equal(a, b) for a, b in zip(before, [layer.quotient.weight, layer.remainder.weight]))
    with pytest.raises(ValueError, match="more than the 4 x 5 = 20 ids"):
        c.QREmbedding.from_weights(backend.arr(np.ones((4, 3))), backend.arr(np.ones((5, 3))), num_embeddings=21)
    with pytest.raises(ValueError, match="at least 2"):
        c.QREmbedding(10, 1, 3, operation="concat")
    with pytest.raises(ValueError, match="num_remainders must be positive"):
        c.QREmbedding(10, 4, 0)
    with pytest.raises(ValueError, match="init_std"):
        c.QREmbedding(10, 4, 3, init_std=-1.0)
    with pytest.raises(AttributeError):
        layer.weight = backend.arr(np.zeros((18, 3)))  # read-only: the tables are what is stored


def test_numpy_weight_is_read_only():
    layer = np_comp.QREmbedding(6, 2, 3, seed=0)
    with pytest.raises(ValueError, match="read-only"):
        layer.weight[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        np_comp.HashEmbedding(6, 2, 3, seed=0).weight[0, 0] = 1.0


# --------------------------------------------------------------------------------------------------
# Hashed tables
# --------------------------------------------------------------------------------------------------
@given(v=st.integers(1, 40), b=st.integers(1, 9), d=st.integers(1, 4), hash_seed=st.integers(0, 3), data=st.data())
def test_hash_layer_is_its_weight_looked_up(backend, v, b, d, hash_seed, data):
    w = np.random.default_rng(v * 10 + b).standard_normal((b, d))
    idx = data.draw(hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=5),
                               elements=st.integers(0, v - 1)))
    layer = comp(backend).HashEmbedding.from_weight(backend.arr(w), v, hash_seed=hash_seed)
    buckets = hash_bucket(np.arange(v), b, seed=hash_seed)
    np.testing.assert_array_equal(backend.np(layer.buckets), buckets)
    full = backend.np(layer.weight)
    assert bitwise_equal(full, w[buckets])
    assert bitwise_equal(full, ref_one_hot(buckets, b) @ w)  # one-hot rows pick exact copies
    assert bitwise_equal(backend.np(layer(backend.arr(idx))), full[idx])
    looked_up = comp(backend).hashed_lookup(backend.arr(idx), backend.arr(w), num_embeddings=v, hash_seed=hash_seed)
    assert bitwise_equal(backend.np(looked_up), full[idx])
    assert (layer.num_embeddings, layer.embedding_dim, layer.num_buckets, layer.nbytes) == (v, d, b, w.nbytes)


@given(v=st.integers(2, 40), b=st.integers(1, 9), seed=st.integers(0, 2**16), lr=st.sampled_from([0.1, 1.0]))
def test_numpy_hash_layer_gradient_is_sparse_and_step_moves_only_used_buckets(v, b, seed, lr):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((b, 3))
    idx = rng.integers(0, v, rng.integers(0, 12))
    layer = np_comp.HashEmbedding.from_weight(w, v)
    grad = rng.standard_normal((idx.size, 3))
    layer(idx)
    sparse = layer.backward(grad)
    buckets = hash_bucket(idx, b)
    dense = NUMPY.el.lookup_backward(buckets, grad, b)
    np.testing.assert_array_equal(sparse.rows, np.unique(buckets))
    np.testing.assert_allclose(sparse.values, dense[np.unique(buckets)], **tol(np.float64))
    layer.step(lr)
    np.testing.assert_allclose(layer.table.weight, w - lr * dense, **tol(np.float64))
    untouched = np.setdiff1d(np.arange(b), buckets)
    assert bitwise_equal(layer.table.weight[untouched], w[untouched])
    layer.zero_grad()
    assert layer.table.grad is None


def test_torch_hash_layer_autograd_and_the_numpy_layer_agree():
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 50, (6, 4))
    grad = rng.standard_normal((6, 4, 5))
    a = np_comp.HashEmbedding(50, 5, 7, hash_seed=2, seed=0, dtype=np.float64)
    b = torch_comp.HashEmbedding(50, 5, 7, hash_seed=2, seed=0, dtype=torch.float64)
    assert bitwise_equal(a.table.weight, b.table.weight) and bitwise_equal(a.weight, b.weight)
    out_a, out_b = a(idx), b(torch.as_tensor(idx))
    assert bitwise_equal(out_a, out_b)
    a.backward(grad)
    (out_b * torch.as_tensor(grad)).sum().backward()
    np.testing.assert_allclose(a.table.grad.to_dense(7), b.table.weight.grad.numpy(), **tol(np.float64))
    assert list(b.state_dict()) == ["table.weight"]  # the bucket map is derived, not state


def test_hashed_ids_collide_on_whole_rows_qr_ids_never_on_both():
    """The point of chapter 14: 100 ids in 10 buckets share whole rows; 10 x 10 QR rows give 100 distinct rows."""
    hashed = np_comp.HashEmbedding(100, 4, 10, seed=0, dtype=np.float64)
    assert np.unique(hashed.weight, axis=0).shape[0] <= 10
    qr = np_comp.QREmbedding(100, 4, 10, seed=0, dtype=np.float64)
    assert np.unique(qr.weight, axis=0).shape[0] == 100
    assert hashed.nbytes == 10 * 4 * 8 and qr.nbytes == 2 * 10 * 4 * 8


def test_hashed_errors(backend):
    c = comp(backend)
    w = backend.arr(np.ones((4, 2)))
    with pytest.raises(IndexError, match="index 9 is out of range for num_embeddings=9"):
        c.hashed_lookup(backend.arr(np.array([9])), w, num_embeddings=9)
    with pytest.raises(IndexError, match="num_embeddings=9"):
        c.HashEmbedding.from_weight(w, 9)(backend.arr(np.array([9])))
    with pytest.raises(TypeError, match="integers"):
        c.hashed_lookup(backend.arr(np.array([1.5])), w)
    with pytest.raises(ValueError, match="at least one row"):
        c.hashed_lookup(backend.arr(np.array([1])), backend.arr(np.ones((0, 2))))
    with pytest.raises(ValueError, match="num_buckets must be positive"):
        c.HashEmbedding(10, 2, 0)
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        c.HashEmbedding(10, 2, 3, hash_seed=2**64)
    # without num_embeddings any integer key hashes: an open vocabulary
    out = c.hashed_lookup(backend.arr(np.array([10**12, 3])), w)
    assert tuple(out.shape) == (2, 2)


# --------------------------------------------------------------------------------------------------
# Same names and signatures in both backends; docstrings name the chapter
# --------------------------------------------------------------------------------------------------
def _params(obj):
    return [(p.name, p.kind, p.default if isinstance(p.default, (int, float, str, type(None))) else "<object>")
            for p in inspect.signature(obj).parameters.values() if p.name not in ("device", "dtype")]


@pytest.mark.parametrize("name", np_comp.__all__)
def test_same_signatures_and_chapter(name):
    a, b = getattr(np_comp, name), getattr(torch_comp, name)
    assert _params(a) == _params(b)
    for factory in ("from_weight", "from_weights"):
        if hasattr(a, factory):
            assert _params(getattr(a, factory)) == _params(getattr(b, factory))
    assert "chapter 14" in inspect.getdoc(a) and "chapter 14" in inspect.getdoc(b)
    assert set(np_comp.__all__) == set(torch_comp.__all__)


# --------------------------------------------------------------------------------------------------
# Trained in place of the movie table of chapter 6's MatrixFactorization
# --------------------------------------------------------------------------------------------------
NUM_USERS, NUM_MOVIES, DIM = 12, 30, 3


def ratings_problem(seed=0, n=240):
    """Ratings with a low-rank structure, so that smaller movie tables have something to learn."""
    rng = np.random.default_rng(seed)
    users, movies = rng.integers(0, NUM_USERS, n), rng.integers(0, NUM_MOVIES, n)
    p, q = rng.standard_normal((NUM_USERS, 2)), rng.standard_normal((NUM_MOVIES, 2))
    ratings = np.clip(3.0 + np.einsum("bd,bd->b", p[users], q[movies]) + 0.1 * rng.standard_normal(n), 0.5, 5.0)
    return users, movies, ratings


def movie_table(be, kind):
    dtype = be.float64
    if kind == "qr":
        return comp(be).QREmbedding(NUM_MOVIES, DIM, 6, init_std=0.3, seed=5, dtype=dtype)
    return comp(be).HashEmbedding(NUM_MOVIES, DIM, 12, init_std=0.3, seed=5, dtype=dtype)


def table_weights(be, model):
    """Every stored weight: the plain tables and the given table's own tables."""
    out = {name: be.np(layer.weight).copy() for name, layer in model.tables.items()}
    movie = model.movie
    for part in ("quotient", "remainder", "table"):
        if hasattr(movie, part):
            out[f"movie.{part}"] = be.np(getattr(movie, part).weight).copy()
    return out


@pytest.mark.parametrize("kind", ["qr", "hash"])
def test_smaller_movie_tables_train_in_matrix_factorization(kind):
    users, movies, ratings = ratings_problem()
    runs = []
    for be in (NUMPY, TORCH):
        model = be.el.MatrixFactorization(NUM_USERS, NUM_MOVIES, DIM, global_mean=3.0, init_std=0.3, seed=1,
                                          movie_table=movie_table(be, kind))
        assert model.tables["movie"] is model.movie and model.movie.num_embeddings == NUM_MOVIES
        start = be.el.rmse(model, users, movies, ratings)
        history = be.el.train_sgd(model, users, movies, ratings, epochs=5, lr=0.03, reg=0.05, batch_size=16,
                                  seed=3, progress=False)
        assert history["train"][-1] < 0.8 * start, (be.name, start, history["train"])
        runs.append((table_weights(be, model), history["train"]))
    (w_np, h_np), (w_torch, h_torch) = runs
    assert list(w_np) == list(w_torch)
    for name in w_np:  # the hand-written sparse backward and autograd take the same steps
        np.testing.assert_allclose(w_np[name], w_torch[name], rtol=0, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(h_np, h_torch, rtol=1e-10)


def test_a_numpy_step_in_matrix_factorization_touches_only_the_batch_rows():
    users, movies, ratings = ratings_problem()
    table = movie_table(NUMPY, "qr")
    model = NUMPY.el.MatrixFactorization(NUM_USERS, NUM_MOVIES, DIM, global_mean=3.0, seed=1, movie_table=table)
    before = table_weights(NUMPY, model)
    batch = slice(0, 4)
    model.zero_grad()
    model.backward(model(users[batch], movies[batch]) - ratings[batch], 0.1)
    model.step(0.1)
    after = table_weights(NUMPY, model)
    for name, used in (("movie.quotient", movies[batch] // 6), ("movie.remainder", movies[batch] % 6)):
        changed = np.flatnonzero(np.any(before[name] != after[name], axis=1))
        assert set(changed.tolist()) == set(np.unique(used).tolist()), name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["qr", "hash"])
def test_torch_layers_on_cuda_match_cpu(kind):
    idx = np.random.default_rng(0).integers(0, NUM_MOVIES, (5, 7))
    grad = np.random.default_rng(1).standard_normal((5, 7, DIM))
    runs = []
    for device in ("cpu", "cuda"):
        layer = movie_table(TORCH, kind).to(device)
        out = layer(torch.as_tensor(idx, device=device))
        (out * torch.as_tensor(grad, device=device)).sum().backward()
        runs.append([out.detach().cpu().numpy(), layer.weight.cpu().numpy()]
                    + [p.grad.cpu().numpy() for p in layer.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(IndexError, match=f"num_embeddings={NUM_MOVIES}"):
        movie_table(TORCH, kind).to("cuda")(torch.tensor([NUM_MOVIES], device="cuda"))
