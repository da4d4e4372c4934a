"""Checkers for chapter 4: a numerical gradient, a sparse SGD step and the backward pass of a bag.

* :func:`check_numerical_gradient` runs a reader's central-difference gradient on hidden smooth
  functions (a lookup loss among them) and compares it with the exact gradient.
* :func:`check_sparse_sgd_step` runs a reader's in-place SGD step on a table and compares the table
  afterwards with ``weight - lr * lookup_backward(...)``.
* :func:`check_embedding_bag_backward` checks the gradient of a sum or mean bag w.r.t. its table.

The lookup's own backward pass has its checker in :mod:`embedlib.exercises.lookup`
(``check_lookup_backward``).
"""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness, _inputs
from embedlib.exercises._harness import Case, CheckResult

#: A recorder keeps at most this many evaluation points (enough to see how differences were taken).
_MAX_POINTS = 400


def _scatter_add(idx, g, num_embeddings) -> np.ndarray:
    """The reference backward of a lookup: row ``idx[k]`` receives ``g[k]``, repeats add up."""
    idx = np.asarray(idx).reshape(-1)
    g = np.asarray(g, dtype=np.float64).reshape(idx.size, -1) if idx.size else np.zeros((0, np.shape(g)[-1]))
    out = np.zeros((num_embeddings, g.shape[1]))
    np.add.at(out, idx, g)
    return out


def _buffered_add(idx, g, num_embeddings) -> np.ndarray:
    """What ``out[idx] += g`` gives: NumPy buffers the writes, so only one of a repeated row survives."""
    idx = np.asarray(idx).reshape(-1)
    g = np.asarray(g, dtype=np.float64).reshape(idx.size, -1) if idx.size else np.zeros((0, np.shape(g)[-1]))
    out = np.zeros((num_embeddings, g.shape[1]))
    out[idx] += g
    return out


# --------------------------------------------------------------------------------------------------
# Numerical gradients
# --------------------------------------------------------------------------------------------------
class _Recorder:
    """A scalar test function that remembers where it was evaluated, to recognise how a gradient was taken."""

    def __init__(self, f, x: np.ndarray):
        self._f = f
        self.origin = np.array(x, dtype=np.float64, copy=True)
        self.points: list[np.ndarray] = []

    def __call__(self, x) -> float:
        x = np.asarray(x, dtype=np.float64)
        if len(self.points) < _MAX_POINTS:
            self.points.append(np.array(x, copy=True))
        return float(self._f(x))

    def steps(self) -> list[np.ndarray]:
        """The displacements ``point - x`` of every evaluation with the original shape."""
        return [p.reshape(-1) - self.origin.reshape(-1) for p in self.points if p.shape == self.origin.shape]


def _lookup_loss(idx, target):
    """0.5 * ||W[idx] - target||^2 and its gradient, a scatter-add of the residuals."""
    def f(w):
        return 0.5 * np.sum((w[idx] - target) ** 2)

    def grad(w):
        return _scatter_add(idx, w[idx] - target, w.shape[0])
    return f, grad


def _pair_loss(pairs, labels, bias):
    """The logistic loss of chapter 4's model: logit = bias - ||W_i - W_j||^2, mean over the pairs."""
    def f(w):
        diff = w[pairs[:, 0]] - w[pairs[:, 1]]
        z = bias - np.sum(diff**2, axis=1)
        return np.mean(np.logaddexp(0.0, z) - labels * z)

    def grad(w):
        diff = w[pairs[:, 0]] - w[pairs[:, 1]]
        z = bias - np.sum(diff**2, axis=1)
        dz = (1.0 / (1.0 + np.exp(-z)) - labels) / len(labels)
        g_first = -2.0 * dz[:, None] * diff
        return _scatter_add(pairs[:, 0], g_first, w.shape[0]) + _scatter_add(pairs[:, 1], -g_first, w.shape[0])
    return f, grad


def _numerical_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray, object, object]]:
    """(description, x, f, exact gradient of f at x) for smooth functions of arrays of several shapes."""
    cases = []
    x = _inputs.floats(rng, (5,))
    cases.append(("f(x) = sum(x**3 / 3 + x**2 / 2), x of shape (5,)", x,
                  lambda v: np.sum(v**3 / 3 + v**2 / 2), x**2 + x))
    x = np.asarray(_inputs.floats(rng, ()))
    cases.append(("f(x) = exp(2 x) for a 0-d array x (shape ())", x, lambda v: np.exp(2 * v), 2 * np.exp(2 * x)))
    x = _inputs.floats(rng, (1,))
    cases.append(("f(x) = sum(sin(3 x)), x of shape (1,)", x, lambda v: np.sum(np.sin(3 * v)), 3 * np.cos(3 * x)))
    center = _inputs.floats(rng, (4,))
    x = center + np.round(rng.uniform(-2e-3, 2e-3, size=4), 6)
    cases.append(("near a minimum: f(x) = 50 * sum((x - c)**2) with x within 0.002 of c, where the gradient "
                  "is small and the curvature large", x, lambda v: 50.0 * np.sum((v - center) ** 2), 100.0 * (x - center)))
    v, d = 6, 3
    idx = _inputs.indices_with_repeats(rng, (8,), v)
    w = _inputs.weight(rng, v, d)
    f, grad = _lookup_loss(idx, _inputs.floats(rng, (8, d)))
    cases.append((f"a lookup loss 0.5 * ||W[idx] - T||^2 with repeated indices, W of shape ({v}, {d})", w, f, grad(w)))
    v = 8
    pairs = _inputs.indices_with_repeats(rng, (10, 2), v)
    labels = (rng.random(10) < 0.5).astype(np.float64)
    w = _inputs.weight(rng, v, 2)
    f, grad = _pair_loss(pairs, labels, 1.5)
    cases.append((f"chapter 4's pair loss (logistic on minus a squared distance), W of shape ({v}, 2)", w, f, grad(w)))
    a = _inputs.floats(rng, (2, 3, 2))
    x = _inputs.floats(rng, (2, 3, 2))
    cases.append(("f(x) = sum(a * x + x**4 / 4), x of shape (2, 3, 2)", x,
                  lambda u: np.sum(a * u + u**4 / 4), a + x**3))
    return cases


def check_numerical_gradient(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(f, x)``: the gradient of a scalar function ``f`` at the float array ``x`` by central differences.

    ``fn`` must return an array of ``x``'s shape (``x`` may have any shape, 0-d included) whose entry
    ``j`` is ``(f(x + eps e_j) - f(x - eps e_j)) / (2 eps)``, and must leave ``x`` as it was. The
    hidden functions are smooth; one is a lookup loss with repeated indices and one is the pair loss
    that chapter 4 trains. The answer must be within a relative 1e-5 (absolute 1e-6) of the exact
    gradient, which central differences reach for any ``eps`` from about 1e-7 to 1e-3; a forward
    difference does not (the case near a minimum shows why).
    """
    rng = np.random.default_rng(seed)
    cases = []
    for description, x, f, exact in _numerical_cases(rng):
        recorder = _Recorder(f, x)
        cases.append(Case(description, (recorder, x), np.asarray(exact, dtype=np.float64), names=("f", "x"),
                          hint=_numerical_hint(recorder, x, np.asarray(exact, dtype=np.float64))))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="0-d to 3-D arrays, a lookup loss with repeats, the pair loss, a point near a minimum")


def _numerical_hint(recorder: _Recorder, x: np.ndarray, exact: np.ndarray):
    def hint(got):
        if got.shape != exact.shape:
            if got.size == exact.size:
                return f"return the gradient in the shape of x, {exact.shape}: reshape it (got {got.shape})"
            return "the gradient has one entry per entry of x, so it has x's shape"
        if not np.array_equal(np.asarray(x, dtype=np.float64), recorder.origin):
            return ("x was changed and not restored: perturb a copy (xp = x.copy(); xp.flat[j] += eps), "
                    "or put x.flat[j] back after both evaluations")
        steps = recorder.steps()
        moved = [s for s in steps if np.any(s != 0)]
        if moved and all(np.count_nonzero(s) > 1 for s in moved) and x.size > 1:
            return "perturb one entry of x at a time: entry j of the gradient needs f(x + eps e_j) and f(x - eps e_j)"
        if moved and not any(np.any(s < 0) for s in moved) and any(not np.any(s) for s in steps):
            return ("f was evaluated only at x and at x + eps e_j: that is a forward difference, whose error grows "
                    "with eps times the curvature. The central difference (f(x + eps e_j) - f(x - eps e_j)) / (2 eps) "
                    "is accurate to order eps**2")
        scale = float(np.vdot(got, exact) / max(np.vdot(exact, exact), 1e-300))
        if np.allclose(got, scale * exact, rtol=1e-4, atol=1e-6) and np.any(exact != 0):
            if np.isclose(scale, 2.0, rtol=1e-3):
                return "every entry is twice the gradient: the central difference divides by 2 * eps, not eps"
            if np.isclose(scale, 0.5, rtol=1e-3):
                return "every entry is half the gradient: divide the difference by 2 * eps, not 4 * eps"
            if np.isclose(scale, -1.0, rtol=1e-3):
                return "every entry has the wrong sign: it is f(x + eps e_j) - f(x - eps e_j), in that order"
        return None
    return hint


# --------------------------------------------------------------------------------------------------
# A sparse SGD step
# --------------------------------------------------------------------------------------------------
def check_sparse_sgd_step(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(weight, indices, grad_output, lr)``, an SGD step on a table after a lookup (chapter 4).

    ``grad_output`` (shape ``(*indices.shape, D)``) is the gradient of the loss w.r.t. the looked-up
    rows. ``fn`` must change ``weight`` IN PLACE to ``weight - lr * lookup_backward(indices,
    grad_output, V)``, writing only the rows in ``indices``: a row looked up several times moves by
    the sum of its gradients. What ``fn`` returns is ignored; the checker calls it on a copy of each
    hidden table and compares the table afterwards.
    """
    rng = np.random.default_rng(seed)
    state: dict = {}
    cases = []
    for shape in _inputs.index_shapes(rng) + [(200,)]:
        v, d = int(rng.integers(2, 15)), int(rng.integers(1, 6))
        if shape == (200,):
            v = 3  # every row many times
        idx = _inputs.indices_with_repeats(rng, shape, v)
        w = _inputs.weight(rng, v, d)
        g = _inputs.floats(rng, shape + (d,))
        lr = float(rng.choice([0.1, 0.5, 0.25]))
        expected = w - lr * _scatter_add(idx, g, v)
        cases.append(Case(f"table of shape ({v}, {d}), indices of shape {shape} (repeats included), lr={lr}",
                          (w, idx, g, lr), expected, names=("weight", "indices", "grad_output", "lr"),
                          hint=_step_hint(w, idx, g, lr, state)))
    name = _harness.name_of(fn)

    def on_a_copy(weight, indices, grad_output, lr):
        table = np.array(weight, copy=True)
        state["returned"] = fn(table, indices, grad_output, lr)
        return table

    on_a_copy.__name__ = name
    return _harness.run(name, on_a_copy, cases,
                        summary="scalar, empty, 1-D, 2-D and 3-D indices, many repeated rows, updates in place")


def _step_hint(w, idx, g, lr, state):
    def hint(got):
        v = w.shape[0]
        if got.shape != w.shape:
            return None
        expected = w - lr * _scatter_add(idx, g, v)
        returned = state.get("returned")
        if np.array_equal(got, w) and np.asarray(idx).size:
            if returned is not None and np.shape(returned) == w.shape and np.allclose(_harness.to_numpy(returned), expected):
                return ("your function returned the updated table but left `weight` as it was: a sparse step writes "
                        "the touched rows in place (weight[rows] -= ...), it does not build a new table")
            return "`weight` did not change: the step must update the looked-up rows in place"
        if np.allclose(got, w - lr * _buffered_add(idx, g, v)):
            return ("this is what `weight[idx] -= lr * grad_output` gives: with repeated indices only one update per "
                    "row survives. Use np.subtract.at(weight, idx, lr * grad_output), or sum the repeats first")
        if np.allclose(got, w + lr * _scatter_add(idx, g, v)):
            return "the rows moved up the gradient: SGD subtracts lr * gradient"
        if np.allclose(got, w - _scatter_add(idx, g, v)):
            return "the step ignores the learning rate: subtract lr * gradient"
        return None
    return hint


# --------------------------------------------------------------------------------------------------
# The backward pass of a bag
# --------------------------------------------------------------------------------------------------
_BAG_MODES = ("sum", "mean")


def _bag_members(idx, offsets):
    ends = np.r_[offsets[1:], len(idx)]
    return [idx[s:e] for s, e in zip(offsets, ends)]


def _bag_backward(idx, offsets, g, v, mode) -> np.ndarray:
    """Row ``i`` gets ``g[b]`` (divided by the bag's size for a mean) once per time ``i`` is in bag ``b``."""
    out = np.zeros((v, g.shape[1]))
    for b, members in enumerate(_bag_members(idx, offsets)):
        if len(members):
            np.add.at(out, members, g[b] / (len(members) if mode == "mean" else 1.0))
    return out


def check_embedding_bag_backward(fn, *, mode: str = "sum", seed: int = 0) -> CheckResult:
    """Check ``fn(indices, offsets, grad_output, num_embeddings)``: the gradient of a bag w.r.t. its table.

    The bags are laid out as in ``embedding_bag`` (chapter 2): 1-D ``indices``, bag ``b`` holds
    ``indices[offsets[b]:offsets[b + 1]]`` and the last bag runs to the end. ``grad_output`` has one
    row per bag. ``fn`` returns the dense ``(num_embeddings, D)`` gradient of a ``mode`` bag
    ("sum" or "mean"): every index of bag ``b`` adds ``grad_output[b]`` to its row, divided by the
    bag's size for a mean; empty bags add nothing (chapter 4).
    """
    if mode not in _BAG_MODES:
        raise ValueError(f"mode must be one of {_BAG_MODES}, got {mode!r}")
    rng = np.random.default_rng(seed)
    layouts = [([0], 4), ([0, 0], 3), ([0, 2, 2, 5], 7), ([0, 1, 2, 3], 3), ([0, 3], 6), ([0], 0), ([0, 40], 90)]
    for _ in range(3):
        sizes = rng.integers(0, 5, size=int(rng.integers(1, 7)))
        layouts.append(([0, *np.cumsum(sizes)[:-1].tolist()], int(sizes.sum())))
    cases = []
    for offsets, total in layouts:
        v, d = int(rng.integers(2, 10)), int(rng.integers(1, 5))
        if total >= 90:
            v = 4  # long bags that name every row many times
        idx = _inputs.indices_with_repeats(rng, (total,), v)
        off = np.asarray(offsets, dtype=np.int64)
        g = _inputs.floats(rng, (len(off), d))
        empty = int(np.sum(np.diff(np.r_[off, total]) == 0))
        cases.append(Case(f"{len(off)} bags ({empty} empty) over {total} indices, num_embeddings={v}, D={d}",
                          (idx, off, g, v), _bag_backward(idx, off, g, v, mode),
                          names=("indices", "offsets", "grad_output", "num_embeddings"),
                          hint=_bag_backward_hint(idx, off, g, v, mode)))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary=f"mode={mode!r}, empty bags, a single bag, long bags with repeated indices")


def _bag_backward_hint(idx, off, g, v, mode):
    def hint(got):
        if got.shape == g.shape and got.shape != (v, g.shape[1]):
            return ("the gradient has one row per row of the TABLE, (num_embeddings, D), not one per bag: "
                    "scatter each bag's gradient into the rows of its indices")
        if got.shape != (v, g.shape[1]):
            return None
        if not np.isfinite(got).all() and mode == "mean":
            return "NaN or inf: an empty bag has size 0; it contributes nothing, so skip it instead of dividing by its size"
        other = "sum" if mode == "mean" else "mean"
        if np.allclose(got, _bag_backward(idx, off, g, v, other)):
            return ("this is the gradient of a sum bag: a mean divides bag b's gradient by the bag's size"
                    if mode == "mean" else "this is the gradient of a mean bag: a sum bag does not divide by the size")
        bag_of = np.repeat(np.arange(len(off)), np.diff(np.r_[off, len(idx)]))
        sizes = np.diff(np.r_[off, len(idx)])
        per_index = g[bag_of] / (sizes[bag_of, None] if mode == "mean" else 1.0)
        if len(idx) and np.allclose(got, _buffered_add(idx, per_index, v)):
            return ("this is what `grad[idx] += ...` gives: a row named several times keeps only one contribution. "
                    "Use np.add.at, which accumulates repeats")
        return None
    return hint
