"""Google's word-analogy questions, "a is to b as c is to d" (chapter 11).

``data/questions-words.txt`` is the test set of Mikolov et al. (2013), shipped with embedlib as
package data (copied from the gensim 4.4.0 wheel, which took it from Google's word2vec release,
Apache-2.0: ``data/NOTICE`` gives the provenance). 19,544 questions in 14 sections: 5 semantic
(capitals, currencies, cities in states, family) with 8,869 questions and 9 syntactic (``gram1``
to ``gram9``: adverbs, opposites, comparatives...) with 10,675.
"""
from __future__ import annotations

import pathlib
from typing import NamedTuple

DATA = pathlib.Path(__file__).resolve().parent / "data" / "questions-words.txt"


class AnalogySection(NamedTuple):
    """One section of the analogy set: its ``name`` ("capital-common-countries"), its ``kind``
    ("semantic", or "syntactic" for the ``gram`` sections) and its ``questions``, each a lowercase
    4-tuple ``(a, b, c, d)`` read "a is to b as c is to d" (chapter 11)."""

    name: str
    kind: str
    questions: list[tuple[str, str, str, str]]


def load_analogies(path=None) -> list[AnalogySection]:
    """The analogy questions by section, in the file's order, lowercased (chapter 11).

    ``path``: a file in the same format (a line ``: name`` opens a section, every other line is four
    words); default, the Google set shipped with embedlib. A malformed line raises ``ValueError``
    naming its line number.
    """
    path = DATA if path is None else pathlib.Path(path)
    sections: list[AnalogySection] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith(":"):
            name = line[1:].strip()
            sections.append(AnalogySection(name, "syntactic" if name.startswith("gram") else "semantic", []))
            continue
        words = line.lower().split()
        if len(words) != 4 or not sections:
            problem = "a question before any ': section' line" if sections == [] else f"{len(words)} words, not 4"
            raise ValueError(f"{path}, line {number}: {problem}: {line!r}")
        sections[-1].questions.append(tuple(words))
    return sections
