"""word2vec's negative-sampling loss and its gradient, in torch (chapter 11).

The same loss as the NumPy backend: ``inputs`` (B, D) input-table rows (skip-gram: the center's;
CBOW: the mean of the context bag), ``outputs`` (B, D) the output-table rows of the words to predict,
``negatives`` (B, K, D) those of ``K`` sampled words each; the mean over the batch of
``-log sigmoid(outputs . inputs) - sum_k log sigmoid(-negatives_k . inputs)``, with
``F.logsigmoid`` (stable). Differentiable: autograd gives the gradient that
:func:`negative_sampling_loss_backward` writes out by hand.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from embedlib.torch import _tensors
from embedlib.word2vec import negative_sampling_shapes


def negative_sampling_loss(inputs, outputs, negatives):
    """word2vec's negative-sampling loss, the mean over the batch (chapter 11): a 0-d tensor,
    differentiable w.r.t. all three arguments. Shapes: ``inputs`` (B, D), ``outputs`` (B, D),
    ``negatives`` (B, K, D), B >= 1."""
    x, o, n = _check(inputs, outputs, negatives)
    pos = (x * o).sum(-1)
    neg = torch.einsum("bkd,bd->bk", n, x)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()


@torch.no_grad()
def negative_sampling_loss_backward(inputs, outputs, negatives):
    """The gradient of :func:`negative_sampling_loss` w.r.t. each argument, by hand (chapter 11):
    ``(d_inputs, d_outputs, d_negatives)``, shaped like the arguments. With ``s = outputs . inputs``
    and ``t_k = negatives_k . inputs``: ``d_inputs = ((sigmoid(s) - 1) outputs + sum_k sigmoid(t_k)
    negatives_k) / B``, ``d_outputs = (sigmoid(s) - 1) inputs / B``, ``d_negatives_k = sigmoid(t_k)
    inputs / B``. Equal to what autograd computes (the tests check it)."""
    x, o, n = _check(inputs, outputs, negatives)
    batch = x.shape[0]
    pos = (x * o).sum(-1)
    neg = torch.einsum("bkd,bd->bk", n, x)
    g_pos = -torch.sigmoid(-pos) / batch  # sigmoid(s) - 1, without cancellation
    g_neg = torch.sigmoid(neg) / batch
    d_inputs = g_pos[:, None] * o + torch.einsum("bk,bkd->bd", g_neg, n)
    d_outputs = g_pos[:, None] * x
    d_negatives = g_neg[:, :, None] * x[:, None, :]
    return d_inputs, d_outputs, d_negatives


def _check(inputs, outputs, negatives):
    x = _tensors.floats(inputs, "inputs")
    o = _tensors.floats(outputs, "outputs", device=x.device)
    n = _tensors.floats(negatives, "negatives", device=x.device)
    if len({x.dtype, o.dtype, n.dtype}) != 1:
        raise TypeError(f"inputs, outputs and negatives must have one dtype, got {x.dtype}, {o.dtype}, {n.dtype}")
    negative_sampling_shapes(tuple(x.shape), tuple(o.shape), tuple(n.shape))
    return x, o, n
