"""Checkers for chapter 11, words: the full-softmax gradient and the analogy arithmetic.

- :func:`check_softmax_gradient`: the gradient of word2vec's full-softmax loss
  ``-log softmax(W_out x)[o]`` with respect to the output table ``W_out`` (the proposition of chapter 11:
  every one of its ``V`` rows is touched);
- :func:`check_analogy`: "a is to b as c is to ?" answered by the closest unit row to
  ``b - a + c`` (3CosAdd), the three question words left out.

Both take plain NumPy inputs; a torch function works too (what it returns is converted).
"""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import Case, CheckResult


# --- the full-softmax gradient --------------------------------------------------------------------

def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())  # shifted by the largest logit: exp never overflows
    return e / e.sum()


def _softmax_gradient(x, weight, o) -> np.ndarray:
    """d/dW_out of -log softmax(W_out x)[o] = (p - e_o) x^T: row w gets (p_w - [w = o]) x."""
    p = _softmax(weight @ x)
    p[o] -= 1.0
    return np.outer(p, x)


def check_softmax_gradient(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x, weight, o)``: the gradient of ``-log softmax(weight @ x)[o]`` w.r.t. ``weight``.

    ``x`` (D,) is the input vector (a row of the input table), ``weight`` (V, D) the output table and
    ``o`` the id of the word to predict. ``fn`` must return a (V, D) array, the same shape as
    ``weight``. The cases include one output word (V = 1), ``o`` first and last, and logits in the
    hundreds, where ``exp`` overflows unless the largest logit is subtracted first.
    """
    rng = np.random.default_rng(seed)
    shapes = [(1, 3), (2, 1), (3, 2), (5, 4), (8, 3), (12, 5), (30, 6)]
    cases = []
    for number, (v, d) in enumerate(shapes):
        x, w = np.round(rng.standard_normal(d), 3), np.round(rng.standard_normal((v, d)), 3)
        o = 0 if number % 3 == 0 else (v - 1 if number % 3 == 1 else int(rng.integers(0, v)))
        cases.append(Case(f"V = {v}, D = {d}, o = {o}", (x, w, o), _softmax_gradient(x, w, o),
                          names=("x", "weight", "o"), hint=_softmax_hint(x, w, o)))
    # large logits: a naive exp overflows to inf and the gradient becomes NaN
    x, w = np.round(rng.standard_normal(4), 3) * 30, np.round(rng.standard_normal((6, 4)), 3) * 30
    cases.append(Case("V = 6, D = 4, o = 2, logits in the hundreds", (x, w, 2), _softmax_gradient(x, w, 2),
                      names=("x", "weight", "o"), hint=_softmax_hint(x, w, 2)))
    return _harness.run(_harness.name_of(fn), fn, cases,
                        summary="one word, first and last targets, logits in the hundreds", rtol=1e-6, atol=1e-9)


def _softmax_hint(x, weight, o):
    expected = _softmax_gradient(x, weight, o)
    p = _softmax(weight @ x)
    only_row_o = np.zeros_like(expected)
    only_row_o[o] = expected[o]

    def hint(got):
        if got.shape == x.shape:
            return "that is the gradient with respect to x; the question asks for the one w.r.t. weight, shape (V, D)"
        if got.shape == (weight.shape[1], weight.shape[0]):
            return "the gradient has the shape of weight, (V, D): transpose your outer product"
        if got.shape != expected.shape:
            return None
        if np.isnan(got).any():
            return "exp overflowed: subtract the largest logit before exponentiating (softmax does not change)"
        if np.allclose(got, -expected, rtol=1e-6, atol=1e-9):
            return "the sign is flipped: the loss is -log p_o, so row o's gradient is (p_o - 1) x and row w's is p_w x"
        if np.allclose(got, np.outer(p, x), rtol=1e-6, atol=1e-9):
            return "row o also gets -x from the -log of the true word's logit: the gradient is (p - one_hot(o)) x^T"
        if v_rows_touched(got) == 1 and np.allclose(got, only_row_o, rtol=1e-6, atol=1e-9):
            return ("only row o is right: the normaliser sum_w exp(W_w . x) depends on every row, so every row of "
                    "weight gets p_w x")
        return None
    return hint


def v_rows_touched(grad: np.ndarray) -> int:
    """The number of rows of a (V, D) gradient that are not all zero."""
    return int(np.any(grad != 0, axis=1).sum())


# --- analogies ------------------------------------------------------------------------------------

def _analogy(weight, a, b, c) -> int:
    """argmax over d not in {a, b, c} of cos(w_d, w_b - w_a + w_c), rows normalised first."""
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    scores = unit @ (unit[b] - unit[a] + unit[c])
    scores[[a, b, c]] = -np.inf
    return int(np.argmax(scores))


def check_analogy(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(weight, a, b, c)``: the row id ``d`` that answers "a is to b as c is to d" (3CosAdd).

    Normalise every row of ``weight`` (V, D) to length 1, form ``w_b - w_a + w_c`` from the unit rows,
    and return the id of the unit row with the largest cosine to it (the largest dot product), leaving
    out ``a``, ``b`` and ``c`` themselves, as an integer. The hidden tables have rows of very
    different lengths, as real word vectors do.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for v, d in [(4, 2), (5, 3), (8, 2), (10, 4), (20, 5), (30, 8), (60, 10), (100, 16)]:
        for _ in range(2):
            lengths = np.exp(rng.uniform(np.log(0.2), np.log(5.0), size=(v, 1)))     # 0.2 to 5
            w = np.round(rng.standard_normal((v, d)), 3) * np.round(lengths, 2)
            a, b, c = (int(i) for i in rng.choice(v, size=3, replace=False))
            cases.append(Case(f"V = {v}, D = {d}, a = {a}, b = {b}, c = {c}", (w, a, b, c),
                              np.int64(_analogy(w, a, b, c)), names=("weight", "a", "b", "c"),
                              hint=_analogy_hint(w, a, b, c), exact=True))
    # the nearest row to b - a + c is usually b or c itself: that is why they are left out
    w = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.5], [0.1, 1.0], [-1.0, 0.2]])
    cases.append(Case("V = 5, D = 2, the closest row is b itself", (w, 0, 1, 2), np.int64(_analogy(w, 0, 1, 2)),
                      names=("weight", "a", "b", "c"), hint=_analogy_hint(w, 0, 1, 2), exact=True))
    return _harness.run(_harness.name_of(fn), fn, cases, summary="rows of different lengths, question words left out")


def _analogy_hint(weight, a, b, c):
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)

    def hint(got):
        if got.size != 1:
            return "return one row id (an integer), not the scores"
        d = int(np.asarray(got).reshape(-1)[0])
        if d in (a, b, c):
            return "that is one of the question words: leave a, b and c out before taking the best row"
        raw = weight @ (weight[b] - weight[a] + weight[c])
        raw[[a, b, c]] = -np.inf
        if d == int(np.argmax(raw)):
            return ("without normalising, long rows win: divide every row by its length first (cosine, not "
                    "dot product)")
        half = unit @ (weight[b] - weight[a] + weight[c])
        half[[a, b, c]] = -np.inf
        if d == int(np.argmax(half)):
            return "normalise the rows a, b and c too before forming b - a + c"
        return None
    return hint
