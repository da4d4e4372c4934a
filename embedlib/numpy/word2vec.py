"""word2vec's negative-sampling loss and its gradient, in NumPy (chapter 11).

For a batch of ``B`` examples, ``inputs`` (B, D) are rows of the input table (skip-gram: the center
word's row; CBOW: the mean of the context bag's rows), ``outputs`` (B, D) the output-table rows of
the words to predict, and ``negatives`` (B, K, D) the output-table rows of ``K`` sampled words each.
The loss is the mean over the batch of

    -log sigmoid(outputs[b] . inputs[b]) - sum_k log sigmoid(-negatives[b, k] . inputs[b]),

computed as softplus terms (``-log sigmoid(x) = log(1 + exp(-x)) = logaddexp(0, -x)``), which never
overflow. Its gradient is written out in :func:`negative_sampling_loss_backward`; the chapter
scatters it into the two tables with ``lookup_backward`` (chapter 4).
"""
from __future__ import annotations

import numpy as np

from embedlib.word2vec import negative_sampling_shapes


def negative_sampling_loss(inputs, outputs, negatives):
    """word2vec's negative-sampling loss, the mean over the batch (chapter 11); a NumPy scalar of the
    inputs' dtype. Shapes: ``inputs`` (B, D), ``outputs`` (B, D), ``negatives`` (B, K, D), B >= 1."""
    x, o, n = _check(inputs, outputs, negatives)
    pos = np.einsum("bd,bd->b", x, o)
    neg = np.einsum("bkd,bd->bk", n, x)
    per_example = np.logaddexp(0, -pos) + np.logaddexp(0, neg).sum(axis=1)
    return per_example.mean(dtype=x.dtype)


def negative_sampling_loss_backward(inputs, outputs, negatives):
    """The gradient of :func:`negative_sampling_loss` w.r.t. each argument (chapter 11):
    ``(d_inputs, d_outputs, d_negatives)``, shaped like the arguments.

    With ``s = outputs[b] . inputs[b]`` and ``t_k = negatives[b, k] . inputs[b]``, example ``b``'s
    loss has derivative ``sigmoid(s) - 1`` in ``s`` and ``sigmoid(t_k)`` in ``t_k``; divided by
    ``B`` for the mean, the chain rule gives
    ``d_inputs = (sigmoid(s) - 1) outputs + sum_k sigmoid(t_k) negatives_k``,
    ``d_outputs = (sigmoid(s) - 1) inputs`` and ``d_negatives_k = sigmoid(t_k) inputs``.
    """
    x, o, n = _check(inputs, outputs, negatives)
    batch = x.shape[0]
    pos = np.einsum("bd,bd->b", x, o)
    neg = np.einsum("bkd,bd->bk", n, x)
    # sigmoid(s) - 1 = -sigmoid(-s) and sigmoid(t) = exp(-softplus(-t)): no overflow, no cancellation
    g_pos = (-np.exp(-np.logaddexp(0, pos)) / batch).astype(x.dtype)
    g_neg = (np.exp(-np.logaddexp(0, -neg)) / batch).astype(x.dtype)
    d_inputs = g_pos[:, None] * o + np.einsum("bk,bkd->bd", g_neg, n)
    d_outputs = g_pos[:, None] * x
    d_negatives = g_neg[:, :, None] * x[:, None, :]
    return d_inputs, d_outputs, d_negatives


def _check(inputs, outputs, negatives):
    arrays = [np.asarray(a) for a in (inputs, outputs, negatives)]
    for name, a in zip(("inputs", "outputs", "negatives"), arrays):
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{name} must hold floating-point numbers, got dtype {a.dtype}")
    x, o, n = arrays
    if len({x.dtype, o.dtype, n.dtype}) != 1:
        raise TypeError(f"inputs, outputs and negatives must have one dtype, got {x.dtype}, {o.dtype}, {n.dtype}")
    negative_sampling_shapes(x.shape, o.shape, n.shape)
    return x, o, n

