"""embedding_bag (chapters 2 and 8): against a loop over bags, against F.embedding_bag, and gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from conftest import (NUMPY, TORCH, BagCase, bag_cases, ref_embedding_bag, ref_embedding_bag_grad, tol)


def call(be, case: BagCase):
    offsets = None if case.offsets is None else be.arr(case.offsets)
    return be.el.embedding_bag(be.arr(case.indices), be.arr(case.weight), offsets, **case.kwargs(be))


def torch_reference(case: BagCase, weight: torch.Tensor, psw: torch.Tensor | None):
    """torch's own F.embedding_bag on the same case (int64 indices)."""
    idx = torch.from_numpy(case.indices.astype(np.int64))
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets.astype(np.int64))
    return F.embedding_bag(idx, weight, offsets, mode=case.mode, per_sample_weights=psw,
                           padding_idx=case.padding_idx, include_last_offset=case.include_last_offset)


@given(case=bag_cases())
def test_embedding_bag_equals_loop_over_bags(backend, case):
    out = call(backend, case)
    assert backend.is_native(out)
    assert out.dtype == backend.dtype(case.weight.dtype)
    expected = ref_embedding_bag(case)
    assert tuple(out.shape) == expected.shape
    np.testing.assert_allclose(backend.np(out), expected, **tol(case.weight.dtype))


@given(case=bag_cases(last_offset=True, strict_last_offset=False))
def test_indices_after_the_last_offset_are_ignored_or_refused(backend, case):
    """include_last_offset with a last offset short of len(indices).

    The spec says the indices after it are ignored "as in torch", but torch (2.13, CPU) is not
    consistent there: "sum" ignores them, "mean" ignores them in the sum but counts them in the
    divisor, "max" uses them. So either behaviour is accepted: ignore them (the loop reference), or
    refuse the call with a ValueError about the offsets. Nothing else.
    """
    try:
        out = call(backend, case)
    except ValueError as e:
        assert int(case.offsets[-1]) < len(case.indices), f"refused a valid call: {e}"
        assert "offset" in str(e)
        return
    np.testing.assert_allclose(backend.np(out), ref_embedding_bag(case), **tol(case.weight.dtype))


@given(case=bag_cases(modes=("sum", "mean", "max"), psw=False))
def test_bags_are_sums_means_maxes_of_lookups(backend, case):
    """A bag is a reduction of the lookup of its indices (no padding here)."""
    case.padding_idx = None
    out = backend.np(call(backend, case))
    from conftest import bag_bounds

    bounds, flat, _ = bag_bounds(case)
    rows = backend.np(backend.el.lookup(backend.arr(flat), backend.arr(case.weight)))
    for b, (s, e) in enumerate(bounds):
        if e == s:
            np.testing.assert_array_equal(out[b], 0)
            continue
        reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[case.mode]
        np.testing.assert_allclose(out[b], reduce(rows[s:e].astype(np.float64), axis=0), **tol(case.weight.dtype))


@given(case=bag_cases())
def test_backends_agree_on_embedding_bag(case):
    a = call(NUMPY, case)
    b = call(TORCH, case).numpy()
    np.testing.assert_allclose(a, b, **tol(case.weight.dtype))


def test_sum_bag_is_multi_hot_times_weight(backend):
    """Chapter 2: a multi-hot vector times W is the sum of the selected rows."""
    w = np.arange(15, dtype=np.float64).reshape(5, 3)
    multi_hot = np.array([[1, 0, 1, 0, 1], [0, 2, 0, 0, 0]], dtype=np.float64)
    out = backend.el.embedding_bag(backend.arr(np.array([0, 2, 4, 1, 1])), backend.arr(w),
                                   backend.arr(np.array([0, 3])), mode="sum")
    np.testing.assert_array_equal(backend.np(out), multi_hot @ w)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_empty_bags_give_zeros(backend, mode):
    w = np.arange(1, 9, dtype=np.float32).reshape(4, 2)
    out = backend.np(backend.el.embedding_bag(backend.arr(np.array([3])), backend.arr(w),
                                              backend.arr(np.array([0, 0, 1, 1])), mode=mode))
    np.testing.assert_array_equal(out[[0, 2, 3]], 0)
    np.testing.assert_array_equal(out[1], w[3])
    none = backend.el.embedding_bag(backend.arr(np.zeros(0, dtype=np.int64)), backend.arr(w),
                                    backend.arr(np.array([0, 0])), mode=mode)
    np.testing.assert_array_equal(backend.np(none), np.zeros((2, 2)))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_2d_indices_with_no_columns_give_zero_rows(backend, mode):
    """(B, 0) input: B empty bags (torch's own F.embedding_bag crashes here)."""
    w = backend.arr(np.ones((4, 3), dtype=np.float32))
    out = backend.el.embedding_bag(backend.arr(np.zeros((5, 0), dtype=np.int64)), w, mode=mode)
    assert tuple(out.shape) == (5, 3)
    np.testing.assert_array_equal(backend.np(out), 0)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bags_of_only_padding_give_zeros_and_padding_is_not_counted(backend, mode):
    w = np.array([[1.0, 2.0], [10.0, 20.0], [-5.0, 7.0]], dtype=np.float32)
    out = backend.np(backend.el.embedding_bag(backend.arr(np.array([1, 1, 1, 0, 1])), backend.arr(w),
                                              backend.arr(np.array([0, 2, 3])), mode=mode, padding_idx=1))
    np.testing.assert_array_equal(out[0], 0)          # only padding
    np.testing.assert_array_equal(out[1], 0)          # only padding
    np.testing.assert_array_equal(out[2], w[0])       # the mean of [w0, pad] is w0, not w0 / 2


def test_list_offsets_and_default_mode_is_mean(backend):
    w = np.array([[2.0], [4.0], [9.0]], dtype=np.float64)
    out = backend.el.embedding_bag([0, 1, 2], backend.arr(w), [0, 2])
    np.testing.assert_array_equal(backend.np(out), [[3.0], [9.0]])


# --------------------------------------------------------------------------------------------------
# torch: forward and gradients (weight, per_sample_weights) equal F.embedding_bag's
# --------------------------------------------------------------------------------------------------
@given(case=bag_cases())
def test_torch_embedding_bag_matches_F_embedding_bag(case):
    w_mine = torch.from_numpy(case.weight.copy()).requires_grad_()
    w_ref = torch.from_numpy(case.weight.copy()).requires_grad_()
    psw_mine = psw_ref = None
    if case.per_sample_weights is not None:
        psw_mine = torch.from_numpy(case.per_sample_weights.copy()).requires_grad_()
        psw_ref = torch.from_numpy(case.per_sample_weights.copy()).requires_grad_()
    kw = case.kwargs()
    kw["per_sample_weights"] = psw_mine
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets)
    out = TORCH.el.embedding_bag(torch.from_numpy(case.indices), w_mine, offsets, **kw)
    if case.indices.ndim == 2 and case.indices.shape[1] == 0:
        np.testing.assert_array_equal(out.detach().numpy(), 0)  # torch itself fails on (B, 0)
        return
    expected = torch_reference(case, w_ref, psw_ref)
    t = tol(case.weight.dtype)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), **t)
    g = torch.from_numpy(np.random.default_rng(5).standard_normal(tuple(out.shape)).astype(case.weight.dtype))
    out.backward(g)
    expected.backward(g)
    np.testing.assert_allclose(w_mine.grad.numpy(), w_ref.grad.numpy(), **t)
    np.testing.assert_allclose(w_mine.grad.numpy(), ref_embedding_bag_grad(case, g.numpy()), **t)
    if psw_mine is not None:
        np.testing.assert_allclose(psw_mine.grad.numpy(), psw_ref.grad.numpy(), **t)


def test_torch_max_bag_gradient_goes_to_the_argmax_row_per_column():
    w = torch.tensor([[1.0, 9.0], [5.0, 2.0], [3.0, 3.0]], requires_grad=True)
    out = TORCH.el.embedding_bag(torch.tensor([0, 1, 2]), w, torch.tensor([0]), mode="max")
    assert torch.equal(out.detach(), torch.tensor([[5.0, 9.0]]))
    out.backward(torch.tensor([[10.0, 100.0]]))
    assert torch.equal(w.grad, torch.tensor([[0.0, 100.0], [10.0, 0.0], [0.0, 0.0]]))


# --------------------------------------------------------------------------------------------------
# gradcheck (float64)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@given(case=st.data())
def test_embedding_bag_gradcheck_wrt_weight(mode, case):
    c = case.draw(bag_cases(modes=(mode,), dtype=np.float64, psw=False, max_rows=6))
    offsets = None if c.offsets is None else torch.from_numpy(c.offsets)
    idx = torch.from_numpy(c.indices)
    w = torch.tensor(c.weight, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: TORCH.el.embedding_bag(idx, x, offsets, mode=mode, padding_idx=c.padding_idx,
                                         include_last_offset=c.include_last_offset),
        (w,))


@given(case=bag_cases(modes=("sum",), psw=True, dtype=np.float64, max_rows=6))
def test_embedding_bag_gradcheck_wrt_weight_and_per_sample_weights(case):
    if case.indices.size == 0:
        return  # no per-sample weight to perturb
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets)
    idx = torch.from_numpy(case.indices)
    w = torch.tensor(case.weight, requires_grad=True)
    psw = torch.tensor(case.per_sample_weights, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, p: TORCH.el.embedding_bag(idx, x, offsets, mode="sum", per_sample_weights=p,
                                            padding_idx=case.padding_idx,
                                            include_last_offset=case.include_last_offset),
        (w, psw))


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2], [1, 2, 0]])
def test_max_bag_with_nan_gives_a_value_of_the_bag(backend, order):
    """A NaN in a max bag: the result must be NaN (NumPy's maximum) or a value that is in the bag
    (torch's own F.embedding_bag returns NaN only when the NaN comes first); never anything else."""
    w = np.array([[np.nan, 1.0], [2.0, 3.0], [5.0, 0.0]], dtype=np.float32)
    out = backend.np(backend.el.embedding_bag(backend.arr(np.array(order)), backend.arr(w),
                                              backend.arr(np.array([0])), mode="max"))
    assert out[0, 1] == 3.0
    assert np.isnan(out[0, 0]) or out[0, 0] in (2.0, 5.0), out


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2]])
def test_max_bag_gradient_with_nan_goes_to_exactly_one_entry(backend, order):
    """The gradient of each (bag, column) max lands once, also with a NaN in the bag
    (NumPy: the bag layer's backward; torch: autograd through embedding_bag)."""
    w = np.array([[np.nan, 1.0], [2.0, 3.0], [5.0, 0.0]], dtype=np.float32)
    g = np.array([[10.0, 100.0]], dtype=np.float32)
    if backend.name == "numpy":
        layer = NUMPY.el.EmbeddingBag.from_weight(w, mode="max")
        layer(np.array(order), np.array([0]))
        rows, values = layer.backward(g)
        dense = np.zeros_like(w)
        dense[rows] = values
    else:
        wt = torch.from_numpy(w.copy()).requires_grad_()
        TORCH.el.embedding_bag(torch.tensor(order), wt, torch.tensor([0]), mode="max").backward(torch.from_numpy(g))
        dense = wt.grad.numpy()
    np.testing.assert_array_equal(dense.sum(axis=0), g[0])
