"""The checker of chapter 14 (embedlib/exercises/quantization.py): right answers pass, classic
mistakes get their hint."""
import numpy as np
import pytest

from embedlib.exercises._harness import CheckResult
from embedlib.exercises.quantization import check_quantize_rows


# --- a reader's solutions, written from the exercise's text ----------------------------------------
def fused_8bit(weight, *, divide=True, rounding=np.rint, scale_type=np.float32, bias_first=False,
               out_type=np.uint8, dtype=np.float32):
    w = np.asarray(weight, dtype=dtype)
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    span = hi - lo
    scale = span / dtype(255) if divide else span
    inverse = (255 if divide else 1) / (span + dtype(1e-8))
    codes = rounding((w - lo) * inverse)
    scale_bytes = scale.astype(scale_type).view(np.uint8)
    bias_bytes = lo.astype(scale_type).view(np.uint8)
    tail = [bias_bytes, scale_bytes] if bias_first else [scale_bytes, bias_bytes]
    return np.concatenate([codes.astype(np.uint8)] + tail, axis=1).astype(out_type)


def fused_nbit(weight, bits=4, *, divide=True, rounding=np.rint, high_first=False, rounded_min=True,
               constant_scale=1.0):
    w = np.asarray(weight, dtype=np.float32)
    levels = 2**bits - 1
    per_byte = 8 // bits
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    bias = lo.astype(np.float16)
    m = bias.astype(np.float32)
    span = hi - m
    scale = np.where(span == 0, np.float32(constant_scale), span / np.float32(levels if divide else 1))
    scale = scale.astype(np.float16).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1), scale) if constant_scale else scale
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.float32(1) / scale
    base = m if rounded_min else lo
    with np.errstate(invalid="ignore"):  # inf * 0 in a constant row when the scale is 0 (a mistake)
        codes = np.nan_to_num(np.clip(rounding((w - base) * inverse), 0, levels)).astype(np.uint8)
    v, d = codes.shape
    nbytes = -(-d // per_byte)
    padded = np.zeros((v, nbytes * per_byte), np.uint8)
    padded[:, :d] = codes
    groups = padded.reshape(v, nbytes, per_byte)
    packed = np.zeros((v, nbytes), np.uint8)
    for k in range(per_byte):
        shift = (per_byte - 1 - k if high_first else k) * bits
        packed |= groups[:, :, k] << shift
    return np.concatenate([packed, scale.astype(np.float16).view(np.uint8), bias.view(np.uint8)], axis=1)


def fused_4bit(weight):
    return fused_nbit(weight, 4)


def fused_2bit(weight):
    return fused_nbit(weight, 2)


# --- right answers pass ----------------------------------------------------------------------------
@pytest.mark.parametrize("fn, bits", [(fused_8bit, 8), (fused_4bit, 4), (fused_2bit, 2)])
def test_a_correct_solution_passes(fn, bits):
    result = check_quantize_rows(fn, bits)
    assert isinstance(result, CheckResult)
    assert result, repr(result)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


def test_other_seeds_pass_too():
    assert check_quantize_rows(fused_8bit, seed=3) and check_quantize_rows(fused_4bit, 4, seed=3)


# --- known mistakes get their hint -----------------------------------------------------------------
@pytest.mark.parametrize("wrong, bits, hint", [
    (lambda w: fused_8bit(w, divide=False), 8, "the scale is (max - min) / 255"),
    (lambda w: fused_nbit(w, 4, divide=False), 4, "the scale is (max - min) / 15"),
    (lambda w: fused_8bit(w, rounding=np.floor), 8, "not truncated"),
    (lambda w: fused_nbit(w, 4, rounding=np.floor), 4, "not truncated"),
    (lambda w: fused_8bit(w, scale_type=np.float16), 8, "stores the scale and the bias as float32"),
    (lambda w: fused_nbit(w, 4, high_first=True), 4, "element 2k goes in the low 4 bits"),
    (lambda w: fused_nbit(w, 2, high_first=True), 2, "lowest 2 bits"),
    (lambda w: fused_8bit(w, bias_first=True), 8, "then the bias"),
    (lambda w: fused_8bit(w, dtype=np.float64), 8, "compute in float32 as FBGEMM does"),
    (lambda w: fused_nbit(w, 4, rounded_min=False), 4, "minimum rounded to float16"),
    (lambda w: fused_nbit(w, 4, constant_scale=0.0), 4, "replaces by 1.0"),
])
def test_known_mistakes_get_their_hint(wrong, bits, hint):
    result = check_quantize_rows(wrong, bits)
    assert not result
    text = repr(result)
    assert text.startswith("✗") and "problem:" in text
    assert hint in " ".join(text.split()), text


def test_right_bytes_of_the_wrong_type_fail():
    result = check_quantize_rows(lambda w: fused_8bit(w, out_type=np.int64))
    assert not result and "dtype int64" in repr(result) and "uint8" in repr(result)


def test_errors_and_bad_arguments():
    def broken(weight):
        raise RuntimeError("not yet")

    result = check_quantize_rows(broken)
    assert not result and "raised RuntimeError: not yet" in repr(result)
    with pytest.raises(ValueError, match="bits must be one of"):
        check_quantize_rows(fused_8bit, 3)
    with pytest.raises(TypeError, match="pass your function itself"):
        check_quantize_rows(fused_8bit(np.ones((1, 2), np.float32)))
    result = check_quantize_rows(lambda w: fused_8bit(w)[:, :-1])
    assert not result and "each row is" in repr(result)
