"""word2vec's data preparation, backend-neutral (NumPy): what turns a corpus into training examples
(chapter 11).

A corpus is word ids ``ids`` cut into sentences by ``sentence_offsets`` (sentence ``s`` is
``ids[sentence_offsets[s]:sentence_offsets[s + 1]]``, the last one running to the end; see
:class:`embedlib.datasets.TextCorpus`). Chapter 11 follows the choices of the original C code
(Mikolov et al. 2013, ``word2vec.c``):

- :func:`keep_probabilities` and :func:`subsample`: frequent words are dropped at random, each
  occurrence kept with a probability that falls with the word's frequency;
- :func:`skipgram_pairs` and :func:`cbow_examples`: each center word draws its own window
  ``b`` in ``1..window`` (so near words are used more often than far ones), and a window never
  reaches across a sentence boundary;
- :class:`NegativeSampler`: negatives drawn from the unigram distribution raised to the power 3/4.

The losses that train on these examples are in both backends (``negative_sampling_loss``).
"""
from __future__ import annotations

import numpy as np

from embedlib import _checks


def keep_probabilities(counts, sample: float = 1e-3) -> np.ndarray:
    """The probability that subsampling keeps one occurrence of each word (chapter 11), float64.

    The formula of ``word2vec.c`` (not the ``sqrt(t / f)`` of the paper): with ``f = count / total``
    and ``total = counts.sum()``,

        keep = (sqrt(f / sample) + 1) * sample / f,   clipped to 1,

    so a word whose frequency is ``sample`` or less is nearly always kept, and one ten times as
    frequent as ``sample`` about 42% of the time. ``sample=0`` keeps everything; a count of 0 gets 1.
    """
    c = _counts(counts)
    if not (isinstance(sample, (int, float)) and not isinstance(sample, bool) and sample >= 0):
        raise ValueError(f"sample must be a non-negative number, got {sample!r}")
    c = c.astype(np.float64)
    threshold = sample * c.sum()
    if threshold == 0:
        return np.ones_like(c)
    with np.errstate(divide="ignore"):
        keep = (np.sqrt(c / threshold) + 1) * threshold / c
    return np.minimum(keep, 1.0)


def subsample(ids, sentence_offsets, keep_prob, rng) -> tuple[np.ndarray, np.ndarray]:
    """Drop each occurrence of word ``w`` with probability ``1 - keep_prob[w]`` (chapter 11).

    Returns the new ``(ids, sentence_offsets)``, with as many sentences as before (a sentence may
    become empty). ``rng``: a ``numpy.random.Generator`` or a seed. The words around a dropped one
    become neighbours, which is the point: windows reach further past frequent words.
    """
    ids, offsets = _corpus(ids, sentence_offsets)
    p = np.asarray(keep_prob, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"keep_prob must be 1-D (one probability per word), got shape {p.shape}")
    if ids.size and ids.max() >= len(p):
        raise IndexError(f"word id {int(ids.max())} out of range for keep_prob of {len(p)} words")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("keep_prob must hold probabilities in [0, 1]")
    keep = _generator(rng).random(len(ids)) < p[ids]
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    return ids[keep], kept_before[offsets].astype(np.int64)


def skipgram_pairs(ids, sentence_offsets, window: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Skip-gram's (center, context) pairs of word ids, int64 (chapter 11).

    Every position ``i`` draws ``b`` uniformly in ``1..window``; its pairs are ``(ids[i], ids[j])``
    for every other position ``j`` of the same sentence with ``|i - j| <= b``. So a context word at
    distance ``d`` is used with probability ``(window - d + 1) / window``. Pairs come in corpus order:
    by center position, then context position. ``rng``: a ``numpy.random.Generator`` or a seed; the
    same seed gives the same pairs, and the same windows as :func:`cbow_examples`.
    """
    ids, offsets = _corpus(ids, sentence_offsets)
    centers, contexts = _window_positions(offsets, len(ids), window, rng)
    return ids[centers], ids[contexts]


def cbow_examples(ids, sentence_offsets, window: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CBOW's examples: for each center word, the bag of its context words (chapter 11).

    Returns ``(context_ids, offsets, centers)`` in ``embedding_bag``'s input format: example ``k``
    predicts ``centers[k]`` from the bag ``context_ids[offsets[k]:offsets[k + 1]]`` (the last one
    running to the end), its words in sentence order. The windows are those of
    :func:`skipgram_pairs` for the same ``rng``; a center with no context (a one-word sentence) is
    skipped, so no bag is empty.
    """
    ids, offsets = _corpus(ids, sentence_offsets)
    centers, contexts = _window_positions(offsets, len(ids), window, rng)
    starts = np.flatnonzero(np.r_[True, centers[1:] != centers[:-1]]) if len(centers) else np.zeros(0, np.int64)
    return ids[contexts], starts.astype(np.int64), ids[centers[starts]]


class NegativeSampler:
    """Draws negative words from the unigram distribution raised to ``power`` (chapter 11).

    ``probabilities[w] = counts[w] ** power / sum(counts ** power)``: with word2vec's 0.75, rare
    words are drawn more often than their frequency and frequent ones less. ``seed``: an int, a
    ``numpy.random.Generator`` or None (fresh entropy); the same seed gives the same draws.
    Sampling inverts the cumulative distribution with a binary search (``np.searchsorted``).
    """

    def __init__(self, counts, power: float = 0.75, seed=None):
        c = _counts(counts).astype(np.float64)
        if not (isinstance(power, (int, float)) and not isinstance(power, bool) and np.isfinite(power)):
            raise ValueError(f"power must be a finite number, got {power!r}")
        weights = np.where(c > 0, c, 0.0) ** power  # a count of 0 is never drawn, whatever the power
        if len(c) == 0 or weights.sum() == 0:
            raise ValueError("counts must have at least one positive count")
        self.power = float(power)
        self.probabilities = weights / weights.sum()
        self._cumulative = np.cumsum(weights)
        self._rng = _generator(seed)

    def __len__(self) -> int:
        return len(self.probabilities)

    def sample(self, shape) -> np.ndarray:
        """Word ids of the given shape (an int or a tuple), int64, drawn independently."""
        u = self._rng.random(shape) * self._cumulative[-1]
        out = np.searchsorted(self._cumulative, u, side="right")
        return np.minimum(out, len(self._cumulative) - 1).astype(np.int64)


def negative_sampling_shapes(inputs, outputs, negatives) -> None:
    """Check the shapes given to ``negative_sampling_loss`` in either backend (chapter 11): inputs
    (B, D) with B >= 1, outputs (B, D), negatives (B, K, D); ``ValueError`` saying which does not fit."""
    x, o, n = tuple(inputs), tuple(outputs), tuple(negatives)
    if len(x) != 2 or x[0] == 0:
        raise ValueError(f"inputs must have shape (B, D) with B >= 1, got {x}")
    if o != x:
        raise ValueError(f"outputs must have the shape of inputs {x}, got {o}")
    if len(n) != 3 or n[0] != x[0] or n[2] != x[1]:
        raise ValueError(f"negatives must have shape (B, K, D) = ({x[0]}, K, {x[1]}), got {n}")


# --------------------------------------------------------------------------------------------------
def _window_positions(offsets: np.ndarray, n: int, window: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(center, context) positions of every pair, sorted by center then context."""
    window = _checks.positive(window, "window")
    rng = _generator(rng)
    b = rng.integers(1, window + 1, size=n)
    lengths = np.diff(np.append(offsets, n))
    sentence = np.repeat(np.arange(len(offsets)), lengths)
    start = offsets[sentence] if n else np.zeros(0, np.int64)
    end = start + lengths[sentence] if n else np.zeros(0, np.int64)
    pos = np.arange(n)
    centers, contexts = [], []
    for d in range(1, window + 1):
        near = b >= d
        left = near & (pos - d >= start)
        right = near & (pos + d < end)
        centers += [pos[left], pos[right]]
        contexts += [pos[left] - d, pos[right] + d]
    c, x = np.concatenate(centers), np.concatenate(contexts)
    order = np.lexsort((x, c))
    return c[order].astype(np.int64), x[order].astype(np.int64)


def _corpus(ids, sentence_offsets) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``ids`` (1-D, non-negative integers) and offsets (start at 0, non-decreasing, in range)."""
    ids = np.asarray(ids)
    offsets = np.asarray(sentence_offsets)
    for name, a in (("ids", ids), ("sentence_offsets", offsets)):
        if a.size == 0 and a.dtype == np.float64:
            a = a.astype(np.int64)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    ids, offsets = ids.astype(np.int64, copy=False), offsets.astype(np.int64).reshape(-1)
    if ids.size and ids.min() < 0:
        raise IndexError(f"word ids must be non-negative, got {int(ids.min())}")
    if len(offsets) == 0:
        if len(ids):
            raise ValueError("sentence_offsets is empty but ids is not: every word must be in a sentence")
        return ids, offsets
    if offsets[0] != 0:
        raise ValueError(f"sentence_offsets must start at 0, got {int(offsets[0])}")
    if np.any(np.diff(offsets) < 0):
        raise ValueError("sentence_offsets must not decrease")
    if offsets[-1] > len(ids):
        raise ValueError(f"sentence_offsets run past the end of ids: {int(offsets[-1])} > {len(ids)}")
    return ids, offsets


def _counts(counts) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D (one count per word), got shape {c.shape}")
    if c.dtype.kind not in "iuf":
        raise TypeError(f"counts must be numbers, got dtype {c.dtype}")
    if c.size and (not np.all(np.isfinite(c)) or c.min() < 0):
        raise ValueError("counts must be finite and non-negative")
    return c


def _generator(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
