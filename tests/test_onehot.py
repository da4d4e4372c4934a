"""one_hot and onehot_matmul (chapters 1 and 2): shapes, values, dtypes, the memory guard."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH, indices, lookup_cases, ref_one_hot, weights


@given(data=st.data(), v=st.integers(1, 12))
def test_one_hot_matches_reference(backend, data, v):
    idx = data.draw(indices(v))
    out = backend.el.one_hot(backend.arr(idx), v)
    assert backend.is_native(out)
    assert tuple(out.shape) == idx.shape + (v,)
    assert out.dtype == backend.float32  # the default dtype
    np.testing.assert_array_equal(backend.np(out), ref_one_hot(idx, v))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_hot_dtype(backend, dtype):
    out = backend.el.one_hot(backend.arr(np.array([2, 0, 2])), 4, dtype=backend.dtype(dtype))
    assert out.dtype == backend.dtype(dtype)
    np.testing.assert_array_equal(backend.np(out), np.eye(4)[[2, 0, 2]])


def test_one_hot_python_lists(backend):
    np.testing.assert_array_equal(backend.np(backend.el.one_hot([[1], [0]], 3)), [[[0, 1, 0]], [[1, 0, 0]]])
    empty = backend.el.one_hot([], 3)  # an empty list counts as int64 indices
    assert tuple(empty.shape) == (0, 3)


def test_one_hot_scalar_index(backend):
    out = backend.el.one_hot(backend.arr(np.array(2)), 5)
    np.testing.assert_array_equal(backend.np(out), [0, 0, 1, 0, 0])


def test_one_hot_fireweed_row_has_one_one():
    """Chapter 1: one species out of 300,000 is a vector with 299,999 zeros."""
    v = 300_000
    for be in (NUMPY, TORCH):
        row = be.np(be.el.one_hot(be.arr(np.array([123_456])), v))[0]
        assert row.shape == (v,)
        assert row[123_456] == 1 and np.count_nonzero(row) == 1


def test_torch_one_hot_device_argument():
    out = TORCH.el.one_hot(torch.tensor([1, 0]), 3, device="cpu")
    assert out.device.type == "cpu"
    out = TORCH.el.one_hot(torch.tensor([1, 0]), 3, device=torch.device("cpu"), dtype=torch.float64)
    assert out.dtype == torch.float64


@given(case=lookup_cases())
def test_onehot_matmul_is_one_hot_times_weight(backend, case):
    idx, w = case
    out = backend.el.onehot_matmul(backend.arr(idx), backend.arr(w))
    assert out.dtype == backend.dtype(w.dtype)
    assert tuple(out.shape) == idx.shape + (w.shape[1],)
    expected = ref_one_hot(idx, w.shape[0]) @ w.astype(np.float64)
    np.testing.assert_array_equal(backend.np(out), expected.astype(w.dtype))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_onehot_matmul_spreads_nan_where_lookup_does_not(backend):
    """Chapter 2's edge case: 0 * inf = NaN in the product, while a lookup only copies rows."""
    w = np.array([[np.inf, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=np.float32)
    mm = backend.np(backend.el.onehot_matmul(backend.arr(np.array([1, 2])), backend.arr(w)))
    assert np.isnan(mm[:, 0]).all()  # every row picked up 0 * inf from row 0
    np.testing.assert_array_equal(mm[:, 1], [3.0, 5.0])
    lk = backend.np(backend.el.lookup(backend.arr(np.array([1, 2])), backend.arr(w)))
    np.testing.assert_array_equal(lk, w[[1, 2]])


# --------------------------------------------------------------------------------------------------
# memory guard
# --------------------------------------------------------------------------------------------------
def _bytes_in(message: str) -> set[int]:
    """Every integer written in the message, with thousands separators removed."""
    import re

    return {int(m.replace(",", "").replace("_", "")) for m in re.findall(r"\d[\d,_]*\d|\d", message)}


@pytest.mark.parametrize("dtype,itemsize", [(np.float32, 4), (np.float64, 8)])
def test_one_hot_memory_guard_says_how_many_bytes_and_points_to_lookup(backend, dtype, itemsize):
    idx = backend.arr(np.arange(10))
    need = 10 * 100 * itemsize
    with pytest.raises(ValueError, match=r"(?s)bytes.*lookup|lookup.*bytes") as info:
        backend.el.one_hot(idx, 100, dtype=backend.dtype(dtype), max_bytes=need - 1)
    assert need in _bytes_in(str(info.value)), str(info.value)
    # exactly at the limit is allowed ("larger than max_bytes" raises)
    out = backend.el.one_hot(idx, 100, dtype=backend.dtype(dtype), max_bytes=need)
    assert tuple(out.shape) == (10, 100)


def test_onehot_matmul_memory_guard(backend):
    w = backend.arr(np.ones((50, 3), dtype=np.float64))
    with pytest.raises(ValueError, match=r"(?s)bytes.*lookup|lookup.*bytes") as info:
        backend.el.onehot_matmul(backend.arr(np.arange(4)), w, max_bytes=100)
    assert 4 * 50 * 8 in _bytes_in(str(info.value)), str(info.value)  # the one-hot has weight's dtype


def test_one_hot_gigantic_vocabulary_raises_before_allocating(backend):
    """10**12 columns (4 TB): must be refused by the default limit, not attempted."""
    idx = backend.arr(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="lookup"):
        backend.el.one_hot(idx, 10**12)
    w = backend.arr(np.zeros((10**6, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="lookup"):  # 10**6 x 10**6 float32 one-hot = 4 TB
        backend.el.onehot_matmul(backend.arr(np.arange(10**6)), w)


def test_numpy_one_hot_guard_allocates_nothing():
    """With the limit crossed, no array of the refused size is ever allocated (traced by tracemalloc)."""
    idx = np.arange(1000)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            NUMPY.el.one_hot(idx, 100_000, max_bytes=1_000_000)  # 400 MB refused
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"peak traced allocation {peak} bytes"


def test_max_bytes_none_disables_the_guard(backend):
    out = backend.el.one_hot(backend.arr(np.arange(3)), 4, max_bytes=None)
    assert tuple(out.shape) == (3, 4)


def test_default_max_bytes_is_exported_and_equal():
    assert NUMPY.el.DEFAULT_MAX_BYTES == TORCH.el.DEFAULT_MAX_BYTES > 0


@given(case=lookup_cases())
def test_one_hot_and_matmul_backends_agree(case):
    idx, w = case
    a = NUMPY.el.onehot_matmul(idx, w)
    b = TORCH.el.onehot_matmul(torch.from_numpy(idx), torch.from_numpy(w)).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(NUMPY.el.one_hot(idx, w.shape[0]),
                                  TORCH.el.one_hot(torch.from_numpy(idx), w.shape[0]).numpy())


@given(w=weights(dtype=np.float64, max_rows=6, max_dim=3), data=st.data())
def test_onehot_matmul_gradcheck(w, data):
    idx = torch.from_numpy(data.draw(indices(w.shape[0], max_dims=2, min_side=1, max_side=4)).astype(np.int64))
    wt = torch.tensor(w / 1e3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: TORCH.el.onehot_matmul(idx, x), (wt,))
