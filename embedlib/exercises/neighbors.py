"""Checker for chapter 7, the embedding space: a reader's own nearest neighbours by cosine similarity.

:func:`check_nearest_neighbors` runs ``fn(weight, query_row, k)`` on hidden tables and compares it
with ``el.nearest_neighbors(weight, query_row, k, metric="cosine")``: first the row ids, exactly,
then the scores, with a floating-point tolerance. Some tables hold only entries of 0, +-1 and +-2
and rows of length 2 or 4, so that every cosine is computed exactly, whatever the order of the sums:
their ties are true ties, and the tie rule (lower row id first) can be checked without rounding
getting in the way.
"""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import Case, CheckResult
from embedlib.numpy.neighbors import nearest_neighbors

_NAMES = ("weight", "query_row", "k")


# --- references: the right answer and the classic wrong ones ---------------------------------------

def _cosines(weight: np.ndarray, query_row: int) -> np.ndarray:
    """Cosine of every row with row ``query_row``; a zero row has cosine 0 (as in el.nearest_neighbors)."""
    norms = np.linalg.norm(weight, axis=1)
    unit = weight / np.maximum(norms, np.finfo(np.float64).tiny)[:, None]
    return unit @ unit[query_row]


def _ranking(key: np.ndarray, query_row: int | None, k: int) -> np.ndarray:
    """The ``k`` rows with the smallest ``key``, ties by lower id; ``query_row`` left out if given."""
    ids = np.arange(key.size)
    keep = ids != query_row if query_row is not None else np.ones(key.size, dtype=bool)
    return ids[keep][np.argsort(key[keep], kind="stable")][:k]


def _wrong_rankings(weight: np.ndarray, q: int, k: int) -> list[tuple[np.ndarray, str]]:
    """(ids, hint) for the classic mistakes, in the order in which they are diagnosed."""
    cos = _cosines(weight, q)
    dot = weight @ weight[q]
    distance = np.linalg.norm(weight - weight[q], axis=1)
    wrong = [
        (_ranking(-dot, q, k),
         "these are the neighbours by dot product, weight @ weight[query_row]: it rewards long rows. Divide "
         "by both lengths to get the cosine, which compares directions only"),
        (_ranking(distance, q, k),
         "these are the neighbours by Euclidean distance; they agree with the cosine only when every row "
         "has length 1 (chapter 7's exercise 'Cosine and distance'). Rank by the cosine itself"),
        (_ranking(cos, q, k),
         "these are the k LEAST similar rows: np.argsort sorts in increasing order, so sort by -scores "
         "to get the most similar first"),
        (_ranking(-cos, None, k + 1)[1:],
         "dropping the first entry of the ranking assumes that query_row comes first. A row equal to it "
         "(cosine 1 too, and a lower id) can come before it, and a zero row is nobody's best match: "
         "leave out query_row by its id instead"),
    ]
    zero = np.linalg.norm(weight, axis=1) == 0
    if zero.any():
        # dividing by a length of 0 gives NaN, which np.argsort puts last: after every row, or after
        # the query row too when that was pushed down with -inf
        text = ("a row of zeros has no direction, and dividing by its length 0 gives NaN, which sorts last. "
                "Give it cosine 0, as el.nearest_neighbors does: divide by np.maximum(norm, tiny) instead")
        key = np.where(zero | zero[q], 3.0, -cos)
        wrong.append((_ranking(key, q, k), text))
        key[q] = 2.0
        wrong.append((_ranking(key, None, k), text))
    return wrong


def _ids_hint(weight: np.ndarray, q: int, k: int, expected: np.ndarray):
    cos = _cosines(weight, q)

    def hint(got):
        if got.ndim == 0:
            return "return a pair (ids, scores), two arrays of length k; this looks like a single number"
        if got.shape != expected.shape:
            if got.shape == (k + 1,) or (got.ndim == 1 and got.size == weight.shape[0]):
                return f"return exactly k={k} ids, the query row not among them"
            return f"return k={k} row ids, best first, as a 1-D array of shape ({k},)"
        for wrong, text in _wrong_rankings(weight, q, k):
            if np.array_equal(got, wrong) and not np.array_equal(wrong, expected):
                return text
        if q in got.tolist():
            return (f"row {q} (query_row itself) is in its own answer: it has cosine 1 with itself and must be "
                    "left out")
        if np.array_equal(np.sort(got), np.sort(expected)):
            if np.all(np.diff(cos[got.astype(np.int64)]) <= 0):
                return ("the right rows, best first, but equal cosines must be ordered by the lower row id "
                        "first. np.argsort(scores)[::-1] reverses the ties too, and np.argsort's default sort "
                        "is not stable: use np.argsort(-scores, kind='stable')")
            return "the right rows, in the wrong order: best (largest cosine) first, ties by lower row id"
        return None
    return hint


def _scores_hint(weight: np.ndarray, q: int, ids: np.ndarray):
    cos = _cosines(weight, q)[ids]
    others = [
        ((weight @ weight[q])[ids], "these are dot products: divide by both rows' lengths to get the cosine"),
        (1.0 - cos, "these are cosine distances, 1 - cos: return the cosine similarities themselves"),
        (np.linalg.norm(weight[ids] - weight[q], axis=1),
         "these are Euclidean distances: return the cosine similarities"),
    ]

    def hint(got):
        if got.shape != cos.shape:
            return f"the scores are the cosines of the k={ids.size} rows returned, one per id"
        if np.isnan(got).any():
            return ("NaN: a row of zeros has length 0. Its cosine with anything is defined as 0 (as in "
                    "el.nearest_neighbors): divide by np.maximum(norm, tiny)")
        for wrong, text in others:
            if np.allclose(got, wrong, rtol=1e-5, atol=1e-6):
                return text
        return None
    return hint


# --- the hidden cases ----------------------------------------------------------------------------

def _signs_table(rng: np.random.Generator, v: int) -> np.ndarray:
    """Rows of +-1 (length 2), some doubled (length 4), some +-2 e_j (length 2): every cosine is exact."""
    rows = rng.choice([-1.0, 1.0], size=(v, 4))
    doubled = rng.random(v) < 0.3
    rows[doubled] *= 2
    axis = rng.random(v) < 0.15
    rows[axis] = 0.0
    rows[axis, rng.integers(0, 4, size=int(axis.sum()))] = 2.0 * rng.choice([-1.0, 1.0], size=int(axis.sum()))
    return rows


def _varied_lengths(rng: np.random.Generator, v: int, d: int) -> np.ndarray:
    """Random directions with lengths from 0.2 to 5, so that the dot product ranks differently."""
    w = rng.standard_normal((v, d))
    return np.round(w * rng.uniform(0.2, 5.0, size=(v, 1)), 3)


def _cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray, int, int]]:
    cases = []
    w = _varied_lengths(rng, 6, 2)
    cases.append(("6 rows of different lengths in 2-D, k=2", w, 0, 2))
    w = _varied_lengths(rng, 7, 3)
    cases.append(("7 rows, k=1: the single best neighbour", w, int(rng.integers(0, 7)), 1))
    w = _varied_lengths(rng, 8, 3)
    cases.append(("8 rows, k=V-1=7: every other row, negative cosines included", w, 5, 7))
    w = _signs_table(rng, 9)
    w[2] = w[6]  # the query's duplicate, with a lower id
    w[4] = w[7] = -w[6]
    cases.append(("rows of +-1 and +-2 with exact ties: row 2 duplicates the query row 6, rows 4 and 7 "
                  "are opposite to it, k=V-1=8", w, 6, 8))
    w = _signs_table(rng, 10)
    w[1] = 0.0
    w[8] = w[3]
    cases.append(("a row of zeros (row 1, cosine 0 with every row) among rows of +-1 and +-2, k=V-1=9",
                  w, 3, 9))
    w = _varied_lengths(rng, 5, 2)
    w[2] = 0.0
    cases.append(("the query row is a row of zeros: every cosine is 0, so the lowest ids come first",
                  w, 2, 3))
    w = _signs_table(rng, 40)
    w[29] = w[11]
    cases.append(("40 rows of +-1 and +-2 in 4-D: many exact ties, k=12", w, 29, 12))
    w = np.round(rng.standard_normal((2, 3)), 3)
    cases.append(("2 rows: k=V-1=1", w, 1, 1))
    for _ in range(3):
        v, d = int(rng.integers(20, 80)), int(rng.integers(2, 9))
        w = _varied_lengths(rng, v, d)
        cases.append((f"{v} random rows in {d}-D", w, int(rng.integers(0, v)), int(rng.integers(1, v))))
    return cases


def _not_a_pair(fn, case: Case, total: int, name: str) -> CheckResult | None:
    """A clear report when the first case's answer is not a pair (ids, scores); None otherwise.

    Errors raised by ``fn`` are left to the harness, which reports them with their line.
    """
    inputs = tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in case.args)
    try:
        out = fn(*case.args)
    except Exception:
        return None
    if out is None or (isinstance(out, (tuple, list)) and len(out) == 2):
        return None
    shape = getattr(out, "shape", None)
    what = type(out).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")
    return _harness._fail(name, 1, total, case, f"returned a {what}, not a pair (ids, scores)",
                          "end with `return ids, scores`: the k row ids and their cosines, two arrays", inputs)


def _pair(out, part: int):
    """Part ``part`` (0: ids, 1: scores) of what the reader returned; None passes through to the harness."""
    if out is None:
        return None
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out[part]
    shape = getattr(out, "shape", None)
    raise TypeError(f"return a pair (ids, scores), as `return ids, scores`; got {type(out).__name__}"
                    + (f" of shape {tuple(shape)}" if shape is not None else ""))


def check_nearest_neighbors(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(weight, query_row, k)``: the ``k`` rows most cosine-similar to a row (chapter 7).

    ``fn`` must return a pair ``(ids, scores)`` of length ``k`` each: the ids of the ``k`` rows of
    ``weight`` with the largest cosine similarity to row ``query_row``, best first, ``query_row``
    itself left out, equal cosines ordered by the lower row id; and their cosines. A row of zeros
    has cosine 0 with every row. This is the contract of ``el.nearest_neighbors(weight, query_row,
    k, metric="cosine")``, which computes the expected answers. The ids are compared exactly, then
    the scores within a relative 1e-5 (absolute 1e-6).
    """
    name = _harness.name_of(fn)
    _harness.require_callable(fn, name)
    rng = np.random.default_rng(seed)
    id_cases, score_cases = [], []
    for description, w, q, k in _cases(rng):
        w = np.asarray(w, dtype=np.float64)
        expected = nearest_neighbors(w, q, k, metric="cosine")
        id_cases.append(Case(description, (w, q, k), expected.indices, names=_NAMES, exact=True,
                             hint=_ids_hint(w, q, k, expected.indices)))
        score_cases.append(Case(f"{description} (the ids are right; now the scores)", (w, q, k), expected.scores,
                                names=_NAMES, hint=_scores_hint(w, q, expected.indices)))

    def ids(weight, query_row, k):
        return _pair(fn(weight, query_row, k), 0)

    def scores(weight, query_row, k):
        return _pair(fn(weight, query_row, k), 1)

    ids.__name__ = scores.__name__ = name
    shape_problem = _not_a_pair(fn, id_cases[0], len(id_cases), name)
    if shape_problem is not None:
        return shape_problem
    result = _harness.run(name, ids, id_cases, summary="")
    if not result:
        return result
    result = _harness.run(name, scores, score_cases, summary="")
    if not result:
        return result
    return CheckResult(name, True, len(id_cases), len(id_cases),
                       f"✓ {name} passed all {len(id_cases)} hidden cases (k=1 and k=V-1, exact ties, "
                       "a duplicate of the query row, a zero row and a zero query, negative cosines; "
                       "ids and scores)")
