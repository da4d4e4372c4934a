"""word2vec (chapter 11): the data preparation of embedlib.word2vec and the negative-sampling loss of
both backends, checked against their definitions (naive float64 loops, torch's autograd, finite
differences) and against each other."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from conftest import NUMPY, TORCH
from embedlib import word2vec as w2v


# --------------------------------------------------------------------------------------------------
# negative_sampling_loss and its backward
# --------------------------------------------------------------------------------------------------
@st.composite
def loss_cases(draw, dtype=np.float64, scale=None):
    """(inputs (B, D), outputs (B, D), negatives (B, K, D)), K = 0 included."""
    b, k, d = draw(st.integers(1, 6)), draw(st.integers(0, 5)), draw(st.integers(1, 6))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0])) if scale is None else scale
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return tuple((scale * rng.standard_normal(s)).astype(dtype) for s in ((b, d), (b, d), (b, k, d)))


def ref_loss(x, o, n) -> float:
    """The definition, one example and one negative at a time, in float64 Python."""
    total = 0.0
    for b in range(x.shape[0]):
        s = float(np.dot(x[b].astype(np.float64), o[b].astype(np.float64)))
        total -= math.log(1 / (1 + math.exp(-s)))
        for k in range(n.shape[1]):
            t = float(np.dot(n[b, k].astype(np.float64), x[b].astype(np.float64)))
            total -= math.log(1 / (1 + math.exp(t)))
    return total / x.shape[0]


def torch_formula_loss(x, o, n) -> torch.Tensor:
    """The loss as torch users write it, with F.logsigmoid, independently of embedlib."""
    return -(F.logsigmoid((x * o).sum(1)) + F.logsigmoid(-torch.bmm(n, x[:, :, None])[..., 0]).sum(1)).mean()


def autograd(x, o, n):
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, o, n)]
    torch_formula_loss(*ts).backward()
    return [t.grad.numpy() for t in ts]


@given(loss_cases())
def test_loss_matches_the_definition(case):
    expected = ref_loss(*case)
    for be in (NUMPY, TORCH):
        got = be.el.negative_sampling_loss(*(be.arr(a) for a in case))
        np.testing.assert_allclose(float(got), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(torch_formula_loss(*(torch.from_numpy(a) for a in case))), expected,
                               rtol=1e-12, atol=1e-12)


@given(loss_cases(dtype=np.float32))
def test_loss_float32_keeps_its_dtype_and_matches_float64(case):
    expected = ref_loss(*case)
    np_loss = NUMPY.el.negative_sampling_loss(*case)
    torch_loss = TORCH.el.negative_sampling_loss(*(torch.from_numpy(a) for a in case))
    assert np_loss.dtype == np.float32 and np.ndim(np_loss) == 0
    assert torch_loss.dtype == torch.float32 and torch_loss.ndim == 0
    for got in (np_loss, torch_loss):
        np.testing.assert_allclose(float(got), expected, rtol=1e-5, atol=1e-5)


def test_loss_is_stable_for_large_scores():
    """Scores of +-1000 would overflow exp: the loss stays finite and exact (softplus(1000) = 1000)."""
    x = np.array([[10.0, 0.0]])
    o = np.array([[-100.0, 0.0]])      # s = -1000: the true word scored very wrong
    n = np.array([[[100.0, 0.0], [-100.0, 0.0]]])  # t = 1000 (very wrong) and -1000 (right)
    for be in (NUMPY, TORCH):
        for dtype in (np.float32, np.float64):
            args = [be.arr(a.astype(dtype)) for a in (x, o, n)]
            assert float(be.el.negative_sampling_loss(*args)) == pytest.approx(2000.0, rel=1e-6)
            grads = [be.np(g) for g in be.el.negative_sampling_loss_backward(*args)]
            assert all(np.isfinite(g).all() for g in grads)
            np.testing.assert_allclose(grads[1], [[-10.0, 0.0]], rtol=1e-6)  # sigmoid(s) - 1 = -1


@given(loss_cases())
def test_backward_matches_autograd(case):
    expected = autograd(*case)
    for be in (NUMPY, TORCH):
        got = be.el.negative_sampling_loss_backward(*(be.arr(a) for a in case))
        for g, e in zip(got, expected):
            assert be.is_native(g) and be.np(g).shape == e.shape
            np.testing.assert_allclose(be.np(g), e, rtol=1e-10, atol=1e-12)


def test_torch_loss_autograd_matches_its_backward_and_gradcheck():
    rng = np.random.default_rng(0)
    x, o, n = (torch.tensor(rng.standard_normal(s), requires_grad=True) for s in ((4, 3), (4, 3), (4, 2, 3)))
    TORCH.el.negative_sampling_loss(x, o, n).backward()
    for auto, by_hand in zip((x.grad, o.grad, n.grad), TORCH.el.negative_sampling_loss_backward(x, o, n)):
        torch.testing.assert_close(auto, by_hand, rtol=1e-12, atol=1e-14)
        assert not by_hand.requires_grad
    assert torch.autograd.gradcheck(TORCH.el.negative_sampling_loss, (x.detach().requires_grad_(),
                                                                      o.detach().requires_grad_(),
                                                                      n.detach().requires_grad_()))


def test_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(s) for s in ((3, 4), (3, 4), (3, 2, 4))]
    grads = NUMPY.el.negative_sampling_loss_backward(*args)
    eps = 1e-6
    for a, g in zip(args, grads):
        numeric = np.zeros_like(a)
        for pos in np.ndindex(a.shape):
            keep = a[pos]
            a[pos] = keep + eps
            up = NUMPY.el.negative_sampling_loss(*args)
            a[pos] = keep - eps
            down = NUMPY.el.negative_sampling_loss(*args)
            a[pos] = keep
            numeric[pos] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


@given(loss_cases(dtype=np.float32))
def test_backends_agree_in_float32(case):
    np_grads = NUMPY.el.negative_sampling_loss_backward(*case)
    torch_grads = TORCH.el.negative_sampling_loss_backward(*(torch.from_numpy(a) for a in case))
    for a, b in zip(np_grads, torch_grads):
        assert a.dtype == np.float32 and b.dtype == torch.float32
        np.testing.assert_allclose(a, b.numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("shapes, message", [
    (((0, 3), (0, 3), (0, 2, 3)), "B >= 1"),
    (((3,), (3,), (1, 2, 3)), r"inputs must have shape \(B, D\)"),
    (((2, 3), (2, 4), (2, 1, 3)), "outputs must have the shape of inputs"),
    (((2, 3), (2, 3), (2, 3)), r"negatives must have shape \(B, K, D\) = \(2, K, 3\)"),
    (((2, 3), (2, 3), (1, 1, 3)), "negatives must have shape"),
    (((2, 3), (2, 3), (2, 1, 4)), "negatives must have shape"),
])
def test_bad_shapes_raise_the_same_error_in_both_backends(backend, shapes, message):
    args = [backend.arr(np.zeros(s)) for s in shapes]
    for f in (backend.el.negative_sampling_loss, backend.el.negative_sampling_loss_backward):
        with pytest.raises(ValueError, match=message):
            f(*args)


def test_non_float_or_mixed_dtypes_are_type_errors(backend):
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="outputs must hold floating-point"):
        backend.el.negative_sampling_loss(backend.arr(x), backend.arr(np.zeros((2, 3), np.int64)),
                                          backend.arr(np.zeros((2, 1, 3))))
    with pytest.raises(TypeError, match="one dtype"):
        backend.el.negative_sampling_loss(backend.arr(x), backend.arr(x.astype(np.float32)),
                                          backend.arr(np.zeros((2, 1, 3))))


# --------------------------------------------------------------------------------------------------
# keep_probabilities and subsample
# --------------------------------------------------------------------------------------------------
def test_keep_probabilities_is_word2vec_c_formula():
    counts = np.array([100_000, 1_000, 10, 0, 1])
    total = counts.sum()
    sample = 1e-3
    expected = []
    for c in counts:
        if c == 0:
            expected.append(1.0)
            continue
        ran = (math.sqrt(c / (sample * total)) + 1) * (sample * total) / c  # word2vec.c, InitNet/TrainModelThread
        expected.append(min(ran, 1.0))
    np.testing.assert_allclose(w2v.keep_probabilities(counts, sample), expected, rtol=1e-14)
    assert w2v.keep_probabilities(counts, sample)[0] < 0.2 and w2v.keep_probabilities(counts)[2] == 1.0
    # a word ten times as frequent as `sample` is kept (sqrt(10) + 1) / 10 of the time
    assert w2v.keep_probabilities([10, 990], sample=1e-3)[0] == pytest.approx((math.sqrt(10) + 1) / 10)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=20), st.sampled_from([0.0, 1e-5, 1e-3, 0.1]))
def test_keep_probabilities_are_probabilities_decreasing_with_count(counts, sample):
    p = w2v.keep_probabilities(counts, sample)
    assert p.dtype == np.float64 and ((p > 0) & (p <= 1)).all()
    order = np.argsort(counts, kind="stable")
    assert (np.diff(p[order]) <= 1e-15).all()
    if sample == 0:
        assert (p == 1).all()


@pytest.mark.parametrize("bad, error", [([[1, 2]], ValueError), (["a"], TypeError), ([-1, 2], ValueError)])
def test_keep_probabilities_rejects_bad_counts(bad, error):
    with pytest.raises(error):
        w2v.keep_probabilities(bad)
    with pytest.raises(ValueError, match="sample"):
        w2v.keep_probabilities([1, 2], sample=-1)


def test_subsample_keeps_each_word_at_its_rate_and_the_sentences():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, 100_000)
    offsets = np.array([0, 10, 10, 5000, 99_999])
    p = np.array([1.0, 0.5, 0.1, 0.0])
    new_ids, new_offsets = w2v.subsample(ids, offsets, p, rng=7)
    assert new_ids.dtype == np.int64 and new_offsets.dtype == np.int64 and len(new_offsets) == len(offsets)
    for w in range(4):
        rate = (new_ids == w).sum() / (ids == w).sum()
        assert abs(rate - p[w]) < 0.01
    # each new sentence is its old sentence with some words dropped, in order
    bounds = list(offsets) + [len(ids)]
    new_bounds = list(new_offsets) + [len(new_ids)]
    for s in range(len(offsets)):
        old, new = ids[bounds[s]:bounds[s + 1]], new_ids[new_bounds[s]:new_bounds[s + 1]]
        assert _is_subsequence(new, old)
    again = w2v.subsample(ids, offsets, p, rng=np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(again, (new_ids, new_offsets)))


def _is_subsequence(small, big) -> bool:
    it = iter(big.tolist())
    return all(any(x == y for y in it) for x in small.tolist())


def test_subsample_rejects_bad_input():
    with pytest.raises(IndexError, match="out of range"):
        w2v.subsample([0, 5], [0], [1.0, 1.0], rng=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        w2v.subsample([0, 1], [0], [1.0, 1.5], rng=0)


# --------------------------------------------------------------------------------------------------
# skipgram_pairs and cbow_examples
# --------------------------------------------------------------------------------------------------
@st.composite
def corpora(draw):
    """(sentence lengths, window, seed): empty and one-word sentences included."""
    lengths = draw(st.lists(st.integers(0, 12), min_size=0, max_size=6))
    return lengths, draw(st.integers(1, 5)), draw(st.integers(0, 2**32 - 1))


def _layout(lengths):
    """ids = positions (so each pair says where it came from) and offsets."""
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if lengths else np.zeros(0, np.int64)
    sentence = np.repeat(np.arange(len(lengths)), lengths)
    return np.arange(sum(lengths)), offsets, sentence


@given(corpora())
def test_skipgram_windows_are_dynamic_and_stay_in_their_sentence(corpus):
    lengths, window, seed = corpus
    ids, offsets, sentence = _layout(lengths)
    centers, contexts = w2v.skipgram_pairs(ids, offsets, window, rng=seed)
    assert centers.dtype == np.int64 and contexts.dtype == np.int64
    assert (sentence[centers] == sentence[contexts]).all() and (centers != contexts).all()
    assert (np.abs(centers - contexts) <= window).all()
    pairs = list(zip(centers.tolist(), contexts.tolist()))
    assert pairs == sorted(pairs)  # corpus order: by center, then context
    for i in ids:
        s = sentence[i]
        start = offsets[s]
        end = start + lengths[s]
        got = contexts[centers == i].tolist()
        if lengths[s] == 1:
            assert got == []
            continue
        # the contexts are every position of the sentence within some b in 1..window of i
        fits = [b for b in range(1, window + 1)
                if got == [j for j in range(max(start, i - b), min(end, i + b + 1)) if j != i]]
        assert fits, (i, got)


@given(corpora())
def test_cbow_bags_are_the_skipgram_windows(corpus):
    lengths, window, seed = corpus
    ids, offsets, _ = _layout(lengths)
    centers, contexts = w2v.skipgram_pairs(ids, offsets, window, rng=seed)
    bag_ids, bag_offsets, bag_centers = w2v.cbow_examples(ids, offsets, window, rng=seed)
    assert bag_ids.dtype == bag_offsets.dtype == bag_centers.dtype == np.int64
    ends = np.append(bag_offsets[1:], len(bag_ids))
    assert (ends > bag_offsets).all()  # no empty bag
    assert bag_centers.tolist() == sorted(set(centers.tolist()))
    for c, s, e in zip(bag_centers, bag_offsets, ends):
        assert bag_ids[s:e].tolist() == contexts[centers == c].tolist()
    assert len(bag_centers) == sum(n for n in lengths if n > 1)  # only one-word sentences are skipped


def test_pairs_are_deterministic_for_a_seed_and_vary_without():
    ids = np.random.default_rng(0).integers(0, 50, 2000)
    offsets = np.arange(0, 2000, 40)
    a = w2v.skipgram_pairs(ids, offsets, 5, rng=3)
    b = w2v.skipgram_pairs(ids, offsets, 5, rng=np.random.default_rng(3))
    c = w2v.skipgram_pairs(ids, offsets, 5, rng=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))


def test_window_sizes_are_uniform_and_distances_weighted():
    """b ~ uniform{1..window}: an interior center has 2b contexts, and distance d is used with
    probability (window - d + 1) / window."""
    window, n = 5, 60_000
    ids = np.arange(n)
    centers, contexts = w2v.skipgram_pairs(ids, [0], window, rng=11)
    per_center = np.bincount(centers, minlength=n)[window:-window]
    b = per_center // 2
    assert (per_center % 2 == 0).all() and set(b.tolist()) <= set(range(1, window + 1))
    freq = np.bincount(b, minlength=window + 1)[1:] / len(b)
    np.testing.assert_allclose(freq, 1 / window, atol=0.01)
    inner = (centers >= window) & (centers < n - window)
    dist = np.abs(centers - contexts)[inner]
    by_distance = np.bincount(dist, minlength=window + 1)[1:] / (2 * len(b))
    np.testing.assert_allclose(by_distance, [(window - d + 1) / window for d in range(1, window + 1)], atol=0.01)


@pytest.mark.parametrize("ids, offsets, error, message", [
    ([0, 1, 2], [1], ValueError, "start at 0"),
    ([0, 1, 2], [0, 2, 1], ValueError, "must not decrease"),
    ([0, 1, 2], [0, 4], ValueError, "past the end"),
    ([0, 1, 2], [], ValueError, "every word must be in a sentence"),
    ([0.0, 1.0], [0], TypeError, "ids must be integers"),
    ([0, 1], [0.0], TypeError, "sentence_offsets must be integers"),
    ([[0, 1]], [0], ValueError, "1-D"),
    ([0, -1], [0], IndexError, "non-negative"),
])
def test_bad_corpora_are_refused(ids, offsets, error, message):
    for f in (w2v.skipgram_pairs, w2v.cbow_examples):
        with pytest.raises(error, match=message):
            f(ids, offsets, 2, rng=0)
    with pytest.raises(ValueError, match="window must be positive"):
        w2v.skipgram_pairs([0, 1], [0], 0, rng=0)


def test_empty_corpus_gives_no_pairs():
    for ids, offsets in (([], []), ([], [0, 0])):
        c, x = w2v.skipgram_pairs(ids, offsets, 3, rng=0)
        assert c.shape == x.shape == (0,) and c.dtype == np.int64
        bag, off, cen = w2v.cbow_examples(ids, offsets, 3, rng=0)
        assert bag.shape == off.shape == cen.shape == (0,)


# --------------------------------------------------------------------------------------------------
# NegativeSampler
# --------------------------------------------------------------------------------------------------
def test_negative_sampler_draws_unigram_to_the_three_quarters():
    counts = np.array([5000, 1000, 200, 50, 10, 1, 0])
    sampler = w2v.NegativeSampler(counts, seed=0)
    expected = np.where(counts > 0, counts, 0) ** 0.75 / (counts ** 0.75).sum()
    np.testing.assert_allclose(sampler.probabilities, expected, rtol=1e-14)
    draws = sampler.sample((400, 500))
    assert draws.shape == (400, 500) and draws.dtype == np.int64
    freq = np.bincount(draws.ravel(), minlength=len(counts)) / draws.size
    sigma = np.sqrt(expected * (1 - expected) / draws.size)
    assert (np.abs(freq - expected) <= 5 * sigma + 1e-12).all(), (freq, expected)
    assert freq[-1] == 0  # a word never seen is never drawn


def test_negative_sampler_power_and_seed():
    counts = [9, 1]
    np.testing.assert_allclose(w2v.NegativeSampler(counts, power=1.0).probabilities, [0.9, 0.1])
    np.testing.assert_allclose(w2v.NegativeSampler(counts, power=0.0).probabilities, [0.5, 0.5])
    a = w2v.NegativeSampler(counts, seed=5).sample(100)
    b = w2v.NegativeSampler(counts, seed=np.random.default_rng(5)).sample(100)
    assert a.shape == (100,) and np.array_equal(a, b)
    assert len(w2v.NegativeSampler(counts)) == 2


@pytest.mark.parametrize("counts", [[], [0, 0], [[1, 2]], [-1, 3]])
def test_negative_sampler_rejects_bad_counts(counts):
    with pytest.raises(ValueError):
        w2v.NegativeSampler(counts)
