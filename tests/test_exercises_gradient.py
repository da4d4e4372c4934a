"""Chapter 4's checkers: right answers pass, the classic wrong ones fail with the expected problem and hint."""
from __future__ import annotations

import numpy as np
import pytest

from embedlib import numpy as el
from embedlib.exercises import (
    check_embedding_bag_backward,
    check_lookup_backward,
    check_numerical_gradient,
    check_sparse_sgd_step,
)


def flat(result):
    """The report with its folded lines joined, so a phrase can be found wherever the fold falls."""
    return " ".join(repr(result).split())


# --------------------------------------------------------------------------------------------------
# check_numerical_gradient
# --------------------------------------------------------------------------------------------------
def central(f, x, eps=1e-6):
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for j in range(x.size):
        step = np.zeros_like(x)
        step.flat[j] = eps
        grad.flat[j] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def central_in_place(f, x, eps=1e-5):
    """Perturbs x itself and puts every entry back: allowed."""
    grad = np.zeros_like(x)
    for j in range(x.size):
        old = x.flat[j]
        x.flat[j] = old + eps
        up = f(x)
        x.flat[j] = old - eps
        down = f(x)
        x.flat[j] = old
        grad.flat[j] = (up - down) / (2 * eps)
    return grad


def forward(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    fx = f(x)
    for j in range(x.size):
        step = np.zeros_like(x)
        step.flat[j] = eps
        grad.flat[j] = (f(x + step) - fx) / eps
    return grad


def not_restored(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for j in range(x.size):
        x.flat[j] += eps
        up = f(x)
        x.flat[j] -= 2 * eps
        down = f(x)
        grad.flat[j] = (up - down) / (2 * eps)  # x.flat[j] is left eps too low
    return grad


def divides_by_eps(f, x, eps=1e-6):
    return 2 * central(f, x, eps)


def all_at_once(f, x, eps=1e-6):
    step = np.full_like(x, eps)
    return np.full_like(x, (f(x + step) - f(x - step)) / (2 * eps))


def flattened(f, x):
    return central(f, x).reshape(-1)


@pytest.mark.parametrize("fn", [central, central_in_place, lambda f, x: central(f, x, 1e-3),
                                lambda f, x: central(f, x, 1e-7)])
def test_central_differences_pass(fn):
    result = check_numerical_gradient(fn)
    assert result, result
    assert "✓" in repr(result) and "passed all 7 hidden cases" in repr(result)


@pytest.mark.parametrize("fn, expected", [
    (forward, "forward difference"),
    (not_restored, "changed its input `x` in place"),
    (divides_by_eps, "twice the gradient"),
    (all_at_once, "one entry of x at a time"),
    (flattened, "in the shape of x"),
])
def test_wrong_numerical_gradients_fail_with_a_hint(fn, expected):
    result = check_numerical_gradient(fn)
    assert not result
    assert "✗" in repr(result) and expected in flat(result), repr(result)


def test_the_forward_difference_fails_near_a_minimum_even_with_a_small_step():
    result = check_numerical_gradient(lambda f, x: forward(f, x, 1e-7))
    assert not result and "near a minimum" in repr(result), repr(result)


# --------------------------------------------------------------------------------------------------
# check_sparse_sgd_step
# --------------------------------------------------------------------------------------------------
def sgd_add_at(weight, indices, grad_output, lr):
    d = weight.shape[1]
    np.subtract.at(weight, np.asarray(indices).reshape(-1), lr * np.asarray(grad_output).reshape(-1, d))


def sgd_layer(weight, indices, grad_output, lr):
    """The library's own layer: forward, backward (a SparseGrad), step."""
    layer = el.Embedding.from_weight(weight)
    layer(indices)
    layer.backward(grad_output)
    layer.step(lr)
    weight[...] = layer.weight


def sgd_buffered(weight, indices, grad_output, lr):
    weight[np.asarray(indices).reshape(-1)] -= lr * np.asarray(grad_output).reshape(-1, weight.shape[1])


def sgd_returns_new(weight, indices, grad_output, lr):
    return weight - lr * el.lookup_backward(indices, grad_output, weight.shape[0])


def sgd_wrong_sign(weight, indices, grad_output, lr):
    sgd_add_at(weight, indices, grad_output, -lr)


def sgd_no_lr(weight, indices, grad_output, lr):
    sgd_add_at(weight, indices, grad_output, 1.0)


@pytest.mark.parametrize("fn", [sgd_add_at, sgd_layer])
def test_sparse_steps_pass(fn):
    result = check_sparse_sgd_step(fn)
    assert result, result
    assert "passed all 9 hidden cases" in repr(result)


@pytest.mark.parametrize("fn, expected", [
    (sgd_buffered, "only one update per row survives"),
    (sgd_returns_new, "returned the updated table but left `weight` as it was"),
    (sgd_wrong_sign, "SGD subtracts lr * gradient"),
    (sgd_no_lr, "ignores the learning rate"),
])
def test_wrong_sparse_steps_fail_with_a_hint(fn, expected):
    result = check_sparse_sgd_step(fn)
    assert not result
    assert expected in flat(result), repr(result)
    assert repr(result).startswith(f"✗ {fn.__name__} failed hidden case")


def test_an_error_in_the_step_is_reported_with_its_line():
    def broken(weight, indices, grad_output, lr):
        raise RuntimeError("oops")

    result = check_sparse_sgd_step(broken)
    assert not result and "raised RuntimeError: oops" in repr(result) and "of broken" in repr(result)


# --------------------------------------------------------------------------------------------------
# check_embedding_bag_backward
# --------------------------------------------------------------------------------------------------
def bag_backward(mode):
    def my_bag_backward(indices, offsets, grad_output, num_embeddings):
        sizes = np.diff(np.r_[offsets, len(indices)])
        bag_of = np.repeat(np.arange(len(offsets)), sizes)
        per_index = grad_output[bag_of]
        if mode == "mean":
            per_index = per_index / sizes[bag_of, None]
        return el.lookup_backward(indices, per_index, num_embeddings)
    return my_bag_backward


def bag_backward_buffered(indices, offsets, grad_output, num_embeddings):
    sizes = np.diff(np.r_[offsets, len(indices)])
    out = np.zeros((num_embeddings, grad_output.shape[1]))
    out[indices] += grad_output[np.repeat(np.arange(len(offsets)), sizes)]
    return out


def bag_backward_divides_by_zero(indices, offsets, grad_output, num_embeddings):
    sizes = np.diff(np.r_[offsets, len(indices)])
    out = np.zeros((num_embeddings, grad_output.shape[1]))
    with np.errstate(all="ignore"):
        scaled = grad_output / sizes[:, None]
    for b, (start, size) in enumerate(zip(offsets, sizes)):
        np.add.at(out, indices[start:start + size], scaled[b])
        if size == 0:
            out[0] += scaled[b]  # lets the NaN through
    return out


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_backward_passes(mode):
    result = check_embedding_bag_backward(bag_backward(mode), mode=mode)
    assert result, result


@pytest.mark.parametrize("fn, mode, expected", [
    (bag_backward("sum"), "mean", "a mean divides bag b's gradient by the bag's size"),
    (bag_backward("mean"), "sum", "a sum bag does not divide by the size"),
    (bag_backward_buffered, "sum", "keeps only one contribution"),
    (bag_backward_divides_by_zero, "mean", "empty bag has size 0"),
])
def test_wrong_bag_backwards_fail_with_a_hint(fn, mode, expected):
    result = check_embedding_bag_backward(fn, mode=mode)
    assert not result and expected in flat(result), repr(result)


def test_bag_backward_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        check_embedding_bag_backward(bag_backward("sum"), mode="max")


# --------------------------------------------------------------------------------------------------
# The chapter's own backward exercise uses the existing checker; make sure its hint fires.
# --------------------------------------------------------------------------------------------------
def test_lookup_backward_hint_recognises_plus_equals():
    def my_lookup_backward(indices, grad_output, num_embeddings):
        idx = np.asarray(indices).reshape(-1)
        g = np.asarray(grad_output).reshape(idx.size, np.shape(grad_output)[-1])
        grad = np.zeros((num_embeddings, g.shape[1]))
        grad[idx] += g
        return grad

    result = check_lookup_backward(my_lookup_backward)
    assert not result and "np.add.at" in repr(result)
