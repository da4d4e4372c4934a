"""embedlib's PyTorch backend: every operation on tensors, CPU or CUDA, differentiable.

``from embedlib import torch as el`` gives the same names as ``from embedlib import numpy as el``.
"""
from embedlib._checks import DEFAULT_MAX_BYTES
from embedlib.torch.bag import embedding_bag
from embedlib.torch.codebook import quantize, quantize_backward
from embedlib.torch.compositional import (HashEmbedding, QREmbedding, hashed_lookup, qr_indices, qr_lookup,
                                          qr_lookup_backward)
from embedlib.torch.bounds import BoundsRecord, check_bounds
from embedlib.torch.factorization import MatrixFactorization, rmse, train_sgd
from embedlib.torch.hashing import hash_bucket
from embedlib.torch.layers import Embedding, EmbeddingBag
from embedlib.torch.lookup import lookup, lookup_backward
from embedlib.torch.mixed_dim import (MixedDimEmbedding, MixedDimPlan, mixed_dim_lookup, mixed_dim_lookup_backward,
                                      mixed_dim_plan)
from embedlib.torch.neighbors import Neighbors, nearest_neighbors
from embedlib.torch.onehot import one_hot, onehot_matmul
from embedlib.torch.patches import image_patches, patch_embedding
from embedlib.torch.positions import apply_rope, sinusoidal_positions
from embedlib.torch.quantized import (QuantizedEmbedding, QuantizedEmbeddingBag, QuantizedTable, dequantize_rows,
                                     quantize_rows, quantized_embedding_bag, quantized_lookup, table_bytes)
from embedlib.torch.ranking import ndcg_at_k, recall_at_k
from embedlib.torch.renorm import renorm_
from embedlib.torch.word2vec import negative_sampling_loss, negative_sampling_loss_backward

__all__ = [
    "BoundsRecord",
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
    "check_bounds",
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
