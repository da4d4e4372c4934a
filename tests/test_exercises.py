"""The exercise checkers (embedlib/exercises): right answers pass, typical wrong answers fail clearly."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from embedlib import numpy as el
from embedlib.exercises import (
    CheckResult,
    check_embedding_bag,
    check_lookup,
    check_lookup_backward,
    check_one_hot,
    check_onehot_matmul,
)


# --- right answers, written the way a reader would ------------------------------------------------

def broadcast_one_hot(indices, num_classes):
    return (np.asarray(indices)[..., None] == np.arange(num_classes)).astype(np.float32)


def fancy_lookup(indices, weight):
    return weight[indices]


def add_at_backward(indices, grad_output, num_embeddings):
    idx = np.asarray(indices).reshape(-1)
    g = np.asarray(grad_output).reshape(idx.size, -1 if idx.size else np.shape(grad_output)[-1])
    grad = np.zeros((num_embeddings, g.shape[1]))
    np.add.at(grad, idx, g)
    return grad


def bag_by_add_at(indices, weight, offsets, mode="sum"):
    indices, offsets = np.asarray(indices), np.asarray(offsets)
    sizes = np.diff(np.r_[offsets, len(indices)])
    out = np.zeros((len(offsets), weight.shape[1]))
    np.add.at(out, np.repeat(np.arange(len(offsets)), sizes), weight[indices])
    if mode == "mean":
        out /= np.maximum(sizes, 1)[:, None]
    return out


@pytest.mark.parametrize("checker, fn", [
    (check_one_hot, broadcast_one_hot),
    (check_one_hot, el.one_hot),
    (check_onehot_matmul, el.onehot_matmul),
    (check_onehot_matmul, lambda i, w: broadcast_one_hot(i, len(w)) @ w),
    (check_lookup, fancy_lookup),
    (check_lookup, el.lookup),
    (check_lookup_backward, add_at_backward),
    (check_lookup_backward, el.lookup_backward),
    (check_embedding_bag, bag_by_add_at),
])
def test_right_answers_pass(checker, fn):
    result = checker(fn)
    assert isinstance(result, CheckResult)
    assert result.passed and bool(result)
    assert result.cases_run == result.cases_total > 5
    assert repr(result).startswith("✓ ") and "passed all" in repr(result)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedlib_bags_pass_in_every_mode(mode):
    assert check_embedding_bag(lambda i, w, o: el.embedding_bag(i, w, o, mode=mode), mode=mode)


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_right_answers_pass_for_any_seed(seed):
    assert check_one_hot(broadcast_one_hot, seed=seed)
    assert check_lookup(fancy_lookup, seed=seed)
    assert check_lookup_backward(add_at_backward, seed=seed)
    assert check_embedding_bag(lambda i, w, o: bag_by_add_at(i, w, o, "mean"), mode="mean", seed=seed)


def test_reports_are_the_same_on_every_run():
    wrong = lambda i, v: np.zeros((np.size(i), v))  # noqa: E731
    assert repr(check_one_hot(wrong)) == repr(check_one_hot(wrong))


# --- typical wrong answers, and what the report says --------------------------------------------

def lost_update_backward(indices, grad_output, num_embeddings):
    idx = np.asarray(indices).reshape(-1)
    g = np.asarray(grad_output).reshape(idx.size, np.shape(grad_output)[-1])
    grad = np.zeros((num_embeddings, g.shape[1]))
    grad[idx] += g
    return grad


def reduceat_bag(indices, weight, offsets):
    if len(indices) == 0:
        return np.zeros((len(offsets), weight.shape[1]))
    return np.add.reduceat(weight[indices], offsets, axis=0)


def no_guard_mean_bag(indices, weight, offsets):
    sizes = np.diff(np.r_[offsets, len(indices)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return bag_by_add_at(indices, weight, offsets) / sizes[:, None]


def writes_into_weight(indices, weight):
    weight[0] = 0.0
    return weight[indices]


@pytest.mark.parametrize("checker, fn, words", [
    (check_one_hot, lambda i, v: np.eye(v)[np.ravel(i)], ["expected shape", "flattened"]),
    (check_one_hot, lambda i, v: broadcast_one_hot(i, int(np.max(i, initial=0)) + 1),
     ["num_classes, not the largest index plus one"]),
    (check_one_hot, lambda i, v: None, ["returned None", "return"]),
    (check_one_hot, lambda i, v: 1 / 0, ["raised ZeroDivisionError"]),
    (check_lookup, lambda i, w: w[np.ravel(i)], ["flattened"]),
    (check_lookup, lambda i, w: w[np.asarray(i) - 1], ["values differ", "expected"]),
    (check_lookup, writes_into_weight, ["changed its input `weight` in place"]),
    (check_lookup_backward, lost_update_backward, ["grad[idx] += grad_output", "np.add.at"]),
    (check_lookup_backward, lambda i, g, v: np.asarray(g), ["one row per row of the TABLE"]),
    (check_embedding_bag, reduceat_bag, ["is empty and must give zeros", "np.add.reduceat"]),
    (check_onehot_matmul, lambda i, w: w[i] * 2, ["values differ"]),
])
def test_wrong_answers_fail_with_a_clear_report(checker, fn, words):
    result = checker(fn)
    assert not result and not result.passed
    text = " ".join(repr(result).split())  # the long lines of a report are folded; join them
    assert text.startswith("✗ ") and "failed hidden case" in text and "inputs:" in text and "problem:" in text
    for word in words:
        assert word in text, text


def test_mean_bag_without_the_empty_guard_is_explained():
    result = check_embedding_bag(no_guard_mean_bag, mode="mean")
    assert not result and "0/0 = NaN" in repr(result)


def test_failure_report_shows_the_inputs_before_the_call():
    text = repr(check_lookup(writes_into_weight))
    weight_line = next(line for line in text.splitlines() if "weight = " in line)
    assert "0.105" in weight_line  # the first row as it was, not the zeros written into it


def test_an_error_names_the_readers_line_not_numpys():
    def take_on_a_wrong_axis(indices, weight):
        return np.take(weight, indices, axis=5)

    text = " ".join(repr(check_lookup(take_on_a_wrong_axis)).split())  # joined where the report folds
    assert "raised AxisError" in text and "of take_on_a_wrong_axis)" in text


def test_long_problems_and_hints_are_folded():
    text = repr(check_lookup_backward(lost_update_backward))
    assert max(len(line) for line in text.splitlines()[1:]) <= 96  # the title line holds the case
    hint_lines = text[text.index("  hint:"):].splitlines()
    assert len(hint_lines) > 1 and all(line.startswith("    ") for line in hint_lines[1:])


def test_ragged_inputs_are_shown_as_python_prints_them():
    from embedlib.exercises._harness import _show

    assert _show("bags", [[1, 2], [3]]) == "    bags = [[1, 2], [3]]"
    assert _show("indices", np.array([1, 2])) == "    indices = [1, 2]"
    assert "shape (100,)" in _show("indices", np.arange(100))


def test_misuse_of_a_checker_is_an_error():
    with pytest.raises(TypeError, match="pass your function itself"):
        check_one_hot(broadcast_one_hot(3, 5))
    with pytest.raises(ValueError, match="backend"):
        check_lookup(fancy_lookup, backend="jax")
    with pytest.raises(ValueError, match="mode"):
        check_embedding_bag(bag_by_add_at, mode="median")


# --- the torch backend: tensors in, gradients checked -------------------------------------------

torch = pytest.importorskip("torch")


def test_torch_functions_pass_with_gradients():
    import torch.nn.functional as F

    from embedlib import torch as elt

    assert "gradients" in repr(check_lookup(F.embedding, backend="torch"))
    assert check_lookup(elt.lookup, backend="torch")
    assert check_onehot_matmul(elt.onehot_matmul, backend="torch")
    for mode in ("sum", "mean", "max"):
        assert check_embedding_bag(lambda i, w, o: F.embedding_bag(i, w, o, mode=mode), mode=mode, backend="torch")


def test_torch_detached_output_is_caught():
    result = check_lookup(lambda i, w: w.detach()[i], backend="torch")
    assert not result and "does not carry a gradient" in repr(result)


def test_torch_wrong_gradient_is_caught():
    class HalfGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, indices, weight):
            ctx.save_for_backward(indices)
            ctx.num_embeddings = weight.shape[0]
            return weight[indices]

        @staticmethod
        def backward(ctx, grad):
            (indices,) = ctx.saved_tensors
            out = torch.zeros(ctx.num_embeddings, grad.shape[-1], dtype=grad.dtype)
            out[indices.reshape(-1)] = grad.reshape(-1, grad.shape[-1])  # lost updates
            return None, out

    text = " ".join(repr(check_lookup(HalfGradient.apply, backend="torch")).split())
    assert text.startswith("✗ HalfGradient.apply failed")  # named by its class, not as "apply"
    assert "forward is right, but the gradient w.r.t. the weight is wrong" in text
    assert "hint: this is what `grad[idx] += grad_output` gives" in text and "index_add_" in text


def test_importing_the_checkers_does_not_import_torch():
    code = "import sys, embedlib.exercises; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
