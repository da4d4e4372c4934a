"""Mixed-dimension embedding tables (chapter 14) in both backends: the plan, the lookup and its
gradients against their definitions and torch autograd, the layers, and training inside chapter 6's
MatrixFactorization."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import NUMPY, TORCH, bitwise_equal, float_dtypes, tol
from embedlib.numpy import factorization as np_factorization
from embedlib.numpy import mixed_dim as np_mixed_dim
from embedlib.numpy.layers import SparseGrad
from embedlib.torch import factorization as torch_factorization
from embedlib.torch import mixed_dim as torch_mixed_dim

MODULES = {"numpy": np_mixed_dim, "torch": torch_mixed_dim}
FACTORIZATION = {"numpy": np_factorization, "torch": torch_factorization}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tensors are tiny, and a second thread only waits. On a loaded
    2-core machine torch's small float64 matrix products (the projections' gradients, (d_k, B) @
    (B, D)) took up to 25 ms each with two threads and 3 us with one; results do not depend on it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def md(be):
    """The backend's mixed_dim module (the lead wires the names into embedlib.numpy / .torch)."""
    return MODULES[be.name]


# --------------------------------------------------------------------------------------------------
# Strategies and references
# --------------------------------------------------------------------------------------------------
@st.composite
def layouts(draw, dtype=None):
    """K blocks (empty ones included) of random widths <= D, random values: (tables, projections)."""
    dtype = draw(float_dtypes) if dtype is None else dtype
    k = draw(st.integers(1, 4))
    dim = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.integers(0, 5), min_size=k, max_size=k))
    if sum(sizes) == 0:
        sizes[draw(st.integers(0, k - 1))] = 1
    dims = draw(st.lists(st.integers(1, dim), min_size=k, max_size=k))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tables = [rng.standard_normal((n, d)).astype(dtype) for n, d in zip(sizes, dims)]
    projections = [rng.standard_normal((d, dim)).astype(dtype) for d in dims]
    return tables, projections


def positions_for(total):
    return hnp.arrays(st.sampled_from([np.int64, np.int32]),
                      hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                      elements=st.integers(0, total - 1))


@st.composite
def lookup_cases(draw, dtype=None):
    tables, projections = draw(layouts(dtype))
    return draw(positions_for(sum(len(t) for t in tables))), tables, projections


def stacked(tables, projections):
    """The (V, D) table the blocks stand for, in position order, float64."""
    return np.concatenate([np.asarray(t, np.float64) @ np.asarray(p, np.float64)
                           for t, p in zip(tables, projections)])


def ref_lookup(positions, tables, projections):
    """A loop over every position: find its block, take its row, project it (float64)."""
    positions = np.asarray(positions)
    dim = projections[0].shape[1]
    out = np.zeros(positions.shape + (dim,))
    for at in np.ndindex(positions.shape):
        p = int(positions[at])
        for t, proj in zip(tables, projections):
            if p < len(t):
                out[at] = np.asarray(t[p], np.float64) @ np.asarray(proj, np.float64)
                break
            p -= len(t)
    return out


def autograd_grads(positions, grad_output, tables, projections):
    """The gradients by torch autograd through a plain torch expression of the definition."""
    t = [torch.tensor(np.asarray(x, np.float64), requires_grad=True) for x in tables]
    p = [torch.tensor(np.asarray(x, np.float64), requires_grad=True) for x in projections]
    w = torch.cat([a @ b for a, b in zip(t, p)])
    out = w[torch.as_tensor(np.asarray(positions, np.int64))]
    (out * torch.as_tensor(np.asarray(grad_output, np.float64))).sum().backward()
    return [x.grad.numpy() for x in t], [x.grad.numpy() for x in p]


def ref_plan_dims(counts, sizes, dim, alpha, min_dim):
    """The rule, by a loop: d_k = round(D (p_k / p_1)^alpha), halves up, clipped to [min_dim, D]."""
    ordered = sorted(counts, reverse=True)
    means, start = [], 0
    for n in sizes:
        means.append(sum(float(c) for c in ordered[start:start + n]) / n)
        start += n
    dims = []
    for m in means:
        ratio = m / means[0] if means[0] > 0 else 1.0
        dims.append(min(dim, max(min_dim, int(np.floor(dim * ratio**alpha + 0.5)))))
    return dims


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------
@st.composite
def plan_cases(draw):
    v = draw(st.integers(1, 30))
    counts = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int32, np.float64])), (v,),
                             elements=st.integers(0, 6)))  # small counts: many ties
    k = draw(st.integers(1, min(v, 5)))
    cuts = sorted(draw(st.lists(st.integers(1, v - 1), min_size=k - 1, max_size=k - 1, unique=True))) if k > 1 else []
    sizes = np.diff([0, *cuts, v])
    dim = draw(st.integers(1, 64))
    alpha = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 2.0]))
    min_dim = draw(st.integers(1, dim))
    return counts, sizes, dim, alpha, min_dim


@given(plan_cases())
def test_plan_ranks_by_count_and_follows_the_power_rule(case):
    counts, sizes, dim, alpha, min_dim = case
    plan = np_mixed_dim.mixed_dim_plan(counts, sizes, dim, alpha=alpha, min_dim=min_dim)
    assert plan.rank.dtype == np.int64 and np.array_equal(np.sort(plan.rank), np.arange(len(counts)))
    order = np.empty_like(plan.rank)
    order[plan.rank] = np.arange(len(counts))  # order[p] = the id at position p
    expected = sorted(range(len(counts)), key=lambda i: (-counts[i], i))  # most frequent, then lower id
    assert order.tolist() == expected
    assert plan.block_sizes.tolist() == sizes.tolist()
    assert plan.block_dims.tolist() == ref_plan_dims(counts.tolist(), sizes.tolist(), dim, alpha, min_dim)
    assert plan.block_dims[0] == dim and np.all(np.diff(plan.block_dims) <= 0)
    assert np.all((plan.block_dims >= min_dim) & (plan.block_dims <= dim))
    assert torch_mixed_dim.mixed_dim_plan is np_mixed_dim.mixed_dim_plan


def test_plan_worked_example():
    """Counts 9, 9 | 5, 3, 2 | 2, 1, 0: mean counts 9, 10/3, 1; D = 8, alpha = 1/2:
    8 sqrt(10/27) = 4.87 -> 5 and 8 sqrt(1/9) = 2.67 -> 3."""
    plan = np_mixed_dim.mixed_dim_plan([5, 1, 9, 9, 0, 3, 2, 2], [2, 3, 3], 8)
    assert plan.rank.tolist() == [2, 6, 0, 1, 7, 3, 4, 5]
    assert plan.block_dims.tolist() == [8, 5, 3]
    assert np_mixed_dim.mixed_dim_plan([5, 1, 9, 9, 0, 3, 2, 2], [2, 3, 3], 8, alpha=0).block_dims.tolist() == [8] * 3
    assert np_mixed_dim.mixed_dim_plan([0, 0, 0], [1, 2], 4).block_dims.tolist() == [4, 4]  # no counts at all
    assert np_mixed_dim.mixed_dim_plan([4, 0, 0], [1, 2], 4, min_dim=2).block_dims.tolist() == [4, 2]


@pytest.mark.parametrize("args, kwargs, error, match", [
    (([1, 2, 3], [1, 1], 4), {}, ValueError, "add up to the number of ids, len\\(counts\\) = 3, got 2"),
    (([1, 2, 3], [3, 0], 4), {}, ValueError, "at least one id"),
    (([1, 2, 3], [], 4), {}, ValueError, "at least one block"),
    (([1, 2, 3], [1.0, 2.0], 4), {}, TypeError, "block_sizes must be integers"),
    (([1, -2, 3], [3], 4), {}, ValueError, "non-negative"),
    (([1, np.nan, 3], [3], 4), {}, ValueError, "finite"),
    (([[1, 2, 3]], [3], 4), {}, ValueError, "1-D"),
    (([True, False], [2], 4), {}, TypeError, "counts must be numbers"),
    (([1, 2, 3], [3], 0), {}, ValueError, "embedding_dim must be positive"),
    (([1, 2, 3], [3], 4), {"alpha": -0.5}, ValueError, "alpha"),
    (([1, 2, 3], [3], 4), {"min_dim": 5}, ValueError, "min_dim must be at most embedding_dim = 4"),
])
def test_plan_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        np_mixed_dim.mixed_dim_plan(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# The lookup and its backward
# --------------------------------------------------------------------------------------------------
@given(lookup_cases())
def test_lookup_is_the_definition(backend, case):
    positions, tables, projections = case
    dtype = tables[0].dtype
    out = md(backend).mixed_dim_lookup(backend.arr(positions), [backend.arr(t) for t in tables],
                                       [backend.arr(p) for p in projections])
    assert backend.is_native(out) and out.dtype == backend.dtype(dtype)
    out = backend.np(out)
    assert out.shape == positions.shape + (projections[0].shape[1],)
    np.testing.assert_allclose(out, ref_lookup(positions, tables, projections), **tol(dtype))
    # = one_hot(positions) @ W, W the stacked E_k P_k (chapter 2's definition of a lookup)
    w = stacked(tables, projections)
    onehot = backend.np(backend.el.onehot_matmul(backend.arr(positions), backend.arr(w)))
    np.testing.assert_allclose(out, onehot, **tol(dtype))


@given(lookup_cases(dtype=np.float64), st.integers(0, 2**32 - 1))
def test_lookup_backward_is_autograd(backend, case, seed):
    positions, tables, projections = case
    g = np.random.default_rng(seed).standard_normal(positions.shape + (projections[0].shape[1],))
    grad_tables, grad_projections = md(backend).mixed_dim_lookup_backward(
        backend.arr(positions), backend.arr(g), [backend.arr(t) for t in tables],
        [backend.arr(p) for p in projections])
    want_tables, want_projections = autograd_grads(positions, g, tables, projections)
    assert len(grad_tables) == len(tables) and len(grad_projections) == len(projections)
    for got, want, like in zip(grad_tables + grad_projections, want_tables + want_projections,
                               tables + projections):
        assert backend.is_native(got) and tuple(got.shape) == like.shape
        np.testing.assert_allclose(backend.np(got), want, rtol=1e-10, atol=1e-10)


@given(lookup_cases(dtype=np.float64), st.integers(0, 2**32 - 1))
def test_torch_lookup_is_differentiable_and_agrees_with_numpy(case, seed):
    positions, tables, projections = case
    g = np.random.default_rng(seed).standard_normal(positions.shape + (projections[0].shape[1],))
    t = [torch.tensor(x, requires_grad=True) for x in tables]
    p = [torch.tensor(x, requires_grad=True) for x in projections]
    out = torch_mixed_dim.mixed_dim_lookup(torch.as_tensor(positions), t, p)
    np.testing.assert_allclose(out.detach().numpy(), np_mixed_dim.mixed_dim_lookup(positions, tables, projections),
                               rtol=1e-12, atol=1e-12)
    (out * torch.as_tensor(g)).sum().backward()
    want = np_mixed_dim.mixed_dim_lookup_backward(positions, g, tables, projections)
    for got, expected in zip(t + p, want[0] + want[1]):
        np.testing.assert_allclose(got.grad.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_lookup_errors(backend):
    rng = np.random.default_rng(0)
    tables = [backend.arr(rng.standard_normal((2, 3))), backend.arr(rng.standard_normal((4, 1)))]
    projections = [backend.arr(rng.standard_normal((3, 5))), backend.arr(rng.standard_normal((1, 5)))]
    lookup, backward = md(backend).mixed_dim_lookup, md(backend).mixed_dim_lookup_backward
    with pytest.raises(IndexError, match="position 6 is out of range for num_embeddings=6"):
        lookup(backend.arr(np.array([0, 6])), tables, projections)
    with pytest.raises(IndexError, match="position -1"):
        lookup(backend.arr(np.array([-1])), tables, projections)
    with pytest.raises(TypeError, match="positions must be integers"):
        lookup(backend.arr(np.array([0.0])), tables, projections)
    with pytest.raises(ValueError, match="one projection per table"):
        lookup(backend.arr(np.array([0])), tables, projections[:1])
    with pytest.raises(ValueError, match="at least one block"):
        lookup(backend.arr(np.array([0])), [], [])
    with pytest.raises(ValueError, match=r"projections\[1\] must have shape \(d_k, D\) with d_k = 1"):
        lookup(backend.arr(np.array([0])), tables, [projections[0], backend.arr(np.zeros((2, 5)))])
    with pytest.raises(ValueError, match="same width D = 5"):
        lookup(backend.arr(np.array([0])), tables, [projections[0], backend.arr(np.zeros((1, 4)))])
    with pytest.raises(ValueError, match="2-D"):
        lookup(backend.arr(np.array([0])), [tables[0], backend.arr(np.zeros(4))], projections)
    with pytest.raises(TypeError, match=r"projections\[0\] must have the weight's dtype float64"):
        lookup(backend.arr(np.array([0])), tables, [backend.arr(np.zeros((3, 5), np.float32)), projections[1]])
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 5\)"):
        backward(backend.arr(np.array([0, 1])), backend.arr(np.zeros((2, 4))), tables, projections)
    with pytest.raises(IndexError, match="position 7"):
        backward(backend.arr(np.array([7])), backend.arr(np.zeros((1, 5))), tables, projections)


# --------------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------------
@st.composite
def layer_cases(draw):
    tables, projections = draw(layouts(np.float64))
    total = sum(len(t) for t in tables)
    rank = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(total) if draw(st.booleans()) else None
    ids = draw(positions_for(total))
    return tables, projections, rank, ids


def raw_order(tables, projections, rank):
    """The (V, D) table in id order: id i's row is the stacked row at position rank[i]."""
    w = stacked(tables, projections)
    return w if rank is None else w[rank]


@given(layer_cases(), st.integers(0, 2**32 - 1))
def test_layer_forward_and_gradients_match_the_definition_in_both_backends(case, seed):
    tables, projections, rank, ids = case
    layer_np = np_mixed_dim.MixedDimEmbedding.from_weights(tables, projections, rank=rank)
    layer_t = torch_mixed_dim.MixedDimEmbedding.from_weights([torch.as_tensor(t) for t in tables],
                                                              [torch.as_tensor(p) for p in projections], rank=rank)
    w = raw_order(tables, projections, rank)
    for layer, be in ((layer_np, NUMPY), (layer_t, TORCH)):
        np.testing.assert_allclose(be.np(layer.weight), w, rtol=1e-12, atol=1e-12)
        assert layer.num_embeddings == len(w) and layer.embedding_dim == w.shape[1]
        assert layer.block_dims == tuple(t.shape[1] for t in tables)
        assert layer.nbytes == sum(t.nbytes + p.nbytes for t, p in zip(tables, projections))
    out_np = layer_np(ids)
    out_t = layer_t(torch.as_tensor(ids))
    np.testing.assert_allclose(out_np, w[ids], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_t.detach().numpy(), out_np, rtol=1e-12, atol=1e-12)
    # gradients: NumPy's backward, torch's autograd and autograd through the definition agree
    g = np.random.default_rng(seed).standard_normal(out_np.shape)
    block_grads, projection_grads = layer_np.backward(g)
    (out_t * torch.as_tensor(g)).sum().backward()
    positions = ids if rank is None else rank[ids]
    want_tables, want_projections = autograd_grads(positions, g, tables, projections)
    for k, (block, table) in enumerate(zip(layer_t.blocks, tables)):
        assert isinstance(block_grads[k], SparseGrad)
        np.testing.assert_allclose(block_grads[k].to_dense(len(table)), want_tables[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(block.weight.grad.numpy(), want_tables[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(projection_grads[k], want_projections[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(layer_t.projections[k].grad.numpy(), want_projections[k], rtol=1e-10,
                                   atol=1e-10)


@given(layer_cases(), st.integers(0, 2**32 - 1), st.floats(0.01, 1.0))
def test_numpy_step_changes_only_the_touched_rows_and_the_projections(case, seed, lr):
    tables, projections, rank, ids = case
    layer = np_mixed_dim.MixedDimEmbedding.from_weights(tables, projections, rank=rank)
    out = layer(ids)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    block_grads, projection_grads = layer.backward(g)
    positions = (ids if rank is None else rank[ids]).reshape(-1)
    starts = np.cumsum([0] + [len(t) for t in tables])
    for k, grad in enumerate(block_grads):
        mine = positions[(positions >= starts[k]) & (positions < starts[k + 1])] - starts[k]
        assert grad.rows.tolist() == sorted(set(mine.tolist()))  # the touched rows, each once
    layer.step(lr)
    want_tables, want_projections = autograd_grads(positions, g.reshape(-1, out.shape[-1]), tables, projections)
    for k, (block, table) in enumerate(zip(layer.blocks, tables)):
        untouched = np.setdiff1d(np.arange(len(table)), block_grads[k].rows)
        assert bitwise_equal(block.weight[untouched], table[untouched])  # not even a -0.0 * lr
        np.testing.assert_allclose(block.weight, table - lr * want_tables[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(layer.projections[k], projections[k] - lr * want_projections[k],
                                   rtol=1e-10, atol=1e-10)
    assert bitwise_equal(tables[0], case[0][0])  # from_weights copied
    layer.zero_grad()
    assert all(b.grad is None for b in layer.blocks) and layer.projection_grads == [None] * len(tables)


def test_numpy_gradients_accumulate_until_zero_grad():
    layer = np_mixed_dim.MixedDimEmbedding([3, 4], [4, 2], 4, seed=0)
    g = np.ones((2, 4))
    layer([0, 5])
    once = layer.backward(g)
    layer([0, 5])
    twice = layer.backward(g)
    for a, b in zip(once[1], twice[1]):
        np.testing.assert_allclose(b, 2 * a)
    assert twice[0][0].rows.tolist() == [0] and twice[0][1].rows.tolist() == [2]
    np.testing.assert_allclose(twice[0][0].values, 2 * once[0][0].values)


def test_layers_start_alike_and_like_a_plain_table_of_width_d(backend):
    """E_k ~ N(0, init_std^2 D/d_k), P_k with orthonormal rows: the rows' entries have mean square
    init_std^2, as a plain N(0, init_std^2) table of width D; the same numbers in both backends."""
    make = md(backend).MixedDimEmbedding
    layer = make([3000, 3000, 3000], [8, 3, 1], 8, init_std=0.1, seed=4)
    w = backend.np(layer.weight)
    assert w.shape == (9000, 8) and w.dtype == np.float64
    for k in range(3):
        part = w[3000 * k:3000 * (k + 1)]
        assert abs(np.mean(part**2) / 0.01 - 1) < 0.06, k  # 24,000 squares, N(0,1)-like: std err ~1%
        p = backend.np(layer.projections[k])
        np.testing.assert_allclose(p @ p.T, np.eye(p.shape[0]), atol=1e-12)
    other = np_mixed_dim.MixedDimEmbedding([3000, 3000, 3000], [8, 3, 1], 8, init_std=0.1, seed=4)
    for k in range(3):  # the same numbers; their products (weight) may round differently
        assert bitwise_equal(backend.np(layer.blocks[k].weight), other.blocks[k].weight)
        assert bitwise_equal(backend.np(layer.projections[k]), other.projections[k])
    np.testing.assert_allclose(w, other.weight, rtol=1e-12, atol=1e-15)
    assert not np.array_equal(w, backend.np(make([3000, 3000, 3000], [8, 3, 1], 8, init_std=0.1, seed=5).weight))
    plan = np_mixed_dim.mixed_dim_plan(np.arange(10)[::-1], [4, 6], 6)
    from_plan = md(backend).MixedDimEmbedding.from_plan(plan, 6, seed=1)
    assert from_plan.block_dims == tuple(plan.block_dims.tolist()) and from_plan.block_sizes == (4, 6)
    np.testing.assert_allclose(backend.np(from_plan.weight),
                               np_mixed_dim.MixedDimEmbedding.from_plan(plan, 6, seed=1).weight, rtol=1e-12, atol=1e-15)


def test_torch_layer_is_a_module_with_block_embeddings_and_projection_parameters():
    layer = torch_mixed_dim.MixedDimEmbedding([3, 4], [4, 2], 4, rank=np.array([6, 5, 4, 3, 2, 1, 0]), seed=0)
    assert isinstance(layer.blocks[0], TORCH.el.Embedding)
    names = [name for name, _ in layer.named_parameters()]
    assert names == ["blocks.0.weight", "blocks.1.weight", "projections.0", "projections.1"]
    assert "rank" in dict(layer.named_buffers())
    copy = torch_mixed_dim.MixedDimEmbedding([3, 4], [4, 2], 4, rank=np.arange(7), seed=1)
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy.weight, layer.weight)
    out = layer(torch.tensor([0, 0, 6]))  # ids 0 and 6: positions 6 (block 1, row 3) and 0 (block 0, row 0)
    out.sum().backward()
    assert layer.blocks[0].weight.grad[1:].abs().max() == 0 and layer.blocks[0].weight.grad[0].abs().max() > 0
    assert layer.blocks[1].weight.grad[:3].abs().max() == 0 and layer.blocks[1].weight.grad[3].abs().max() > 0
    assert not layer.weight.requires_grad


def test_layer_errors_change_nothing(backend):
    be, make = backend, md(backend).MixedDimEmbedding
    layer = make([2, 3], [3, 1], 3, rank=np.array([4, 3, 2, 1, 0]), seed=0)
    before = be.np(layer.weight).copy()
    if be is NUMPY:
        with pytest.raises(RuntimeError, match="forward"):
            layer.backward(np.zeros((1, 3)))
        layer(np.array([1, 4]))
    with pytest.raises(IndexError, match="index 5 is out of range for num_embeddings=5"):
        layer(be.arr(np.array([0, 5])))
    with pytest.raises(IndexError, match="index -1"):
        layer(be.arr(np.array([-1])))
    with pytest.raises(TypeError, match="ids must be integers"):
        layer(be.arr(np.array([0.5])))
    if be is NUMPY:  # the failed calls left the last forward as it was: ids 1 and 4
        with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3\)"):
            layer.backward(np.zeros((3, 3)))
        assert all(b.grad is None for b in layer.blocks) and layer.projection_grads == [None, None]
        grads = layer.backward(np.ones((2, 3)))
        assert [g.rows.tolist() for g in grads[0]] == [[0], [1]]  # ids 1, 4: positions 3 (block 1, row 1), 0
    assert bitwise_equal(be.np(layer.weight), before)
    rng = np.random.default_rng(0)
    tables = [be.arr(rng.standard_normal((2, 3))), be.arr(rng.standard_normal((3, 1)))]
    projections = [be.arr(rng.standard_normal((3, 3))), be.arr(rng.standard_normal((1, 3)))]
    with pytest.raises(ValueError, match=r"rank must be a permutation of 0..4"):
        make.from_weights(tables, projections, rank=np.array([0, 1, 2, 3, 3]))
    with pytest.raises(ValueError, match=r"rank must have shape \(V,\) = \(5,\)"):
        make.from_weights(tables, projections, rank=np.arange(4))
    with pytest.raises(TypeError, match="rank must be integers"):
        make.from_weights(tables, projections, rank=np.arange(5.0))
    with pytest.raises(ValueError, match=r"projections\[0\] must have shape \(d_k, D\) with d_k = 3"):
        make.from_weights(tables, projections[::-1])
    with pytest.raises(ValueError, match=r"block_dims must lie in \[1, embedding_dim = 3\]"):
        make([2, 3], [4, 1], 3)
    with pytest.raises(ValueError, match="one entry per block"):
        make([2, 3], [3], 3)


# --------------------------------------------------------------------------------------------------
# Training inside chapter 6's model (MatrixFactorization's movie_table)
# --------------------------------------------------------------------------------------------------
NUM_USERS, NUM_MOVIES, DIM = 12, 40, 6


def skewed_ratings(n=480, seed=0):
    """Ratings from a low-rank truth, movies drawn with a Zipf-like skew (a few popular, a long tail)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, NUM_USERS, n)
    popularity = 1.0 / np.arange(1, NUM_MOVIES + 1)
    movies = rng.permutation(NUM_MOVIES)[rng.choice(NUM_MOVIES, n, p=popularity / popularity.sum())]
    truth = rng.standard_normal((NUM_USERS, 2)) @ rng.standard_normal((2, NUM_MOVIES))
    ratings = np.clip(3.5 + truth[users, movies] + 0.3 * rng.standard_normal(n), 1, 5)
    return users, movies, ratings


def test_a_mixed_dim_movie_table_trains_in_matrix_factorization_and_the_backends_agree():
    users, movies, ratings = skewed_ratings()
    plan = np_mixed_dim.mixed_dim_plan(np.bincount(movies, minlength=NUM_MOVIES), [8, 12, 20], DIM)
    assert plan.block_dims.tolist()[0] == DIM and plan.block_dims[-1] < DIM
    models = {}
    for be in (NUMPY, TORCH):
        table = MODULES[be.name].MixedDimEmbedding.from_plan(plan, DIM, init_std=0.3, seed=2)
        models[be.name] = FACTORIZATION[be.name].MatrixFactorization(
            NUM_USERS, NUM_MOVIES, DIM, global_mean=float(ratings.mean()), init_std=0.3, seed=1, movie_table=table)
    start = np_mixed_dim.MixedDimEmbedding.from_plan(plan, DIM, init_std=0.3, seed=2).weight
    histories = {name: FACTORIZATION[name].train_sgd(model, users, movies, ratings, epochs=6, lr=0.02, reg=0.02,
                                                     batch_size=32, seed=3, progress=False)
                 for name, model in models.items()}
    train = histories["numpy"]["train"]
    assert train[-1] < 0.85 * train[0] and all(b < a for a, b in zip(train, train[1:])), train
    np.testing.assert_allclose(histories["torch"]["train"], train, rtol=1e-10, atol=0)
    np_model, torch_model = models["numpy"], models["torch"]
    assert np_model.movie is np_model.tables["movie"] and isinstance(torch_model.movie,
                                                                     torch_mixed_dim.MixedDimEmbedding)
    assert not np.allclose(np_model.movie.weight, start)  # the table trained
    np.testing.assert_allclose(torch_model.movie.weight.numpy(), np_model.movie.weight, rtol=0, atol=1e-10)
    for k in range(3):
        np.testing.assert_allclose(torch_model.movie.projections[k].detach().numpy(), np_model.movie.projections[k],
                                   rtol=0, atol=1e-10)
    np.testing.assert_allclose(torch_model.user.weight.detach().numpy(), np_model.user.weight, rtol=0, atol=1e-10)
    np.testing.assert_allclose(torch_model(users, movies).detach().numpy(), np_model(users, movies),
                               rtol=0, atol=1e-10)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_layer_on_cuda_matches_cpu():
    """Forward, gradients and the range check before any kernel, on the GPU (not yet run on one)."""
    plan = np_mixed_dim.mixed_dim_plan(np.arange(40)[::-1] % 7, [8, 12, 20], DIM)
    idx = np.random.default_rng(0).integers(0, 40, (5, 7))
    grad = np.random.default_rng(1).standard_normal((5, 7, DIM))
    runs = []
    for device in ("cpu", "cuda"):
        layer = torch_mixed_dim.MixedDimEmbedding.from_plan(plan, DIM, seed=0).to(device)
        out = layer(torch.as_tensor(idx, device=device))
        (out * torch.as_tensor(grad, device=device)).sum().backward()
        runs.append([out.detach().cpu().numpy(), layer.weight.cpu().numpy()]
                    + [p.grad.cpu().numpy() for p in layer.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    layer = torch_mixed_dim.MixedDimEmbedding.from_plan(plan, DIM, seed=0).to("cuda")
    with pytest.raises(IndexError, match="num_embeddings=40"):
        layer(torch.tensor([40], device="cuda"))
    with pytest.raises(IndexError, match="position 40"):
        torch_mixed_dim.mixed_dim_lookup(torch.tensor([40], device="cuda"), [b.weight for b in layer.blocks],
                                         list(layer.projections))
    assert torch.isfinite(layer.weight).all()  # the process is still usable after the errors
