"""Chapter 6's checker (embedlib/exercises/factorization.py): right steps pass, classic mistakes get their hint."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from embedlib import numpy as el
from embedlib.exercises import CheckResult, check_factorization_step
from embedlib.exercises.factorization import _reference_step, _variant_step


# --- right answers ---------------------------------------------------------------------------------

def my_sgd_step(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
    e = mu + b_user[users] + b_movie[movies] + np.sum(P[users] * Q[movies], axis=1) - ratings
    grad_p = e[:, None] * Q[movies] + reg * P[users]   # both from the parameters before the step
    grad_q = e[:, None] * P[users] + reg * Q[movies]
    np.subtract.at(b_user, users, lr * (e + reg * b_user[users]))
    np.subtract.at(b_movie, movies, lr * (e + reg * b_movie[movies]))
    np.subtract.at(P, users, lr * grad_p)
    np.subtract.at(Q, movies, lr * grad_q)


def distinct_rows_first(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
    e = mu + b_user[users] + b_movie[movies] + np.einsum("bd,bd->b", P[users], Q[movies]) - ratings
    parts = [(b_user, users, e), (b_movie, movies, e), (P, users, e[:, None] * Q[movies]),
             (Q, movies, e[:, None] * P[users])]
    updates = []
    for table, rows, data in parts:
        distinct, inverse = np.unique(rows, return_inverse=True)
        summed = np.zeros((len(distinct),) + table.shape[1:])
        np.add.at(summed, inverse, data + reg * table[rows])
        updates.append((table, distinct, summed))
    for table, distinct, summed in updates:
        table[distinct] -= lr * summed


def loop_then_update(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
    grads = [np.zeros_like(t) for t in (b_user, b_movie, P, Q)]
    for u, i, r in zip(users, movies, ratings):
        e = mu + b_user[u] + b_movie[i] + P[u] @ Q[i] - r
        grads[0][u] += e + reg * b_user[u]
        grads[1][i] += e + reg * b_movie[i]
        grads[2][u] += e * Q[i] + reg * P[u]
        grads[3][i] += e * P[u] + reg * Q[i]
    for table, grad in zip((b_user, b_movie, P, Q), grads):
        table -= lr * grad


def embedlib_itself(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
    model = el.MatrixFactorization(len(b_user), len(b_movie), P.shape[1], global_mean=mu)
    model.user_bias.weight[:, 0], model.movie_bias.weight[:, 0] = b_user, b_movie
    model.user.weight[:], model.movie.weight[:] = P, Q
    model.zero_grad()
    model.backward(model(users, movies) - ratings, reg)
    model.step(lr)
    b_user[:], b_movie[:] = model.user_bias.weight[:, 0], model.movie_bias.weight[:, 0]
    P[:], Q[:] = model.user.weight, model.movie.weight


RIGHT = [my_sgd_step, distinct_rows_first, loop_then_update, embedlib_itself]


@pytest.mark.parametrize("fn", RIGHT)
def test_right_answers_pass(fn):
    result = check_factorization_step(fn)
    assert result, repr(result)
    assert isinstance(result, CheckResult)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_right_answers_pass_for_any_seed(seed):
    for fn in RIGHT:
        result = check_factorization_step(fn, seed=seed)
        assert result, repr(result)


def test_first_case_is_the_step_of_the_chapters_exercise():
    # exercise ex-movielens-step: b_u 0.188, b_i -0.109, p_u (0.985, -0.005), q_i (0.485, 0.495)
    after = _reference_step(np.array([0]), np.array([0]), np.array([4.0]), 3.5, np.array([0.2]), np.array([-0.1]),
                            np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]), 0.1, 0.1)
    np.testing.assert_allclose(np.concatenate([t.reshape(-1) for t in after]),
                               [0.188, -0.109, 0.985, -0.005, 0.485, 0.495])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_hand_written_reference_matches_the_library(seed):
    # the hints are computed by _variant_step; with every switch off it is el.MatrixFactorization's step
    rng = np.random.default_rng(seed)
    u, m, d, b = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 4)), int(rng.integers(0, 20))
    args = (rng.integers(0, u, b), rng.integers(0, m, b), rng.uniform(0.5, 5, b), 3.5, rng.standard_normal(u),
            rng.standard_normal(m), rng.standard_normal((u, d)), rng.standard_normal((m, d)), 0.05, 0.1)
    for ours, library in zip(_variant_step(*args), _reference_step(*args)):
        np.testing.assert_allclose(ours, library, rtol=1e-12, atol=1e-12)


# --- the classic mistakes --------------------------------------------------------------------------

def buffered(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
    e = mu + b_user[users] + b_movie[movies] + np.sum(P[users] * Q[movies], axis=1) - ratings
    grad_p = e[:, None] * Q[movies] + reg * P[users]
    grad_q = e[:, None] * P[users] + reg * Q[movies]
    b_user[users] -= lr * (e + reg * b_user[users])         # repeated users: one update survives
    b_movie[movies] -= lr * (e + reg * b_movie[movies])
    P[users] -= lr * grad_p
    Q[movies] -= lr * grad_q


def step_with(*, reg_factor=1.0, bias_reg=True, sign=1.0, error_sign=1.0, mean=False, with_mu=True,
              q_from_new_p=False, once_per_row=False, every_row=False):
    def wrong_step(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
        e = error_sign * ((mu if with_mu else 0.0) + b_user[users] + b_movie[movies]
                          + np.sum(P[users] * Q[movies], axis=1) - ratings)
        step = sign * lr / (len(ratings) if mean else 1)
        r = reg_factor * reg
        rb = r if bias_reg else 0.0
        per_rating = 0.0 if once_per_row or every_row else 1.0
        grads = []
        for table, rows, data, lam in ((b_user, users, e, rb), (b_movie, movies, e, rb),
                                       (P, users, e[:, None] * Q[movies], r), (Q, movies, None, r)):
            if data is None:   # Q's gradient, from the current (maybe already updated) P
                data = e[:, None] * P[users]
            g = np.zeros_like(table)
            np.add.at(g, rows, data + per_rating * lam * table[rows])
            if once_per_row:
                g[np.unique(rows)] += lam * table[np.unique(rows)]
            if every_row:
                g += lam * table
            if q_from_new_p or table is Q:
                table -= step * g
            else:
                grads.append((table, g))
        for table, g in grads:
            if not q_from_new_p:
                table -= step * g
    return wrong_step


def returns_new_tables(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
    tables = [b_user.copy(), b_movie.copy(), P.copy(), Q.copy()]
    my_sgd_step(users, movies, ratings, mu, *tables, lr, reg)
    return tuple(tables)


def one_rating_at_a_time(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
    for u, i, r in zip(users, movies, ratings):
        e = mu + b_user[u] + b_movie[i] + P[u] @ Q[i] - r
        b_user[u] -= lr * (e + reg * b_user[u])
        b_movie[i] -= lr * (e + reg * b_movie[i])
        p_u = P[u].copy()
        P[u] -= lr * (e * Q[i] + reg * P[u])
        Q[i] -= lr * (e * p_u + reg * Q[i])


MISTAKES = [
    (buffered, "keeps only one of its updates"),
    (step_with(reg_factor=0.0), "the penalty is missing"),
    (step_with(bias_reg=False), "the biases' penalty is missing"),
    (step_with(reg_factor=2.0), "twice too large"),
    (step_with(sign=-1.0), "moved up its gradient"),
    (step_with(error_sign=-1.0), "the error has the wrong sign"),
    (step_with(mean=True), "do not divide by the batch size"),
    (step_with(with_mu=False), "leaves out the global mean"),
    (step_with(q_from_new_p=True), "computed from the NEW p_u"),
    (step_with(once_per_row=True), "once per RATING"),
    (step_with(every_row=True), "every row of the tables"),
    (returns_new_tables, "left the arguments as they were"),
    (one_rating_at_a_time, "one rating at a time"),
]


@pytest.mark.parametrize("fn, words", MISTAKES, ids=[words for _, words in MISTAKES])
def test_classic_mistakes_fail_with_their_hint(fn, words):
    result = check_factorization_step(fn)
    assert not result
    text = repr(result)
    assert "✗" in text and "problem:" in text and "hint:" in text
    assert words in text, text
    assert "numbers in b_user, b_movie, P and Q differ; the first is" in text  # a table entry, not a flat position


def test_no_update_at_all_is_explained():
    text = repr(check_factorization_step(lambda *args: None))
    assert "no table changed" in text


def test_unknown_mistakes_are_located():
    def q_untouched(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
        before = Q.copy()
        my_sgd_step(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg)
        Q[:] = before

    text = repr(check_factorization_step(q_untouched))
    assert "the first is Q[0, 0]" in text and "hint: wrong: Q in rows [0]" in text


def test_changing_the_ratings_is_caught():
    def centres_in_place(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
        ratings -= mu
        my_sgd_step(users, movies, ratings + mu, mu, b_user, b_movie, P, Q, lr, reg)

    assert "changed its input `ratings` in place" in repr(check_factorization_step(centres_in_place))


def test_reports_are_the_same_on_every_run():
    assert repr(check_factorization_step(buffered)) == repr(check_factorization_step(buffered))


def test_misuse_of_the_checker_is_an_error():
    with pytest.raises(TypeError, match="pass your function itself"):
        check_factorization_step(None)


def test_an_empty_batch_divided_by_its_size_is_explained():
    def mean_step(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg):
        my_sgd_step(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg)
        with np.errstate(invalid="ignore"):
            b_user *= np.float64(len(ratings)) / len(ratings)   # 1, except 0 / 0 = NaN on the empty batch

    text = repr(check_factorization_step(mean_step))
    assert "an empty batch: nothing changes" in text and "did you divide by the batch size" in text, text
