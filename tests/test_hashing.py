"""hash_bucket (the hashing trick, chapter 8): stable across processes, pinned, evenly spread."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import NUMPY, ROOT, TORCH

# Computed once (embedlib 0.1.0) and pinned: a change here means every hashed model's rows move.
PINNED = [
    (["fireweed", "yarrow", "", "Épilobe", "a" * 100], 1000, 0, [413, 891, 43, 5, 20]),
    ([b"fireweed", b"\x00\xff"], 1000, 0, [413, 997]),
    (["fireweed", "yarrow"], 2**62, 7, [1179314077278456704, 4576579124400389590]),
    ([0, 1, 2, -1, 2**63 - 1, -(2**63), 123456789], 1000, 0, [55, 430, 857, 696, 104, 69, 130]),
    (np.array([0, 1, 2**64 - 1], dtype=np.uint64), 2**40, 3, [672542066839, 1023853728179, 194368619974]),
]


def _np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("keys,num_buckets,seed,expected", PINNED)
def test_pinned_values(backend, keys, num_buckets, seed, expected):
    out = backend.el.hash_bucket(keys, num_buckets, seed=seed)
    assert backend.is_native(out)
    assert _np(out).dtype == np.int64
    assert _np(out).tolist() == expected


# A plain-Python restatement of the documented hash (64-bit BLAKE2b keyed by the seed for strings and
# bytes; SplitMix64 of key XOR SplitMix64(seed) for integers; then modulo). It checks the vectorised
# uint64 arithmetic against Python's exact integers on many keys, not just the pinned ones.
M = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def _ref_int(key: int, n: int, seed: int) -> int:
    return _splitmix64((key & M) ^ _splitmix64(seed)) % n


def _ref_str(key, n: int, seed: int) -> int:
    data = key.encode("utf-8") if isinstance(key, str) else key
    digest = hashlib.blake2b(data, digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") % n


def test_integer_keys_match_exact_integer_arithmetic(backend):
    rng = np.random.default_rng(0)
    keys = np.concatenate([rng.integers(-(2**63), 2**63 - 1, size=300, dtype=np.int64),
                           np.arange(-50, 50, dtype=np.int64)])
    for n, seed in ((97, 0), (2**33 + 1, 12345)):
        out = _np(backend.el.hash_bucket(backend.arr(keys), n, seed=seed))
        assert out.tolist() == [_ref_int(int(k), n, seed) for k in keys]


def test_string_keys_match_keyed_blake2b(backend):
    keys = [f"movie-{i}" for i in range(200)] + ["", "ü", "🌸 fireweed"]
    for n, seed in ((1000, 0), (7, 99)):
        out = _np(backend.el.hash_bucket(keys, n, seed=seed))
        assert out.tolist() == [_ref_str(k, n, seed) for k in keys]


def test_same_buckets_in_a_fresh_process_with_another_hash_seed():
    """Python's own hash() of a str changes with PYTHONHASHSEED; hash_bucket must not."""
    keys = ["fireweed", "yarrow", "Chamaenerion angustifolium", "x"]
    code = (
        "import json, sys; from embedlib import numpy as el; "
        f"keys = {keys!r}; "
        "print(json.dumps([el.hash_bucket(keys, 1000).tolist(), el.hash_bucket([3, 10**12], 1000).tolist(),"
        " [hash(k) for k in keys]]))"
    )
    results = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    (strs1, ints1, py1), (strs2, ints2, py2) = results
    assert py1 != py2  # the subprocesses really hash strings differently...
    assert strs1 == strs2 == NUMPY.el.hash_bucket(keys, 1000).tolist()  # ...and hash_bucket does not
    assert ints1 == ints2 == NUMPY.el.hash_bucket([3, 10**12], 1000).tolist()


def _chi_square(buckets: np.ndarray, k: int) -> float:
    counts = np.bincount(buckets, minlength=k)
    expected = len(buckets) / k
    return float(((counts - expected) ** 2 / expected).sum())


# Under uniform hashing the statistic is chi-square with k - 1 degrees of freedom: mean k - 1,
# variance 2(k - 1). Six standard deviations above the mean is a bound a good hash essentially never
# crosses, while a bad one (e.g. key % k on strided keys, or a constant) is far beyond it.
K = 100
THRESHOLD = (K - 1) + 6 * math.sqrt(2 * (K - 1))


@pytest.mark.parametrize("kind", ["strings", "consecutive integers", "strided integers"])
def test_keys_spread_evenly_over_buckets(kind):
    if kind == "strings":
        keys = [f"user_{i}" for i in range(100_000)]
    elif kind == "consecutive integers":
        keys = np.arange(100_000, dtype=np.int64)
    else:
        keys = np.arange(0, 100_000 * K, K, dtype=np.int64)  # all 0 mod K: a plain modulo would fail
    buckets = NUMPY.el.hash_bucket(keys, K)
    assert buckets.min() >= 0 and buckets.max() < K
    stat = _chi_square(buckets, K)
    assert stat < THRESHOLD, f"chi-square {stat:.1f} over {K} buckets exceeds {THRESHOLD:.1f}"


def test_seed_changes_buckets(backend):
    keys = [f"k{i}" for i in range(2000)]
    a = _np(backend.el.hash_bucket(keys, 100, seed=0))
    b = _np(backend.el.hash_bucket(keys, 100, seed=1))
    assert np.mean(a == b) < 0.05  # independent assignments agree on about 1 key in 100
    ints = np.arange(2000)
    a = _np(backend.el.hash_bucket(backend.arr(ints), 100, seed=0))
    b = _np(backend.el.hash_bucket(backend.arr(ints), 100, seed=1))
    assert np.mean(a == b) < 0.05
    assert np.array_equal(a, _np(backend.el.hash_bucket(backend.arr(ints), 100, seed=0)))  # deterministic


def test_backends_agree():
    keys = [f"genre {i}" for i in range(500)]
    np.testing.assert_array_equal(NUMPY.el.hash_bucket(keys, 37, seed=5), TORCH.el.hash_bucket(keys, 37, seed=5))
    ints = np.arange(-250, 250, dtype=np.int64)
    np.testing.assert_array_equal(NUMPY.el.hash_bucket(ints, 37, seed=5),
                                  TORCH.el.hash_bucket(torch.from_numpy(ints), 37, seed=5).numpy())


def test_shapes(backend):
    scalar = backend.el.hash_bucket("fireweed", 10)
    assert tuple(scalar.shape) == () and int(scalar) == _ref_str("fireweed", 10, 0)
    assert tuple(backend.el.hash_bucket(7, 10).shape) == ()
    grid = backend.el.hash_bucket([["a", "b", "c"], ["d", "e", "f"]], 10)
    assert tuple(grid.shape) == (2, 3)
    assert tuple(backend.el.hash_bucket(backend.arr(np.arange(12).reshape(3, 4)), 10).shape) == (3, 4)
    assert tuple(backend.el.hash_bucket(np.array(["x", "y"]), 10).shape) == (2,)  # NumPy string arrays


def test_one_bucket_and_range(backend):
    assert (_np(backend.el.hash_bucket([f"k{i}" for i in range(50)], 1)) == 0).all()
    out = _np(backend.el.hash_bucket(np.arange(10_000), 7))
    assert out.min() == 0 and out.max() == 6


def test_integer_value_not_dtype_decides_the_bucket(backend):
    """The same integer gives the same bucket whatever container or dtype carries it."""
    expected = _np(backend.el.hash_bucket([1, 2, 300], 1000)).tolist()
    for dtype in (np.int16, np.int32, np.int64, np.uint16, np.uint64):
        assert _np(backend.el.hash_bucket(np.array([1, 2, 300], dtype=dtype), 1000)).tolist() == expected
    assert _np(backend.el.hash_bucket(np.array([-1], dtype=np.int8), 1000)).tolist() == \
        _np(backend.el.hash_bucket([-1], 1000)).tolist()


@pytest.mark.parametrize("keys", [[1.5, 2.0], np.array([0.5]), [True, False], np.array([True]), ["a", 1],
                                  [b"a", 2], 3.0, True, [None]])
def test_bad_keys_raise_type_error(backend, keys):
    with pytest.raises(TypeError):
        backend.el.hash_bucket(keys, 10)


def test_torch_float_and_bool_tensors_raise_type_error():
    for keys in (torch.tensor([1.0]), torch.tensor([True])):
        with pytest.raises(TypeError):
            TORCH.el.hash_bucket(keys, 10)


@pytest.mark.parametrize("num_buckets", [0, -3])
def test_bad_num_buckets(backend, num_buckets):
    with pytest.raises(ValueError, match="num_buckets"):
        backend.el.hash_bucket(["a"], num_buckets)


@pytest.mark.parametrize("num_buckets", [2.5, "10", None])
def test_non_integer_num_buckets(backend, num_buckets):
    with pytest.raises((TypeError, ValueError), match="num_buckets"):
        backend.el.hash_bucket(["a"], num_buckets)


@pytest.mark.parametrize("key", [2**64, 2**64 + 5, -(2**63) - 1])
def test_integer_keys_beyond_64_bits_are_refused(backend, key):
    # wrapping them would put 2**64 + 5 in the bucket of 5, silently
    with pytest.raises(ValueError, match=str(key)):
        backend.el.hash_bucket([1, key], 10)


def test_seed_beyond_64_bits_is_refused(backend):
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        backend.el.hash_bucket(["fireweed"], 10, seed=2**64)
