"""Checker for chapters 2, 5 and 8: embedding bags given by 1-D indices and offsets."""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness, _inputs
from embedlib.exercises._harness import Case, CheckResult

MODES = ("sum", "mean", "max")


def _reference_bag(idx, w, offsets, mode) -> np.ndarray:
    """Bag b holds indices[offsets[b]:offsets[b+1]] (the last runs to the end); empty bags give zeros."""
    ends = np.r_[offsets[1:], len(idx)]
    out = np.zeros((len(offsets), w.shape[1]))
    for b, (start, end) in enumerate(zip(offsets, ends)):
        rows = w[idx[start:end]]
        if len(rows):
            out[b] = {"sum": rows.sum(0), "mean": rows.mean(0), "max": rows.max(0)}[mode]
    return out


def _bag_backward(idx, w, offsets, mode, g) -> np.ndarray:
    ends = np.r_[offsets[1:], len(idx)]
    grad = np.zeros_like(w)
    for b, (start, end) in enumerate(zip(offsets, ends)):
        members = idx[start:end]
        if not len(members):
            continue
        if mode == "max":
            rows = w[members]
            for j in range(w.shape[1]):
                grad[members[np.argmax(rows[:, j])], j] += g[b, j]
        else:
            scale = 1.0 if mode == "sum" else 1.0 / len(members)
            np.add.at(grad, members, scale * g[b])
    return grad


def check_embedding_bag(fn, *, mode: str = "sum", backend: str = "numpy", seed: int = 0) -> CheckResult:
    """Check ``fn(indices, weight, offsets)`` for bags in ``mode`` "sum", "mean" or "max".

    ``indices`` and ``offsets`` are 1-D: bag ``b`` holds ``indices[offsets[b]:offsets[b + 1]]`` and the
    last bag runs to the end of ``indices``, as in ``torch.nn.functional.embedding_bag``. The cases
    include empty bags (which must give zeros) and repeated indices; in the torch backend the
    gradient with respect to ``weight`` is checked too.
    """
    kind = _inputs.backend(backend)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rng = np.random.default_rng(seed)
    # (offsets, number of indices): one bag, empty bags first, in the middle and last, then random ones
    layouts = [([0], 4), ([0, 0], 3), ([0, 2, 2, 5], 7), ([0, 1, 2, 3], 3), ([0, 3], 3), ([0, 4, 4], 6),
               ([0], 0)]
    for _ in range(4):
        sizes = rng.integers(0, 5, size=int(rng.integers(1, 7)))
        layouts.append(([0, *np.cumsum(sizes)[:-1].tolist()], int(sizes.sum())))
    cases = []
    for offsets, total in layouts:
        v, d = int(rng.integers(2, 10)), int(rng.integers(1, 5))
        idx = _inputs.indices_with_repeats(rng, (total,), v)
        w = _inputs.weight(rng, v, d)
        off = np.asarray(offsets, dtype=np.int64)
        empty = int(np.sum(np.diff(np.r_[off, total]) == 0))
        g = _inputs.floats(rng, (len(off), d))
        case = Case(f"{len(off)} bags ({empty} empty) over {total} indices, weight of shape ({v}, {d})",
                    (_inputs.to_backend(kind, idx), _inputs.to_backend(kind, floats=w, requires_grad=True),
                     _inputs.to_backend(kind, off)),
                    _reference_bag(idx, w, off, mode), names=("indices", "weight", "offsets"),
                    hint=_bag_hint(idx, w, off, mode))
        if kind == "torch":
            case.grad_arg, case.grad_output, case.grad_expected = 1, g, _bag_backward(idx, w, off, mode, g)
        cases.append(case)
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary=f"mode={mode!r}, empty bags, a single bag, repeated indices"
                        + (", gradients" if kind == "torch" else ""))


def _bag_hint(idx, w, off, mode):
    def hint(got):
        ends = np.r_[off[1:], len(idx)]
        empties = [b for b, (s, e) in enumerate(zip(off, ends)) if s == e]
        if empties and got.shape == (len(off), w.shape[1]):
            b = empties[0]
            if not np.allclose(got[b], 0) and off[b] < len(idx) and np.allclose(got[b], w[idx[off[b]]]):
                return (f"bag {b} is empty and must give zeros, but holds row {idx[off[b]]}: this is what "
                        "np.add.reduceat does with equal offsets")
            if np.isnan(got[b]).any():
                return f"bag {b} is empty and must give zeros (a mean over nothing is 0/0 = NaN unless handled)"
        return None
    return hint
