"""A vision transformer's patch embedding (chapter 12).

A ViT cuts each image into non-overlapping ``p x p`` patches and maps every flattened patch to a
D-vector with one matrix: an embedding layer whose "ids" are patches of pixels. Chapter 12 proves
that this is a ``Conv2d`` whose kernel equals its stride, which is how ViT code writes it.
"""
from __future__ import annotations

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays


def image_patches(images, patch_size):
    """Non-overlapping ``p x p`` patches of ``images`` (N, C, H, W), flattened: shape
    ``(N, (H/p) * (W/p), C * p * p)`` (chapter 12).

    Patches come row by row over the grid of patches (patch ``r * (W/p) + c`` is grid row ``r``,
    column ``c``), each flattened in ``(C, p, p)`` order: the order in which a Conv2d kernel of shape
    ``(D, C, p, p)`` flattens. H and W must be divisible by ``p`` (``ValueError`` otherwise).
    """
    x = _arrays.floats(images, "images")
    n, c, gh, gw, p, _ = _checks.patch_grid(x.shape, patch_size)
    grid = x.reshape(n, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)  # (N, H/p, W/p, C, p, p)
    return grid.reshape(n, gh * gw, c * p * p)


def patch_embedding(images, weight, bias=None):
    """A ViT's patch embedding (chapter 12): shape ``(N, num_patches, D)``.

    ``weight`` (D, C, p, p) is a Conv2d kernel applied with stride ``p``; computed as
    ``image_patches(images, p) @ weight.reshape(D, -1).T + bias``: one matrix applied to every
    flattened patch (the tests compare it with ``F.conv2d(images, weight, bias, stride=p)``).
    """
    x = _arrays.floats(images, "images")
    w = _arrays.floats(weight, "weight")
    b = None if bias is None else _arrays.floats(bias, "bias")
    p = _checks.patch_kernel(w.shape, x.shape, None if b is None else b.shape)
    _checks.same_dtype(str(x.dtype), str(w.dtype), "images")
    if b is not None:
        _checks.same_dtype(str(b.dtype), str(w.dtype), "bias")
    out = image_patches(x, p) @ w.reshape(w.shape[0], -1).T
    return out if b is None else out + b
