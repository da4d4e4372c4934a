"""Matrix factorisation in both backends (chapter 6): gradients, sparse steps, training, agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import NUMPY, TORCH
from embedlib.datasets import rated_movies
from embedlib.numpy import factorization as np_factorization
from embedlib.torch import factorization as torch_factorization

NUM_USERS, NUM_MOVIES, NUM_GENRES, DIM = 12, 15, 4, 3


def small_problem(seed=0, n=200):
    """Random ratings of a few users and movies, with genre bags (one movie without genres)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, NUM_USERS, n)
    movies = rng.integers(0, NUM_MOVIES, n)
    ratings = rng.integers(1, 11, n) / 2
    sizes = rng.integers(1, 4, NUM_MOVIES)
    sizes[3] = 0
    genres = (rng.integers(0, NUM_GENRES, sizes.sum()), np.cumsum(sizes) - sizes, NUM_GENRES)
    rated = (*rated_movies(users, movies, NUM_USERS), NUM_MOVIES)
    return users, movies, ratings, genres, rated


def make(be, embedding_dim=DIM, bags=("movie", "user"), **options):
    users, movies, ratings, genres, rated = small_problem()
    options = {"global_mean": 3.0, "init_std": 0.3, "seed": 1, **options}
    if "movie" in bags:
        options["movie_bags"] = genres
    if "user" in bags:
        options["user_bags"] = rated
    return be.el.MatrixFactorization(NUM_USERS, NUM_MOVIES, embedding_dim, **options)


def weights(be, model) -> dict:
    return {name: be.np(layer.weight).copy() for name, layer in model.tables.items()}


def objective(model, users, movies, ratings, reg, bag_reg):
    error = model(users, movies) - ratings
    return 0.5 * float(np.sum(error**2)) + model.penalty(reg, bag_reg)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------
def test_prediction_is_biases_plus_dot_product(backend):
    users, movies, *_ = small_problem()
    model = make(backend)
    w = weights(backend, model)
    genre_idx, genre_off, _ = small_problem()[3]
    rated_idx, rated_off, _ = small_problem()[4]

    def bag_mean(table, idx, off, owner):
        end = off[owner + 1] if owner + 1 < len(off) else len(idx)
        rows = idx[off[owner]:end]
        return table[rows].mean(axis=0) if len(rows) else np.zeros(table.shape[1])

    expected = [3.0 + w["user_bias"][u, 0] + w["movie_bias"][m, 0]
                + (w["user"][u] + bag_mean(w["user_bag"], rated_idx, rated_off, u))
                @ (w["movie"][m] + bag_mean(w["movie_bag"], genre_idx, genre_off, m))
                for u, m in zip(users[:20], movies[:20])]
    np.testing.assert_allclose(backend.np(model(users[:20], movies[:20])), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backend.np(model.movie_vectors([3]))[0], w["movie"][3])  # empty genre bag


def test_dimension_zero_is_the_one_hot_linear_model(backend):
    """Biases only: the prediction is [one_hot(u), one_hot(i)] @ w, the model of chapter 6."""
    users, movies, *_ = small_problem()
    model = make(backend, embedding_dim=0)
    assert set(model.tables) == {"user_bias", "movie_bias"}
    rng = np.random.default_rng(5)
    w = rng.standard_normal(NUM_USERS + NUM_MOVIES)
    with torch.no_grad():
        for layer, part in ((model.user_bias, w[:NUM_USERS]), (model.movie_bias, w[NUM_USERS:])):
            layer.weight[:] = backend.arr(part[:, None])
    one_hot = np.concatenate([NUMPY.el.one_hot(users, NUM_USERS, dtype=np.float64),
                              NUMPY.el.one_hot(movies, NUM_MOVIES, dtype=np.float64)], axis=1)
    np.testing.assert_allclose(backend.np(model(users, movies)), 3.0 + one_hot @ w, rtol=1e-12)


def test_same_seed_same_start_in_both_backends():
    a, b = make(NUMPY), make(TORCH)
    wa, wb = weights(NUMPY, a), weights(TORCH, b)
    assert list(wa) == list(wb) == list(np_factorization.TABLES)
    for name in wa:
        assert np.array_equal(wa[name], wb[name]), name
        assert wa[name].dtype == wb[name].dtype == np.float64
    assert not np.array_equal(weights(NUMPY, make(NUMPY, seed=2))["user"], wa["user"])


@pytest.mark.parametrize("bags", [(), ("movie",), ("movie", "user")])
def test_numpy_backward_is_the_gradient_of_the_objective(bags):
    """The hand-written backward against central differences of the objective, every table."""
    users, movies, ratings, *_ = small_problem()
    users, movies, ratings = users[:30], movies[:30], ratings[:30]
    reg, bag_reg = 0.3, 0.05
    model = make(NUMPY, bags=bags)
    model.zero_grad()
    model.backward(model(users, movies) - ratings, reg, bag_reg)
    for name, layer in model.tables.items():
        grad = layer.grad.to_dense(layer.num_embeddings)
        numeric = np.zeros_like(grad)
        for index in np.ndindex(*grad.shape):
            saved = layer.weight[index]
            layer.weight[index] = saved + 1e-6
            up = objective(model, users, movies, ratings, reg, bag_reg)
            layer.weight[index] = saved - 1e-6
            down = objective(model, users, movies, ratings, reg, bag_reg)
            layer.weight[index] = saved
            numeric[index] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7, err_msg=name)


def test_a_step_changes_only_the_rows_the_batch_used():
    users, movies, ratings, genres, rated = small_problem()
    model = make(NUMPY)
    before = weights(NUMPY, model)
    batch = slice(0, 5)
    model.zero_grad()
    model.backward(model(users[batch], movies[batch]) - ratings[batch], 0.1)
    model.step(0.1)
    after = weights(NUMPY, model)
    used = {
        "user_bias": users[batch], "user": users[batch], "movie_bias": movies[batch], "movie": movies[batch],
        "movie_bag": np_factorization.bags_of(movies[batch], genres[0], genres[1])[0],
        "user_bag": np_factorization.bags_of(users[batch], rated[0], rated[1])[0],
    }
    for name in before:
        changed = np.flatnonzero(np.any(before[name] != after[name], axis=1))
        assert set(changed.tolist()) == set(np.unique(used[name]).tolist()), name
        assert model.tables[name].grad.rows.size == np.unique(used[name]).size  # the gradient is sparse


def test_penalty_matches_its_formula():
    users, movies, *_ = small_problem()
    for be in (NUMPY, TORCH):
        model = make(be, bags=("movie",))
        model(users[:7], movies[:7])
        w = weights(be, model)
        u, m = users[:7], movies[:7]
        genre_part = be.np(model.movie_vectors(m)) - w["movie"][m]
        expected = 0.5 * (0.2 * (np.sum(w["user_bias"][u] ** 2) + np.sum(w["movie_bias"][m] ** 2)
                                 + np.sum(w["user"][u] ** 2) + np.sum(w["movie"][m] ** 2))
                          + 0.05 * np.sum(genre_part**2))
        assert float(be.np(model.penalty(0.2, 0.05))) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Bags of a batch
# --------------------------------------------------------------------------------------------------
def test_bags_of_lays_out_the_owners_bags_in_order():
    indices = np.array([5, 6, 7, 8, 9])
    offsets = np.array([0, 2, 2, 4])  # bags [5, 6], [], [7, 8], [9]
    owners = np.array([3, 0, 1, 0, 2])
    flat, flat_offsets = np_factorization.bags_of(owners, indices, offsets)
    assert flat.tolist() == [9, 5, 6, 5, 6, 7, 8]
    assert flat_offsets.tolist() == [0, 1, 3, 3, 5]
    t_flat, t_offsets = torch_factorization.bags_of(torch.tensor(owners), torch.tensor(indices), torch.tensor(offsets))
    assert t_flat.tolist() == flat.tolist() and t_offsets.tolist() == flat_offsets.tolist()
    empty = np_factorization.bags_of(np.array([], dtype=np.int64), indices, offsets)
    assert empty[0].size == 0 and empty[1].size == 0


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def test_training_lowers_the_loss(backend):
    users, movies, ratings, *_ = small_problem()
    model = make(backend)
    start = backend.el.rmse(model, users, movies, ratings)
    history = backend.el.train_sgd(model, users, movies, ratings, epochs=8, lr=0.05, reg=0.01, batch_size=16,
                                   progress=False)
    assert len(history["train"]) == 8
    assert history["train"][-1] < 0.8 * start
    assert all(b <= a + 1e-9 for a, b in zip(history["train"], history["train"][1:]))


def test_numpy_and_torch_train_to_the_same_weights():
    """Same seed, same batches, same SGD: the hand-written backward and autograd agree (float64)."""
    users, movies, ratings, *_ = small_problem()
    valid = tuple(a[:40] for a in small_problem(seed=9))
    runs = []
    for be in (NUMPY, TORCH):
        model = make(be)
        history = be.el.train_sgd(model, users, movies, ratings, epochs=4, lr=0.05, reg=0.1, bag_reg=0.02,
                                  lr_decay=0.9, batch_size=16, seed=3, curves={"valid": valid[:3]}, progress=False)
        runs.append((weights(be, model), history))
    (w_np, h_np), (w_torch, h_torch) = runs
    for name in w_np:
        np.testing.assert_allclose(w_np[name], w_torch[name], rtol=0, atol=1e-12, err_msg=name)
    for name in ("train", "valid"):
        np.testing.assert_allclose(h_np[name], h_torch[name], rtol=1e-12)


def test_numpy_training_is_bitwise_reproducible():
    users, movies, ratings, *_ = small_problem()
    results = []
    for _ in range(2):
        model = make(NUMPY)
        NUMPY.el.train_sgd(model, users, movies, ratings, epochs=2, lr=0.05, reg=0.1, batch_size=16, progress=False)
        results.append(weights(NUMPY, model))
    for name in results[0]:
        assert results[0][name].tobytes() == results[1][name].tobytes(), name


def test_progress_bar_can_be_shown(capsys):
    users, movies, ratings, *_ = small_problem()
    NUMPY.el.train_sgd(make(NUMPY), users, movies, ratings, epochs=2, lr=0.05, reg=0.1, progress=True)
    assert "2/2 epochs" in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_model_on_cuda_matches_cpu():
    users, movies, ratings, *_ = small_problem()
    runs = []
    for device in ("cpu", "cuda"):
        model = make(TORCH, device=device)
        TORCH.el.train_sgd(model, users, movies, ratings, epochs=2, lr=0.05, reg=0.1, batch_size=16, progress=False)
        runs.append(weights(TORCH, model))
    for name in runs[0]:
        np.testing.assert_allclose(runs[0][name], runs[1][name], rtol=0, atol=1e-10, err_msg=name)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_before_anything_changes(backend):
    users, movies, ratings, genres, _ = small_problem()
    model = make(backend)
    before = weights(backend, model)
    with pytest.raises(ValueError, match="same length"):
        model(users[:3], movies[:2])
    with pytest.raises(IndexError, match=f"num_embeddings={NUM_USERS}"):
        model(np.array([0, NUM_USERS]), np.array([0, 1]))
    with pytest.raises(TypeError, match="integers"):
        model(np.array([0.0]), np.array([1]))
    with pytest.raises(ValueError, match="same length"):
        backend.el.train_sgd(model, users, movies, ratings[:-1], epochs=1, lr=0.1, reg=0.0, progress=False)
    with pytest.raises(ValueError, match="one offset per owner"):
        backend.el.MatrixFactorization(NUM_USERS, NUM_MOVIES, DIM, movie_bags=(genres[0], genres[1][:-1], NUM_GENRES))
    with pytest.raises(IndexError, match="movie_bags index"):
        backend.el.MatrixFactorization(NUM_USERS, NUM_MOVIES, DIM, movie_bags=(genres[0], genres[1], 2))
    with pytest.raises(ValueError, match="start at 0"):
        backend.el.MatrixFactorization(NUM_USERS, NUM_MOVIES, DIM, movie_bags=(genres[0], genres[1] + 1, NUM_GENRES))
    after = weights(backend, model)
    assert all(np.array_equal(before[name], after[name]) for name in before)


def test_numpy_backward_needs_a_forward_and_a_matching_error():
    model = make(NUMPY)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.zeros(3))
    model(np.array([0, 1]), np.array([2, 3]))
    with pytest.raises(ValueError, match="error"):
        model.backward(np.zeros(3))


# --------------------------------------------------------------------------------------------------
# A table of the caller's in place of the plain user or movie table (chapter 14)
# --------------------------------------------------------------------------------------------------
def test_a_given_table_is_used_and_trained_like_the_plain_one(backend):
    """A plain Embedding given as movie_table/user_table trains exactly as the model's own tables."""
    users, movies, ratings, *_ = small_problem()
    plain = make(backend)
    start = weights(backend, plain)
    given = make(backend, user_table=type(plain.user).from_weight(backend.arr(start["user"])),
                 movie_table=type(plain.movie).from_weight(backend.arr(start["movie"])))
    assert given.movie is not plain.movie and given.tables["movie"] is given.movie
    for model in (plain, given):
        backend.el.train_sgd(model, users, movies, ratings, epochs=2, lr=0.05, reg=0.1, bag_reg=0.02,
                             batch_size=16, seed=3, progress=False)
    for name, w in weights(backend, plain).items():
        np.testing.assert_array_equal(weights(backend, given)[name], w, err_msg=name)
    assert not np.array_equal(weights(backend, given)["movie"], start["movie"])


def test_a_given_table_must_fit_the_model(backend):
    layer = backend.el.Embedding(NUM_MOVIES + 1, DIM, seed=0)
    with pytest.raises(ValueError, match=r"movie_table must stand for a \(15, 3\) table"):
        make(backend, movie_table=layer)
    with pytest.raises(ValueError, match="embedding_dim=0 leaves only the biases"):
        make(backend, embedding_dim=0, user_table=backend.el.Embedding(NUM_USERS, DIM, seed=0))
