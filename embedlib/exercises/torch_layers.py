"""Checker for chapter 5: a reader's own embedding layer as a ``torch.nn.Module``.

The reader writes a class that is constructed like ``torch.nn.Embedding``,
``MyEmbedding(num_embeddings, embedding_dim, padding_idx=None)``, holds its table in a parameter
called ``weight`` and looks rows up in ``forward(indices)``. The checker first inspects fresh layers
(is ``weight`` a registered ``nn.Parameter`` of the right shape? does the padding row start at zero,
and the other rows at random values?), then gives each hidden case a known table and compares the
output and the gradient with ``torch.nn.Embedding`` holding the same table. Torch is imported only
when the checker runs, so ``import embedlib.exercises`` stays free of torch.
"""
from __future__ import annotations

import numpy as np

from embedlib.exercises import _harness, _inputs
from embedlib.exercises._harness import Case, CheckResult

# (indices shape, num_embeddings, embedding_dim, padding_idx): scalar, empty, 1-D, 2-D, 3-D, and
# padding given as a positive and as a negative index (nn.Embedding counts -1 as the last row)
_LAYOUTS = [((), 6, 3, None), ((0,), 4, 2, None), ((9,), 5, 4, None), ((3, 4), 8, 3, None),
            ((2, 3, 2), 6, 2, None), ((12,), 5, 3, 0), ((4, 5), 7, 2, 3), ((10,), 6, 3, -1)]


def _fail_early(name: str, total: int, problem: str, hint: str | None = None) -> CheckResult:
    """A report for a layer that fails before any hidden case can run (construction, the weight)."""
    lines = [f"✗ {name} failed before the hidden cases: {problem}"]
    if hint:
        lines.append(f"  hint: {hint}")
    return CheckResult(name, False, 0, total, "\n".join(lines))


def _construct(cls, num_embeddings, embedding_dim, padding_idx):
    """``cls(V, D)`` or ``cls(V, D, padding_idx=...)``, and an error message instead of an exception."""
    args = f"{num_embeddings}, {embedding_dim}" + ("" if padding_idx is None else f", padding_idx={padding_idx}")
    try:
        if padding_idx is None:
            return cls(num_embeddings, embedding_dim), None
        return cls(num_embeddings, embedding_dim, padding_idx=padding_idx), None
    except Exception as exc:  # the reader's error is the report
        return None, f"{getattr(cls, '__name__', 'the class')}({args}) raised {type(exc).__name__}: {exc}"


def _structure_problem(cls) -> tuple[str, str | None] | None:
    """What is wrong with freshly built layers, as ``(problem, hint)``, or None."""
    import torch
    from torch import nn

    layer, error = _construct(cls, 6, 4, None)
    if error is not None:
        return error, "the constructor must accept (num_embeddings, embedding_dim, padding_idx=None)"
    if not isinstance(layer, nn.Module):
        return (f"{type(layer).__name__} is not a torch.nn.Module",
                "subclass nn.Module and call super().__init__() first in __init__")
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return "the layer has no tensor attribute `weight`", "store the table as self.weight"
    if tuple(weight.shape) != (6, 4):
        return (f"the weight of a layer built with (6, 4) has shape {tuple(weight.shape)}, expected (6, 4)",
                "one row per category, one column per embedding dimension: (num_embeddings, embedding_dim)")
    if not isinstance(weight, nn.Parameter) or not any(p is weight for p in layer.parameters()):
        return ("`weight` is not a registered nn.Parameter, so layer.parameters() does not contain it: "
                "an optimiser would never update it, and layer.to(device) would not move it",
                "write self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))")
    if not weight.dtype.is_floating_point:
        return f"the weight has dtype {weight.dtype}, expected floating point", None
    values = weight.detach().cpu().double().numpy()
    if np.all(values == 0):
        return ("every entry of a fresh weight is zero",
                "initialise it with torch.randn, N(0, 1) as nn.Embedding does: in a model that multiplies two "
                "embeddings, tables that start at zero get zero gradients and never move")
    if np.all(values == values.flat[0]):
        return "every entry of a fresh weight has the same value", "initialise it with torch.randn, as nn.Embedding does"
    for pad, row in ((2, 2), (-1, 5)):
        layer, error = _construct(cls, 6, 4, pad)
        if error is not None:
            return error, "the constructor must accept a padding_idx keyword argument"
        w = getattr(layer, "weight", None)
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (6, 4):
            return f"with padding_idx={pad} the layer has no weight of shape (6, 4)", None
        got = w.detach().cpu().double().numpy()
        if not np.all(got[row] == 0):
            note = "" if pad >= 0 else " (a negative padding_idx counts from the end, like an index: -1 is the last row)"
            return (f"with padding_idx={pad}, row {row} of a fresh weight is {np.round(got[row], 4).tolist()}, "
                    f"expected zeros{note}",
                    "zero the padding row after initialising, under torch.no_grad()")
    return None


def _forward_with(cls, num_embeddings, embedding_dim, padding_idx):
    """A function ``(indices, weight) -> output`` that runs a fresh layer whose parameter IS ``weight``,
    so the harness's gradient check reads the layer's gradient from ``weight.grad``."""
    def forward(indices, weight):
        layer = cls(num_embeddings, embedding_dim) if padding_idx is None else \
            cls(num_embeddings, embedding_dim, padding_idx=padding_idx)
        layer.weight = weight  # an nn.Parameter: registered in place of the layer's own
        return layer(indices)
    forward.__name__ = getattr(cls, "__name__", "your layer")
    return forward


def _flattened_hint(shape, dim):
    def hint(got):
        if len(shape) != 1 and got.shape == (int(np.prod(shape)), dim):
            return "the output was flattened: it must keep the indices' shape, (*indices.shape, D)"
        return None
    return hint


def check_embedding_layer(cls, *, seed: int = 0) -> CheckResult:
    """Check a reader's embedding layer class against ``torch.nn.Embedding`` (chapter 5).

    ``cls(num_embeddings, embedding_dim, padding_idx=None)`` must build an ``nn.Module`` whose
    ``weight`` is an ``nn.Parameter`` of shape ``(num_embeddings, embedding_dim)``, random (not zero)
    except for a zero ``padding_idx`` row, with ``padding_idx`` counted from the end when negative.
    ``layer(indices)`` must return ``weight[indices]`` of shape ``(*indices.shape, D)``, differentiable,
    with no gradient for the padding row. Returns a :class:`CheckResult` (True when it passed).
    """
    import torch

    name = getattr(cls, "__name__", "your layer")
    if not isinstance(cls, type):  # a layer (an instance) cannot be rebuilt with other sizes
        name = type(cls).__name__
        raise TypeError(f"pass your class itself, not a {name} object (write {name}, not {name}(...))")
    total = len(_LAYOUTS)
    # the layers draw their initial weights from torch's global generator: seed it, so the report is
    # the same on every run, and restore it afterwards, so the reader's own random numbers are unchanged
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _check(cls, name, total, seed)


def _check(cls, name: str, total: int, seed: int) -> CheckResult:
    """The checks themselves: the fresh layers first, then the hidden cases in order."""
    import torch
    from torch import nn

    problem = _structure_problem(cls)
    if problem is not None:
        return _fail_early(name, total, *problem)
    rng = np.random.default_rng(seed)
    cases = []
    for shape, v, d, pad in _LAYOUTS:
        idx = _inputs.indices_with_repeats(rng, shape, v)
        if pad is not None and idx.size >= 3:
            idx.reshape(-1)[1] = pad % v  # the padding row is used at least once
        w = _inputs.weight(rng, v, d)
        g = _inputs.floats(rng, shape + (d,))
        reference = nn.Embedding.from_pretrained(torch.tensor(w), freeze=False, padding_idx=pad)
        out = reference(torch.as_tensor(idx, dtype=torch.int64))
        out.backward(torch.tensor(g))
        padding = "" if pad is None else (f", padding_idx={pad} (row {pad % v}: no gradient)")
        weight = nn.Parameter(torch.tensor(w))
        cases.append(Case(f"indices of shape {shape}, weight of shape ({v}, {d}){padding}",
                          (torch.as_tensor(idx, dtype=torch.int64), weight), out.detach().numpy(),
                          names=("indices", "weight"), hint=_flattened_hint(shape, d),
                          grad_arg=1, grad_output=g, grad_expected=reference.weight.grad.numpy()))
    # every case builds its own layer (its size and padding differ), so run them one by one
    for number, case in enumerate(cases, start=1):
        shape, v, d, pad = _LAYOUTS[number - 1]
        single = _harness.run(name, _forward_with(cls, v, d, pad), [case], summary="")
        if not single:
            return CheckResult(name, False, number, total,
                               single.message.replace("hidden case 1 of 1", f"hidden case {number} of {total}"))
    return CheckResult(name, True, total, total,
                       f"✓ {name} passed all {total} hidden cases (a registered, random weight; scalar, "
                       "empty, 1-D, 2-D and 3-D indices, repeats, padding_idx positive and negative, gradients)")
