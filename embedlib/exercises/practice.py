"""Checkers for chapter 8, embeddings in practice: hash collisions, padded batches, vocabularies.

These exercises are about the bookkeeping around an embedding table rather than the table itself,
so the checkers take plain NumPy inputs (there is no gradient to check):

- :func:`check_expected_collisions`: a formula for the expected number of keys that share their
  hash bucket with another key (the balls-in-bins calculation of chapter 8);
- :func:`check_pad_batch`: bags given as flat indices and offsets, laid out as a padded
  ``(B, L)`` batch for a lookup with ``padding_idx``;
- :func:`check_vocabulary`: category keys to table rows, with a minimum count and row 0 reserved
  for unknown categories.
"""
from __future__ import annotations

import math

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import Case, CheckResult


# --- hash collisions -----------------------------------------------------------------------------

def _expected_colliding(n: int, b: int) -> float:
    """E[keys sharing their bucket] for n keys thrown uniformly into b buckets: n (1 - (1 - 1/b)^(n-1)).

    A key is alone when each of the other n - 1 keys misses its bucket, with probability
    (1 - 1/b)^(n-1); computed through log1p/expm1 so that large b loses no precision.
    """
    if n <= 1:
        return 0.0
    if b == 1:
        return float(n)
    return -n * math.expm1((n - 1) * math.log1p(-1.0 / b))


def _expected_occupied(n: int, b: int) -> float:
    """E[buckets holding at least one key]: b (1 - (1 - 1/b)^n)."""
    if b == 1:
        return float(n > 0)
    return -b * math.expm1(n * math.log1p(-1.0 / b))


def check_expected_collisions(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(n_keys, n_buckets)``: the expected number of colliding keys (chapter 8).

    ``n_keys`` distinct keys are hashed uniformly and independently into ``n_buckets`` buckets. A key
    *collides* when at least one other key lands in its bucket, so a bucket holding 3 keys
    contributes 3 colliding keys. ``fn`` must return the expected number of such keys, exactly (no
    approximation such as ``n**2 / n_buckets``), as a number.
    """
    rng = np.random.default_rng(seed)
    # typical sizes first, where the classic wrong formulas all differ, then the edge cases
    pairs = [(10, 100), (100, 10), (50, 50), (0, 10), (1, 10), (1, 1), (2, 1), (7, 1), (2, 2), (3, 2),
             (9_066, 9_066), (9_066, 1_133), (1_000, 1_000_000), (300_000, 3_000_000)]
    for _ in range(4):
        pairs.append((int(rng.integers(2, 5_000)), int(rng.integers(1, 20_000))))
    cases = [Case(f"n_keys={n:,}, n_buckets={b:,}", (n, b), np.float64(_expected_colliding(n, b)),
                  names=("n_keys", "n_buckets"), hint=_collision_hint(n, b)) for n, b in pairs]
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="no keys, one key, one bucket, more keys than buckets, large tables",
                        rtol=1e-6, atol=1e-9)


def _collision_hint(n, b):
    occupied = _expected_occupied(n, b)
    candidates = [
        (n - occupied, "n_keys minus the occupied buckets counts the keys *beyond the first* in each "
                       "bucket; a bucket holding 2 keys has 2 colliding keys, not 1"),
        (occupied, "that is the expected number of occupied buckets, b (1 - (1 - 1/b)^n), not of "
                   "colliding keys"),
        (n * (1 - (1 - 1 / b) ** n), "a key collides with one of the *other* n_keys - 1 keys: the exponent is "
                                     "n_keys - 1, not n_keys"),
        (n * (n - 1) / (2 * b), "n(n-1)/(2b) is the expected number of colliding *pairs*; a key can "
                                "belong to several pairs, and the question counts keys"),
        (n * (n - 1) / b, "n(n-1)/b is the union bound, an upper limit that is close only when "
                          "n_keys is much smaller than n_buckets; use the chance that a key is alone"),
        (n * (1 - (1 - 1 / b) ** (n - 1)) / b, "do not divide by the number of buckets: the answer is a "
                                               "number of keys"),
    ]

    def hint(got):
        value = float(np.asarray(got, dtype=np.float64).reshape(-1)[0]) if np.size(got) == 1 else None
        if value is None:
            return "return a single number"
        matches = [text for candidate, text in candidates
                   if math.isclose(value, candidate, rel_tol=1e-6, abs_tol=1e-9)]
        return matches[0] if len(matches) == 1 else None  # two formulas agree here: no guessing
    return hint


# --- padded batches -------------------------------------------------------------------------------

def _reference_pad(idx, offsets, padding_idx) -> np.ndarray:
    ends = np.r_[offsets[1:], len(idx)]
    lengths = ends - offsets
    width = int(lengths.max(initial=0))
    out = np.full((len(offsets), width), padding_idx, dtype=np.int64)
    for b, (start, end) in enumerate(zip(offsets, ends)):
        out[b, : end - start] = idx[start:end]
    return out


def check_pad_batch(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(indices, offsets, padding_idx)``: bags laid out as a padded batch (chapter 8).

    Bag ``b`` is ``indices[offsets[b]:offsets[b + 1]]``, the last one running to the end of
    ``indices`` (the layout of ``embedding_bag``). ``fn`` must return an integer array of shape
    ``(B, L)``, ``B = len(offsets)`` bags and ``L`` the length of the longest bag, with bag ``b``'s
    indices at the start of row ``b`` and ``padding_idx`` after them. Empty bags give rows of
    padding; if every bag is empty, ``L`` is 0.
    """
    rng = np.random.default_rng(seed)
    layouts = [([0], [2, 5, 1], 0), ([0, 2], [3, 1, 4, 1], 0), ([0, 3, 3, 4], [7, 2, 2, 5, 1, 6], 0),
               ([0, 0, 2], [4, 4], 9), ([0, 2, 5], [1, 2, 3, 4, 5], 9), ([0, 0, 0], [], 0),
               ([0, 1, 2, 3], [3, 8, 5], 0)]
    for _ in range(5):
        v, pad = int(rng.integers(3, 30)), int(rng.integers(0, 2))
        sizes = rng.integers(0, 7, size=int(rng.integers(1, 9)))
        pad_value = 0 if pad == 0 else v  # row 0 reserved, or one extra row at the end
        low = 1 if pad_value == 0 else 0
        idx = rng.integers(low, v, size=int(sizes.sum())).tolist()
        layouts.append(([0, *np.cumsum(sizes)[:-1].tolist()], idx, pad_value))
    cases = []
    for offsets, idx, pad in layouts:
        off, ids = np.asarray(offsets, dtype=np.int64), np.asarray(idx, dtype=np.int64)
        lengths = np.diff(np.r_[off, len(ids)])
        cases.append(Case(f"{len(off)} bags of lengths {lengths.tolist()}, padding_idx={pad}", (ids, off, pad),
                          _reference_pad(ids, off, pad), names=("indices", "offsets", "padding_idx"),
                          exact=True, hint=_pad_hint(ids, off, pad)))
    name = _harness.name_of(fn)
    _harness.require_callable(fn, name)
    recorded, outputs = _harness.recording(fn, name)  # the dtype is checked once the values are right
    result = _harness.run(name, recorded, cases, summary="empty bags first, in the middle and last, "
                          "all bags empty, padding_idx 0 or past the last row")
    if result:
        bad = next((o for o in outputs if _harness.to_numpy(o).dtype.kind not in "iu"), None)
        if bad is not None:
            dtype = _harness.to_numpy(bad).dtype
            return CheckResult(name, False, result.cases_run, result.cases_total,
                               f"✗ {name} returns the right numbers but as dtype {dtype}: a padded batch "
                               "holds row indices, so it must be an integer array (np.full(..., "
                               "dtype=np.int64))")
    return result


def _pad_hint(idx, off, pad):
    expected = _reference_pad(idx, off, pad)
    ends = np.r_[off[1:], len(idx)]

    def hint(got):
        if got.ndim != 2:
            return f"return a 2-D array, one row per bag: shape (number of bags, longest bag) = {expected.shape}"
        if got.shape[0] == len(off) - 1:
            return "one row per bag: offsets has one entry per bag, and the last bag runs to the end of indices"
        if got.shape[0] == len(off) and got.shape != expected.shape:
            return (f"the width must be the length of the longest bag ({expected.shape[1]}), "
                    f"not {got.shape[1]}")
        if got.shape != expected.shape:
            return None
        right = np.full_like(expected, pad)
        for b, (start, end) in enumerate(zip(off, ends)):
            if end > start:
                right[b, expected.shape[1] - (end - start):] = idx[start:end]
        if np.array_equal(got, right):
            return "the indices go first and the padding after them (pad at the end of each row)"
        zeros = np.where(expected == pad, 0, expected)
        if pad != 0 and np.array_equal(got, zeros):
            return f"fill with padding_idx ({pad}), not with 0: row 0 is a real category here"
        return None
    return hint


# --- vocabularies with a minimum count and an unknown row -----------------------------------------

def _reference_vocabulary(train_keys, keys, min_count) -> np.ndarray:
    names, counts = np.unique(np.asarray(train_keys).reshape(-1), return_counts=True)
    kept = names[counts >= min_count]
    keys = np.asarray(keys)
    flat = keys.reshape(-1)
    out = np.zeros(flat.shape, dtype=np.int64)
    if kept.size and flat.size:
        pos = np.minimum(np.searchsorted(kept, flat), kept.size - 1)
        found = kept[pos] == flat
        out[found] = pos[found] + 1
    return out.reshape(keys.shape)


def check_vocabulary(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(train_keys, keys, min_count)``: keys to table rows with an unknown row 0 (chapter 8).

    The vocabulary is built from ``train_keys``: a key is kept when it occurs at least ``min_count``
    times there, and the kept keys get rows ``1, 2, ...`` in sorted order (the order of
    ``np.unique``). Row 0 is reserved for everything else, rare or never seen. ``fn`` must return
    an integer array shaped like ``keys`` with each key's row.
    """
    rng = np.random.default_rng(seed)
    species = np.array(["aster", "buttercup", "daisy", "fireweed", "foxglove", "lavender", "lupin",
                        "poppy", "sunflower", "tulip", "yarrow", "zinnia"])
    cases = []

    def add(description, train_keys, keys, min_count):
        train_keys, keys = np.asarray(train_keys), np.asarray(keys)
        cases.append(Case(description, (train_keys, keys, min_count),
                          _reference_vocabulary(train_keys, keys, min_count),
                          names=("train_keys", "keys", "min_count"), exact=True,
                          hint=_vocabulary_hint(train_keys, keys, min_count)))

    add("every training key kept (min_count=1), one unseen key",
        ["daisy", "tulip", "daisy", "aster"], ["tulip", "daisy", "rose", "aster"], 1)
    add("min_count=2: keys seen once become unknown",
        ["daisy", "tulip", "daisy", "aster", "tulip", "tulip"], ["aster", "daisy", "tulip", "lily"], 2)
    add("a key seen exactly min_count times is kept",
        ["poppy", "lupin", "poppy", "lupin", "lupin"], ["lupin", "poppy"], 2)
    add("min_count larger than every count: all unknown", ["aster", "daisy"], ["aster", "daisy"], 3)
    add("no keys to encode", ["aster", "daisy"], np.array([], dtype="<U5"), 1)
    add("keys of shape (2, 3)", ["yarrow", "zinnia", "aster", "yarrow"],
        [["zinnia", "yarrow", "moss"], ["aster", "aster", "fern"]], 1)
    add("integer keys (raw movie ids)", [318, 1, 50, 318, 296, 1], [1, 2, 296, 318, 50], 2)
    for _ in range(4):
        train_keys = rng.choice(species[:9], size=int(rng.integers(5, 40)), p=None)
        keys = rng.choice(species, size=int(rng.integers(1, 12)))
        add(f"{train_keys.size} training keys, min_count from 1 to 4", train_keys, keys, int(rng.integers(1, 5)))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="unseen and rare keys, the min_count boundary, empty and 2-D keys, "
                        "integer keys")


def _vocabulary_hint(train_keys, keys, min_count):
    expected = _reference_vocabulary(train_keys, keys, min_count)

    def hint(got):
        if got.shape != expected.shape:
            return "return one row index per key, shaped like keys" if got.size == expected.size else None
        known = expected > 0
        if np.array_equal(got[known], expected[known] - 1):
            return "row 0 is reserved for unknown keys, so the kept keys are numbered from 1"
        if np.array_equal(got[known], expected[known]) and not np.array_equal(got[~known], expected[~known]):
            return "every unknown or rare key goes to the reserved row 0"
        if np.array_equal(got, _reference_vocabulary(train_keys, keys, min_count + 1)):
            return f"a key seen exactly min_count ({min_count}) times is kept: compare with >=, not >"
        if min_count > 1 and np.array_equal(got, _reference_vocabulary(train_keys, keys, 1)):
            return f"keys seen fewer than min_count ({min_count}) times in train_keys must become unknown (row 0)"
        return None
    return hint
