"""Checkers for chapters 1 and 2: a one-hot encoder and the one-hot product."""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness, _inputs
from embedlib.exercises._harness import Case, CheckResult
from embedlib.exercises.lookup import lookup_cases


def _reference_one_hot(idx, num_classes) -> np.ndarray:
    return (np.asarray(idx)[..., None] == np.arange(num_classes)).astype(np.float64)


def check_one_hot(fn, *, backend: str = "numpy", seed: int = 0) -> CheckResult:
    """Check ``fn(indices, num_classes)`` against the definition of the one-hot encoding (chapter 1).

    ``fn`` must return an array of shape ``(*indices.shape, num_classes)`` with a 1 in the column
    of each index and 0 elsewhere, for indices of any shape (a scalar, an empty batch, 1-D to 3-D).
    """
    kind = _inputs.backend(backend)
    rng = np.random.default_rng(seed)
    cases = []
    for shape in _inputs.index_shapes(rng):
        v = int(rng.integers(1, 12))
        idx = _inputs.indices_with_repeats(rng, shape, v)
        cases.append(Case(f"indices of shape {shape}, num_classes={v}", (_inputs.to_backend(kind, idx), v),
                          _reference_one_hot(idx, v), names=("indices", "num_classes"), exact=True,
                          hint=_one_hot_hint(idx, v)))
    cases.append(Case("num_classes=1, every index 0", (_inputs.to_backend(kind, np.zeros(4, np.int64)), 1),
                      np.ones((4, 1)), names=("indices", "num_classes"), exact=True))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="scalar, empty, 1-D, 2-D and 3-D indices, repeats, one class")


def _one_hot_hint(idx, v):
    def hint(got):
        if got.shape == (np.asarray(idx).size, v) and np.asarray(idx).ndim != 1:
            return "the output was flattened to 2-D: keep the indices' own shape and add one axis of length num_classes"
        if got.shape == np.asarray(idx).shape + (int(np.max(idx, initial=0)) + 1,):
            return "the number of columns must be num_classes, not the largest index plus one"
        return None
    return hint


def check_onehot_matmul(fn, *, backend: str = "numpy", seed: int = 0) -> CheckResult:
    """Check ``fn(indices, weight)`` against ``one_hot(indices, V) @ weight`` (chapter 2).

    ``fn`` must return shape ``(*indices.shape, D)``. In the torch backend the gradient with
    respect to ``weight`` is checked too.
    """
    kind = _inputs.backend(backend)
    cases = lookup_cases(kind, np.random.default_rng(seed))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="scalar, empty, 1-D, 2-D and 3-D indices, repeats, D = 1"
                        + (", gradients" if kind == "torch" else ""))
