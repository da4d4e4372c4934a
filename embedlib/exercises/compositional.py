"""Checker for chapter 14, smaller tables: the quotient-remainder lookup.

:func:`check_qr_lookup` runs a reader's ``fn(indices, quotient_weight, remainder_weight)`` on hidden
cases and compares with ``embedlib.numpy.compositional.qr_lookup`` (operation "mult"): id ``i``
reads row ``i // R`` of the quotient table and row ``i % R`` of the remainder table, R being the
remainder table's number of rows, and the two rows are multiplied entry by entry.
"""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness, _inputs
from embedlib.exercises._harness import Case, CheckResult
from embedlib.numpy.compositional import qr_lookup, qr_lookup_backward

_NAMES = ("indices", "quotient_weight", "remainder_weight")

_DIVISOR = ("R, the divisor, is the number of rows of remainder_weight (remainder_weight.shape[0]), not of "
            "quotient_weight: id i reads row i // R of quotient_weight and row i % R of remainder_weight")
_SWAPPED = ("the quotient i // R picks the row of quotient_weight and the remainder i % R the row of "
            "remainder_weight; your function uses them the other way round")
_SUM = "combine the two rows by an element-wise product (operation 'mult'), not a sum"
_OUT_OF_RANGE = ("a row index ran past its table: R = remainder_weight.shape[0] is the divisor; i // R "
                 "indexes quotient_weight and i % R indexes remainder_weight, not the other way round")
_ONE_TABLE = "use both rows: quotient_weight[i // R] * remainder_weight[i % R]"


def _rows(table, ids):
    """``table[ids]``, or None where an id has no row (that mistake would have raised instead)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        return None
    return table[ids]


def _mistakes(idx, wq, wr):
    """What the classic wrong answers return on this case: ``[(hint, value or None)]``."""
    q_rows, r_rows = wq.shape[0], wr.shape[0]
    by_q = (_rows(wq, idx // q_rows), _rows(wr, idx % q_rows))
    swapped = (_rows(wq, idx % r_rows), _rows(wr, idx // r_rows))
    right = (wq[idx // r_rows], wr[idx % r_rows])
    product = (lambda a, b: None if a is None or b is None else a * b)
    return [(_DIVISOR, product(*by_q)), (_SWAPPED, product(*swapped)), (_SUM, right[0] + right[1]),
            (_ONE_TABLE, right[0]), (_ONE_TABLE, right[1])]


def _hint(idx, wq, wr, expected):
    def hint(got):
        if got.shape != expected.shape:
            if got.shape == idx.shape:
                return "return one row per index: shape (*indices.shape, D), D the tables' width"
            return None
        for text, value in _mistakes(idx, wq, wr):
            if value is not None and value.shape == got.shape and not np.allclose(value, expected) \
                    and np.allclose(got, value, rtol=1e-5, atol=1e-6):
                return text
        return None
    return hint


def _case(kind, description, idx, wq, wr, rng) -> Case:
    expected = qr_lookup(idx, wq, wr)
    case = Case(f"{description}: indices of shape {idx.shape}, quotient_weight {wq.shape}, remainder_weight "
                f"{wr.shape}", (_inputs.to_backend(kind, idx), _inputs.to_backend(kind, floats=wq, requires_grad=True),
                                _inputs.to_backend(kind, floats=wr)),
                expected, names=_NAMES, hint=_hint(idx, wq, wr, expected))
    if kind == "torch":  # the chain rule reaches the quotient table: g * Wr[i % R], added into rows i // R
        g = _inputs.floats(rng, expected.shape)
        case.grad_arg, case.grad_output = 1, g
        case.grad_expected = qr_lookup_backward(idx, g, wq, wr)[0]
    return case


def check_qr_lookup(fn, *, backend: str = "numpy", seed: int = 0) -> CheckResult:
    """Check ``fn(indices, quotient_weight, remainder_weight)``, the quotient-remainder lookup (chapter 14).

    It must return ``quotient_weight[i // R] * remainder_weight[i % R]`` for every id ``i``, with
    ``R = remainder_weight.shape[0]``, shaped ``(*indices.shape, D)``. With ``backend="torch"`` the
    inputs are tensors and the gradient with respect to ``quotient_weight`` is checked too.
    """
    kind = _inputs.backend(backend)
    rng = np.random.default_rng(seed)
    cases = []
    # (Q, R): a square pair first (swapped roles show in the values), then one whose ids all have
    # i % Q < R (the divisor taken from the quotient table shows in the values, not as an IndexError),
    # then tables of different sizes both ways and one-row tables, each case with the last id Q * R - 1
    sizes = [(4, 4), (5, 3), (3, 5), (6, 1), (1, 6), (int(rng.integers(2, 9)), int(rng.integers(2, 9)))]
    for (q, r), shape in zip(sizes, [(3, 4), (7,), (6,), (5,), (5,), (2, 3, 2)]):
        d = int(rng.integers(1, 5))
        if (q, r) == (5, 3):
            ids = np.arange(q * r)
            idx = rng.choice(ids[ids % q < r], size=shape)
        else:
            idx = rng.integers(0, q * r, size=shape)
            idx.reshape(-1)[-1] = q * r - 1  # the last id: the last row of both tables
        cases.append(_case(kind, f"{q} quotient rows, {r} remainder rows", idx,
                           _inputs.weight(rng, q, d), _inputs.weight(rng, r, d), rng))
    q, r, d = 5, 4, 3
    for description, idx in (("a single id (0-d indices)", np.array(13)), ("no ids", np.zeros(0, dtype=np.int64)),
                             ("every id once, in order", np.arange(q * r))):
        cases.append(_case(kind, description, idx, _inputs.weight(rng, q, d), _inputs.weight(rng, r, d), rng))
    name = _harness.name_of(fn)
    result = _harness.run(name, fn, cases, summary="tables of different sizes both ways, square and one-row "
                          "tables, the last id, 0-d and empty indices" + (", gradients" if kind == "torch" else ""))
    if not result and "raised IndexError" in result.message and "hint:" not in result.message:
        hint = ("arrays used as indices must be integers: use // (floor division), not /"
                if "integer" in result.message or "long, int" in result.message else _OUT_OF_RANGE)
        return CheckResult(result.name, False, result.cases_run, result.cases_total,
                           result.message + "\n" + _harness._wrap(f"  hint: {hint}"))
    return result
