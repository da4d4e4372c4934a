"""embedlib's NumPy backend: every operation on NumPy arrays, CPU only.

``from embedlib import numpy as el`` gives the same names as ``from embedlib import torch as el``.
"""
from embedlib._checks import DEFAULT_MAX_BYTES
from embedlib.numpy.bag import embedding_bag
from embedlib.numpy.codebook import quantize, quantize_backward
from embedlib.numpy.factorization import MatrixFactorization, rmse, train_sgd
from embedlib.numpy.hashing import hash_bucket
from embedlib.numpy.layers import Embedding, EmbeddingBag
from embedlib.numpy.lookup import lookup, lookup_backward
from embedlib.numpy.neighbors import Neighbors, nearest_neighbors
from embedlib.numpy.onehot import one_hot, onehot_matmul
from embedlib.numpy.patches import image_patches, patch_embedding
from embedlib.numpy.positions import apply_rope, sinusoidal_positions
from embedlib.numpy.renorm import renorm_
from embedlib.numpy.word2vec import negative_sampling_loss, negative_sampling_loss_backward

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Embedding",
    "EmbeddingBag",
    "MatrixFactorization",
    "Neighbors",
    "apply_rope",
    "embedding_bag",
    "hash_bucket",
    "image_patches",
    "lookup",
    "lookup_backward",
    "nearest_neighbors",
    "negative_sampling_loss",
    "negative_sampling_loss_backward",
    "one_hot",
    "onehot_matmul",
    "patch_embedding",
    "quantize",
    "quantize_backward",
    "renorm_",
    "rmse",
    "sinusoidal_positions",
    "train_sgd",
]
