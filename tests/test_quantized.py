"""Row-wise quantised tables (chapter 14): embedlib.numpy.quantized and embedlib.torch.quantized.

* the bytes are PyTorch's own prepack operators' (FBGEMM), for 8, 4 and 2 bits, float32 and float16;
* the values are FBGEMM's (one rounding: ``torch.ops.quantized.embedding_bag_*_unpack`` and single-row
  bags of ``embedding_bag_*_rowwise_offsets``, bit for bit); multi-row sums are close to its sums;
* the round trip is within the bound that ``quantize_rows`` states;
* lookups and bags equal their definitions (dequantise the whole table, then index / ``embedding_bag``),
  bit for bit, and dequantise only the rows they read;
* both backends give the same bytes and values; bad input gets a clear error and changes nothing.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import embedlib.numpy.quantized as nq
import embedlib.torch.quantized as tq
from conftest import bag_bounds, bag_cases, bitwise_equal, indices

MODULES = {"numpy": nq, "torch": tq}
PREPACK = {8: torch.ops.quantized.embedding_bag_byte_prepack, 4: torch.ops.quantized.embedding_bag_4bit_prepack,
           2: torch.ops.quantized.embedding_bag_2bit_prepack}
UNPACK = {8: torch.ops.quantized.embedding_bag_byte_unpack, 4: torch.ops.quantized.embedding_bag_4bit_unpack,
          2: torch.ops.quantized.embedding_bag_2bit_unpack}
ROWWISE = {8: torch.ops.quantized.embedding_bag_byte_rowwise_offsets,
           4: torch.ops.quantized.embedding_bag_4bit_rowwise_offsets,
           2: torch.ops.quantized.embedding_bag_2bit_rowwise_offsets}
#: float32 rounding in the round-trip bound (8 units in the last place), and an absolute floor for
#: values so small that float32 loses relative precision (subnormal differences)
ROUNDING = 2.0**-21
FLOOR = 2.0**-140


def q(be):
    return MODULES[be.name]


def table_np(t) -> np.ndarray:
    return t.data.numpy() if isinstance(t.data, torch.Tensor) else t.data


# --------------------------------------------------------------------------------------------------
# Weights: every kind of row FBGEMM treats specially
# --------------------------------------------------------------------------------------------------
@st.composite
def tables(draw, dtypes=(np.float32, np.float64, np.float16), multiple=1, max_rows=6, max_dim=20, half_safe=False):
    """A (V, D) float weight: normal rows at any scale, constant rows (range 0), signed zeros, small
    integers (ties), huge and tiny magnitudes; V = 0 and 1 included. ``multiple``: D is one of those.
    ``half_safe``: values the 4- and 2-bit formats' float16 bias and scale can hold."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    v = draw(st.integers(0, max_rows))
    d = draw(st.integers(1, max_dim // multiple)) * multiple
    dtype = draw(st.sampled_from(dtypes))
    kind = draw(st.sampled_from(["normal", "scaled", "constant", "zeros", "integers", "offset", "mixed"]))
    top = 4 if (half_safe or dtype == np.float16) else 30
    if kind == "normal":
        w = rng.standard_normal((v, d))
    elif kind == "scaled":
        w = rng.standard_normal((v, d)) * 10.0 ** rng.integers(-top, top + 1, size=(v, 1))
    elif kind == "constant":
        w = np.repeat(rng.standard_normal((v, 1)) * 10.0 ** rng.integers(-top, top + 1), d, 1)
    elif kind == "zeros":
        w = rng.choice([0.0, -0.0, 0.0, -0.0, 1e-3, -2.0], size=(v, d))
    elif kind == "integers":
        w = rng.integers(-3, 4, size=(v, d)) * 10.0 ** rng.integers(-3, 4)
    elif kind == "offset":  # a large bias, a small spread: the float16 bias's rounding shows
        w = 10.0 ** rng.integers(0, top + 1) + rng.standard_normal((v, d)) * 10.0 ** rng.integers(-4, 1)
    else:
        w = rng.standard_normal((v, d)) * 10.0 ** rng.integers(-top, top + 1, size=(v, d))
    if half_safe or dtype == np.float16:  # finite in float16; a float16 bias and scale (range / 3) too
        w = np.clip(w, -30000, 30000)
    return w.astype(dtype)


# --------------------------------------------------------------------------------------------------
# The bytes: PyTorch's prepack operators
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 4, 2])
@given(data=st.data())
def test_bytes_are_pytorchs_prepack(backend, bits, data):
    w = data.draw(tables(dtypes=(np.float32, np.float16), multiple=8 // bits if bits < 8 else 1, half_safe=True))
    t = q(backend).quantize_rows(backend.arr(w), bits)
    assert t.bits == bits and t.embedding_dim == w.shape[1]
    ours = backend.np(t.data)
    assert ours.dtype == np.uint8 and ours.shape == (w.shape[0], nq.row_bytes(w.shape[1], bits))
    np.testing.assert_array_equal(ours, PREPACK[bits](torch.from_numpy(w)).numpy())


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_signed_zeros_and_lanes_as_fbgemm(backend, bits):
    """A zero minimum held as both 0.0 and -0.0: FBGEMM's AVX2 search (8 lanes, then the rest)
    decides which sign the bias gets; the bytes still match (D past one and two lanes of 8)."""
    rng = np.random.default_rng(0)
    for d in (8, 16, 24, 12, 20, 4):
        w = rng.choice([0.0, -0.0, 0.5], size=(64, d)).astype(np.float32)
        ours = backend.np(q(backend).quantize_rows(backend.arr(w), bits).data)
        np.testing.assert_array_equal(ours, PREPACK[bits](torch.from_numpy(w)).numpy())


def test_codes_at_a_rounding_boundary(backend):
    """Rows whose codes sit at the boundary between two integers: the inverse scale 255 / (range + 1e-8)
    must be one correctly rounded division (torch's ``255.0 / t`` is ``t.reciprocal() * 255``, two
    roundings, which moved these codes by one)."""
    w = np.array([[0.0, 2.7006914615631104, 5.277212619781494], [0.0, 0.16761206090450287, 0.6239572763442993],
                  [0.0, 4.451535701751709, 6.61890172958374]], np.float32)
    ours = backend.np(q(backend).quantize_rows(backend.arr(w), 8).data)
    np.testing.assert_array_equal(ours, PREPACK[8](torch.from_numpy(w)).numpy())
    np.testing.assert_array_equal(ours[:, 1], [131, 68, 171])


def test_float64_is_rounded_to_float32_first(backend):
    w = np.random.default_rng(1).standard_normal((5, 7))
    for bits in (8, 4, 2):
        a = backend.np(q(backend).quantize_rows(backend.arr(w), bits).data)
        b = backend.np(q(backend).quantize_rows(backend.arr(w.astype(np.float32)), bits).data)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bits", [4, 2])
def test_ragged_last_byte_is_zero_padded(backend, bits):
    """D not a multiple of 8 // bits (PyTorch refuses it): the codes of D + pad columns that repeat the
    last column (same min and max), with the padding codes zeroed."""
    per_byte = 8 // bits
    rng = np.random.default_rng(2)
    for d in range(1, 3 * per_byte):
        if d % per_byte == 0:
            continue
        w = rng.standard_normal((4, d)).astype(np.float32)
        pad = -d % per_byte
        full = PREPACK[bits](torch.from_numpy(np.concatenate([w, np.repeat(w[:, -1:], pad, 1)], 1))).numpy().copy()
        nb = nq.code_bytes(d, bits)
        full[:, nb - 1] &= (1 << (bits * (d % per_byte))) - 1  # the padding codes: zero
        ours = backend.np(q(backend).quantize_rows(backend.arr(w), bits).data)
        np.testing.assert_array_equal(ours, full)


@pytest.mark.parametrize("bits", [8, 4, 2])
@given(data=st.data())
def test_numpy_and_torch_give_the_same_bytes_and_values(bits, data):
    w = data.draw(tables(half_safe=bits < 8))
    a = nq.quantize_rows(w, bits)
    b = tq.quantize_rows(torch.from_numpy(w), bits)
    assert bitwise_equal(a.data, b.data)
    assert bitwise_equal(nq.dequantize_rows(a), tq.dequantize_rows(b))


# --------------------------------------------------------------------------------------------------
# The values: FBGEMM's (a fused multiply-add), and the round-trip bound
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 4, 2])
@given(data=st.data())
def test_values_are_fbgembs_unpack_and_single_row_bags(backend, bits, data):
    w = data.draw(tables(dtypes=(np.float32,), multiple=8 // bits if bits < 8 else 1, half_safe=True))
    t = q(backend).quantize_rows(backend.arr(w), bits)
    ours = backend.np(q(backend).dequantize_rows(t))
    assert ours.dtype == np.float32 and ours.shape == w.shape
    packed = torch.from_numpy(table_np(t))
    assert bitwise_equal(ours, UNPACK[bits](packed))
    v = w.shape[0]
    one_per_bag = ROWWISE[bits](packed, torch.arange(v), torch.arange(v), False, 0, False, None, None, False)
    assert bitwise_equal(ours, one_per_bag)


def test_eight_bit_values_need_the_fused_multiply_add(backend):
    """code * scale is not exact in float32 for 8 bits: a separate multiply and add rounds twice and
    differs from FBGEMM somewhere in this table; ours does not."""
    w = np.random.default_rng(3).standard_normal((64, 32)).astype(np.float32)
    t = q(backend).quantize_rows(backend.arr(w), 8)
    data = table_np(t)
    scale, bias = data[:, 32:36].copy().view("<f4"), data[:, 36:].copy().view("<f4")
    twice = data[:, :32].astype(np.float32) * scale + bias
    fbgemm = UNPACK[8](torch.from_numpy(data)).numpy()
    assert not np.array_equal(twice, fbgemm)
    assert bitwise_equal(q(backend).dequantize_rows(t), fbgemm)


def bound(w, bits, table) -> np.ndarray:
    """The per-element round-trip bound that quantize_rows's docstring states (a (V, 1) column)."""
    x = w.astype(np.float32).astype(np.float64)
    lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
    span = hi - lo
    d, nb = w.shape[1], nq.code_bytes(w.shape[1], bits)
    if bits == 8:
        s = table[:, d:d + 4].copy().view("<f4").astype(np.float64)
        eps = float(nq.EPSILON)
        main = s / 2 + eps * span / (span + eps)
    else:
        levels = (1 << bits) - 1
        s = table[:, nb:nb + 2].copy().view("<f2").astype(np.float64)
        m = table[:, nb + 2:nb + 4].copy().view("<f2").astype(np.float64)
        main = np.maximum(np.maximum(s / 2, m - lo), hi - (m + levels * s))
    return main + ROUNDING * (np.abs(x) + np.abs(lo) + span) + FLOOR


@pytest.mark.parametrize("bits", [8, 4, 2])
@given(data=st.data())
def test_round_trip_within_the_stated_bound(backend, bits, data):
    w = data.draw(tables(half_safe=bits < 8))
    t = q(backend).quantize_rows(backend.arr(w), bits)
    back = backend.np(q(backend).dequantize_rows(t)).astype(np.float64)
    err = np.abs(back - w.astype(np.float32).astype(np.float64))
    assert (err <= bound(w, bits, table_np(t))).all()


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_bound_is_tight_and_constant_rows_are_exact_at_8_bits(backend, bits):
    rng = np.random.default_rng(4)
    w = rng.uniform(-1, 1, size=(200, 64)).astype(np.float32)
    t = q(backend).quantize_rows(backend.arr(w), bits)
    err = np.abs(backend.np(q(backend).dequantize_rows(t)) - w)
    b = bound(w, bits, table_np(t))
    assert (err <= b).all() and (err.max(1) > 0.9 * b[:, 0]).mean() > 0.9  # most rows come close to it
    const = np.repeat(rng.standard_normal((5, 1)), 6, 1).astype(np.float32)
    back = backend.np(q(backend).dequantize_rows(q(backend).quantize_rows(backend.arr(const), 8)))
    assert bitwise_equal(back, const)


# --------------------------------------------------------------------------------------------------
# Lookups and bags: their definitions, and only the rows they read
# --------------------------------------------------------------------------------------------------
@st.composite
def lookup_tables(draw):
    w = draw(tables(dtypes=(np.float32,), half_safe=True, max_rows=8))
    bits = draw(st.sampled_from([8, 4, 2]))
    idx = draw(indices(max(w.shape[0], 1))) if w.shape[0] else np.zeros((0,), np.int64)
    return w, bits, idx


@given(case=lookup_tables())
def test_lookup_is_the_dequantised_tables_rows(backend, case):
    w, bits, idx = case
    t = q(backend).quantize_rows(backend.arr(w), bits)
    full = backend.np(q(backend).dequantize_rows(t))
    out = q(backend).quantized_lookup(backend.arr(idx), t)
    assert bitwise_equal(out, full[idx])
    rows = idx.reshape(-1)
    assert bitwise_equal(q(backend).dequantize_rows(t, backend.arr(rows)), full[rows])


@settings(max_examples=40)
@given(case=bag_cases(dtype=np.float32), bits=st.sampled_from([8, 4, 2]))
def test_bag_is_embedding_bag_of_the_dequantised_table(backend, case, bits):
    t = q(backend).quantize_rows(backend.arr(case.weight), bits)
    full = q(backend).dequantize_rows(t)
    offsets = None if case.offsets is None else backend.arr(case.offsets)
    out = q(backend).quantized_embedding_bag(backend.arr(case.indices), t, offsets, **case.kwargs(backend))
    expected = backend.el.embedding_bag(backend.arr(case.indices), full, offsets, **case.kwargs(backend))
    assert bitwise_equal(out, expected)


@pytest.mark.parametrize("bits", [8, 4, 2])
@settings(max_examples=30)
@given(case=bag_cases(modes=("sum",), two_d=False, padding=None, dtype=np.float32), data=st.data())
def test_sums_are_close_to_fbgemms_rowwise_offsets(backend, bits, case, data):
    """FBGEMM adds each row's bias, then its scaled codes, into the running sum (and scales the
    per-sample weight into both): other roundings than a sum of dequantised rows. Measured (300 random
    bags of 5 rows a bit width, torch 2.13): at most 2.2 units of 2**-24 * sum |w| (|bias| + |code *
    scale|); for 4 and 2 bits without per-sample weights the sums were the same bits. The bound here,
    4 (n + 2) such units for a bag of n rows, is recursive summation's, with room to spare."""
    if bits < 8 and case.weight.shape[1] % (8 // bits):
        w = np.concatenate([case.weight, np.zeros((case.weight.shape[0], -case.weight.shape[1] % (8 // bits)),
                                                  np.float32)], 1)
    else:
        w = case.weight
    t = q(backend).quantize_rows(backend.arr(w), bits)
    kw = case.kwargs(backend)
    if case.padding_idx is not None:
        kw["padding_idx"] = None  # FBGEMM's operator has no padding_idx
    offsets = backend.arr(case.offsets)
    out = backend.np(q(backend).quantized_embedding_bag(backend.arr(case.indices), t, offsets, **kw))
    psw = None if case.per_sample_weights is None else torch.from_numpy(case.per_sample_weights)
    theirs = ROWWISE[bits](torch.from_numpy(table_np(t)), torch.from_numpy(case.indices).long(),
                           torch.from_numpy(case.offsets).long(), False, 0, False, psw, None,
                           case.include_last_offset).numpy()
    # the magnitude of every term each rounding sees: |weight| * (|bias| + |code * scale|) per entry
    full = backend.np(q(backend).dequantize_rows(t)).astype(np.float64)
    bias = _biases(table_np(t), bits, w.shape[1])
    terms = np.abs(bias)[:, None] + np.abs(full - bias[:, None])
    bounds, flat, psw_flat = bag_bounds(case)
    mag = np.zeros(out.shape)
    for b, (start, end) in enumerate(bounds):
        for j in range(start, end):
            mag[b] += (1.0 if psw_flat is None else abs(float(psw_flat[j]))) * terms[int(flat[j])]
        mag[b] *= 4 * (end - start + 2) * 2.0**-24
    assert (np.abs(out.astype(np.float64) - theirs) <= mag + FLOOR).all()


def _biases(data, bits, d) -> np.ndarray:
    if bits == 8:
        return data[:, d + 4:d + 8].copy().view("<f4")[:, 0].astype(np.float64)
    nb = nq.code_bytes(d, bits)
    return data[:, nb + 2:nb + 4].copy().view("<f2")[:, 0].astype(np.float64)


@pytest.mark.parametrize("bits", [8, 4])
def test_only_the_rows_read_are_dequantised(monkeypatch, backend, bits):
    seen = []
    module = q(backend)
    original = module._dequantize
    monkeypatch.setattr(module, "_dequantize", lambda data, *a: seen.append(len(data)) or original(data, *a))
    w = np.random.default_rng(5).standard_normal((1000, 8)).astype(np.float32)
    t = module.quantize_rows(backend.arr(w), bits)
    idx = np.array([[3, 7, 3], [999, 0, 7]])
    module.quantized_lookup(backend.arr(idx), t)
    assert seen == [6]
    seen.clear()
    module.quantized_embedding_bag(backend.arr(idx), t, mode="sum")
    assert seen == [4]  # the distinct rows: 0, 3, 7, 999


def test_both_backends_have_the_same_public_names_and_signatures():
    import inspect
    assert nq.__all__ == tq.__all__
    def params(f):
        return list(inspect.signature(f).parameters.values())

    for name in nq.__all__:
        a, b = getattr(nq, name), getattr(tq, name)
        if inspect.isfunction(a):
            assert params(a) == params(b), name
    assert tq.QuantizedTable is nq.QuantizedTable
    for cls in ("QuantizedEmbedding", "QuantizedEmbeddingBag"):
        for method in ("__init__", "from_float", "forward"):
            assert params(getattr(getattr(nq, cls), method)) == params(getattr(getattr(tq, cls), method)), (cls, method)


# --------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------
def test_table_bytes():
    assert tq.table_bytes is nq.table_bytes
    for v, d in [(0, 3), (1, 1), (10, 7), (1000, 64)]:
        assert nq.table_bytes(v, d, 32) == v * d * 4 and nq.table_bytes(v, d, 16) == v * d * 2
        assert nq.table_bytes(v, d, 8) == v * (d + 8)
        assert nq.table_bytes(v, d, 4) == v * (-(-d // 2) + 4)
        assert nq.table_bytes(v, d, 2) == v * (-(-d // 4) + 4)
        if v and d:
            w = np.ones((v, d), np.float32)
            for bits in (8, 4, 2):
                assert nq.quantize_rows(w, bits).data.nbytes == nq.table_bytes(v, d, bits)
    with pytest.raises(ValueError, match="bits must be one of"):
        nq.table_bytes(3, 4, 3)
    with pytest.raises(ValueError, match="non-negative"):
        nq.table_bytes(-1, 4, 8)


# --------------------------------------------------------------------------------------------------
# Errors: clear, and nothing changed
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits, weight, error, match", [
    (3, np.ones((2, 2), np.float32), ValueError, r"bits must be one of \(2, 4, 8\), got 3"),
    (True, np.ones((2, 2), np.float32), ValueError, "bits must be one of"),
    (8, np.ones(4, np.float32), ValueError, "weight must be 2-D"),
    (8, np.ones((2, 2, 2), np.float32), ValueError, "weight must be 2-D"),
    (8, np.ones((2, 0), np.float32), ValueError, "at least one column"),
    (8, np.ones((2, 2), np.int64), TypeError, "floating-point"),
    (8, np.ones((2, 2), bool), TypeError, "floating-point"),
    (8, np.array([[1.0, np.nan]], np.float32), ValueError, "row 0 holds an infinity or NaN"),
    (8, np.array([[1.0, 2.0], [np.inf, 0.0]]), ValueError, "row 1 holds an infinity or NaN"),
    (8, np.array([[1e39, 0.0]]), ValueError, "row 0 holds an infinity or NaN"),
    (8, np.array([[-3e38, 3e38]], np.float32), ValueError, "too wide for float32"),
    (4, np.array([[1.0, 2.0], [70000.0, 70001.0]], np.float32), ValueError, "row 1: the 4-bit format .* float16"),
    (2, np.array([[0.0, 1e6]], np.float32), ValueError, "row 0: the 2-bit format stores each row's scale"),
])
def test_bad_weights_are_refused(backend, bits, weight, error, match):
    before = weight.copy()
    w = backend.arr(weight)
    with pytest.raises(error, match=match):
        q(backend).quantize_rows(w, bits)
    assert bitwise_equal(w, before)


def test_other_float_types_are_refused():
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        tq.quantize_rows(torch.ones(2, 2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        tq.quantize_rows(np.ones((2, 2), np.float32))


def test_bad_indices_and_tables_are_refused(backend):
    module = q(backend)
    w = np.random.default_rng(6).standard_normal((5, 4)).astype(np.float32)
    t = module.quantize_rows(backend.arr(w), 8)
    before = backend.np(t.data).copy()
    with pytest.raises(IndexError, match="index 5 is out of range for num_embeddings=5"):
        module.quantized_lookup(backend.arr(np.array([0, 5])), t)
    with pytest.raises(IndexError, match="index -1 is out of range for num_embeddings=5"):
        module.quantized_lookup(backend.arr(np.array([-1])), t)
    with pytest.raises(TypeError, match="integers"):
        module.quantized_lookup(backend.arr(np.array([0.0])), t)
    with pytest.raises(TypeError, match="booleans"):
        module.quantized_lookup(backend.arr(np.array([True])), t)
    with pytest.raises(IndexError, match="index 7 is out of range for num_embeddings=5"):
        module.quantized_embedding_bag(backend.arr(np.array([[1, 7]])), t)
    with pytest.raises(ValueError, match="offsets must start at 0"):
        module.quantized_embedding_bag(backend.arr(np.array([1, 2])), t, backend.arr(np.array([1])))
    with pytest.raises(ValueError, match="per_sample_weights is only supported with mode='sum'"):
        module.quantized_embedding_bag(backend.arr(np.array([[1, 2]])), t,
                                       per_sample_weights=backend.arr(np.ones((1, 2), np.float32)))
    with pytest.raises(IndexError, match="index 9 is out of range"):
        module.dequantize_rows(t, backend.arr(np.array([9])))
    with pytest.raises(ValueError, match="rows must be 1-D"):
        module.dequantize_rows(t, backend.arr(np.array([[1]])))
    with pytest.raises(TypeError, match="QuantizedTable"):
        module.quantized_lookup(backend.arr(np.array([0])), (t.data, 8, 4))
    with pytest.raises(ValueError, match=r"shape \(num_embeddings, 12\) for embedding_dim=4 at 8 bits"):
        module.dequantize_rows(nq.QuantizedTable(t.data[:, :-1], 8, 4))
    with pytest.raises(ValueError, match="shape"):
        module.dequantize_rows(nq.QuantizedTable(t.data, 4, 4))
    with pytest.raises(ValueError, match="bits must be one of"):
        module.dequantize_rows(nq.QuantizedTable(t.data, 16, 4))
    with pytest.raises(TypeError, match="uint8"):
        module.dequantize_rows(nq.QuantizedTable(backend.arr(before.astype(np.int16)), 8, 4))
    assert bitwise_equal(t.data, before)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_layer_from_an_embedding_layer(backend, bits):
    module = q(backend)
    layer = backend.el.Embedding(20, 6, seed=0)
    qlayer = module.QuantizedEmbedding.from_float(layer, bits)
    weight = backend.np(layer.weight)
    t = module.quantize_rows(backend.arr(weight), bits)
    assert bitwise_equal(qlayer.data, t.data)
    assert (qlayer.num_embeddings, qlayer.embedding_dim, qlayer.bits) == (20, 6, bits)
    assert qlayer.nbytes == nq.table_bytes(20, 6, bits) < weight.nbytes
    assert bitwise_equal(qlayer.weight, module.dequantize_rows(t))
    idx = backend.arr(np.array([[1, 19], [0, 1]]))
    assert bitwise_equal(qlayer(idx), module.quantized_lookup(idx, t))
    assert bitwise_equal(qlayer.forward(idx), module.quantized_lookup(idx, t))
    same = module.QuantizedEmbedding.from_float(backend.arr(weight), bits)
    assert bitwise_equal(same.data, qlayer.data)


def test_bag_layer_takes_the_bag_layers_options(backend):
    module = q(backend)
    layer = backend.el.EmbeddingBag(10, 4, mode="max", padding_idx=2, seed=1)
    qlayer = module.QuantizedEmbeddingBag.from_float(layer, 4)
    assert (qlayer.mode, qlayer.padding_idx, qlayer.include_last_offset) == ("max", 2, False)
    idx = backend.arr(np.array([[1, 2, 3], [2, 2, 2]]))
    expected = backend.el.embedding_bag(idx, qlayer.weight, mode="max", padding_idx=2)
    assert bitwise_equal(qlayer(idx), expected)
    summed = module.QuantizedEmbeddingBag.from_float(layer, 8, mode="sum", padding_idx=0)
    assert (summed.mode, summed.padding_idx) == ("sum", 0)
    plain = module.QuantizedEmbeddingBag.from_float(backend.el.Embedding(10, 4, padding_idx=3, seed=0))
    assert (plain.mode, plain.padding_idx) == ("mean", None)  # an Embedding's padding_idx is a gradient option
    flat = backend.arr(np.array([1, 2, 3, 4]))
    offsets = backend.arr(np.array([0, 1, 4]))
    psw = backend.arr(np.array([1.0, 2.0, 0.5, -1.0], np.float32))
    last = module.QuantizedEmbeddingBag(summed.table, mode="sum", include_last_offset=True)
    assert bitwise_equal(last(flat, offsets, psw),
                         backend.el.embedding_bag(flat, last.weight, offsets, mode="sum", per_sample_weights=psw,
                                                  include_last_offset=True))


def test_layers_refuse_max_norm_and_bad_options(backend):
    module = q(backend)
    with pytest.raises(ValueError, match="max_norm"):
        module.QuantizedEmbedding.from_float(backend.el.Embedding(4, 2, max_norm=1.0, seed=0))
    t = module.quantize_rows(backend.arr(np.ones((3, 2), np.float32)))
    with pytest.raises(ValueError, match="mode must be one of"):
        module.QuantizedEmbeddingBag(t, mode="median")
    with pytest.raises(ValueError, match="padding_idx must be in"):
        module.QuantizedEmbeddingBag(t, padding_idx=3)


def test_torch_layers_are_modules_with_a_byte_buffer():
    layer = torch.nn.Embedding(12, 5)
    qlayer = tq.QuantizedEmbedding.from_float(layer, 4)
    assert isinstance(qlayer, torch.nn.Module) and dict(qlayer.named_buffers())["data"] is qlayer.data
    assert list(qlayer.parameters()) == []
    out = qlayer(torch.tensor([1, 2]))
    assert not out.requires_grad and out.dtype == torch.float32
    qlayer.double()  # moves and casts float tensors only: the bytes stay bytes
    assert qlayer.data.dtype == torch.uint8
    assert bitwise_equal(qlayer(torch.tensor([1, 2])), out)
    copy = tq.QuantizedEmbedding(tq.quantize_rows(torch.zeros(12, 5), 4))
    copy.load_state_dict(qlayer.state_dict())
    assert bitwise_equal(copy.weight, qlayer.weight)
    assert "bits=4" in repr(qlayer)
    bag_layer = tq.QuantizedEmbeddingBag.from_float(torch.nn.EmbeddingBag(12, 5, mode="sum"))
    assert bag_layer.mode == "sum" and "mode='sum'" in repr(bag_layer)


# --------------------------------------------------------------------------------------------------
# CUDA: the same bytes and values
# --------------------------------------------------------------------------------------------------
DEVICE = torch.device(os.environ.get("EMBEDLIB_TEST_DEVICE", "cuda"))
cuda = [pytest.mark.cuda, pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                                            reason="needs a CUDA GPU")]


@pytest.mark.parametrize("bits", [8, 4, 2])
@settings(max_examples=25)
@given(data=st.data())
@cuda[0]
@cuda[1]
def test_cuda_gives_the_cpus_bytes_and_values(bits, data):
    w = data.draw(tables(half_safe=bits < 8))
    cpu = tq.quantize_rows(torch.from_numpy(w), bits)
    gpu = tq.quantize_rows(torch.from_numpy(w).to(DEVICE), bits)
    assert gpu.data.device.type == DEVICE.type
    assert bitwise_equal(gpu.data, cpu.data)
    assert bitwise_equal(tq.dequantize_rows(gpu), tq.dequantize_rows(cpu))
    if w.shape[0]:
        idx = torch.tensor([[0, w.shape[0] - 1], [0, 0]])
        assert bitwise_equal(tq.quantized_lookup(idx.to(DEVICE), gpu), tq.quantized_lookup(idx, cpu))
        out = tq.quantized_embedding_bag(idx.to(DEVICE), gpu, mode="sum")
        torch.testing.assert_close(out.cpu(), tq.quantized_embedding_bag(idx, cpu, mode="sum"))


@cuda[0]
@cuda[1]
def test_cuda_layer_moves_and_checks_indices_first():
    qlayer = tq.QuantizedEmbeddingBag.from_float(torch.randn(10, 4), 8, mode="mean").to(DEVICE)
    assert qlayer.data.device.type == DEVICE.type
    out = qlayer(torch.tensor([[1, 2], [3, 3]], device=DEVICE))
    assert out.device.type == DEVICE.type
    with pytest.raises(IndexError, match="index 10 is out of range for num_embeddings=10"):
        qlayer(torch.tensor([[1, 10]], device=DEVICE))
    assert torch.isfinite(qlayer(torch.tensor([[0]], device=DEVICE))).all()  # the device is still usable
