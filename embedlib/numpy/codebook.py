"""Vector quantisation: a codebook is an embedding table indexed by the data (chapter 12).

:func:`quantize` finds each vector's nearest codeword (the "id") and looks it up; the lookup is
:func:`~embedlib.numpy.lookup`, so its gradient is chapter 4's scatter-add. The nearest-codeword
step has no gradient; VQ-VAE (van den Oord et al. 2017) passes the gradient straight through it.
:func:`quantize_backward` writes out both halves.
"""
from __future__ import annotations

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays
from embedlib.numpy.lookup import lookup_backward

#: Distances are computed this many (vector, codeword, column) entries at a time, to bound memory.
CHUNK_ENTRIES = 1 << 22


def quantize(vectors, codebook):
    """Nearest codewords (chapter 12): ``(codes, quantized)``.

    ``codes`` (int64, shape ``vectors.shape[:-1]``) is the index of the codeword closest to each
    vector in squared Euclidean distance, the lowest index on ties; ``quantized = codebook[codes]``.
    ``vectors`` (..., D) and ``codebook`` (K, D), K >= 1, of the same float dtype. The distances are
    the sums of squared differences (not ``|v|^2 - 2 v.c + |c|^2``, which cancels and can reorder
    near neighbours), a bounded block of vectors at a time.
    """
    v = _arrays.floats(vectors, "vectors")
    c = _arrays.floats(codebook, "codebook")
    _checks.codebook_shapes(v.shape, c.shape)
    _checks.same_dtype(str(v.dtype), str(c.dtype), "vectors")
    flat = v.reshape(-1, c.shape[1])
    codes = np.empty(len(flat), dtype=np.int64)
    step = max(1, CHUNK_ENTRIES // max(1, c.size))
    for start in range(0, len(flat), step):
        block = flat[start:start + step]
        dist = np.square(block[:, None, :] - c[None, :, :]).sum(-1)
        codes[start:start + step] = dist.argmin(-1)  # argmin returns the first minimum: the lowest index
    codes = codes.reshape(v.shape[:-1])
    return codes, c[codes]


def quantize_backward(codes, grad_quantized, num_codes):
    """The gradients of ``quantized`` w.r.t. the vectors and the codebook (chapter 12):
    ``(grad_vectors, grad_codebook)``.

    ``grad_vectors = grad_quantized``: the straight-through estimator treats the nearest-codeword
    step as the identity. ``grad_codebook = lookup_backward(codes, grad_quantized, num_codes)``:
    the lookup's scatter-add (chapter 4), each codeword receiving the sum of the gradients of the
    vectors it quantised, shape ``(num_codes, D)``.
    """
    g = _arrays.floats(grad_quantized, "grad_quantized")
    return g.copy(), lookup_backward(codes, g, num_codes)
