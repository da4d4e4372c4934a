"""Checker for chapter 6, learning embeddings from ratings: one SGD step of matrix factorisation.

:func:`check_factorization_step` runs a reader's ``fn(users, movies, ratings, mu, b_user, b_movie,
P, Q, lr, reg)`` on hidden batches and compares the four tables afterwards with what
``el.MatrixFactorization`` gives (``forward``, ``backward(error, reg)``, ``step(lr)``), so that the
checker and the library cannot disagree about the objective. That objective is the chapter's: the
per-rating cost ``1/2 e^2 + reg/2 (b_u^2 + b_i^2 + |p_u|^2 + |q_i|^2)`` with ``e = r_hat - r``,
summed (not averaged) over the batch, every gradient taken at the parameters before the step.
"""
from __future__ import annotations

import re

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import Case, CheckResult
from embedlib.numpy.factorization import MatrixFactorization

_NAMES = ("users", "movies", "ratings", "mu", "b_user", "b_movie", "P", "Q", "lr", "reg")
_TABLES = ("b_user", "b_movie", "P", "Q")


def _reference_step(users, movies, ratings, mu, b_user, b_movie, p, q, lr, reg) -> tuple:
    """The four tables after one step of ``el.MatrixFactorization`` (the chapter's own model)."""
    model = MatrixFactorization(len(b_user), len(b_movie), p.shape[1], global_mean=mu)
    model.user_bias.weight[:, 0] = b_user
    model.movie_bias.weight[:, 0] = b_movie
    model.user.weight[:] = p
    model.movie.weight[:] = q
    error = model(users, movies) - ratings
    model.zero_grad()
    model.backward(error, reg)
    model.step(lr)
    return (model.user_bias.weight[:, 0].copy(), model.movie_bias.weight[:, 0].copy(),
            model.user.weight.copy(), model.movie.weight.copy())


def _flat(tables) -> np.ndarray:
    """The four tables end to end, as the harness compares one array."""
    return np.concatenate([np.asarray(t, dtype=np.float64).reshape(-1) for t in tables])


def _variant_step(users, movies, ratings, mu, b_user, b_movie, p, q, lr, reg, *, buffered=False, reg_bias=1.0,
                  reg_embedding=1.0, direction=1.0, error_sign=1.0, scale=1.0, with_mu=True, per_row_reg=False,
                  every_row_reg=False, sequential=None) -> tuple:
    """The step written out by hand, with switches for the classic mistakes (all off: the right step)."""
    b_user, b_movie, p, q = (np.array(t, dtype=np.float64, copy=True) for t in (b_user, b_movie, p, q))
    e = error_sign * ((mu if with_mu else 0.0) + b_user[users] + b_movie[movies]
                      + np.sum(p[users] * q[movies], axis=1) - ratings)
    add = (lambda table, rows, values: table.__setitem__(rows, table[rows] + values)) if buffered else np.add.at
    per_rating = 0.0 if per_row_reg or every_row_reg else 1.0

    def gradient(table, rows, data_part):
        g = np.zeros_like(table)
        add(g, rows, data_part)
        weight = reg_bias if table.ndim == 1 else reg_embedding
        if every_row_reg:
            g += weight * reg * table
        elif per_row_reg:
            distinct = np.unique(rows)
            g[distinct] += weight * reg * table[distinct]
        else:
            add(g, rows, per_rating * weight * reg * table[rows])
        return g

    g_bu = gradient(b_user, users, e)
    g_bm = gradient(b_movie, movies, e)
    g_p = gradient(p, users, e[:, None] * q[movies])
    new_p = p - direction * lr * scale * g_p
    # sequential: the second table's gradient is computed from the first one already updated
    other = new_p if sequential == "P first" else p
    g_q = gradient(q, movies, e[:, None] * other[users])
    new_q = q - direction * lr * scale * g_q
    if sequential == "Q first":
        g_p = gradient(p, users, e[:, None] * new_q[movies])
        new_p = p - direction * lr * scale * g_p
    return (b_user - direction * lr * scale * g_bu, b_movie - direction * lr * scale * g_bm, new_p, new_q)


def _one_rating_at_a_time(users, movies, ratings, mu, b_user, b_movie, p, q, lr, reg) -> tuple:
    """Plain SGD that updates after every rating, instead of one step for the whole batch."""
    tables = (b_user, b_movie, p, q)
    for j in range(len(ratings)):
        tables = _variant_step(users[j:j + 1], movies[j:j + 1], ratings[j:j + 1], mu, *tables, lr, reg)
    return tables


_MISTAKES = (
    (dict(buffered=True),
     "this is what `P[users] -= ...` (or `+=`) gives: a user or movie named several times in the batch keeps "
     "only one of its updates. Accumulate the repeats with np.add.at (or np.subtract.at), or sum each "
     "distinct row's gradients first"),
    (dict(reg_bias=0.0, reg_embedding=0.0),
     "the penalty is missing: the gradient of reg/2 (b_u^2 + b_i^2 + |p_u|^2 + |q_i|^2) adds reg * b_u, "
     "reg * b_i, reg * p_u and reg * q_i to the gradients"),
    (dict(reg_bias=0.0),
     "the biases' penalty is missing: the gradient of b_u is e + reg * b_u, and likewise for b_i"),
    (dict(reg_embedding=0.0),
     "the embeddings' penalty is missing: the gradient of p_u is e q_i + reg * p_u, that of q_i is "
     "e p_u + reg * q_i"),
    (dict(reg_bias=2.0, reg_embedding=2.0),
     "the penalty's gradient is twice too large: the derivative of reg/2 * b^2 is reg * b"),
    (dict(reg_bias=0.5, reg_embedding=0.5),
     "the penalty's gradient is half what it should be: the derivative of reg/2 * b^2 is reg * b"),
    (dict(direction=-1.0),
     "every parameter moved up its gradient: SGD subtracts lr * gradient"),
    (dict(error_sign=-1.0),
     "the error has the wrong sign: e = r_hat - r, the prediction minus the rating (the derivative of "
     "1/2 (r_hat - r)^2 with respect to r_hat)"),
    (dict(with_mu=False),
     "the prediction leaves out the global mean: r_hat = mu + b_u + b_i + p_u . q_i"),
    (dict(per_row_reg=True),
     "the penalty is charged once per RATING (the objective of chapter 6), so a user with three ratings in the "
     "batch gets 3 * reg * p_u; this answer adds it once per distinct row"),
    (dict(every_row_reg=True),
     "the penalty was applied to every row of the tables, like weight decay. Chapter 6 charges it to the "
     "batch's ratings only, once per rating, so a row that the batch does not name does not move: the step "
     "is sparse"),
    (dict(sequential="P first"),
     "Q was updated with the gradient e p_u computed from the NEW p_u: compute every gradient from the "
     "parameters before the step, then update (as in the exercise 'One step by hand' of chapter 6)"),
    (dict(sequential="Q first"),
     "P was updated with the gradient e q_i computed from the NEW q_i: compute every gradient from the "
     "parameters before the step, then update (as in the exercise 'One step by hand' of chapter 6)"),
)


def _step_hint(args, expected_tables, state):
    users, movies = args[0], args[1]
    batch = len(args[2])
    expected = _flat(expected_tables)

    def hint(got):
        if got.shape != expected.shape:
            return None
        start = _flat(args[4:8])
        returned = state.get("returned")
        if np.array_equal(got, start) and batch:
            if isinstance(returned, (tuple, list)) and len(returned) == 4:
                try:
                    if np.allclose(_flat(returned), expected):
                        return ("your function returned the updated tables but left the arguments as they were: "
                                "the step must change b_user, b_movie, P and Q in place (P[...] -= ...)")
                except ValueError:
                    pass
            return "no table changed: the step must update b_user, b_movie, P and Q in place"
        if not np.isfinite(got).all():
            if batch == 0:
                return ("NaN or inf after a step on no ratings: did you divide by the batch size? The chapter's "
                        "batch objective is a sum over the ratings, and an empty batch changes nothing")
            return "NaN or inf in the tables: look for a division, or a step that overflows"
        candidates = [(_variant_step(*args, **switches), text) for switches, text in _MISTAKES]
        candidates.insert(1, (_variant_step(*args, scale=1.0 / max(batch, 1)),
                              "the step is the batch size times too small: the chapter's objective SUMS the "
                              "per-rating costs over the batch (no mean), so do not divide by the batch size"))
        candidates.append((_one_rating_at_a_time(*args),
                           "this is SGD one rating at a time, each rating seeing the previous one's update. "
                           "The batch step computes all the gradients at the parameters before the step, adds "
                           "them up, and then updates once"))
        for tables, text in candidates:
            wrong = _flat(tables)
            if np.allclose(got, wrong, rtol=1e-5, atol=1e-6) and not np.allclose(wrong, expected, rtol=1e-5,
                                                                                 atol=1e-6):
                return text
        return _where(got, expected, args, users, movies)
    return hint


def _where(got, expected, args, users, movies) -> str:
    """Which tables, and which of their rows, differ: a pointer when the mistake is not a known one."""
    sizes = [np.size(t) for t in args[4:8]]
    parts = np.split(np.arange(expected.size), np.cumsum(sizes)[:-1])
    wrong = []
    for name, part, table in zip(_TABLES, parts, args[4:8]):
        bad = ~np.isclose(got[part], expected[part], rtol=1e-5, atol=1e-6)
        if bad.any():
            rows = np.unique(np.flatnonzero(bad) // (1 if np.ndim(table) == 1 else np.shape(table)[1]))
            wrong.append(f"{name} in rows {rows.tolist()}")
    used = set(np.asarray(users).tolist()), set(np.asarray(movies).tolist())
    text = "wrong: " + "; ".join(wrong)
    untouched = [name for name, part, table, rows in zip(_TABLES, parts, args[4:8], used + used)
                 if _changed_outside(got[part], expected[part], table, rows)]
    if untouched:
        text += (f". Rows that no rating of the batch names must not change ({', '.join(untouched)}): the "
                 "step is sparse")
    return text


def _changed_outside(got, expected, table, rows) -> bool:
    shape = np.shape(table)
    g, e = got.reshape(shape), expected.reshape(shape)
    others = np.setdiff1d(np.arange(shape[0]), np.fromiter(rows, dtype=np.int64, count=len(rows)))
    return bool(others.size) and not np.allclose(g[others], e[others])


def _ratings(rng, size) -> np.ndarray:
    return rng.integers(1, 11, size=size) / 2.0  # 0.5 to 5 stars in halves, as in MovieLens


def _batch(rng, users, movies, num_users, num_movies, dim, lr, reg):
    b_user = np.round(0.3 * rng.standard_normal(num_users), 3)
    b_movie = np.round(0.3 * rng.standard_normal(num_movies), 3)
    p = np.round(0.5 * rng.standard_normal((num_users, dim)), 3)
    q = np.round(0.5 * rng.standard_normal((num_movies, dim)), 3)
    users, movies = np.asarray(users, dtype=np.int64), np.asarray(movies, dtype=np.int64)
    return users, movies, _ratings(rng, users.size), 3.5, b_user, b_movie, p, q, lr, reg


def _cases(rng: np.random.Generator) -> list[tuple[str, tuple]]:
    cases = [("the rating of chapter 6's exercise 'One step by hand': one user, one movie, D=2",
              (np.array([0]), np.array([0]), np.array([4.0]), 3.5, np.array([0.2]), np.array([-0.1]),
               np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]]), 0.1, 0.1))]
    cases.append(("4 ratings by 4 different users of 4 different movies, D=3",
                  _batch(rng, [3, 0, 4, 1], [2, 5, 0, 3], 5, 6, 3, 0.1, 0.05)))
    cases.append(("6 ratings, users and movies repeated (user 1 three times, movie 2 three times, the pair "
                  "(1, 2) twice), D=2", _batch(rng, [1, 0, 1, 2, 1, 0], [2, 0, 2, 3, 1, 2], 3, 4, 2, 0.1, 0.1)))
    cases.append(("one user rates 5 of 6 movies, D=1", _batch(rng, [0] * 5, [4, 1, 5, 0, 2], 1, 6, 1, 0.05, 0.1)))
    for _ in range(4):
        num_users, num_movies, dim = int(rng.integers(2, 9)), int(rng.integers(2, 12)), int(rng.integers(1, 6))
        size = int(rng.integers(5, 40))
        users, movies = rng.integers(0, num_users, size), rng.integers(0, num_movies, size)
        lr, reg = float(rng.choice([0.02, 0.05, 0.1])), float(rng.choice([0.02, 0.06, 0.1]))
        cases.append((f"{size} ratings, {num_users} users, {num_movies} movies, D={dim}, lr={lr}, reg={reg}",
                      _batch(rng, users, movies, num_users, num_movies, dim, lr, reg)))
    cases.append(("an empty batch: nothing changes", _batch(rng, [], [], 3, 4, 2, 0.1, 0.1)))
    return cases


def check_factorization_step(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(users, movies, ratings, mu, b_user, b_movie, P, Q, lr, reg)``: one SGD step (chapter 6).

    The batch is rating ``ratings[j]`` of movie ``movies[j]`` by user ``users[j]``; the model predicts
    ``mu + b_user[u] + b_movie[i] + P[u] . Q[i]`` (``mu`` is fixed). ``fn`` must take one SGD step of
    learning rate ``lr`` on the sum over the batch of chapter 6's per-rating cost
    ``1/2 e^2 + reg/2 (b_u^2 + b_i^2 + |p_u|^2 + |q_i|^2)``, ``e`` the prediction minus the rating,
    every gradient taken at the parameters before the step; and it must change ``b_user`` (shape
    ``(U,)``), ``b_movie`` (``(M,)``), ``P`` (``(U, D)``) and ``Q`` (``(M, D)``) IN PLACE, only in the
    rows the batch names. A user or movie named several times gets the sum of its gradients. What
    ``fn`` returns is ignored. The expected tables come from ``el.MatrixFactorization``.
    """
    name = _harness.name_of(fn)
    _harness.require_callable(fn, name)
    rng = np.random.default_rng(seed)
    state: dict = {}
    cases = []
    for description, args in _cases(rng):
        expected = _reference_step(*args)
        cases.append(Case(description, args, _flat(expected), names=_NAMES, hint=_step_hint(args, expected, state)))

    def on_copies(users, movies, ratings, mu, b_user, b_movie, p, q, lr, reg):
        tables = [np.array(t, dtype=np.float64, copy=True) for t in (b_user, b_movie, p, q)]
        state["returned"] = fn(users, movies, ratings, mu, *tables, lr, reg)
        return _flat(tables)

    on_copies.__name__ = name
    result = _harness.run(name, on_copies, cases,
                          summary="the step of chapter 6's exercise 'One step by hand', repeated users and "
                                  "movies, one user, D=1, an empty batch")
    if result:
        return result
    return CheckResult(result.name, False, result.cases_run, result.cases_total,
                       _name_the_position(result.message, cases[result.cases_run - 1].args))


def _name_the_position(message: str, args: tuple) -> str:
    """The harness reports a position in the four tables laid end to end; say which table and entry."""
    found = re.search(r"(\d[\d,]*) of ([\d,]+) values differ; the first at position \((\d+),\)", message)
    if found is None:
        return message
    flat = int(found.group(3))
    for table_name, table in zip(_TABLES, args[4:8]):
        table = np.asarray(table)
        if flat < table.size:
            where = ", ".join(str(int(i)) for i in np.unravel_index(flat, table.shape))
            break
        flat -= table.size
    else:
        return message
    text = (f"{found.group(1)} of the {found.group(2)} numbers in b_user, b_movie, P and Q differ; "
            f"the first is {table_name}[{where}]")
    return message[:found.start()] + text + message[found.end():]
