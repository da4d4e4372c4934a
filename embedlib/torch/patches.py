"""A vision transformer's patch embedding, in torch (chapter 12).

The same operations as the NumPy backend on tensors, differentiable w.r.t. the images, the weight
and the bias; equal to ``F.conv2d(images, weight, bias, stride=p).flatten(2).transpose(1, 2)``.
"""
from __future__ import annotations

from embedlib import _checks
from embedlib.torch import _tensors


def image_patches(images, patch_size):
    """Non-overlapping ``p x p`` patches of ``images`` (N, C, H, W), flattened: shape
    ``(N, (H/p) * (W/p), C * p * p)`` (chapter 12), row-major over the patch grid, each patch in
    ``(C, p, p)`` order (as a Conv2d kernel flattens). H and W must be divisible by ``p``."""
    x = _tensors.floats(images, "images")
    n, c, gh, gw, p, _ = _checks.patch_grid(tuple(x.shape), patch_size)
    grid = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # (N, H/p, W/p, C, p, p)
    return grid.reshape(n, gh * gw, c * p * p)


def patch_embedding(images, weight, bias=None):
    """A ViT's patch embedding (chapter 12): ``image_patches(images, p) @ weight.reshape(D, -1).T + bias``,
    shape ``(N, num_patches, D)``; ``weight`` (D, C, p, p) is a Conv2d kernel with stride ``p``."""
    w = _tensors.floats(weight, "weight")
    x = _tensors.floats(images, "images", w.device)
    b = None if bias is None else _tensors.floats(bias, "bias", w.device)
    p = _checks.patch_kernel(tuple(w.shape), tuple(x.shape), None if b is None else tuple(b.shape))
    _checks.same_dtype(_name(x.dtype), _name(w.dtype), "images")
    if b is not None:
        _checks.same_dtype(_name(b.dtype), _name(w.dtype), "bias")
    out = image_patches(x, p) @ w.reshape(w.shape[0], -1).T
    return out if b is None else out + b


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")
