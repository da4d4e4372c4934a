"""The checker of chapter 14 (embedlib/exercises/compositional.py): right answers pass, classic mistakes get their hint."""
import numpy as np
import pytest
import torch

from embedlib.exercises._harness import CheckResult
from embedlib.exercises.compositional import check_qr_lookup


# --- right answers, written the way a reader would ------------------------------------------------

def qr_lookup(indices, quotient_weight, remainder_weight):
    r = remainder_weight.shape[0]
    return quotient_weight[indices // r] * remainder_weight[indices % r]


def qr_lookup_by_take(indices, quotient_weight, remainder_weight):
    q, r = np.divmod(np.asarray(indices), len(remainder_weight))
    return np.take(quotient_weight, q, axis=0) * np.take(remainder_weight, r, axis=0)


def qr_lookup_loop(indices, quotient_weight, remainder_weight):
    indices = np.asarray(indices)
    r = len(remainder_weight)
    rows = [quotient_weight[i // r] * remainder_weight[i % r] for i in indices.reshape(-1).tolist()]
    return np.array(rows).reshape(indices.shape + (quotient_weight.shape[1],))


def torch_qr_lookup(indices, quotient_weight, remainder_weight):
    r = remainder_weight.shape[0]
    return quotient_weight[torch.div(indices, r, rounding_mode="floor")] * remainder_weight[indices % r]


@pytest.mark.parametrize("fn", [qr_lookup, qr_lookup_by_take, qr_lookup_loop])
def test_right_answers_pass(fn):
    result = check_qr_lookup(fn)
    assert result, repr(result)
    assert isinstance(result, CheckResult)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


def test_torch_answer_passes_with_its_gradient():
    result = check_qr_lookup(torch_qr_lookup, backend="torch")
    assert result, repr(result)
    assert "gradients" in repr(result)


# --- classic mistakes -------------------------------------------------------------------------------

def divisor_of_the_quotient_table(indices, quotient_weight, remainder_weight):
    q = quotient_weight.shape[0]
    return quotient_weight[indices // q] * remainder_weight[indices % q]


def swapped_roles(indices, quotient_weight, remainder_weight):
    r = remainder_weight.shape[0]
    return quotient_weight[indices % r] * remainder_weight[indices // r]


def summed(indices, quotient_weight, remainder_weight):
    r = remainder_weight.shape[0]
    return quotient_weight[indices // r] + remainder_weight[indices % r]


def true_division(indices, quotient_weight, remainder_weight):
    r = remainder_weight.shape[0]
    return quotient_weight[indices / r] * remainder_weight[indices % r]


def quotient_only(indices, quotient_weight, remainder_weight):
    return quotient_weight[indices // remainder_weight.shape[0]]


@pytest.mark.parametrize("wrong, hint", [
    (divisor_of_the_quotient_table, "number of rows of remainder_weight"),
    (swapped_roles, "the other way round"),
    (summed, "not a sum"),
    (true_division, "use // (floor division)"),
    (quotient_only, "use both rows"),
])
def test_classic_mistakes_get_their_hint(wrong, hint):
    result = check_qr_lookup(wrong)
    assert not result
    assert "✗" in repr(result) and "problem:" in repr(result)
    assert hint in repr(result), repr(result)


def test_a_wrong_gradient_is_caught_in_torch():
    def detached_remainder(indices, quotient_weight, remainder_weight):
        r = remainder_weight.shape[0]
        return quotient_weight[indices // r].detach() * remainder_weight[indices % r]

    result = check_qr_lookup(detached_remainder, backend="torch")
    assert not result and "gradient" in repr(result)


def test_flattened_output_fails_on_shape():
    result = check_qr_lookup(lambda i, wq, wr: qr_lookup(np.asarray(i).reshape(-1), wq, wr))
    assert not result and "expected shape" in repr(result)


def test_the_checker_refuses_a_call_and_is_deterministic():
    with pytest.raises(TypeError, match="pass your function itself"):
        check_qr_lookup(None)
    assert repr(check_qr_lookup(summed)) == repr(check_qr_lookup(summed))
    assert repr(check_qr_lookup(summed)) != repr(check_qr_lookup(summed, seed=1))
