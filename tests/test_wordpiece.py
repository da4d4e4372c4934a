"""WordPieceTokenizer and load_digits (chapter 12): BERT's tokenizer against the reference tokenizer's
ids (tests/data/minilm_reference.npz, made by scripts/make_minilm_reference.py) and on a toy vocabulary;
the shipped digits."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import ROOT
from embedlib.datasets import WordPieceTokenizer, load_digits, load_minilm_token_table
from embedlib.datasets import digits as digits_module

REFERENCE = ROOT / "tests" / "data" / "minilm_reference.npz"
TOY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "##a", "##ff", "!", "the", "cafe", "東", "a",
       "##b", "ab", "abc", "##c", ",", "'", "s"]


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


@pytest.fixture(scope="module")
def bert():
    return WordPieceTokenizer(load_minilm_token_table()[1])


def test_ids_equal_the_reference_tokenizer(reference, bert):
    for text, ids, mask in zip(reference["sentences"], reference["input_ids"], reference["attention_mask"]):
        np.testing.assert_array_equal(bert.encode(str(text)), ids[mask.astype(bool)], err_msg=repr(str(text)))


def test_ids_equal_the_reference_tokenizer_on_stress_texts(reference, bert):
    """300 random strings of accents, CJK, kana, hangul, emoji, punctuation, control characters and odd
    spaces. (NumPy drops trailing NUL characters from stored strings; the tokenizer drops NULs anyway.)"""
    offsets, ids = reference["stress_offsets"], reference["stress_ids"]
    assert len(reference["stress_texts"]) == 300
    for i, text in enumerate(reference["stress_texts"]):
        np.testing.assert_array_equal(bert.encode(str(text)), ids[offsets[i]:offsets[i + 1]], err_msg=repr(str(text)))


def test_greedy_longest_match_first():
    tok = WordPieceTokenizer(TOY)
    assert tok.tokenize("unaffable!") == ["un", "##aff", "##able", "!"]
    assert tok.tokenize("abc") == ["abc"]  # the longest first piece, not "ab" + "##c"
    assert tok.tokenize("abcb") == ["abc", "##b"]
    assert tok.tokenize("unx the") == ["[UNK]", "the"]  # a word that cannot be cut is one [UNK]
    np.testing.assert_array_equal(tok.encode("the"), [2, 10, 3])
    assert tok.encode("").dtype == np.int64 and tok.encode("").tolist() == [2, 3]


def test_basic_tokenizer_cleans_splits_lowercases_and_strips_accents():
    tok = WordPieceTokenizer(TOY)
    assert tok.tokenize("  The\tCAFÉ,\n\u200bthe's\x00 ") == ["the", "cafe", ",", "the", "'", "s"]
    assert tok.tokenize("東the") == ["東", "the"]  # CJK ideographs are words of their own
    assert WordPieceTokenizer(TOY, lowercase=False).tokenize("The the") == ["[UNK]", "the"]
    assert WordPieceTokenizer(TOY, max_chars_per_word=2).tokenize("abc ab") == ["[UNK]", "ab"]


def test_errors():
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        WordPieceTokenizer(["[UNK]", "[SEP]", "a"])
    with pytest.raises(TypeError, match="str"):
        WordPieceTokenizer(TOY).tokenize(b"bytes")


def test_load_digits():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 16 and np.array_equal(images, np.round(images))
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert labels[:5].tolist() == [0, 1, 2, 3, 4]
    assert hashlib.sha256(digits_module.DIGITS_FILE.read_bytes()).hexdigest() == digits_module.DIGITS_SHA256


def test_load_digits_refuses_a_corrupted_copy(tmp_path, monkeypatch):
    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(digits_module.DIGITS_FILE.read_bytes()[:-1])
    monkeypatch.setattr(digits_module, "DIGITS_FILE", bad)
    with pytest.raises(ValueError, match="SHA-256"):
        load_digits()
