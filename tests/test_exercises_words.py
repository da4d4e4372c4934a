"""Checkers of chapter 11 (embedlib/exercises/words.py): right answers pass, classic mistakes get their hint."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedlib.exercises import CheckResult, check_analogy, check_softmax_gradient
from embedlib.exercises.words import _analogy, _softmax_gradient


# --- the full-softmax gradient --------------------------------------------------------------------

def stable_gradient(u, weight, o):
    logits = weight @ u
    p = np.exp(logits - logits.max())
    p /= p.sum()
    p[o] -= 1
    return np.outer(p, u)


def autograd_gradient(u, weight, o):
    # the same gradient from torch's cross-entropy: a reader may well answer this way
    w = torch.tensor(weight, requires_grad=True)
    F.cross_entropy((w @ torch.tensor(u))[None], torch.tensor([o])).backward()
    return w.grad


def naive_gradient(u, weight, o):
    p = np.exp(weight @ u)                      # overflows for logits in the hundreds
    p /= p.sum()
    p[o] -= 1
    return np.outer(p, u)


def forgot_one_hot(u, weight, o):
    z = weight @ u
    p = np.exp(z - z.max())
    return np.outer(p / p.sum(), u)


def only_row_o(u, weight, o):
    grad = np.zeros_like(weight)
    grad[o] = stable_gradient(u, weight, o)[o]
    return grad


@pytest.mark.parametrize("fn", [stable_gradient, autograd_gradient])
def test_right_softmax_gradients_pass(fn):
    result = check_softmax_gradient(fn)
    assert result, repr(result)
    assert isinstance(result, CheckResult)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("wrong, hint", [
    (naive_gradient, "subtract the largest logit"),
    (lambda u, w, o: -stable_gradient(u, w, o), "sign is flipped"),
    (forgot_one_hot, "(p - one_hot(o)) x^T"),
    (only_row_o, "every row of weight gets p_w x"),
    (lambda u, w, o: stable_gradient(u, w, o).T, "transpose"),
    (lambda u, w, o: w.T @ (stable_gradient(u, w, o) @ u / (u @ u)), "gradient with respect to x"),
])
def test_classic_softmax_mistakes_get_their_hint(wrong, hint):
    result = check_softmax_gradient(wrong)
    assert not result
    assert "✗" in repr(result) and "problem:" in repr(result)
    assert hint in repr(result).replace("\n    ", " "), repr(result)


def test_reference_softmax_gradient_matches_autograd():
    rng = np.random.default_rng(3)
    for v, d in [(2, 1), (7, 3), (50, 8)]:
        u, w, o = rng.standard_normal(d), rng.standard_normal((v, d)), int(rng.integers(0, v))
        np.testing.assert_allclose(_softmax_gradient(u, w, o), autograd_gradient(u, w, o).numpy(), rtol=1e-10, atol=1e-12)
        # the proposition of chapter 11: every row of the output table is touched
        assert np.all(np.any(_softmax_gradient(u, w, o) != 0, axis=1))


# --- analogies ------------------------------------------------------------------------------------

def three_cos_add(weight, a, b, c):
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    scores = unit @ (unit[b] - unit[a] + unit[c])
    scores[[a, b, c]] = -np.inf
    return int(np.argmax(scores))


def three_cos_add_torch(weight, a, b, c):
    unit = F.normalize(torch.as_tensor(weight), dim=1)
    scores = F.cosine_similarity(unit, (unit[b] - unit[a] + unit[c])[None], dim=1)
    scores[[a, b, c]] = -float("inf")
    return scores.argmax()


def not_left_out(weight, a, b, c):
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return int(np.argmax(unit @ (unit[b] - unit[a] + unit[c])))


def not_normalised(weight, a, b, c):
    scores = weight @ (weight[b] - weight[a] + weight[c])
    scores[[a, b, c]] = -np.inf
    return int(np.argmax(scores))


def returns_scores(weight, a, b, c):
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return unit @ (unit[b] - unit[a] + unit[c])


@pytest.mark.parametrize("fn", [three_cos_add, three_cos_add_torch])
def test_right_analogies_pass(fn):
    result = check_analogy(fn)
    assert result, repr(result)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


@pytest.mark.parametrize("wrong, hint", [
    (not_left_out, "leave a, b and c out"),
    (not_normalised, "long rows win"),
    (returns_scores, "return one row id"),
])
def test_classic_analogy_mistakes_get_their_hint(wrong, hint):
    result = check_analogy(wrong)
    assert not result
    assert hint in repr(result).replace("\n    ", " "), repr(result)


def test_reference_analogy_on_a_planted_table():
    # king - man + woman = queen, by construction: two directions, royalty and gender
    words = ["man", "woman", "king", "queen", "apple"]
    weight = np.array([[1.0, 0.0, 0.1], [1.0, 1.0, 0.1], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 0.2, 0.0]])
    assert words[_analogy(weight, 0, 1, 2)] == "queen"


def test_checkers_are_deterministic():
    assert repr(check_analogy(not_normalised)) == repr(check_analogy(not_normalised))
    assert repr(check_softmax_gradient(forgot_one_hot)) == repr(check_softmax_gradient(forgot_one_hot))
