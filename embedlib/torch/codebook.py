"""Vector quantisation, in torch: a codebook is an embedding table indexed by the data (chapter 12).

The same nearest codewords as the NumPy backend. ``quantized`` is differentiable w.r.t. both
arguments: straight through to ``vectors`` and through the lookup to ``codebook``
(:func:`quantize` says exactly what flows where).
"""
from __future__ import annotations

import torch

from embedlib import _checks
from embedlib.torch import _tensors
from embedlib.torch.lookup import gather, lookup_backward

#: Distances are computed this many (vector, codeword, column) entries at a time, to bound memory.
CHUNK_ENTRIES = 1 << 22


def quantize(vectors, codebook):
    """Nearest codewords (chapter 12): ``(codes, quantized)``, ``codes`` int64 of shape
    ``vectors.shape[:-1]`` (squared Euclidean distance, the lowest index on ties), ``quantized =
    codebook[codes]``. ``vectors`` (..., D) and ``codebook`` (K, D), K >= 1, same dtype and device.

    The gradient of a loss ``L(quantized)``, with ``g = dL/dquantized``:

    - to ``vectors``: ``g`` itself, the straight-through estimator (the nearest-codeword step,
      piecewise constant, is treated as the identity), as in VQ-VAE (van den Oord et al. 2017);
    - to ``codebook``: the lookup's gradient, ``lookup_backward(codes, g, K)`` (row ``k`` gets the
      sum of ``g`` over the vectors that chose codeword ``k``; the others get zero);
    - ``codes``: none (integers).

    So ``quantize_backward(codes, g, K)`` equals what autograd computes. (VQ-VAE's extra losses, the
    codebook and commitment terms, are the caller's to add.)
    """
    v = _tensors.floats(vectors, "vectors")
    c = _tensors.floats(codebook, "codebook", v.device)
    _checks.codebook_shapes(tuple(v.shape), tuple(c.shape))
    _checks.same_dtype(str(v.dtype).replace("torch.", ""), str(c.dtype).replace("torch.", ""), "vectors")
    with torch.no_grad():
        flat = v.detach().reshape(-1, c.shape[1])
        cd = c.detach()
        step = max(1, CHUNK_ENTRIES // max(1, c.numel()))
        codes = torch.cat([(block[:, None, :] - cd[None]).square().sum(-1).argmin(-1)
                           for block in flat.split(step)]) if len(flat) else flat.new_zeros(0, dtype=torch.int64)
        codes = codes.reshape(v.shape[:-1])
    return codes, _StraightThrough.apply(v, gather(codes, c))


def quantize_backward(codes, grad_quantized, num_codes):
    """The gradients of ``quantized`` w.r.t. the vectors and the codebook, by hand (chapter 12):
    ``(grad_vectors, grad_codebook)`` = ``(grad_quantized, lookup_backward(codes, grad_quantized,
    num_codes))``; equal to what autograd computes through :func:`quantize`."""
    g = _tensors.floats(grad_quantized, "grad_quantized")
    return g.clone(), lookup_backward(codes, g, num_codes)


class _StraightThrough(torch.autograd.Function):
    """Returns ``looked_up`` and sends its gradient, unchanged, to both ``vectors`` and ``looked_up``."""

    @staticmethod
    def forward(vectors, looked_up):
        return looked_up.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, grad
