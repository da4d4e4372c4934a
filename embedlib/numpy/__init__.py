"""embedlib's NumPy backend: every operation on NumPy arrays, CPU only.

``from embedlib import numpy as el`` gives the same names as ``from embedlib import torch as el``.
"""
from embedlib._checks import DEFAULT_MAX_BYTES
from embedlib.numpy.bag import embedding_bag
from embedlib.numpy.codebook import quantize, quantize_backward
from embedlib.numpy.compositional import (HashEmbedding, QREmbedding, hashed_lookup, qr_indices, qr_lookup,
                                          qr_lookup_backward)
from embedlib.numpy.factorization import MatrixFactorization, rmse, train_sgd
from embedlib.numpy.hashing import hash_bucket
from embedlib.numpy.layers import Embedding, EmbeddingBag
from embedlib.numpy.lookup import lookup, lookup_backward
from embedlib.numpy.mixed_dim import (MixedDimEmbedding, MixedDimPlan, mixed_dim_lookup, mixed_dim_lookup_backward,
                                      mixed_dim_plan)
from embedlib.numpy.neighbors import Neighbors, nearest_neighbors
from embedlib.numpy.onehot import one_hot, onehot_matmul
from embedlib.numpy.patches import image_patches, patch_embedding
from embedlib.numpy.positions import apply_rope, sinusoidal_positions
from embedlib.numpy.quantized import (QuantizedEmbedding, QuantizedEmbeddingBag, QuantizedTable, dequantize_rows,
                                      quantize_rows, quantized_embedding_bag, quantized_lookup, table_bytes)
from embedlib.numpy.ranking import ndcg_at_k, recall_at_k
from embedlib.numpy.renorm import renorm_
from embedlib.numpy.word2vec import negative_sampling_loss, negative_sampling_loss_backward

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Embedding",
    "EmbeddingBag",
    "HashEmbedding",
    "MatrixFactorization",
    "MixedDimEmbedding",
    "MixedDimPlan",
    "Neighbors",
    "QREmbedding",
    "QuantizedEmbedding",
    "QuantizedEmbeddingBag",
    "QuantizedTable",
    "apply_rope",
    "dequantize_rows",
    "embedding_bag",
    "hash_bucket",
    "hashed_lookup",
    "image_patches",
    "lookup",
    "lookup_backward",
    "mixed_dim_lookup",
    "mixed_dim_lookup_backward",
    "mixed_dim_plan",
    "ndcg_at_k",
    "nearest_neighbors",
    "negative_sampling_loss",
    "negative_sampling_loss_backward",
    "one_hot",
    "onehot_matmul",
    "patch_embedding",
    "qr_indices",
    "qr_lookup",
    "qr_lookup_backward",
    "quantize",
    "quantize_backward",
    "quantize_rows",
    "quantized_embedding_bag",
    "quantized_lookup",
    "recall_at_k",
    "renorm_",
    "rmse",
    "sinusoidal_positions",
    "table_bytes",
    "train_sgd",
]
