"""Checker for chapter 14, smaller tables: row-wise quantisation in FBGEMM's fused layout.

:func:`check_quantize_rows` runs the reader's ``fn(weight) -> uint8 array`` on hidden seeded tables
and compares its bytes with :func:`embedlib.numpy.quantized.quantize_rows` (which are PyTorch's
``embedding_bag_byte_prepack`` / ``embedding_bag_4bit_prepack`` bytes). A wrong answer that is a
known mistake gets its hint: the scale not divided by 255 (or 15), codes truncated instead of
rounded, an 8-bit scale stored as float16, the two codes of a byte in the wrong order, the bias
before the scale, a constant row, the 4-bit codes computed from the unrounded minimum.
Plain NumPy: nothing here imports torch.
"""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import Case, CheckResult
from embedlib.numpy import quantized as _q


def _fields(data: np.ndarray, bits: int, d: int):
    """``(codes, scale, bias)`` of fused rows: codes (V, D) as integers, scale and bias as float64."""
    nb = _q.code_bytes(d, bits)
    codes = _q.unpack_codes(np.ascontiguousarray(data, dtype=np.uint8), bits, d).astype(np.int64)
    kind, size = ("<f4", 4) if bits == 8 else ("<f2", 2)
    scale = np.ascontiguousarray(data[:, nb:nb + size]).view(kind)[:, 0].astype(np.float64)
    bias = np.ascontiguousarray(data[:, nb + size:nb + 2 * size]).view(kind)[:, 0].astype(np.float64)
    return codes, scale, bias


def _raw_codes(w: np.ndarray, bits: int, rounding, unrounded_min: bool = False) -> np.ndarray:
    """The codes by the reference arithmetic, with another rounding (or, 4 and 2 bits, from the exact
    minimum instead of its float16 rounding): the codes of two classic mistakes."""
    x = w.astype(np.float32)
    lo, hi = x.min(1), x.max(1)
    if bits == 8:
        span = hi - lo
        return rounding((x - lo[:, None]) * (np.float32(255) / (span + _q.EPSILON))[:, None]).astype(np.int64)
    levels = (1 << bits) - 1
    m = lo.astype(np.float16).astype(np.float32)
    span = hi - m
    s = np.where(span == 0, np.float32(1), span / np.float32(levels)).astype(np.float16).astype(np.float32)
    s[s == 0] = 1
    base = lo if unrounded_min else m
    return np.clip(rounding((x - base[:, None]) * (np.float32(1) / s)[:, None]), 0, levels).astype(np.int64)


def _hint(w: np.ndarray, bits: int):
    expected = _q.quantize_rows(w, bits).data
    v, d = w.shape
    levels = (1 << bits) - 1
    nb = _q.code_bytes(d, bits)
    e_codes, e_scale, e_bias = _fields(expected, bits, d)
    x = w.astype(np.float32)
    span = (x.max(1) - x.min(1)).astype(np.float64)
    width = expected.shape[1]

    def hint(got):
        if got.ndim != 2 or got.shape[0] != v:
            return f"return one row of bytes per table row: shape (V, {width}) = {(v, width)}"
        if got.shape[1] != width:
            if bits == 8 and got.shape[1] == d + 4:
                return ("the 8-bit format stores the scale and the bias as float32, 4 bytes each: D + 8 bytes a row "
                        "(float16 scale and bias belong to the 4- and 2-bit formats)")
            if bits < 8 and got.shape[1] == d + 4:
                return (f"pack {8 // bits} codes into each byte: ceil(D * {bits} / 8) = {nb} bytes of codes, then "
                        "the float16 scale and bias")
            if bits < 8 and got.shape[1] == nb + 8:
                return "the 4- and 2-bit formats store the scale and the bias as float16, 2 bytes each"
            return f"each row is {width} bytes: {nb} bytes of codes, then the scale, then the bias"
        if not np.isfinite(got).all() or got.min() < 0 or got.max() > 255:
            return "return bytes: a uint8 array (codes, then the scale's and the bias's bytes via .view(np.uint8))"
        got = got.astype(np.uint8)
        g_codes, g_scale, g_bias = _fields(got, bits, d)
        size = 4 if bits == 8 else 2
        if (np.array_equal(got[:, nb:nb + size], expected[:, nb + size:nb + 2 * size])
                and np.array_equal(got[:, nb + size:nb + 2 * size], expected[:, nb:nb + size])):
            return ("after the codes comes the scale, then the bias (the row's minimum): you stored them the "
                    "other way round")
        if bits == 8:
            halved = e_scale.astype(np.float16).astype(np.float32).astype(np.float64)
            if not np.array_equal(g_scale, e_scale) and np.array_equal(g_scale, halved):
                return "the 8-bit format keeps the scale as float32: do not round it through float16"
        nonzero = span > 0
        if nonzero.any() and np.allclose(g_scale[nonzero], (e_scale * levels)[nonzero], rtol=2e-3):
            return (f"the scale is (max - min) / {levels}: {levels + 1} codes 0..{levels} split the row's range "
                    f"into {levels} steps (you stored max - min)")
        if bits < 8 and np.array_equal(got[:, nb:], expected[:, nb:]) and not np.array_equal(g_codes, e_codes):
            swapped = _q.pack_codes(e_codes.astype(np.uint8), bits)
            per_byte = 8 // bits
            reverse = np.zeros_like(swapped)
            for k in range(per_byte):  # element j of a byte in the bits of element per_byte - 1 - j
                reverse |= ((swapped >> (k * bits)) & levels) << ((per_byte - 1 - k) * bits)
            if np.array_equal(got[:, :nb], reverse):
                return ("element 2k goes in the low 4 bits of byte k and element 2k + 1 in the high 4 bits "
                        "(the first element of each byte in its lowest bits)" if bits == 4 else
                        "the first element of each byte goes in its lowest 2 bits")
        if np.array_equal(got[:, nb:], expected[:, nb:]):
            if np.array_equal(g_codes, _raw_codes(w, bits, np.floor)) and not np.array_equal(g_codes, e_codes):
                return ("the codes are rounded to the nearest integer (np.rint, half to even, as lrintf), not "
                        "truncated: astype(np.uint8) alone drops the fraction")
            if bits < 8 and np.array_equal(g_codes, _raw_codes(w, bits, np.rint, unrounded_min=True)):
                return ("compute the codes from the bias as stored, the minimum rounded to float16, and the scale "
                        "rounded to float16: otherwise dequantising adds the rounding of the minimum to every value")
            const = span == 0
            if const.any() and not np.array_equal(g_codes[const], e_codes[const]):
                return ("a constant row (max == min) must get codes 0: FBGEMM multiplies by 255 / (range + 1e-8), "
                        "so the range 0 never divides by zero" if bits == 8 else
                        "a constant row (max == min) must get codes 0")
        if bits < 8:
            const = span == 0
            if const.any() and np.array_equal(g_scale[~const], e_scale[~const]) and (g_scale[const] == 0).any():
                return ("a constant row has range 0; its scale would be 0, which FBGEMM replaces by 1.0 (any "
                        "nonzero scale gives codes 0, and 1 / scale stays finite)")
        off = np.abs(g_codes - e_codes)
        if (off.max(initial=0) <= 1 and off.sum() <= max(2, off.size // 50)
                and np.allclose(g_scale, e_scale, rtol=1e-6, atol=0)
                and np.allclose(g_bias, e_bias, rtol=1e-6, atol=0)):
            return ("nearly: compute in float32 as FBGEMM does (weight.astype(np.float32), and np.float32 constants): "
                    "range = max - min rounded to float32, scale = range / " + str(levels) + ", then the codes "
                    "(x - min) * inverse_scale rounded half to even, with the inverse scale "
                    + ("255 / (range + 1e-8)" if bits == 8 else "1 / scale") + " computed first")
        return None
    return hint


def _tables(bits: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    per_byte = 8 // bits
    even = 4 * per_byte
    tables = [
        ("3 rows of 8 values, N(0, 1)", rng.standard_normal((3, 8))),
        ("one row, values in [2, 5] (the bias is not 0)", rng.uniform(2, 5, size=(1, 8))),
        ("5 rows of different scales", rng.standard_normal((5, even)) * np.array([[1e-3], [1], [10], [0.5], [100]])),
        ("a constant row (max == min) among others",
         np.vstack([rng.standard_normal((2, 8)), np.full((1, 8), 0.75), rng.standard_normal((1, 8))])),
        ("a row of zeros", np.vstack([np.zeros((1, 8)), rng.standard_normal((1, 8))])),
        ("one column", rng.standard_normal((4, 1)) if bits == 8 else rng.standard_normal((4, per_byte))),
        ("no rows", np.zeros((0, 8))),
    ]
    for _ in range(4):
        v, d = int(rng.integers(1, 20)), int(rng.integers(1, 6)) * per_byte * 2
        tables.append((f"{v} rows of {d} random values", rng.standard_normal((v, d)) * rng.uniform(0.01, 10)))
    if bits < 8:
        tables.append((f"D = 5, not a multiple of {per_byte}: the last byte's unused bits are 0",
                       rng.standard_normal((3, 5))))
    return [(text, w.astype(np.float32)) for text, w in tables]


def check_quantize_rows(fn, bits: int = 8, *, seed: int = 0) -> CheckResult:
    """Check ``fn(weight) -> uint8 array``: FBGEMM's fused row-wise quantisation (chapter 14).

    ``weight`` is a float32 array ``(V, D)``. ``bits=8``: return ``(V, D + 8)`` bytes, each row the
    ``D`` codes ``round((x - min) * 255 / (range + 1e-8))`` then the float32 scale ``range / 255``
    and the float32 bias ``min`` (little-endian, as ``.view(np.uint8)`` gives them).
    ``bits=4`` (or 2): ``(V, ceil(D * bits / 8) + 4)`` bytes: the codes ``round((x - m) / s)``
    clipped to ``0..2**bits - 1``, packed low bits first, then the float16 scale ``s`` and bias ``m``,
    where ``m`` is the minimum rounded to float16 and ``s = (max - m) / (2**bits - 1)`` rounded to
    float16 (1 for a constant row). The bytes must be exactly those of
    :func:`embedlib.numpy.quantized.quantize_rows` (and of PyTorch's prepack operators).
    """
    bits = _q.check_bits(bits)
    name = _harness.name_of(fn)
    _harness.require_callable(fn, name)
    cases = [Case(text, (w,), _q.quantize_rows(w, bits).data, names=("weight",), exact=True, hint=_hint(w, bits))
             for text, w in _tables(bits, seed)]
    recorded, outputs = _harness.recording(fn, name)  # the dtype is checked once the values are right
    result = _harness.run(name, recorded, cases, summary=f"{bits}-bit rows: constant rows, zeros, one column, "
                          "no rows, scales from 1e-3 to 100" + (", D not a multiple of the codes per byte"
                                                                if bits < 8 else ""))
    if result:
        bad = next((o for o in outputs if _harness.to_numpy(o).dtype != np.uint8), None)
        if bad is not None:
            dtype = _harness.to_numpy(bad).dtype
            return CheckResult(name, False, result.cases_run, result.cases_total,
                               f"✗ {name} returns the right numbers but as dtype {dtype}: a fused table is bytes, "
                               "a uint8 array (the scale and bias as their bytes: np.float32(...).view(np.uint8))")
    return result
