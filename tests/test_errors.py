"""Bad input, in both backends: the right error type, a message that names the problem, and nothing
changed (weights bitwise equal, no gradient, layers' state as before) - even with max_norm set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import NUMPY, bitwise_equal

V, D = 13, 4


@pytest.fixture
def weight(backend):
    """A table whose rows all have norm > 1, so any renormalisation by max_norm=0.5 would show."""
    w = (np.random.default_rng(0).standard_normal((V, D)) * 3 + 3).astype(np.float32)
    t = backend.arr(w)
    if backend.name == "torch":
        t.requires_grad_()
    return t


def refused(backend, exc, match, fn, *unchanged):
    """``fn()`` raises ``exc`` matching ``match``; every array in ``unchanged`` keeps its exact bytes."""
    before = [backend.np(x).copy() for x in unchanged]
    with pytest.raises(exc, match=match) as info:
        fn()
    for x, b in zip(unchanged, before):
        assert bitwise_equal(backend.np(x), b), "an array changed although the call was refused"
        if isinstance(x, torch.Tensor):
            assert x.grad is None
    return info


def names(*values):
    """A regex that requires every value, as a whole number, somewhere in the message."""
    return "(?s)" + "".join(rf"(?=.*(?<![\w.-]){v}(?![\w.]))" for v in values)


# --------------------------------------------------------------------------------------------------
# indices out of range: IndexError naming the bad value and num_embeddings
# --------------------------------------------------------------------------------------------------
CALLS = {
    "one_hot": lambda el, w, idx, be: el.one_hot(idx, V),
    "onehot_matmul": lambda el, w, idx, be: el.onehot_matmul(idx, w),
    "lookup": lambda el, w, idx, be: el.lookup(idx, w),
    "lookup_padding": lambda el, w, idx, be: el.lookup(idx, w, padding_idx=0),
    "lookup_backward": lambda el, w, idx, be: el.lookup_backward(
        idx, be.arr(np.ones(np.shape(be.np(idx)) + (D,), dtype=np.float32)), V),
    "embedding_bag_sum": lambda el, w, idx, be: el.embedding_bag(
        _flat(be, idx), w, be.arr(np.array([0, 1])), mode="sum"),
    "embedding_bag_mean_2d": lambda el, w, idx, be: el.embedding_bag(
        be.arr(be.np(_flat(be, idx)).reshape(1, -1)), w, mode="mean"),
    "embedding_bag_max": lambda el, w, idx, be: el.embedding_bag(
        _flat(be, idx), w, be.arr(np.array([0])), mode="max", padding_idx=1),
    "renorm_": lambda el, w, idx, be: el.renorm_(w, idx, 0.5),
    "nearest_neighbors": lambda el, w, idx, be: el.nearest_neighbors(w, _flat(be, idx), 2),
}


def _flat(be, idx):
    return be.arr(np.asarray(be.np(idx) if not isinstance(idx, list) else idx).reshape(-1))


@pytest.mark.parametrize("bad", [42, 13, -3, -1])
@pytest.mark.parametrize("form", ["array", "list", "2-d"])
@pytest.mark.parametrize("call", list(CALLS))
def test_index_out_of_range(backend, weight, call, form, bad):
    good = [0, 12, 5]
    if form == "array":
        idx = backend.arr(np.array(good + [bad]))
    elif form == "list":
        idx = good + [bad]
    else:
        idx = backend.arr(np.array([good + [7], [1, bad, 2, 3]], dtype=np.int32))
    if call == "nearest_neighbors" and form == "list":
        idx = bad  # a single row id
    refused(backend, IndexError, names(bad, V), lambda: CALLS[call](backend.el, weight, idx, backend), weight)


@pytest.mark.parametrize("bad", [2**63, 2**64 - 1])
def test_huge_unsigned_index_is_named_as_it_is(backend, weight, bad):
    """A uint64 index beyond int64's range must be reported as itself, not as a wrapped negative."""
    idx = np.array([0, bad], dtype=np.uint64)
    refused(backend, IndexError, names(bad, V), lambda: backend.el.lookup(idx, weight), weight)


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
@pytest.mark.parametrize("bad", [42, -3])
def test_layer_forward_with_a_bad_index_changes_nothing_even_with_max_norm(backend, cls, bad):
    w = (np.random.default_rng(1).standard_normal((V, D)) * 3 + 3).astype(np.float32)
    layer = getattr(backend.el, cls).from_weight(backend.arr(w), max_norm=0.5)
    idx = backend.arr(np.array([0, 1, 2, bad]))
    args = (idx, backend.arr(np.array([0, 2]))) if cls == "EmbeddingBag" else (idx,)
    refused(backend, IndexError, names(bad, V), lambda: layer(*args), layer.weight)
    assert bitwise_equal(backend.np(layer.weight), w)  # rows 0, 1, 2 were not renormalised either


def test_numpy_layer_state_survives_a_refused_forward():
    """A refused forward must not replace what the last good forward saved for backward."""
    layer = NUMPY.el.Embedding.from_weight(np.arange(V * D, dtype=np.float64).reshape(V, D))
    layer(np.array([3, 3, 4]))
    with pytest.raises(IndexError):
        layer(np.array([1, 99]))
    with pytest.raises(TypeError):
        layer(np.array([1.0]))
    rows, values = layer.backward(np.ones((3, D)))
    np.testing.assert_array_equal(rows, [3, 4])
    np.testing.assert_array_equal(values, [[2.0] * D, [1.0] * D])


def test_bag_layer_refused_forward_with_bad_offsets_changes_nothing(backend):
    w = (np.random.default_rng(2).standard_normal((V, D)) * 3 + 3).astype(np.float32)
    layer = backend.el.EmbeddingBag.from_weight(backend.arr(w), mode="sum", max_norm=0.5)
    refused(backend, ValueError, "offset", lambda: layer(backend.arr(np.array([0, 1, 2])),
                                                          backend.arr(np.array([1, 2]))), layer.weight)
    refused(backend, ValueError, "per_sample_weights",
            lambda: layer(backend.arr(np.array([0, 1, 2])), backend.arr(np.array([0])),
                          backend.arr(np.ones(2, dtype=np.float32))), layer.weight)


# --------------------------------------------------------------------------------------------------
# indices that are not integers: TypeError
# --------------------------------------------------------------------------------------------------
BAD_DTYPES = {
    "float array": lambda be: be.arr(np.array([0.0, 1.0])),
    "float32 array": lambda be: be.arr(np.array([[0.0], [1.0]], dtype=np.float32)),
    "bool array": lambda be: be.arr(np.array([True, False])),
    "float list": lambda be: [0.0, 1.0],
    "bool list": lambda be: [True, False],
    "numpy float array": lambda be: np.array([0.0, 2.0]),
}


@pytest.mark.parametrize("kind", list(BAD_DTYPES))
@pytest.mark.parametrize("call", [c for c in CALLS if c != "nearest_neighbors"])
def test_non_integer_indices(backend, weight, call, kind):
    idx = BAD_DTYPES[kind](backend)
    refused(backend, TypeError, r"(?i)integer", lambda: CALLS[call](backend.el, weight, idx, backend), weight)


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
@pytest.mark.parametrize("kind", ["float array", "bool array"])
def test_layer_non_integer_indices(backend, cls, kind):
    layer = getattr(backend.el, cls)(V, D, seed=0, max_norm=0.5)
    idx = BAD_DTYPES[kind](backend)
    args = (idx, backend.arr(np.array([0]))) if cls == "EmbeddingBag" else (idx,)
    refused(backend, TypeError, r"(?i)integer", lambda: layer(*args), layer.weight)


def test_bag_offsets_must_be_integers(backend, weight):
    refused(backend, TypeError, r"(?i)integer", lambda: backend.el.embedding_bag(
        backend.arr(np.array([0, 1])), weight, backend.arr(np.array([0.0, 1.0])), mode="sum"), weight)


# --------------------------------------------------------------------------------------------------
# weights that are not 2-D, shapes that do not fit: ValueError
# --------------------------------------------------------------------------------------------------
WEIGHT_CALLS = {
    "onehot_matmul": lambda el, w, be: el.onehot_matmul(be.arr(np.array([0])), w),
    "lookup": lambda el, w, be: el.lookup(be.arr(np.array([0])), w),
    "embedding_bag": lambda el, w, be: el.embedding_bag(be.arr(np.array([0])), w, be.arr(np.array([0]))),
    "renorm_": lambda el, w, be: el.renorm_(w, be.arr(np.array([0])), 1.0),
    "nearest_neighbors": lambda el, w, be: el.nearest_neighbors(w, be.arr(np.ones(3, dtype=np.float32)), 1),
    "Embedding.from_weight": lambda el, w, be: el.Embedding.from_weight(w),
    "EmbeddingBag.from_weight": lambda el, w, be: el.EmbeddingBag.from_weight(w),
}


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), ()])
@pytest.mark.parametrize("call", list(WEIGHT_CALLS))
def test_weight_must_be_2d(backend, call, shape):
    w = backend.arr(np.ones(shape, dtype=np.float32))
    refused(backend, ValueError, r"(?i)2-?d|two-dim", lambda: WEIGHT_CALLS[call](backend.el, w, backend), w)


@pytest.mark.parametrize("grad_shape", [(4, D), (3,), (3, 1, D), (D,)])
def test_lookup_backward_grad_shape(backend, grad_shape):
    g = backend.arr(np.ones(grad_shape, dtype=np.float32))
    refused(backend, ValueError, "grad_output",
            lambda: backend.el.lookup_backward(backend.arr(np.array([0, 1, 2])), g, V), g)


@pytest.mark.parametrize("psw_shape", [(2,), (4,), (3, 1)])
def test_per_sample_weights_shape(backend, weight, psw_shape):
    psw = backend.arr(np.ones(psw_shape, dtype=np.float32))
    refused(backend, ValueError, "per_sample_weights", lambda: backend.el.embedding_bag(
        backend.arr(np.array([0, 1, 2])), weight, backend.arr(np.array([0, 1])), mode="sum",
        per_sample_weights=psw), weight, psw)


# --------------------------------------------------------------------------------------------------
# bags: offsets and modes
# --------------------------------------------------------------------------------------------------
BAG_ERRORS = {
    "offsets not starting at 0": (dict(offsets=[1, 2]), names(1) + "(?=.*offset)"),
    "offsets decreasing": (dict(offsets=[0, 3, 2]), "(?s)(?=.*offset)(?=.*3)(?=.*2)"),
    "offsets past the end": (dict(offsets=[0, 6]), names(6, 5) + "(?=.*offset)"),
    "offsets with 2-D indices": (dict(two_d=True, offsets=[0, 1]), "offset"),
    "1-D indices without offsets": (dict(offsets=None), "offset"),
    "per_sample_weights with mean": (dict(mode="mean", psw=True), r"(?s)per_sample_weights.*sum|sum.*per_sample"),
    "per_sample_weights with max": (dict(mode="max", psw=True), r"(?s)per_sample_weights.*sum|sum.*per_sample"),
    "unknown mode": (dict(mode="median"), "median"),
    "include_last_offset past the end": (dict(offsets=[0, 2, 7], include_last_offset=True), names(7, 5)),
}


@pytest.mark.parametrize("case", list(BAG_ERRORS))
def test_bag_errors(backend, weight, case):
    opts, match = BAG_ERRORS[case]
    idx = np.array([0, 1, 2, 3, 4])
    if opts.get("two_d"):
        idx = idx[:4].reshape(2, 2)
    offsets = opts.get("offsets", [0, 2])
    psw = backend.arr(np.ones(idx.shape, dtype=np.float32)) if opts.get("psw") else None
    refused(backend, ValueError, match, lambda: backend.el.embedding_bag(
        backend.arr(idx), weight, None if offsets is None else backend.arr(np.array(offsets)),
        mode=opts.get("mode", "sum"), per_sample_weights=psw,
        include_last_offset=opts.get("include_last_offset", False)), weight)


@pytest.mark.parametrize("mode", ["median", "SUM", None])
def test_bag_layer_unknown_mode(backend, mode):
    with pytest.raises(ValueError, match="mode"):
        backend.el.EmbeddingBag(V, D, mode=mode)


@pytest.mark.parametrize("pad", [V, -V - 1, 100])
def test_padding_idx_out_of_range(backend, weight, pad):
    refused(backend, (ValueError, IndexError), names(pad) + "(?=.*padding_idx)",
            lambda: backend.el.lookup(backend.arr(np.array([0])), weight, padding_idx=pad), weight)
    with pytest.raises((ValueError, IndexError), match="padding_idx"):
        backend.el.Embedding(V, D, padding_idx=pad)


# --------------------------------------------------------------------------------------------------
# nearest_neighbors
# --------------------------------------------------------------------------------------------------
def test_neighbors_k_too_large(backend, weight):
    # a row id excludes itself: only V - 1 candidates
    refused(backend, ValueError, names(V) + f"(?=.*{V - 1})",
            lambda: backend.el.nearest_neighbors(weight, 0, V), weight)
    refused(backend, ValueError, names(V + 1),
            lambda: backend.el.nearest_neighbors(weight, backend.arr(np.ones(D, dtype=np.float32)), V + 1), weight)
    backend.el.nearest_neighbors(weight, 0, V - 1)  # the largest k that fits
    backend.el.nearest_neighbors(weight, backend.arr(np.ones(D, dtype=np.float32)), V)


@pytest.mark.parametrize("qshape", [(D + 1,), (2, D - 1), (1, 1, D)])
def test_neighbors_query_dimension(backend, weight, qshape):
    q = backend.arr(np.ones(qshape, dtype=np.float32))
    refused(backend, ValueError, names(D), lambda: backend.el.nearest_neighbors(weight, q, 2), weight)


@pytest.mark.parametrize("metric", ["manhattan", "Cosine", ""])
def test_neighbors_bad_metric(backend, weight, metric):
    refused(backend, ValueError, "(?s)metric.*cosine|cosine.*metric",
            lambda: backend.el.nearest_neighbors(weight, 0, 2, metric=metric), weight)


# --------------------------------------------------------------------------------------------------
# one_hot memory guard (messages checked in test_onehot.py)
# --------------------------------------------------------------------------------------------------
def test_one_hot_memory_guard_is_a_value_error(backend, weight):
    refused(backend, ValueError, r"(?s)bytes.*lookup", lambda: backend.el.one_hot(backend.arr(np.arange(3)), 10**12))
    refused(backend, ValueError, r"(?s)bytes.*lookup",
            lambda: backend.el.onehot_matmul(backend.arr(np.arange(3)), weight, max_bytes=8), weight)
