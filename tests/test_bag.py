"""embedding_bag (chapters 2 and 8): against a loop over bags, against F.embedding_bag, and gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

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


# --------------------------------------------------------------------------------------------------
# torch on the CPU: PyTorch's own embedding_bag kernels, with embedlib's semantics where they differ
# --------------------------------------------------------------------------------------------------
def _both(idx, w, offsets, **kw):
    """embedlib's bags and F.embedding_bag on copies of ``w``: ``(ours, theirs, w_ours, w_theirs)``."""
    mine, ref = w.clone().requires_grad_(), w.clone().requires_grad_()
    return TORCH.el.embedding_bag(idx, mine, offsets, **kw), F.embedding_bag(idx, ref, offsets, **kw), mine, ref


def test_torch_cpu_bags_run_pytorchs_kernels_not_the_torch_operations(monkeypatch):
    """On the CPU every mode runs PyTorch's embedding_bag (forward and backward); the plain-torch
    path is left for what those kernels lack (D = 0 here)."""
    from embedlib.torch import bag

    def refuse(*args, **kwargs):
        raise AssertionError("the plain-torch bag path ran")
    monkeypatch.setattr(bag, "composite", refuse)
    w = torch.randn(6, 3, requires_grad=True)
    psw = torch.rand(5, requires_grad=True)
    for mode, weights in (("sum", psw), ("sum", None), ("mean", None), ("max", None)):
        out = TORCH.el.embedding_bag(torch.tensor([0, 5, 2, 2, 1]), w, torch.tensor([0, 2]), mode=mode,
                                     per_sample_weights=weights, padding_idx=1)
        out.sum().backward()
        with torch.no_grad():
            TORCH.el.embedding_bag(torch.tensor([[0, 5], [2, 2]]), w, mode=mode)
    monkeypatch.undo()
    empty_rows = TORCH.el.embedding_bag(torch.tensor([0, 1]), torch.zeros(4, 0), torch.tensor([0]), mode="sum")
    assert tuple(empty_rows.shape) == (1, 0)


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2], [1, 2, 0]])
def test_torch_max_bag_nan_wins_wherever_it_is(order):
    """F.embedding_bag lets a NaN win only when it comes first in its bag; embedlib's max (NumPy, the
    Triton kernels and torch on the CPU alike) lets it win its column wherever it is, and sends that
    column's gradient to it."""
    w = torch.tensor([[np.nan, 1.0], [2.0, 3.0], [5.0, 0.0], [7.0, 4.0]], requires_grad=True)
    idx = torch.tensor(order + [3, 1])
    out = TORCH.el.embedding_bag(idx, w, torch.tensor([0, 3]), mode="max")
    assert np.isnan(out[0, 0].item()) and out[0, 1].item() == 3.0
    assert torch.equal(out[1], torch.tensor([7.0, 4.0]))  # a bag without NaN is untouched
    np.testing.assert_array_equal(NUMPY.el.embedding_bag(idx.numpy(), w.detach().numpy(), np.array([0, 3]),
                                                         mode="max"), out.detach().numpy())
    out.backward(torch.tensor([[10.0, 100.0], [1.0, 1000.0]]))
    assert torch.equal(w.grad, torch.tensor([[10.0, 0.0], [0.0, 100.0], [0.0, 0.0], [1.0, 1000.0]]))


def test_torch_max_bag_with_both_infinities_is_exact():
    """A bag holding +inf and -inf in a column (its sum is NaN, as with a NaN) still gets its true
    maximum, and the first entry that reaches it gets the gradient."""
    inf = float("inf")
    w = torch.tensor([[-inf, 1.0], [inf, 2.0], [inf, 2.0]], requires_grad=True)
    out = TORCH.el.embedding_bag(torch.tensor([0, 1, 2]), w, torch.tensor([0]), mode="max")
    assert torch.equal(out.detach(), torch.tensor([[inf, 2.0]]))
    out.backward(torch.tensor([[10.0, 100.0]]))
    assert torch.equal(w.grad, torch.tensor([[0.0, 0.0], [10.0, 100.0], [0.0, 0.0]]))


def test_torch_max_bag_ties_padding_and_empty_bags_match_F_embedding_bag():
    """Ties: the first entry wins (also its gradient); padding entries take no part; empty bags and
    bags of only padding give zeros and send nothing back."""
    w = torch.tensor([[1.0, 5.0], [1.0, 5.0], [0.0, 7.0], [9.0, 9.0]])
    idx = torch.tensor([1, 0, 2, 3, 3, 0, 3, 1])
    offsets = torch.tensor([0, 3, 3, 5, 6])  # bag 1 empty, bag 2 only padding
    ours, theirs, w_ours, w_theirs = _both(idx, w, offsets, mode="max", padding_idx=3)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours[[1, 2]], torch.zeros(2, 2))
    g = torch.arange(10.0).reshape(5, 2) + 1
    ours.backward(g)
    theirs.backward(g)
    assert torch.equal(w_ours.grad, w_theirs.grad)
    # bag 0 is rows [1, 0, 2]: rows 1 and 0 tie in column 0, and row 1 comes first
    assert w_ours.grad[1, 0] == g[0, 0] + g[4, 0] and w_ours.grad[0, 0] == g[3, 0]


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_torch_bags_equal_F_embedding_bag_bitwise_on_the_cpu(mode):
    """Same kernels, same bits: forward, weight gradient, and per-sample weights' gradient."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(50, 7, generator=gen)
    idx = torch.randint(0, 50, (200,), generator=gen)
    offsets = torch.tensor([0, 0, 10, 10, 60, 199])
    psw = torch.randn(200, generator=gen) if mode == "sum" else None
    for pad, include_last in ((None, False), (7, False), (7, True)):
        off = torch.cat([offsets, torch.tensor([200])]) if include_last else offsets
        kw = dict(mode=mode, padding_idx=pad, include_last_offset=include_last)
        p_ours = p_theirs = None
        if psw is not None:
            p_ours, p_theirs = psw.clone().requires_grad_(), psw.clone().requires_grad_()
        mine, ref = w.clone().requires_grad_(), w.clone().requires_grad_()
        ours = TORCH.el.embedding_bag(idx, mine, off, per_sample_weights=p_ours, **kw)
        theirs = F.embedding_bag(idx, ref, off, per_sample_weights=p_theirs, **kw)
        assert torch.equal(ours, theirs)
        g = torch.randn(ours.shape, generator=gen)
        ours.backward(g)
        theirs.backward(g)
        assert torch.equal(mine.grad, ref.grad)
        if psw is not None:
            assert torch.equal(p_ours.grad, p_theirs.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_bags_of_half_precision_tables(dtype):
    w = torch.randn(20, 4).to(dtype)
    idx, offsets = torch.tensor([3, 19, 0, 3, 7]), torch.tensor([0, 2, 2])
    for mode in ("sum", "mean", "max"):
        ours, theirs, w_ours, w_theirs = _both(idx, w, offsets, mode=mode, padding_idx=0)
        assert ours.dtype == dtype and torch.equal(ours, theirs)
        ours.sum().backward()
        theirs.sum().backward()
        assert torch.equal(w_ours.grad, w_theirs.grad)


@pytest.mark.parametrize("layer", [False, True], ids=["function", "layer"])
def test_torch_bag_per_sample_weights_of_another_float_type(layer):
    """float64 per-sample weights on a float32 table: refused, as F.embedding_bag refuses them (no
    silent cast), with both dtypes named, before the layer's weight can change (max_norm)."""
    w = torch.randn(6, 3) * 5
    psw = torch.rand(4, dtype=torch.float64, requires_grad=True)
    idx, offsets = torch.tensor([0, 1, 5, 1]), torch.tensor([0, 3])
    with pytest.raises(RuntimeError):
        F.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=psw)
    match = "per_sample_weights must have the weight's dtype float32, got float64"
    if layer:
        bag = TORCH.el.EmbeddingBag.from_weight(w, mode="sum", max_norm=1.0)
        before = bag.weight.detach().clone()
        with pytest.raises(TypeError, match=match):
            bag(idx, offsets, psw)
        assert torch.equal(bag.weight.detach(), before)
    else:
        with pytest.raises(TypeError, match=match):
            TORCH.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=psw)
    # the same types pass, and a Python list (no float type of its own) is used in the weight's type
    out = TORCH.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=psw.detach().float())
    torch.testing.assert_close(out, F.embedding_bag(idx, w, offsets, mode="sum",
                                                    per_sample_weights=psw.detach().float()))
    out = TORCH.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=[0.5, 1.0, 2.0, 1.0])
    assert out.dtype == torch.float32


@pytest.mark.parametrize("layer", [False, True], ids=["function", "layer"])
def test_numpy_bag_per_sample_weights_of_another_float_type(layer):
    """The NumPy backend refuses the mix too, with the same words, before the weight can change."""
    w = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32) * 5
    psw = np.ones(4)
    idx, offsets = np.array([0, 1, 5, 1]), np.array([0, 3])
    match = "per_sample_weights must have the weight's dtype float32, got float64"
    if layer:
        bag = NUMPY.el.EmbeddingBag.from_weight(w, mode="sum", max_norm=1.0)
        before = bag.weight.copy()
        with pytest.raises(TypeError, match=match):
            bag(idx, offsets, psw)
        np.testing.assert_array_equal(bag.weight, before)
    else:
        with pytest.raises(TypeError, match=match):
            NUMPY.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=psw)
    out = NUMPY.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=psw.astype(np.float32))
    assert out.dtype == np.float32
    out = NUMPY.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=[1.0, 1.0, 1.0, 1.0])
    assert out.dtype == np.float32


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_torch_bag_forward_without_autograd_equals_with(mode):
    """Without a gradient to compute, the bags skip autograd (PyTorch's forward-only kernel)."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(30, 5, generator=gen)
    w[4, 2] = float("nan")
    idx, offsets = torch.randint(0, 30, (40,), generator=gen), torch.tensor([0, 5, 5, 33])
    idx[7] = 4
    with_grad = TORCH.el.embedding_bag(idx, w.clone().requires_grad_(), offsets, mode=mode, padding_idx=3)
    plain = TORCH.el.embedding_bag(idx, w, offsets, mode=mode, padding_idx=3)
    assert plain.grad_fn is None and with_grad.grad_fn is not None
    torch.testing.assert_close(plain, with_grad.detach(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_torch_bag_gradients_of_gradients(mode):
    """Double backward, as every bag supported before it ran on PyTorch's kernels (whose own
    backward has no derivative): second derivatives w.r.t. the weight and the per-sample weights."""
    gen = torch.Generator().manual_seed(2)
    idx, offsets = torch.tensor([0, 2, 1, 2, 3, 1, 4]), torch.tensor([0, 2, 2, 5])
    w = torch.randn(5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    for pad in (None, 1):
        assert torch.autograd.gradgradcheck(
            lambda x: TORCH.el.embedding_bag(idx, x, offsets, mode=mode, padding_idx=pad), (w,))
    if mode == "sum":
        psw = torch.randn(7, dtype=torch.float64, generator=gen, requires_grad=True)
        for pad in (None, 1):
            assert torch.autograd.gradgradcheck(
                lambda x, p: TORCH.el.embedding_bag(idx, x, offsets, mode="sum", per_sample_weights=p,
                                                    padding_idx=pad), (w, psw))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_torch_bag_weight_may_change_in_place_before_the_backward(mode):
    """As with F.embedding_bag, the backward does not need the weight (without per-sample weights to
    differentiate), so a max_norm renormalisation or an update between forward and backward is fine."""
    w = torch.randn(6, 2, requires_grad=True)
    out = TORCH.el.embedding_bag(torch.tensor([0, 1, 2, 3]), w, torch.tensor([0, 2]), mode=mode)
    with torch.no_grad():
        w.mul_(2)
    out.sum().backward()
    assert w.grad is not None


@given(case=bag_cases())
def test_torch_operations_path_equals_pytorchs_kernels(case):
    """The plain-torch path (CUDA without Triton, float types PyTorch's kernels lack, D = 0) gives the
    results of the CPU path, forward and gradients, from the same checked arguments."""
    from embedlib.torch import bag

    offsets = None if case.offsets is None else torch.from_numpy(case.offsets)
    results = []
    for path in ("kernels", "torch operations"):
        w = torch.from_numpy(case.weight.copy()).requires_grad_()
        psw = None if case.per_sample_weights is None else torch.from_numpy(
            case.per_sample_weights.copy()).requires_grad_()
        c = bag.check(torch.from_numpy(case.indices), w.shape[0], offsets, mode=case.mode, per_sample_weights=psw,
                      padding_idx=case.padding_idx, include_last_offset=case.include_last_offset)
        out = bag.run(c, w, case.mode) if path == "kernels" else bag.composite(c.flat, c.bounds, w, c.psw, c.pad,
                                                                              case.mode)
        out.backward(torch.ones_like(out))
        results.append([out.detach(), w.grad] + ([] if psw is None else [psw.grad]))
    for mine, theirs in zip(*results):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), **tol(case.weight.dtype))


@given(case=bag_cases(modes=("max",)), data=st.data())
def test_torch_max_bags_with_nans_infinities_and_ties_keep_embedlibs_semantics(case, data):
    """Tables full of ties, NaNs and infinities: the CPU path (PyTorch's max, its NaN bags redone)
    gives the values and the gradient of the plain-torch path and of NumPy."""
    from embedlib.torch import bag

    special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0])
    w_np = data.draw(hnp.arrays(case.weight.dtype, case.weight.shape, elements=special))
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets)
    kw = dict(mode="max", padding_idx=case.padding_idx, include_last_offset=case.include_last_offset)
    w = torch.from_numpy(w_np.copy()).requires_grad_()
    out = TORCH.el.embedding_bag(torch.from_numpy(case.indices), w, offsets, **kw)
    c = bag.check(torch.from_numpy(case.indices), w.shape[0], offsets, **kw)
    w_ref = torch.from_numpy(w_np.copy()).requires_grad_()
    ref = bag.composite(c.flat, c.bounds, w_ref, None, c.pad, "max")
    np.testing.assert_array_equal(out.detach().numpy(), ref.detach().numpy())  # NaNs in the same places
    np.testing.assert_array_equal(out.detach().numpy(), NUMPY.el.embedding_bag(case.indices, w_np, case.offsets,
                                                                               **kw))
    g = torch.from_numpy(np.random.default_rng(0).standard_normal(tuple(out.shape)).astype(w_np.dtype))
    out.backward(g)
    ref.backward(g)
    np.testing.assert_array_equal(w.grad.numpy(), w_ref.grad.numpy())


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values, every other element of a larger tensor (not contiguous)."""
    out = t.new_zeros(t.shape + (2,))
    out[..., 1] = t
    return out[..., 1].detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_torch_bags_do_not_depend_on_how_their_arguments_are_laid_out(mode, dtype):
    """PyTorch's kernels read indices, offsets and per-sample weights as contiguous memory, and round
    differently when a table's columns are strided: strided arguments give the same bits as
    contiguous ones, forward and gradients (and those of F.embedding_bag on contiguous ones)."""
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(10, 5, generator=gen) * 10).to(dtype)
    idx, offsets = torch.randint(0, 10, (6,), generator=gen), torch.tensor([0, 0, 3])
    psw = torch.rand(6, generator=gen).to(dtype) if mode == "sum" else None
    for args in ((idx, offsets), (idx.reshape(2, 3), None)):
        p = None if psw is None else psw.reshape(args[0].shape)
        results = []
        for layout in (torch.clone, _strided):
            table = layout(w).requires_grad_()
            weights = None if p is None else layout(p).requires_grad_()
            out = TORCH.el.embedding_bag(layout(args[0]), table, None if args[1] is None else layout(args[1]),
                                         mode=mode, per_sample_weights=weights)
            out.backward(torch.ones_like(out))
            results.append([out.detach(), table.grad] + ([] if p is None else [weights.grad]))
        for contiguous, strided in zip(*results):
            assert torch.equal(contiguous, strided)
        if dtype == torch.float32:
            assert torch.equal(results[0][0], F.embedding_bag(args[0], w, args[1], mode=mode, per_sample_weights=p))


# --------------------------------------------------------------------------------------------------
# max_norm / norm_type in the function (issue 12), as F.embedding_bag
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_embedding_bag_max_norm_like_f_embedding_bag(backend_name, mode, norm_type):
    backend = NUMPY if backend_name == "numpy" else TORCH
    gen = torch.Generator().manual_seed(5)
    ref_w = torch.randn(8, 3, generator=gen, dtype=torch.float64) * 3
    idx, offsets = torch.tensor([0, 2, 2, 7, 3, 2]), torch.tensor([0, 2, 2, 5])
    ref = F.embedding_bag(idx, ref_w, offsets, mode=mode, max_norm=1.2, norm_type=norm_type, padding_idx=3)
    if backend is TORCH:
        w = ref_w.clone()
        out = backend.el.embedding_bag(idx, w, offsets, mode=mode, max_norm=1.2, norm_type=norm_type,
                                       padding_idx=3)
        out, table = out.numpy(), w.numpy()
    else:
        table = ref_w.numpy().copy()
        out = backend.el.embedding_bag(idx.numpy(), table, offsets.numpy(), mode=mode, max_norm=1.2,
                                       norm_type=norm_type, padding_idx=3)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12)
    np.testing.assert_allclose(table, ref_w.numpy(), rtol=1e-12)  # renormalised in place, padding row too


def test_torch_embedding_bag_max_norm_gradient_like_f_embedding_bag():
    w = (torch.randn(6, 3, dtype=torch.float64) * 3).requires_grad_()
    ref_w = w.detach().clone().requires_grad_()
    idx, offsets = torch.tensor([0, 1, 1, 4, 5]), torch.tensor([0, 3])
    psw = torch.rand(5, dtype=torch.float64)
    g = torch.randn(2, 3, dtype=torch.float64)
    TORCH.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=psw, max_norm=1.0).backward(g)
    F.embedding_bag(idx, ref_w, offsets, mode="sum", per_sample_weights=psw, max_norm=1.0).backward(g)
    torch.testing.assert_close(w.grad, ref_w.grad)
    torch.testing.assert_close(w.detach(), ref_w.detach())


@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [dict(max_norm=0.0), dict(max_norm=1.0, norm_type=-2.0),
                                 dict(max_norm=1.0, offsets=[0, 9]), dict(max_norm=1.0, indices=[0, 8, 1]),
                                 dict(max_norm=1.0, mode="mean", per_sample_weights=True),
                                 dict(max_norm=1.0, padding_idx=6)])
def test_embedding_bag_max_norm_errors_leave_the_weight_unchanged(backend_name, bad):
    backend = NUMPY if backend_name == "numpy" else TORCH
    bad = dict(bad)
    idx, offsets = np.array(bad.pop("indices", [0, 1, 2])), np.array(bad.pop("offsets", [0, 1]))
    w = np.random.default_rng(0).standard_normal((6, 3)) * 4
    if bad.pop("per_sample_weights", None):
        bad["per_sample_weights"] = np.ones(3)
    if backend is TORCH:
        w = torch.tensor(w)
        idx, offsets = torch.tensor(idx), torch.tensor(offsets)
        if "per_sample_weights" in bad:
            bad["per_sample_weights"] = torch.tensor(bad["per_sample_weights"])
    before = w.clone().numpy() if backend is TORCH else w.copy()
    with pytest.raises((ValueError, TypeError, IndexError)):
        backend.el.embedding_bag(idx, w, offsets, **bad)
    assert np.array_equal(w.numpy() if backend is TORCH else w, before)


# --------------------------------------------------------------------------------------------------
# scale_grad_by_freq (issue 12): counts over the whole input, as F.embedding_bag; "max" refuses it
# --------------------------------------------------------------------------------------------------
def _freq_reference(idx, w, offsets, mode, pad, psw, g):
    """The documented rule (and CUDA's, and PyTorch after pytorch/pytorch#190264): the plain gradient,
    each row divided by its index's count in the whole input. torch 2.13's CPU kernel divides some rows
    by another index's count (pytorch/pytorch#190063), so it is not the reference here."""
    w = w.clone().requires_grad_()
    F.embedding_bag(idx, w, offsets, mode=mode, padding_idx=pad, per_sample_weights=psw).backward(g)
    return w.grad / torch.bincount(idx.reshape(-1), minlength=w.shape[0]).clamp(min=1)[:, None].to(w.dtype)


@pytest.mark.parametrize("layer", [False, True], ids=["function", "layer"])
@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("pad", [None, 5])
@pytest.mark.parametrize("psw", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_bag_scale_grad_by_freq(layer, mode, pad, psw, dtype):
    if psw and mode != "sum":
        pytest.skip("per_sample_weights need mode='sum'")
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(8, 3, generator=gen, dtype=dtype)
    idx, offsets = torch.tensor([3, 5, 5, 6, 6, 6, 1, 3]), torch.tensor([0, 2, 2, 6])
    weights = torch.rand(8, generator=gen, dtype=dtype) if psw else None
    g = torch.randn(4, 3, generator=gen, dtype=dtype)
    if layer:
        ours = TORCH.el.EmbeddingBag.from_weight(w, mode=mode, padding_idx=pad, scale_grad_by_freq=True)
        out = ours(idx, offsets, weights)
        out.backward(g)
        grad = ours.weight.grad
    else:
        w_el = w.clone().requires_grad_()
        out = TORCH.el.embedding_bag(idx, w_el, offsets, mode=mode, padding_idx=pad, per_sample_weights=weights,
                                     scale_grad_by_freq=True)
        out.backward(g)
        grad = w_el.grad
    torch.testing.assert_close(out.detach(), F.embedding_bag(idx, w, offsets, mode=mode, padding_idx=pad,
                                                             per_sample_weights=weights))
    torch.testing.assert_close(grad, _freq_reference(idx, w, offsets, mode, pad, weights, g))


def test_torch_bag_scale_grad_by_freq_matches_torch_where_its_kernel_is_right():
    """Without a once-seen index sorting after a repeated one, torch 2.13's CPU kernel is right: the
    same gradient as PyTorch's, 2-D input included."""
    w = torch.randn(6, 3, dtype=torch.float64)
    idx = torch.tensor([[4, 4, 2], [2, 4, 2]])  # index 2 three times, index 4 three times
    for mode in ("sum", "mean"):
        ref = nn.EmbeddingBag.from_pretrained(w.clone(), freeze=False, mode=mode, scale_grad_by_freq=True)
        ours = TORCH.el.EmbeddingBag.from_weight(w, mode=mode, scale_grad_by_freq=True)
        ref(idx).sum().backward()
        ours(idx).sum().backward()
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad)


def test_torch_bag_scale_grad_by_freq_with_create_graph():
    """(gradcheck does not apply: the scaled gradient is deliberately not the derivative.) With
    create_graph (the differentiable path) the same gradients as without."""
    w = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    psw = torch.rand(5, dtype=torch.float64, requires_grad=True)
    idx, offsets = torch.tensor([0, 2, 2, 5, 2]), torch.tensor([0, 3])
    g = torch.randn(2, 2, dtype=torch.float64)
    out = TORCH.el.embedding_bag(idx, w, offsets, mode="sum", per_sample_weights=psw, scale_grad_by_freq=True)
    graph = torch.autograd.grad(out, (w, psw), g, create_graph=True)
    plain = torch.autograd.grad(out, (w, psw), g)
    torch.testing.assert_close(graph, plain)
    torch.testing.assert_close(plain[0], _freq_reference(idx, w.detach(), offsets, "sum", None, psw.detach(), g))
    assert graph[0].requires_grad


def test_torch_bag_scale_grad_by_freq_refuses_max_like_torch():
    w = torch.randn(4, 2) * 5
    before = w.clone()
    with pytest.raises(ValueError, match="max mode does not support"):
        F.embedding_bag(torch.tensor([[0, 1]]), w, mode="max", scale_grad_by_freq=True)
    with pytest.raises(ValueError, match="scale_grad_by_freq is not supported with mode='max'"):
        TORCH.el.embedding_bag(torch.tensor([[0, 1]]), w, mode="max", scale_grad_by_freq=True, max_norm=1.0)
    with pytest.raises(ValueError, match="scale_grad_by_freq is not supported with mode='max'"):
        TORCH.el.EmbeddingBag(4, 2, mode="max", scale_grad_by_freq=True)
    assert torch.equal(w, before)


# torch: sparse=True gradients and forward-mode AD (issue 12)
# --------------------------------------------------------------------------------------------------
def _torch_case(case: BagCase, requires_grad=True):
    w = torch.from_numpy(case.weight.copy()).requires_grad_(requires_grad)
    psw = None
    if case.per_sample_weights is not None:
        psw = torch.from_numpy(case.per_sample_weights.copy()).requires_grad_(requires_grad)
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets)
    return torch.from_numpy(case.indices), w, offsets, psw


@given(case=bag_cases(modes=("sum", "mean")), freq=st.booleans())
def test_torch_sparse_bag_gradient_is_F_embedding_bags(case, freq):
    idx, w, offsets, psw = _torch_case(case)
    kw = dict(case.kwargs(), per_sample_weights=psw, scale_grad_by_freq=freq)
    out = TORCH.el.embedding_bag(idx, w, offsets, sparse=True, **kw)
    dense_w = w.detach().clone().requires_grad_()
    dense = TORCH.el.embedding_bag(idx, dense_w, offsets, **kw)
    g = torch.from_numpy(np.random.default_rng(5).standard_normal(tuple(out.shape)).astype(case.weight.dtype))
    out.backward(g)
    dense.backward(g)
    assert w.grad.is_sparse and w.grad.shape == dense_w.grad.shape
    t = tol(case.weight.dtype)
    np.testing.assert_allclose(w.grad.to_dense().numpy(), dense_w.grad.numpy(), **t)
    if freq or (case.indices.ndim == 2 and case.indices.shape[1] == 0):
        return  # torch's backward refuses sparse=True with scale_grad_by_freq; torch fails on (B, 0)
    ref_w = torch.from_numpy(case.weight.copy()).requires_grad_()
    ref_psw = None if psw is None else psw.detach().clone()
    ref = F.embedding_bag(idx.long(), ref_w, None if offsets is None else offsets.long(), sparse=True,
                          **dict(case.kwargs(), per_sample_weights=ref_psw))
    ref.backward(g)
    assert torch.equal(w.grad._indices(), ref_w.grad._indices())
    np.testing.assert_allclose(w.grad._values().numpy(), ref_w.grad._values().numpy(), **t)


@pytest.mark.parametrize("layer", [False, True], ids=["function", "layer"])
def test_torch_sparse_max_bag_is_refused_as_in_torch(layer):
    w = torch.randn(4, 2)
    with pytest.raises(ValueError, match="sparse=True is not supported with mode='max'"):
        if layer:
            TORCH.el.EmbeddingBag(4, 2, mode="max", sparse=True)
        else:
            TORCH.el.embedding_bag([[0, 1]], w, mode="max", sparse=True)
    with pytest.raises(ValueError, match="sparse=True is not supported with mode='max'"):
        NUMPY.el.EmbeddingBag(4, 2, mode="max", sparse=True)
    with pytest.raises(ValueError, match="max mode does not support sparse"):
        F.embedding_bag(torch.tensor([[0, 1]]), w, mode="max", sparse=True)


@given(case=bag_cases(dtype=np.float64, max_rows=6))
def test_torch_bag_forward_mode_ad_equals_the_jacobian_times_the_tangent(case):
    # PyTorch's own embedding_bag has no forward-mode AD (NotImplementedError in torch 2.13): the
    # reference is the Jacobian that reverse mode gives (tested against F.embedding_bag above)
    idx, w, offsets, psw = _torch_case(case, requires_grad=False)
    kw = case.kwargs()
    rng = np.random.default_rng(7)
    primals, tangents = (w,), (torch.from_numpy(rng.standard_normal(w.shape)),)
    if psw is not None:
        primals, tangents = (w, psw), (tangents[0], torch.from_numpy(rng.standard_normal(psw.shape)))

    def bags(*args):
        return TORCH.el.embedding_bag(idx, args[0], offsets, **dict(kw, per_sample_weights=args[1] if psw is not None
                                                                   else None))

    out, out_tangent = torch.func.jvp(bags, primals, tangents)
    jacobians = torch.autograd.functional.jacobian(bags, primals)
    expected = sum((j.reshape(out.numel(), -1) @ t.reshape(-1)).reshape(out.shape)
                   for j, t in zip(jacobians, tangents))
    torch.testing.assert_close(out_tangent, expected, rtol=1e-12, atol=1e-12)
    with torch.autograd.forward_ad.dual_level():  # the other forward-mode API: dual tensors
        duals = [torch.autograd.forward_ad.make_dual(p, t) for p, t in zip(primals, tangents)]
        dual_tangent = torch.autograd.forward_ad.unpack_dual(bags(*duals)).tangent
    torch.testing.assert_close(dual_tangent, expected, rtol=1e-12, atol=1e-12)
