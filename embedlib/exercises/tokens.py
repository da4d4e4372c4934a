"""Checkers for chapter 12, tokens, positions and patches: sinusoidal positions and image patches.

- :func:`check_sinusoidal_positions`: the original transformer's position table, sines in the even
  columns and cosines in the odd ones (``embedlib.numpy.sinusoidal_positions`` is the reference);
- :func:`check_image_patches`: images cut into non-overlapping patches, row by row, each flattened
  in the order of a ``Conv2d`` kernel (``embedlib.numpy.image_patches``; the proposition of chapter 12:
  a convolution whose kernel equals its stride is a matrix on these patches).

Both take plain NumPy inputs; a torch function works too (what it returns is converted).
"""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import Case, CheckResult


# --- sinusoidal positions -------------------------------------------------------------------------

def _sinusoidal_positions(num_positions: int, dim: int) -> np.ndarray:
    """Row m: [sin(m w_0), cos(m w_0), sin(m w_1), cos(m w_1), ...], w_j = 10000^(-2j/dim)."""
    angles = np.arange(num_positions)[:, None] * 10000.0 ** (-np.arange(0, dim, 2) / dim)[None, :]
    table = np.zeros((num_positions, dim))
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


def check_sinusoidal_positions(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(num_positions, dim)``: the (num_positions, dim) table of sinusoidal position vectors.

    Coordinate ``2j`` of row ``m`` is ``sin(m * w_j)`` and coordinate ``2j + 1`` is ``cos(m * w_j)``,
    with ``w_j = 10000 ** (-2j / dim)`` (Vaswani et al., 2017); ``dim`` is even. The cases include one
    position, two columns, and positions in the thousands, where a float32 angle loses digits.
    """
    del seed  # the cases are fixed: the table has no random input
    shapes = [(1, 2), (2, 2), (5, 4), (10, 6), (16, 8), (50, 16), (128, 64), (2048, 12)]
    cases = [Case(f"num_positions = {n}, dim = {d}", (n, d), _sinusoidal_positions(n, d),
                  names=("num_positions", "dim"), hint=_sinusoidal_hint(n, d)) for n, d in shapes]
    return _harness.run(_harness.name_of(fn), fn, cases, summary="one position, two columns, long sequences",
                        rtol=1e-5, atol=1e-5)


def _sinusoidal_hint(n: int, d: int):
    expected = _sinusoidal_positions(n, d)
    half = d // 2

    def hint(got):
        if got.shape == expected.T.shape:
            return "rows are positions and columns are coordinates: transpose your table"
        if got.shape != expected.shape:
            return None
        blocks = np.concatenate([expected[:, 0::2], expected[:, 1::2]], axis=1)
        if np.allclose(got, blocks, atol=1e-5):
            return ("the sines and cosines must alternate: sin in the even columns 2j, cos in the odd "
                    "columns 2j + 1, not all sines first")
        swapped = expected.copy()
        swapped[:, 0::2], swapped[:, 1::2] = expected[:, 1::2], expected[:, 0::2]
        if np.allclose(got, swapped, atol=1e-5):
            return "sin and cos are swapped: column 2j is the sine, column 2j + 1 the cosine"
        j = np.arange(half)
        for wrong in (10000.0 ** (-j / d), 10000.0 ** (-2 * j / half), 10000.0 ** (2 * j / d)):
            angles = np.arange(n)[:, None] * wrong[None, :]
            table = np.zeros((n, d))
            table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
            if np.allclose(got, table, atol=1e-5):
                return "check the frequencies: w_j = 10000 ** (-2 * j / dim) for the pair of columns 2j, 2j + 1"
        return None
    return hint


# --- image patches --------------------------------------------------------------------------------

def _image_patches(images: np.ndarray, size: int) -> np.ndarray:
    """(B, C, N, N) -> (B, (N/size)^2, C * size^2): the grid row by row, each patch in (c, dy, dx) order."""
    b, c, h, w = images.shape
    split = images.reshape(b, c, h // size, size, w // size, size)
    return split.transpose(0, 2, 4, 1, 3, 5).reshape(b, (h // size) * (w // size), c * size * size)


def check_image_patches(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(images, size)``: non-overlapping ``size`` x ``size`` patches of a batch of images.

    ``images`` has shape (B, C, H, W) with H and W divisible by ``size``; ``fn`` must return shape
    (B, (H/size) * (W/size), C * size * size): the patches row by row over the grid, each flattened
    in (channel, row in the patch, column in the patch) order, the order in which a ``Conv2d``
    kernel of shape (D, C, size, size) flattens. The cases include one channel and three, patches of
    one pixel and patches as large as the image, and an image that is not square.
    """
    rng = np.random.default_rng(seed)
    shapes = [(1, 1, 2, 2, 1), (1, 1, 4, 4, 2), (2, 1, 8, 8, 2), (2, 1, 8, 8, 4), (3, 3, 4, 4, 2),
              (2, 3, 6, 6, 3), (2, 2, 4, 8, 2), (1, 3, 8, 8, 8)]
    cases = []
    for b, c, h, w, size in shapes:
        images = np.round(rng.standard_normal((b, c, h, w)), 3)
        cases.append(Case(f"images {(b, c, h, w)}, size = {size}", (images, size), _image_patches(images, size),
                          names=("images", "size"), hint=_patches_hint(images, size)))
    return _harness.run(_harness.name_of(fn), fn, cases, summary="one and three channels, non-square images",
                        rtol=0, atol=0)


def _patches_hint(images: np.ndarray, size: int):
    b, c, h, w = images.shape
    expected = _image_patches(images, size)

    def hint(got):
        if got.shape != expected.shape:
            return None
        if np.array_equal(got, images.reshape(expected.shape)):
            return ("a plain reshape keeps the pixels in raster order: split each side into (grid index, offset) "
                    "and transpose the two grid axes in front of the channel and offsets")
        channel_last = images.reshape(b, c, h // size, size, w // size, size).transpose(0, 2, 4, 3, 5, 1)
        if np.array_equal(got, channel_last.reshape(expected.shape)):
            return "flatten each patch in (channel, row, column) order, channel first, as a Conv2d kernel does"
        column_major = images.reshape(b, c, h // size, size, w // size, size).transpose(0, 4, 2, 1, 3, 5)
        if np.array_equal(got, column_major.reshape(expected.shape)):
            return "the patches go row by row over the grid: the grid's row index before its column index"
        return None
    return hint
