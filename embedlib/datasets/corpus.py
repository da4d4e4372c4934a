"""A tokenised text as word ids, the input of word2vec (chapter 11).

:func:`tokenize` is the book's one tokenisation rule; :class:`TextCorpus` holds a corpus the way
word2vec reads it: a vocabulary of the words seen at least ``min_count`` times, most frequent first,
and the text as one long array of their ids with the rare words dropped, cut into sentences by
offsets (the ``embedding_bag`` layout: sentence ``s`` is ``ids[sentence_offsets[s]:sentence_offsets[s + 1]]``,
the last one running to the end).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

#: A word: ASCII letters, optionally one apostrophe and more letters ("lord's"), after lowercasing.
WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
#: Applied after lowercasing and before matching: the typographic apostrophe becomes ASCII's, and
#: the ligature æ becomes "ae" ("Cæsar" -> "caesar"), so that neither splits a word.
NORMALIZE = str.maketrans({"\u2019": "'", "\u2018": "'", "æ": "ae"})


def tokenize(text: str) -> list[str]:
    """The words of ``text`` (chapter 11): lowercase it, map ’ to ' and æ to ae, and keep every match
    of ``[a-z]+(?:'[a-z]+)?``. Everything else (digits, punctuation, brackets, dashes) separates
    words, so "burnt-offering" is two words and a trailing apostrophe ("sons’") is dropped."""
    return WORD.findall(text.lower().translate(NORMALIZE))


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """A corpus as word ids (chapter 11); build one with :meth:`from_sentences`.

    - ``words``: the vocabulary, the words seen at least ``min_count`` times, most frequent first
      (ties in alphabetical order, so the order never depends on the text's order);
    - ``counts``: int64, how often each word occurs, in the same order;
    - ``ids``: int64, the whole text as ids into ``words``, rarer words dropped (word2vec's convention:
      the words around a dropped one become neighbours);
    - ``sentence_offsets``: int64, where each sentence starts in ``ids``; a sentence left without
      words is kept, empty, so sentence ``s`` is always the ``s``-th sentence given;
    - ``num_tokens_raw``: the number of tokens before the rare words were dropped;
    - ``index``: ``{word: id}``.
    """

    words: list[str]
    counts: np.ndarray
    ids: np.ndarray
    sentence_offsets: np.ndarray
    num_tokens_raw: int
    min_count: int
    index: dict[str, int] = field(repr=False)

    @classmethod
    def from_sentences(cls, sentences: Iterable[list[str]], min_count: int = 5) -> "TextCorpus":
        """The corpus of ``sentences`` (each a list of tokens) keeping words seen ``min_count`` times."""
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
        sentences = [list(s) for s in sentences]
        frequency = Counter(w for s in sentences for w in s)
        kept = sorted((w for w, c in frequency.items() if c >= min_count), key=lambda w: (-frequency[w], w))
        index = {w: i for i, w in enumerate(kept)}
        lengths, flat = [], []
        for s in sentences:
            row = [index[w] for w in s if w in index]
            lengths.append(len(row))
            flat.extend(row)
        offsets = np.zeros(len(sentences), dtype=np.int64)
        if sentences:
            offsets[1:] = np.cumsum(lengths[:-1])
        return cls(words=kept, counts=np.array([frequency[w] for w in kept], dtype=np.int64),
                   ids=np.array(flat, dtype=np.int64), sentence_offsets=offsets,
                   num_tokens_raw=sum(frequency.values()), min_count=min_count, index=index)

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_offsets)

    def id_of(self, word: str) -> int:
        """The id of ``word``; ``KeyError`` saying why when it is not in the vocabulary."""
        try:
            return self.index[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the vocabulary: {len(self.words)} words seen at least "
                           f"{self.min_count} times (tokens are lowercase)") from None

    def sentence(self, s: int) -> list[str]:
        """Sentence ``s`` as words, after dropping the rare ones."""
        end = self.sentence_offsets[s + 1] if s + 1 < len(self.sentence_offsets) else len(self.ids)
        return [self.words[i] for i in self.ids[self.sentence_offsets[s]:end]]
