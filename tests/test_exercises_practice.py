"""Checkers of chapter 8 (embedlib/exercises/practice.py): right answers pass, classic mistakes get their hint."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from embedlib import numpy as el
from embedlib.exercises import CheckResult, check_expected_collisions, check_pad_batch, check_vocabulary
from embedlib.exercises.practice import _expected_colliding, _expected_occupied


# --- expected collisions --------------------------------------------------------------------------

def colliding_keys(n_keys, n_buckets):
    # the chance that a key is alone: each of the other n - 1 keys misses its bucket
    return n_keys * (1 - (1 - 1 / n_buckets) ** (n_keys - 1))


def colliding_keys_by_occupancy(n_keys, n_buckets):
    # keys - (buckets with exactly one key), E[singletons] = n (1 - 1/b)^(n-1): the same thing
    return n_keys - n_keys * (1 - 1 / n_buckets) ** (n_keys - 1) if n_keys else 0.0


def test_collision_formula_passes():
    for fn in (colliding_keys, colliding_keys_by_occupancy):
        result = check_expected_collisions(fn)
        assert result, repr(result)
        assert isinstance(result, CheckResult)
        assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, b: n - b * (1 - (1 - 1 / b) ** n), "beyond the first"),
    (lambda n, b: b * (1 - (1 - 1 / b) ** n), "occupied buckets"),
    (lambda n, b: n * (1 - (1 - 1 / b) ** n), "exponent is n_keys - 1"),
    (lambda n, b: n * (n - 1) / (2 * b), "colliding *pairs*"),
    (lambda n, b: n * (n - 1) / b, "union bound"),
])
def test_classic_collision_mistakes_get_their_hint(wrong, hint):
    result = check_expected_collisions(wrong)
    assert not result
    assert "✗" in repr(result) and "problem:" in repr(result)
    assert hint in repr(result), repr(result)


def test_collision_answer_that_is_not_a_number():
    result = check_expected_collisions(lambda n, b: [n, b])
    assert not result and "expected shape ()" in repr(result)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 3_000), st.integers(1, 100_000))
def test_reference_collision_formula_matches_the_direct_one(n, b):
    direct = n * (1 - (1 - 1 / b) ** (n - 1)) if n else 0.0
    assert math.isclose(_expected_colliding(n, b), direct, rel_tol=1e-9, abs_tol=1e-9)
    assert 0 <= _expected_colliding(n, b) <= n
    assert math.isclose(_expected_occupied(n, b), b * (1 - (1 - 1 / b) ** n), rel_tol=1e-9, abs_tol=1e-9)


def test_reference_collisions_agree_with_hash_bucket_on_average():
    # the formula is what hash_bucket gives on average over seeds (the chapter measures the same)
    n, b = 2_000, 2_000
    keys = np.arange(n)
    measured = []
    for seed in range(20):
        buckets = el.hash_bucket(keys, b, seed=seed)
        measured.append(int((np.bincount(buckets, minlength=b)[buckets] > 1).sum()))
    assert abs(np.mean(measured) - _expected_colliding(n, b)) < 0.02 * n


# --- padded batches -------------------------------------------------------------------------------

def pad_batch(indices, offsets, padding_idx):
    lengths = np.diff(np.append(offsets, len(indices)))
    out = np.full((len(offsets), lengths.max(initial=0)), padding_idx, dtype=np.int64)
    for b, (start, length) in enumerate(zip(offsets, lengths)):
        out[b, :length] = indices[start:start + length]
    return out


def pad_batch_vectorised(indices, offsets, padding_idx):
    lengths = np.diff(np.append(offsets, len(indices)))
    out = np.full((len(offsets), lengths.max(initial=0)), padding_idx, dtype=np.int64)
    rows = np.repeat(np.arange(len(offsets)), lengths)
    columns = np.arange(len(indices)) - np.repeat(offsets, lengths)
    out[rows, columns] = indices
    return out


def test_pad_batch_solutions_pass():
    for fn in (pad_batch, pad_batch_vectorised):
        result = check_pad_batch(fn)
        assert result, repr(result)


def test_pad_batch_agrees_with_embedding_bag():
    # a padded batch with padding_idx gives the same mean bags as the flat layout
    idx, off = np.array([1, 2, 3, 4, 5, 6]), np.array([0, 2, 2, 5])
    weight = np.random.default_rng(0).standard_normal((7, 3))
    padded = pad_batch(idx, off, 0)
    np.testing.assert_allclose(el.embedding_bag(padded, weight, mode="mean", padding_idx=0),
                               el.embedding_bag(idx, weight, off, mode="mean"))


def pad_left(indices, offsets, padding_idx):
    out = pad_batch(indices, offsets, padding_idx)
    lengths = np.diff(np.append(offsets, len(indices)))
    for b, length in enumerate(lengths):
        out[b] = np.roll(out[b], out.shape[1] - length)
    return out


def pad_with_zeros(indices, offsets, padding_idx):
    return pad_batch(indices, offsets, 0)


def forgets_last_bag(indices, offsets, padding_idx):
    lengths = np.diff(offsets)
    out = np.full((len(lengths), lengths.max(initial=0)), padding_idx, dtype=np.int64)
    for b, (start, length) in enumerate(zip(offsets, lengths)):
        out[b, :length] = indices[start:start + length]
    return out


def fixed_width(indices, offsets, padding_idx):
    out = np.full((len(offsets), 8), padding_idx, dtype=np.int64)
    out[:, :0] = 0
    padded = pad_batch(indices, offsets, padding_idx)
    out[:, :padded.shape[1]] = padded
    return out


def pad_as_floats(indices, offsets, padding_idx):
    return pad_batch(indices, offsets, padding_idx).astype(np.float64)


@pytest.mark.parametrize("wrong, hint", [
    (pad_left, "pad at the end"),
    (pad_with_zeros, "fill with padding_idx"),
    (forgets_last_bag, "the last bag runs to the end"),
    (fixed_width, "the length of the longest bag"),
    (lambda i, o, p: np.asarray(i), "return a 2-D array"),
])
def test_pad_batch_mistakes_get_their_hint(wrong, hint):
    result = check_pad_batch(wrong)
    assert not result
    assert hint in repr(result), repr(result)


def test_pad_batch_must_return_integers():
    result = check_pad_batch(pad_as_floats)
    assert not result
    assert "dtype float64" in repr(result) and "integer" in repr(result)


def test_pad_batch_refuses_a_call_instead_of_a_function():
    with pytest.raises(TypeError, match="pass your function itself"):
        check_pad_batch(None)


def test_pad_batch_reports_an_exception_in_the_students_code():
    def broken(indices, offsets, padding_idx):
        raise RuntimeError("not yet")

    result = check_pad_batch(broken)
    assert not result and "raised RuntimeError: not yet" in repr(result) and "of broken" in repr(result)


# --- vocabularies -----------------------------------------------------------------------------------

def encode(train_keys, keys, min_count):
    names, counts = np.unique(train_keys, return_counts=True)
    row = {name: k + 1 for k, name in enumerate(names[counts >= min_count])}
    keys = np.asarray(keys)
    return np.array([row.get(key, 0) for key in keys.reshape(-1).tolist()], dtype=np.int64).reshape(keys.shape)


def encode_vectorised(train_keys, keys, min_count):
    names, counts = np.unique(train_keys, return_counts=True)
    kept = names[counts >= min_count]
    keys = np.asarray(keys)
    if kept.size == 0:
        return np.zeros(keys.shape, dtype=np.int64)
    pos = np.minimum(np.searchsorted(kept, keys), kept.size - 1)
    return np.where(kept[pos] == keys, pos + 1, 0)


def test_vocabulary_solutions_pass():
    for fn in (encode, encode_vectorised):
        result = check_vocabulary(fn)
        assert result, repr(result)


def from_zero(train_keys, keys, min_count):
    return encode(train_keys, keys, min_count) - 1


def unknown_last(train_keys, keys, min_count):
    names, counts = np.unique(train_keys, return_counts=True)
    out = encode(train_keys, keys, min_count)
    return np.where(out == 0, int((counts >= min_count).sum()) + 1, out)


def strictly_more(train_keys, keys, min_count):
    return encode(train_keys, keys, min_count + 1)


def ignores_min_count(train_keys, keys, min_count):
    return encode(train_keys, keys, 1)


@pytest.mark.parametrize("wrong, hint", [
    (from_zero, "numbered from 1"),
    (unknown_last, "reserved row 0"),
    (strictly_more, "compare with >=, not >"),
    (ignores_min_count, "must become unknown"),
])
def test_vocabulary_mistakes_get_their_hint(wrong, hint):
    result = check_vocabulary(wrong)
    assert not result
    assert hint in repr(result), repr(result)


def test_vocabulary_flattened_output_fails_on_shape():
    result = check_vocabulary(lambda t, k, m: encode(t, k, m).reshape(-1))
    assert not result and "expected shape (2, 3)" in repr(result)


def test_checkers_are_deterministic():
    assert repr(check_vocabulary(from_zero)) == repr(check_vocabulary(from_zero))
    assert repr(check_pad_batch(pad_left)) == repr(check_pad_batch(pad_left))
