"""Hidden inputs for the checkers, and their conversion to the student's backend.

Every checker draws its cases from a seeded generator, so a report is the same on every run, and
builds them for the backend the student works in: NumPy arrays, or torch tensors (the weight then
requires a gradient, so the checker can test the backward pass too).
"""
from __future__ import annotations

import numpy as np

BACKENDS = ("numpy", "torch")


def backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def index_shapes(rng: np.random.Generator) -> list[tuple]:
    """Shapes a reader's function must handle: a scalar, an empty batch, 1-D, 2-D and 3-D."""
    return [(), (0,), (1,), (5,), (int(rng.integers(2, 9)),), (3, 4), (2, 3, 2), (int(rng.integers(10, 60)),)]


def indices_with_repeats(rng: np.random.Generator, shape: tuple, num_embeddings: int) -> np.ndarray:
    """Random indices in [0, V), with at least one repeated index whenever there are two or more."""
    idx = rng.integers(0, num_embeddings, size=shape)
    flat = idx.reshape(-1)
    if flat.size >= 2:
        flat[-1] = flat[0]
    return idx


def floats(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Random numbers with three decimals, short enough to read in a report."""
    return np.round(rng.standard_normal(shape), 3)


def weight(rng: np.random.Generator, num_embeddings: int, dim: int) -> np.ndarray:
    return floats(rng, (num_embeddings, dim))


def to_backend(kind: str, indices=None, floats=None, requires_grad: bool = False):
    """Convert an index array or a float array to the student's backend (float64 throughout)."""
    if kind == "numpy":
        return indices if floats is None else floats
    import torch

    if floats is None:
        return torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    return torch.tensor(np.asarray(floats, dtype=np.float64), requires_grad=requires_grad)
