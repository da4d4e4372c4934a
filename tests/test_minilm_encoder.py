"""embedlib.torch.minilm (chapter 12): all-MiniLM-L6-v2 in plain torch against what sentence-transformers
computed (tests/data/minilm_reference.npz, made by scripts/make_minilm_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import embedlib.torch
from conftest import ROOT
from embedlib.datasets import WordPieceTokenizer
from embedlib.torch.minilm import MiniLM, load_minilm

REFERENCE = ROOT / "tests" / "data" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def model():
    return load_minilm()


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


def test_the_embedding_layer_matches_the_reference(model, reference):
    with torch.no_grad():
        out = model.embed(torch.from_numpy(reference["input_ids"])).numpy()
    assert out.shape == reference["embeddings"].shape and out.dtype == np.float32
    assert np.abs(out - reference["embeddings"]).max() < 2e-6


def test_the_embedding_layer_is_three_lookups_and_a_layer_norm(model):
    ids = torch.tensor([[101, 1996, 4937, 102], [101, 4937, 1996, 102]])
    with torch.no_grad():
        x = model.word[ids] + model.position[:4] + model.token_type[0]
        expected = F.layer_norm(x, (384,), model.embed_norm.weight, model.embed_norm.bias, eps=1e-12)
        torch.testing.assert_close(model.embed(ids), expected, rtol=0, atol=1e-6)
        # the same token at two positions leaves the layer as two different vectors
        out = model.embed(ids)
        assert F.cosine_similarity(out[0, 2], out[1, 1], dim=0) < 0.99


def test_sentence_vectors_match_the_reference(model, reference):
    with torch.no_grad():
        vectors = model.sentence_vectors(torch.from_numpy(reference["input_ids"]),
                                         torch.from_numpy(reference["attention_mask"])).numpy()
    assert np.abs(vectors - reference["sentence_vectors"]).max() < 1e-6
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


def test_tokenizer_and_encoder_together_without_padding(model, reference):
    """Our tokenizer's ids, one sentence at a time (no padding), give the same vectors."""
    tok = WordPieceTokenizer(model.vocab)
    with torch.no_grad():
        for k in (0, 5, 7):
            ids = torch.from_numpy(tok.encode(str(reference["sentences"][k])))[None]
            v = model.sentence_vectors(ids, torch.ones_like(ids))[0].numpy()
            assert np.abs(v - reference["sentence_vectors"][k]).max() < 1e-6


def test_gradient_reaches_the_rows_that_were_read(model):
    ids = torch.tensor([[101, 7592, 102]])
    model.embed(ids).sum().backward()
    try:
        touched = model.word.grad.abs().sum(1).nonzero().reshape(-1).tolist()
        assert touched == [101, 102, 7592]
    finally:
        model.zero_grad(set_to_none=True)


def test_errors_and_packaging(model):
    with pytest.raises(ValueError, match="512"):
        model.embed(torch.zeros(1, 513, dtype=torch.long))
    with pytest.raises(IndexError, match="30522"):
        model.embed(torch.tensor([[101, 30522]]))
    with pytest.raises(KeyError, match="MiniLM needs"):
        MiniLM({})
    assert "MiniLM" not in embedlib.torch.__all__ and "load_minilm" not in embedlib.torch.__all__
