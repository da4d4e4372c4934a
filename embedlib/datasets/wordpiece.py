"""BERT's WordPiece tokenizer in plain Python (chapter 12): text to the ids a transformer's token table reads.

Two stages, as in BERT's ``tokenization.py`` (Devlin et al. 2019) and Hugging Face's ``BertTokenizer``:

1. the basic tokenizer: drop control characters and turn every whitespace into a space, put spaces
   around CJK ideographs, split on whitespace, lowercase and strip accents (NFD, then drop the
   combining marks), and split off every punctuation character as a token of its own;
2. WordPiece (Wu et al. 2016): each word is cut greedily into the longest vocabulary entries from the
   left, pieces after the first written with a ``##`` prefix; a word that cannot be cut (or is
   longer than ``max_chars_per_word``) becomes ``[UNK]``.

The tests check the ids against the reference tokenizer of all-MiniLM-L6-v2 (BERT's uncased vocabulary).
"""
from __future__ import annotations

import unicodedata

import numpy as np


class WordPieceTokenizer:
    """BERT's tokenizer for a WordPiece vocabulary (chapter 12).

    ``vocab``: the entries in id order (``vocab[i]`` has id ``i``; e.g. the lines of BERT's
    ``vocab.txt``, as :func:`~embedlib.datasets.load_minilm_token_table` returns them). It must hold
    ``[UNK]``, ``[CLS]`` and ``[SEP]``. ``lowercase``: lowercase and strip accents (uncased models).
    """

    def __init__(self, vocab: list[str], *, lowercase=True, max_chars_per_word=100):
        self.vocab = list(vocab)
        self.ids = {}
        for i, piece in enumerate(self.vocab):
            self.ids.setdefault(piece, i)
        missing = [t for t in ("[UNK]", "[CLS]", "[SEP]") if t not in self.ids]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}")
        self.lowercase = bool(lowercase)
        self.max_chars_per_word = int(max_chars_per_word)

    def tokenize(self, text: str) -> list[str]:
        """The word pieces of ``text``, without ``[CLS]`` and ``[SEP]``: with BERT's uncased vocabulary,
        ``"Unaffable!"`` gives ``['una', '##ffa', '##ble', '!']``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pieces = []
        for word in self._basic_tokens(text):
            pieces += self._wordpiece(word)
        return pieces

    def encode(self, text: str) -> np.ndarray:
        """The ids a BERT model reads: ``[CLS]``, the pieces' ids, ``[SEP]``; int64 of shape (n + 2,)."""
        ids = [self.ids["[CLS]"]] + [self.ids[p] for p in self.tokenize(text)] + [self.ids["[SEP]"]]
        return np.array(ids, dtype=np.int64)

    # ----------------------------------------------------------------------------------------------
    def _basic_tokens(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif _is_cjk(cp):
                chars += [" ", ch, " "]
            else:
                chars.append(ch)
        words = []
        for word in "".join(chars).split():
            if self.lowercase:
                word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                               if unicodedata.category(c) != "Mn")
            words += _split_punctuation(word)
        return words

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:  # the longest entry that matches at ``start``
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]  # no entry matches: the whole word is unknown
            pieces.append(piece)
            start = end
        return pieces


def _split_punctuation(word: str) -> list[str]:
    out, current = [], ""
    for ch in word:
        if _is_punctuation(ch):
            if current:
                out.append(current)
            out.append(ch)
            current = ""
        else:
            current += ch
    if current:
        out.append(current)
    return out


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)  # every ASCII non-letter, non-digit is punctuation to BERT ("$", "^", "`" included)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    """The CJK Unified Ideographs blocks (not Japanese kana or Korean hangul, which are spaced words)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)
