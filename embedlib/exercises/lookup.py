"""Checkers for chapters 2, 4 and 5: the lookup and its backward pass (the scatter-add)."""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness, _inputs
from embedlib.exercises._harness import Case, CheckResult


def _reference_backward(idx, grad_output, num_embeddings) -> np.ndarray:
    """The definition: one_hot(indices).T @ grad_output, with the batch axes flattened."""
    idx = np.asarray(idx).reshape(-1)
    g = np.asarray(grad_output, dtype=np.float64)
    g = g.reshape(idx.size, g.shape[-1])
    one_hot = (idx[:, None] == np.arange(num_embeddings)).astype(np.float64)
    return one_hot.T @ g


def lookup_cases(kind: str, rng: np.random.Generator) -> list[Case]:
    """Cases for any function that maps (indices, weight) to the selected rows."""
    cases = []
    for shape in _inputs.index_shapes(rng):
        v, d = int(rng.integers(2, 15)), int(rng.integers(1, 6))
        idx = _inputs.indices_with_repeats(rng, shape, v)
        w = _inputs.weight(rng, v, d)
        g = _inputs.floats(rng, shape + (d,))
        case = Case(f"indices of shape {shape}, weight of shape ({v}, {d})",
                    (_inputs.to_backend(kind, idx), _inputs.to_backend(kind, floats=w, requires_grad=True)),
                    w[idx], names=("indices", "weight"), exact=False, hint=_lookup_hint(idx, w))
        if kind == "torch":
            case.grad_arg, case.grad_output, case.grad_expected = 1, g, _reference_backward(idx, g, v)
            case.grad_hint = _backward_hint(idx, g, v, kind)
        cases.append(case)
    v = 7
    idx = rng.integers(0, v, size=6)
    w = _inputs.weight(rng, v, 1)
    cases.append(Case("embedding_dim = 1", (_inputs.to_backend(kind, idx), _inputs.to_backend(kind, floats=w)),
                      w[idx], names=("indices", "weight")))
    return cases


def _lookup_hint(idx, w):
    def hint(got):
        idx_arr = np.asarray(idx)
        if idx_arr.ndim != 1 and got.shape == (idx_arr.size, w.shape[1]):
            return "the output was flattened: it must keep the indices' shape, (*indices.shape, D)"
        return None
    return hint


def check_lookup(fn, *, backend: str = "numpy", seed: int = 0) -> CheckResult:
    """Check ``fn(indices, weight)`` against the rows ``weight[indices]`` (chapters 2 and 5).

    With ``backend="torch"`` the inputs are tensors and the gradient of the output with respect to
    the weight is checked as well, against the scatter-add of chapter 4.
    """
    kind = _inputs.backend(backend)
    cases = lookup_cases(kind, np.random.default_rng(seed))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="scalar, empty, 1-D, 2-D and 3-D indices, repeats, D = 1"
                        + (", gradients" if kind == "torch" else ""))


def check_lookup_backward(fn, *, backend: str = "numpy", seed: int = 0) -> CheckResult:
    """Check ``fn(indices, grad_output, num_embeddings)``, the gradient of a lookup (chapter 4).

    It must return the dense ``(num_embeddings, D)`` matrix ``one_hot(indices).T @ grad_output``:
    row ``i`` is the sum of the rows of ``grad_output`` whose index is ``i``, so repeated indices add up.
    """
    kind = _inputs.backend(backend)
    rng = np.random.default_rng(seed)
    cases = []
    shapes = _inputs.index_shapes(rng) + [(12,), (200,)]
    for shape in shapes:
        v, d = int(rng.integers(2, 15)), int(rng.integers(1, 6))
        if shape == (200,):
            v = 3  # many repeats of every row
        idx = _inputs.indices_with_repeats(rng, shape, v)
        g = _inputs.floats(rng, shape + (d,))
        cases.append(Case(f"indices of shape {shape} (repeats included), grad_output of shape {shape + (d,)}, "
                          f"num_embeddings={v}",
                          (_inputs.to_backend(kind, idx), _inputs.to_backend(kind, floats=g), v),
                          _reference_backward(idx, g, v), names=("indices", "grad_output", "num_embeddings"),
                          hint=_backward_hint(idx, g, v, kind)))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="scalar, empty, 1-D, 2-D and 3-D indices, many repeated indices")


#: how each backend adds repeated rows correctly
_ACCUMULATE = {"numpy": "np.add.at(grad, idx, grad_output)",
               "torch": "grad.index_add_(0, idx, grad_output) (or index_put_ with accumulate=True)"}


def _backward_hint(idx, g, v, kind="numpy"):
    """Recognise the two classic mistakes: assignment instead of accumulation, and a forgotten row count."""
    def hint(got):
        idx_flat = np.asarray(idx).reshape(-1)
        g_flat = np.asarray(g, dtype=np.float64).reshape(idx_flat.size, np.shape(g)[-1])
        if got.shape != (v, g_flat.shape[1]):
            if got.shape == g_flat.shape or got.shape == np.asarray(g).shape:
                return ("the gradient has one row per row of the TABLE, (num_embeddings, D), "
                        "not one per index: scatter the rows of grad_output into it")
            return None
        lost = np.zeros((v, g_flat.shape[1]))
        lost[idx_flat] += g_flat  # the buffered `+=`: only one of the repeated rows survives
        if np.allclose(got, lost):
            return ("this is what `grad[idx] += grad_output` gives: with repeated indices only one update per "
                    f"row survives. Use {_ACCUMULATE[kind]}, which accumulates repeats")
        return None
    return hint
