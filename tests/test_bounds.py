"""``bounds_check="deferred"`` (embedlib.torch.bounds): the index and offsets checks on the device.

For valid input the deferred mode gives the immediate mode's results (forward, dense and sparse
gradients, ``max_norm``); for bad input it reads no row it should not, changes no row because of a
bad index, and raises the immediate mode's error (same words, plus where it was found) at the next
call or at an explicit check, after which everything works again. ``torch.compile(fullgraph=True)``
keeps the deferred lookups and layers in one graph on the CPU. On a GPU (skipped elsewhere): no
host synchronisation at all (``torch.cuda.set_sync_debug_mode("error")``) and CUDA graph capture.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import BagCase, bag_cases, indices, random_weights, ref_embedding_bag, ref_embedding_bag_grad, tol

import embedlib.torch as el
from embedlib.torch import bounds

DEFERRED = dict(bounds_check="deferred")


@pytest.fixture(autouse=True)
def clean_records():
    """Each test starts and ends with empty records (a failed test must not leak an error)."""
    for record in bounds._DEFAULT.values():
        record.clear()
    yield
    for record in bounds._DEFAULT.values():
        record.clear()


def immediate_error(value, num_embeddings) -> str:
    with pytest.raises(IndexError) as info:
        el.lookup(torch.tensor([value]), torch.zeros(num_embeddings, 1))
    return str(info.value)


def bad_values(v):
    return st.one_of(st.integers(-(2**40), -1), st.integers(v, v + 2**40))


# --------------------------------------------------------------------------------------------------
# Valid input: the same results as the immediate check
# --------------------------------------------------------------------------------------------------
@given(w=random_weights(dtype=np.float64), data=st.data())
def test_deferred_lookup_equals_immediate_on_valid_input(w, data):
    v = w.shape[0]
    idx = torch.from_numpy(data.draw(indices(v)).astype(np.int64))
    opts = dict(padding_idx=data.draw(st.one_of(st.none(), st.integers(-v, v - 1))),
                scale_grad_by_freq=data.draw(st.booleans()), sparse=data.draw(st.booleans()))
    if data.draw(st.booleans()):
        opts.update(max_norm=data.draw(st.sampled_from([0.5, 1.0])), norm_type=data.draw(st.sampled_from([1.0, 2.0])))
    results = []
    for mode in ("immediate", "deferred"):
        weight = torch.from_numpy(w.copy()).requires_grad_()
        out = el.lookup(idx, weight, bounds_check=mode, **opts)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape))
        grad = weight.grad.to_dense() if weight.grad.is_sparse else weight.grad
        results.append((out.detach(), weight.detach(), grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    el.check_bounds()


@given(case=bag_cases(dtype=np.float64), freq=st.booleans(), sparse=st.booleans(), renorm=st.booleans())
def test_deferred_bags_equal_immediate_on_valid_input(case, freq, sparse, renorm):
    freq, sparse = freq and case.mode != "max", sparse and case.mode != "max"
    opts = dict(case.kwargs(), scale_grad_by_freq=freq, sparse=sparse, max_norm=0.8 if renorm else None)
    results = []
    for mode in ("immediate", "deferred"):
        weight = torch.from_numpy(case.weight.copy()).requires_grad_()
        psw = None if case.per_sample_weights is None else torch.from_numpy(case.per_sample_weights.copy())
        offsets = None if case.offsets is None else torch.from_numpy(case.offsets)
        out = el.embedding_bag(torch.from_numpy(case.indices), weight, offsets,
                               **dict(opts, per_sample_weights=psw), bounds_check=mode)
        if out.requires_grad:
            out.backward(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape))
        grad = weight.grad
        grad = None if grad is None else grad.to_dense() if grad.is_sparse else grad
        results.append((out.detach(), weight.detach(), grad))
    (out_a, w_a, g_a), (out_b, w_b, g_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)  # a mean may round its division differently
    assert torch.equal(w_a, w_b)  # max_norm renormalises the same rows to the same values
    assert (g_a is None) == (g_b is None)
    if g_a is not None:
        torch.testing.assert_close(g_b, g_a, rtol=1e-12, atol=1e-12)
    el.check_bounds()


# --------------------------------------------------------------------------------------------------
# Bad indices: no wrong read, no change, the error at the next call
# --------------------------------------------------------------------------------------------------
@given(w=random_weights(dtype=np.float64), data=st.data())
def test_deferred_lookup_with_bad_indices(w, data):
    v = w.shape[0]
    idx = data.draw(indices(v, min_dims=1, min_side=1)).astype(np.int64)
    flat = idx.reshape(-1)
    positions = data.draw(st.lists(st.integers(0, flat.size - 1), min_size=1, unique=True))
    for p in positions:
        flat[p] = data.draw(bad_values(v))
    bad = (idx < 0) | (idx >= v)
    weight = torch.from_numpy(w.copy()).requires_grad_()
    out = el.lookup(torch.from_numpy(idx), weight, **DEFERRED)
    assert torch.equal(out[torch.from_numpy(bad)], torch.zeros(int(bad.sum()), w.shape[1], dtype=out.dtype))
    assert torch.equal(out[torch.from_numpy(~bad)], weight.detach()[torch.from_numpy(idx[~bad])])
    g = torch.randn(out.shape, dtype=out.dtype)
    out.backward(g)
    expected = torch.zeros_like(weight).index_add_(0, torch.from_numpy(idx[~bad]), g[torch.from_numpy(~bad)])
    torch.testing.assert_close(weight.grad, expected, rtol=1e-12, atol=1e-12)
    first = int(flat[np.argmax((flat < 0) | (flat >= v))])
    with pytest.raises(IndexError) as info:
        el.lookup(torch.tensor([0]), weight, **DEFERRED)
    message = str(info.value)
    assert message.startswith(immediate_error(first, v) + " (found by the deferred bounds check of an earlier call")
    more = int(bad.sum()) - 1
    assert (f"with {more} more out-of-range" in message) == (more > 0)
    assert torch.equal(weight.detach(), torch.from_numpy(w))
    assert torch.equal(el.lookup(torch.tensor([0]), weight, **DEFERRED), weight[:1])  # usable again
    el.check_bounds()


@pytest.mark.parametrize("all_bad", [False, True])
def test_deferred_max_norm_changes_only_rows_that_valid_indices_name(all_bad):
    w = torch.full((6, 2), 3.0)
    idx = torch.tensor([9, -1, 7]) if all_bad else torch.tensor([9, 2, -1, 4, 2])
    el.lookup(idx, w, max_norm=1.0, **DEFERRED)
    changed = (w != 3.0).any(1).nonzero().reshape(-1).tolist()
    assert changed == ([] if all_bad else [2, 4])
    with pytest.raises(IndexError, match="index 9 is out of range for num_embeddings=6"):
        el.check_bounds()


def test_deferred_lookup_on_an_empty_table_and_empty_indices():
    w = torch.zeros(0, 3, requires_grad=True)
    out = el.lookup(torch.tensor([[0, 1]]), w, **DEFERRED)
    assert out.shape == (1, 2, 3) and not out.any()
    with pytest.raises(IndexError, match=r"index 0 is out of range for num_embeddings=0; valid indices are none"):
        el.check_bounds()
    assert el.lookup(torch.zeros(0, dtype=torch.long), torch.ones(4, 3), **DEFERRED).shape == (0, 3)
    el.check_bounds()


def _reference_case(case: BagCase, idx: np.ndarray) -> BagCase:
    """The bags without their out-of-range entries: those become padding entries (of the case's
    padding_idx, or of an extra zero row V when it has none)."""
    v = case.weight.shape[0]
    bad = (idx < 0) | (idx >= v)
    if case.padding_idx is None:
        weight = np.vstack([case.weight, np.zeros((1, case.weight.shape[1]))])
        return BagCase(np.where(bad, v, idx), weight, case.offsets, case.mode, case.per_sample_weights, v,
                       case.include_last_offset)
    return BagCase(np.where(bad, case.padding_idx % v, idx), case.weight, case.offsets, case.mode,
                   case.per_sample_weights, case.padding_idx, case.include_last_offset)


@given(case=bag_cases(dtype=np.float64), data=st.data())
def test_deferred_bags_leave_bad_entries_out(case, data):
    v = case.weight.shape[0]
    idx = case.indices.astype(np.int64)
    if idx.size == 0:
        return
    flat = idx.reshape(-1)
    for p in data.draw(st.lists(st.integers(0, flat.size - 1), min_size=1, unique=True)):
        flat[p] = data.draw(bad_values(v))
    ref = _reference_case(case, idx)
    weight = torch.from_numpy(case.weight.copy()).requires_grad_()
    psw = None if case.per_sample_weights is None else torch.from_numpy(case.per_sample_weights)
    offsets = None if case.offsets is None else torch.from_numpy(case.offsets)
    out = el.embedding_bag(torch.from_numpy(idx), weight, offsets, **dict(case.kwargs(), per_sample_weights=psw),
                           **DEFERRED)
    t = tol(np.float64)
    np.testing.assert_allclose(out.detach().numpy(), ref_embedding_bag(ref), **t)
    g = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(torch.from_numpy(g))
    np.testing.assert_allclose(weight.grad.numpy(), ref_embedding_bag_grad(ref, g)[:v], **t)
    first = int(flat[np.argmax((flat < 0) | (flat >= v))])
    with pytest.raises(IndexError) as info:
        el.check_bounds()
    assert str(info.value).startswith(immediate_error(first, v))
    assert torch.equal(weight.detach(), torch.from_numpy(case.weight))


@pytest.mark.parametrize("offsets,include_last", [([1, 2], False), ([0, 3, 2], False), ([0, 2, 9], False),
                                                   ([0, 2, 3], True), ([0, 4], True)])
def test_deferred_bad_offsets_raise_the_immediate_error_later(offsets, include_last):
    w, idx = torch.randn(5, 2), torch.tensor([0, 1, 2, 3, 4])
    off = torch.tensor(offsets)
    with pytest.raises(ValueError) as immediate:
        el.embedding_bag(idx, w, off, include_last_offset=include_last)
    out = el.embedding_bag(idx, w, off, include_last_offset=include_last, mode="sum", **DEFERRED)
    assert out.shape == (len(offsets) - include_last, 2) and out.isfinite().all()
    with pytest.raises(ValueError) as deferred:
        el.embedding_bag(idx, w, torch.tensor([0, 2]), **DEFERRED)  # the next call raises, before it runs
    assert str(deferred.value).startswith(str(immediate.value) + " (found by the deferred bounds check")
    el.embedding_bag(idx, w, torch.tensor([0, 2]), **DEFERRED)
    el.check_bounds()


def test_deferred_checks_that_need_no_value_still_raise_at_once():
    w = torch.randn(5, 2)
    for call, error in [
        (lambda: el.embedding_bag(torch.tensor([[0, 1]]), w, torch.tensor([0]), **DEFERRED), ValueError),
        (lambda: el.embedding_bag(torch.tensor([0, 1]), w, torch.tensor([], dtype=torch.long),
                                  include_last_offset=True, **DEFERRED), ValueError),
        (lambda: el.embedding_bag(torch.tensor([0, 1]), w, torch.tensor([0]), mode="max",
                                  per_sample_weights=torch.ones(2), **DEFERRED), ValueError),
        (lambda: el.embedding_bag(torch.tensor([0, 1]), w, torch.tensor([0]), mode="sum",
                                  per_sample_weights=torch.ones(2, dtype=torch.float64), **DEFERRED), TypeError),
        (lambda: el.lookup(torch.tensor([0.5]), w, **DEFERRED), TypeError),
        (lambda: el.lookup(torch.tensor([0]), w, padding_idx=9, **DEFERRED), ValueError),
        (lambda: el.lookup(torch.tensor([0]), w, bounds_check="later"), ValueError),
        (lambda: el.Embedding(5, 2, bounds_check=el.BoundsRecord()), ValueError),
    ]:
        with pytest.raises(error):
            call()
    el.check_bounds()  # nothing was recorded


# --------------------------------------------------------------------------------------------------
# Records: the functions share one per device, each layer has its own
# --------------------------------------------------------------------------------------------------
def test_layers_keep_their_own_record_and_it_is_no_part_of_their_state():
    emb = el.Embedding(5, 2, seed=0, **DEFERRED)
    bag = el.EmbeddingBag(5, 2, mode="sum", seed=0, **DEFERRED)
    assert "bounds_state" not in emb.state_dict() and "bounds_state" in dict(emb.named_buffers())
    plain = el.Embedding(5, 2, seed=0)
    assert dict(plain.named_buffers()) == {} and plain.state_dict().keys() == emb.state_dict().keys()
    emb(torch.tensor([1, 7]))
    bag(torch.tensor([[1, -2]]))
    el.check_bounds()  # the functions' record saw nothing
    with pytest.raises(IndexError, match="index -2 is out of range"):
        bag(torch.tensor([[1, 2]]))
    bag.check_bounds()
    with pytest.raises(IndexError, match="index 7 is out of range"):
        emb.check_bounds()
    emb.check_bounds()
    emb.to(torch.float64)  # buffers move with the layer; the record follows them
    emb(torch.tensor([5]))
    with pytest.raises(IndexError, match="index 5 is out of range"):
        emb(torch.tensor([0]))
    plain.check_bounds()  # immediate layers have nothing to check


def test_an_explicit_record_for_the_functions():
    record = el.BoundsRecord()
    el.lookup(torch.tensor([3]), torch.zeros(2, 2), bounds_check=record)
    el.check_bounds()  # not the default record
    with pytest.raises(IndexError, match="index 3 is out of range for num_embeddings=2"):
        record.check()
    record.check()


# --------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): one graph, on the CPU
# --------------------------------------------------------------------------------------------------
def test_deferred_lookups_and_layers_compile_into_one_graph():
    torch._dynamo.reset()
    w = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    emb = el.Embedding(10, 4, seed=0, dtype=torch.float64, **DEFERRED)
    bag = el.EmbeddingBag(10, 4, mode="mean", padding_idx=0, seed=1, dtype=torch.float64, **DEFERRED)
    bag_max = el.EmbeddingBag(10, 4, mode="max", seed=2, dtype=torch.float64, **DEFERRED)

    def model(idx, off):
        return (el.lookup(idx, w, **DEFERRED).sum(0) + emb(idx).sum(0) + bag(idx, off).sum(0)
                + bag_max(idx.reshape(2, 3)).sum(0))

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    idx, off = torch.tensor([1, 2, 3, 0, 5, 6]), torch.tensor([0, 2, 2])
    for inputs in ((idx, off), (torch.tensor([4, 4, 9, 1, 0, 8]), torch.tensor([0, 5, 6]))):
        expected = model(*inputs)
        grads = torch.autograd.grad(expected.sum(), [w, emb.weight, bag.weight, bag_max.weight])
        out = compiled(*inputs)
        torch.testing.assert_close(out, expected)
        for a, b in zip(torch.autograd.grad(out.sum(), [w, emb.weight, bag.weight, bag_max.weight]), grads):
            torch.testing.assert_close(a, b)
    compiled(torch.tensor([1, 2, 13, 0, 5, 6]), off)  # recorded inside the graph: raised outside it
    for check in (el.check_bounds, emb.check_bounds, bag.check_bounds, bag_max.check_bounds):
        with pytest.raises(IndexError, match="index 13 is out of range for num_embeddings=10"):
            check()


def test_the_immediate_check_ends_a_graph():
    torch._dynamo.reset()
    w = torch.randn(10, 4)
    compiled = torch.compile(lambda idx: el.lookup(idx, w), fullgraph=True, backend="aot_eager")
    # the check reads the smallest and largest index on the host: data-dependent Python, no graph
    with pytest.raises((torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError)):
        compiled(torch.tensor([1, 2]))


# --------------------------------------------------------------------------------------------------
# On a GPU: no host synchronisation, CUDA graphs, the error at the next call once the device is done
# --------------------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
def test_cuda_deferred_calls_never_synchronise():
    w = torch.randn(1000, 16, device="cuda", requires_grad=True)
    emb = el.Embedding(1000, 16, device="cuda", **DEFERRED)
    bag = el.EmbeddingBag(1000, 16, mode="sum", device="cuda", **DEFERRED)
    idx = torch.randint(0, 1000, (256,), device="cuda")
    off = torch.arange(0, 256, 8, device="cuda")
    for layer_call in (lambda: el.lookup(idx, w, **DEFERRED), lambda: emb(idx), lambda: bag(idx, off)):
        layer_call()  # warm-up (first calls allocate the pinned copy and the event)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = layer_call()
            out.sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    el.check_bounds()


@pytest.mark.cuda
@cuda
def test_cuda_deferred_error_at_the_next_call_and_usable_after():
    w = torch.randn(100, 8, device="cuda")
    el.lookup(torch.tensor([5, 100], device="cuda"), w, **DEFERRED)
    torch.cuda.synchronize()  # the device is done with it: the next call sees it without waiting
    with pytest.raises(IndexError, match="index 100 is out of range for num_embeddings=100"):
        el.lookup(torch.tensor([1], device="cuda"), w, **DEFERRED)
    assert torch.equal(el.lookup(torch.tensor([1], device="cuda"), w, **DEFERRED), w[1:2])


@pytest.mark.cuda
@cuda
def test_cuda_deferred_lookup_in_a_cuda_graph():
    w = torch.randn(100, 8, device="cuda")
    idx = torch.zeros(16, dtype=torch.long, device="cuda")
    record = el.BoundsRecord("cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        el.lookup(idx, w, bounds_check=record)  # warm-up outside the graph
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = el.lookup(idx, w, bounds_check=record)
    idx.copy_(torch.arange(16, device="cuda"))
    graph.replay()
    assert torch.equal(out, w[:16])
    idx[3] = 500
    graph.replay()
    with pytest.raises(IndexError, match="index 500 is out of range"):
        record.check()
