"""Running a student's function on hidden cases and saying clearly what went wrong.

A checker builds a list of :class:`Case` objects (inputs and the expected answer, computed by
embedlib's reference implementation) and hands them to :func:`run`. ``run`` calls the student's
function on each case, converts what comes back to NumPy, and stops at the first problem: an
exception, a wrong shape, wrong values, or inputs changed in place. The report names the case,
shows its inputs when they are small enough to read, and adds a hint when the wrong answer is a
known mistake (for example the lost updates of ``W[idx] += g``).
"""
from __future__ import annotations

import traceback
import os
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

#: Inputs with at most this many numbers are printed in a failure report; larger ones are summarised.
SHOW_AT_MOST = 40
#: Problems and hints longer than this many characters are folded onto several lines.
REPORT_WIDTH = 96


@dataclass
class Case:
    """One hidden test: the arguments, what a correct function returns, and optional extras."""

    description: str
    args: tuple
    expected: Any
    #: names of the arguments, for the report
    names: tuple = ()
    #: ``hint(got) -> str | None``: recognises a known wrong answer and explains it
    hint: Callable[[np.ndarray], str | None] | None = None
    #: compare exactly (lookups copy numbers) instead of with a floating-point tolerance
    exact: bool = False
    #: torch checks only: the expected gradient of ``sum(output * grad_output)`` w.r.t. ``args[grad_arg]``
    grad_arg: int | None = None
    grad_output: Any = None
    grad_expected: Any = None
    #: ``grad_hint(grad) -> str | None``: recognises a known wrong gradient and explains it
    grad_hint: Callable[[np.ndarray], str | None] | None = None


@dataclass(frozen=True)
class CheckResult:
    """What a checker found. True when the function passed; printing it gives the report."""

    name: str
    passed: bool
    cases_run: int
    cases_total: int
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def name_of(fn) -> str:
    """How a report names the reader's function: ``my_lookup``, or ``MyLookup.apply`` for autograd."""
    name = getattr(fn, "__name__", None)
    owner = getattr(fn, "__self__", None)
    if name and isinstance(owner, type):  # a classmethod such as torch.autograd.Function.apply
        return f"{owner.__name__}.{name}"
    return name or "your function"


def to_numpy(value) -> np.ndarray:
    """A NumPy array from whatever the student returned (arrays, lists, torch tensors)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _show(name: str, value) -> str:
    try:
        arr = to_numpy(value)
    except ValueError:  # a ragged list of lists: show it as Python prints it
        text = repr(value)
        return f"    {name} = {text if len(text) <= 200 else text[:197] + '...'}"
    if arr.dtype == object:
        return f"    {name} = {repr(value)[:200]}"
    if arr.size <= SHOW_AT_MOST:
        prefix = f"    {name} = "
        return prefix + np.array2string(arr, precision=4, separator=", ", threshold=SHOW_AT_MOST, prefix=prefix)
    return f"    {name}: array of shape {arr.shape}, dtype {arr.dtype}"


def _first_difference(got: np.ndarray, expected: np.ndarray, exact: bool, rtol: float, atol: float) -> str | None:
    if exact:
        bad = ~((got == expected) | (np.isnan(got) & np.isnan(expected)))
    else:
        bad = ~np.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    count = int(bad.sum())
    return (
        f"{count:,} of {bad.size:,} values differ; the first at position {where}: "
        f"expected {float(expected[where]):.6g}, got {float(got[where]):.6g}"
    )


def _call(fn, args):
    try:
        return fn(*args), None
    except Exception as exc:  # the student's error is the report, not a crash of the checker
        return None, f"raised {type(exc).__name__}: {exc}{_where(exc)}"


def _where(exc: BaseException) -> str:
    """`` (line N of fn)`` for the last line of the reader's own code that the error passed through.

    Frames inside installed libraries (NumPy, torch) and inside this package are skipped: a reader
    wants to know which of their lines called ``np.take`` wrongly, not where NumPy noticed.
    """
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the embedlib package
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "site-packages" not in f.filename and "dist-packages" not in f.filename
           and not os.path.abspath(f.filename).startswith(here)]
    return f" (line {own[-1].lineno} of {own[-1].name})" if own else ""


def _copy(arg):
    if hasattr(arg, "detach") and hasattr(arg, "clone"):
        return arg.detach().clone()
    if isinstance(arg, np.ndarray):
        return arg.copy()
    return arg


def _changed(before, after) -> bool:
    if isinstance(before, np.ndarray) or hasattr(before, "detach"):
        a, b = to_numpy(before), to_numpy(after)
        return a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return False


def _fail(name, number, total, case: Case, problem: str, hint: str | None, inputs: tuple) -> CheckResult:
    """The report of a failed case; ``inputs`` are the arguments as they were before the call."""
    names = case.names or tuple(f"argument {i}" for i in range(len(case.args)))
    lines = [f"✗ {name} failed hidden case {number} of {total}: {case.description}", "  inputs:"]
    lines += [_show(n, a) for n, a in zip(names, inputs) if not callable(a)]
    lines.append(_wrap(f"  problem: {problem}"))
    if hint:
        lines.append(_wrap(f"  hint: {hint}"))
    return CheckResult(name, False, number, total, "\n".join(lines))


def _wrap(text: str) -> str:
    """Long explanations folded to ``REPORT_WIDTH`` columns, so a report reads without scrolling."""
    return textwrap.fill(text, width=REPORT_WIDTH, subsequent_indent="    ", break_long_words=False,
                         break_on_hyphens=False)


def require_callable(fn, name: str) -> None:
    """A clear error for ``check_x(my_fn())`` instead of ``check_x(my_fn)``; checkers that wrap ``fn``
    call it before wrapping (a wrapper is always callable)."""
    if not callable(fn):
        raise TypeError(f"pass your function itself, not {type(fn).__name__} (write {name}, not {name}())")


def recording(fn, name: str):
    """``(wrapper, outputs)``: ``wrapper`` calls ``fn`` and keeps what it returned in ``outputs``, for a
    checker that inspects the results once their values are right (their dtype, say); it carries
    ``fn``'s name into the report."""
    outputs = []

    def recorded(*args):
        out = fn(*args)
        outputs.append(out)
        return out

    recorded.__name__ = name
    return recorded, outputs


def run(name: str, fn: Callable, cases: Sequence[Case], *, summary: str, rtol: float = 1e-5,
        atol: float = 1e-6) -> CheckResult:
    """Run ``fn`` on every case; the first problem found is the report. ``summary`` says what was covered."""
    require_callable(fn, name)
    total = len(cases)
    for number, case in enumerate(cases, start=1):
        kept = tuple(_copy(a) for a in case.args)
        problem = _problem(fn, case, kept, rtol, atol)
        if problem is not None:
            return _fail(name, number, total, case, *problem, kept)
    return CheckResult(name, True, total, total, f"✓ {name} passed all {total} hidden cases ({summary})")


def _problem(fn, case: Case, kept: tuple, rtol: float, atol: float) -> tuple[str, str | None] | None:
    """``(problem, hint)`` for the first thing wrong with ``fn`` on ``case``, or None if it passed."""
    got, error = _call(fn, case.args)
    if error is not None:
        return error, None
    if got is None:
        return "returned None: did you forget `return`?", None
    got_np = to_numpy(got)
    expected = to_numpy(case.expected)
    if got_np.shape != expected.shape:
        return f"expected shape {expected.shape}, got shape {got_np.shape}", case.hint and case.hint(got_np)
    if got_np.dtype.kind not in "fiub":
        return f"expected numbers, got dtype {got_np.dtype}", None
    diff = _first_difference(got_np.astype(np.float64), expected.astype(np.float64), case.exact, rtol, atol)
    if diff is not None:
        return diff, case.hint and case.hint(got_np)
    for arg_name, before, after in zip(case.names or range(len(case.args)), kept, case.args):
        if _changed(before, after):
            return (f"the function changed its input `{arg_name}` in place; it must only read it",
                    "work on a copy (np.zeros for a new output) instead of writing into an argument")
    if case.grad_arg is not None:
        problem = _check_gradient(got, case, rtol, atol)
        if problem is not None:
            leaf = case.args[case.grad_arg]
            hint = case.grad_hint(to_numpy(leaf.grad)) if case.grad_hint and leaf.grad is not None else None
            return problem, hint
    return None


def _check_gradient(got, case: Case, rtol: float, atol: float) -> str | None:
    """torch: backpropagate ``grad_output`` through the student's output and compare the gradient."""
    import torch

    leaf = case.args[case.grad_arg]
    if not isinstance(got, torch.Tensor) or not got.requires_grad:
        return ("the output does not carry a gradient back to the weight (requires_grad is False): "
                "compute it with torch operations on the weight, without .detach(), .numpy() or torch.no_grad()")
    leaf.grad = None
    got.backward(torch.as_tensor(case.grad_output, dtype=got.dtype, device=got.device))
    if leaf.grad is None:
        return "backward() left weight.grad empty: the output is not computed from the weight passed in"
    diff = _first_difference(to_numpy(leaf.grad).astype(np.float64),
                             to_numpy(case.grad_expected).astype(np.float64), False, rtol, atol)
    return None if diff is None else f"forward is right, but the gradient w.r.t. the weight is wrong: {diff}"
