"""embedlib.exercises.torch_layers: a reader's nn.Module embedding layer (chapter 5).

The solution passes; each classic mistake fails with the problem (and hint) that names it.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from embedlib.exercises import check_embedding_layer


class Solution(nn.Module):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].fill_(0)

    def forward(self, indices):
        out = self.weight[indices]
        if self.padding_idx is not None:  # keep the value, drop the gradient of padding entries
            keep = (indices != self.padding_idx).unsqueeze(-1)
            out = torch.where(keep, out, out.detach())
        return out


class ViaFunctional(Solution):
    def forward(self, indices):
        return F.embedding(indices, self.weight, self.padding_idx)


def test_solutions_pass():
    for cls in (Solution, ViaFunctional):
        result = check_embedding_layer(cls)
        assert result, result
        assert repr(result).startswith(f"✓ {cls.__name__} passed all 8 hidden cases")


def test_torch_and_embedlib_layers_pass():
    import embedlib.torch as el

    assert check_embedding_layer(nn.Embedding)
    assert check_embedding_layer(el.Embedding)


def test_the_report_is_the_same_every_time():
    class NoPaddingGradient(Solution):
        def forward(self, indices):
            return self.weight[indices]

    assert repr(check_embedding_layer(NoPaddingGradient)) == repr(check_embedding_layer(NoPaddingGradient))
    assert repr(check_embedding_layer(PaddingNotZeroed)) == repr(check_embedding_layer(PaddingNotZeroed))


class PlainTensor(Solution):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        del self.weight
        self.weight = torch.randn(num_embeddings, embedding_dim, requires_grad=True)


class ZeroInit(Solution):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.weight = nn.Parameter(torch.zeros(num_embeddings, embedding_dim))


class PaddingNotZeroed(Solution):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__(num_embeddings, embedding_dim, None)
        self.padding_idx = padding_idx


class NegativePaddingKept(nn.Module):
    """Zeroes weight[padding_idx] (right for -1 too) but compares indices with -1: no index equals it."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        self.padding_idx = padding_idx
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].fill_(0)

    def forward(self, indices):
        out = self.weight[indices]
        if self.padding_idx is not None:
            out = torch.where((indices != self.padding_idx).unsqueeze(-1), out, out.detach())
        return out


class PaddingGetsGradient(Solution):
    def forward(self, indices):
        return self.weight[indices]


class Flattened(Solution):
    def forward(self, indices):
        return self.weight[indices.reshape(-1)]


class Detached(Solution):
    def forward(self, indices):
        return self.weight.detach()[indices]


class Transposed(Solution):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.weight = nn.Parameter(torch.randn(embedding_dim, num_embeddings))


class NotAModule:
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        self.weight = torch.randn(num_embeddings, embedding_dim)

    def __call__(self, indices):
        return self.weight[indices]


class NoPaddingArgument(nn.Module):
    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))

    def forward(self, indices):
        return self.weight[indices]


@pytest.mark.parametrize("cls,expected", [
    (PlainTensor, "is not a registered nn.Parameter"),
    (ZeroInit, "every entry of a fresh weight is zero"),
    (PaddingNotZeroed, "with padding_idx=2, row 2 of a fresh weight is"),
    (NegativePaddingKept, "padding_idx=-1 (row 5: no gradient)"),
    (PaddingGetsGradient, "the gradient w.r.t. the weight is wrong"),
    (Flattened, "the output was flattened"),
    (Detached, "does not carry a gradient back to the weight"),
    (Transposed, "has shape (4, 6), expected (6, 4)"),
    (NotAModule, "is not a torch.nn.Module"),
    (NoPaddingArgument, "must accept a padding_idx keyword argument"),
])
def test_typical_mistakes_fail_with_the_right_message(cls, expected):
    result = check_embedding_layer(cls)
    assert not result
    assert repr(result).startswith(f"✗ {cls.__name__} failed")
    assert expected in repr(result), repr(result)


def test_padding_gradient_failure_names_the_padding_case():
    text = repr(check_embedding_layer(PaddingGetsGradient))
    assert "hidden case 6 of 8" in text and "padding_idx=0 (row 0: no gradient)" in text, text


def test_passing_an_instance_is_refused_with_advice():
    with pytest.raises(TypeError, match="pass your class itself"):
        check_embedding_layer(Solution(3, 2))


def test_importing_the_exercises_does_not_import_torch():
    code = "import sys, embedlib.exercises; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readers_random_numbers_are_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_embedding_layer(PaddingNotZeroed)
    assert torch.equal(torch.rand(3), expected)
