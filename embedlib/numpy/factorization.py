"""Matrix factorisation with user and movie embeddings and bags, trained by sparse SGD (chapter 6).

The model predicts user ``u``'s rating of movie ``i`` as

    r_hat = mean + b_u + b_i + (p_u + x_u) . (q_i + zbar_i)

with a user bias ``b_u`` and a movie bias ``b_i`` (embeddings of dimension 1), a user embedding
``p_u``, a movie embedding ``q_i`` and two optional bags: ``zbar_i``, the mean embedding of the
movie's genres, and ``x_u``, the mean embedding of a bag attached to the user (in SVD++, the movies
the user rated; Koren 2008). Every part is a lookup, so a batch of ratings touches only the rows of
its users, movies and genres, and the SGD step changes only those rows.

Training minimises, summed over the ratings of a batch,

    1/2 (r_hat - r)^2 + reg/2 (b_u^2 + b_i^2 + |p_u|^2 + |q_i|^2) + bag_reg/2 (|x_u|^2 + |zbar_i|^2)

The penalty is charged once per rating, as in the SGD of Koren, Bell and Volinsky (2009), so a
row is held back in proportion to how often it is used. A genre row is used by thousands of
ratings, which is why bags get their own, smaller, ``bag_reg``. ``embedlib.torch.factorization`` is
the same model in PyTorch: with the same seed both start from the same numbers and, given the same
batches, take the same steps.
"""
from __future__ import annotations

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays, _segments
from embedlib.numpy.bag import embedding_bag
from embedlib.numpy.layers import Embedding, EmbeddingBag

#: The tables of a model, in a fixed order (the torch model has submodules of the same names).
TABLES = ("user_bias", "movie_bias", "user", "movie", "user_bag", "movie_bag")


def initial_tables(num_users, num_movies, embedding_dim, user_bag_size=0, movie_bag_size=0, *,
                   init_std=0.1, seed=0) -> dict:
    """The starting weights (float64), drawn from one NumPy generator so both backends start alike.

    Biases start at zero; embeddings are N(0, init_std^2): small, so that the first predictions are
    close to the mean rating, but not zero, because the gradient of ``p . q`` with respect to each
    factor is the other one, and two zero tables would stay zero for ever.
    """
    rng = np.random.default_rng(seed)
    return {
        "user_bias": np.zeros((num_users, 1)),
        "movie_bias": np.zeros((num_movies, 1)),
        "user": init_std * rng.standard_normal((num_users, embedding_dim)),
        "movie": init_std * rng.standard_normal((num_movies, embedding_dim)),
        "user_bag": init_std * rng.standard_normal((user_bag_size, embedding_dim)),
        "movie_bag": init_std * rng.standard_normal((movie_bag_size, embedding_dim)),
    }


def bags_of(owners, bag_indices, bag_offsets):
    """The bags of the given owners, as ``(indices, offsets)`` for ``embedding_bag`` (chapter 6).

    ``bag_indices``/``bag_offsets`` hold one bag per owner (owner ``j``'s bag runs from
    ``bag_offsets[j]`` to the next offset, the last one to the end); the result lays out
    ``owners[0]``'s bag, then ``owners[1]``'s, and so on, repeats included: for a batch of movies,
    the genres of each.
    """
    owners = np.asarray(owners)
    ends = np.r_[bag_offsets[1:], len(bag_indices)]
    starts, sizes = bag_offsets[owners], ends[owners] - bag_offsets[owners]
    offsets = np.cumsum(sizes) - sizes
    # entry k of the result is entry (k - offsets[b]) of its bag b, stored at starts[b] + that
    positions = np.repeat(starts - offsets, sizes) + np.arange(sizes.sum())
    return bag_indices[positions], offsets.astype(np.int64)


class MatrixFactorization:
    """User and movie embeddings whose dot product, plus biases, predicts a rating (chapter 6).

    ``movie_bags=(indices, offsets, num_embeddings)`` gives each movie a bag whose mean embedding
    is added to the movie's (chapter 6 uses the genres: ``MovieLens.genre_indices``,
    ``.genre_offsets``, ``.num_genres``); ``user_bags`` does the same for users (SVD++ uses the
    movies each user rated, ``embedlib.datasets.rated_movies``). ``embedding_dim=0`` leaves only the
    biases: the one-hot linear model of chapter 6. The tables are float64 unless ``dtype`` says
    otherwise. Calling the model on ``(users, movies)`` predicts;
    ``backward`` then ``step`` train it, touching only the rows the batch used.

    ``user_table`` / ``movie_table`` put a smaller table in place of the plain user or movie
    embedding (chapter 14: hashed, quotient-remainder or mixed-dimension): any layer with
    ``num_embeddings``, ``embedding_dim``, ``forward``, ``backward``, ``step``, ``zero_grad`` and a
    ``weight`` property giving the (V, D) table it stands for. The penalty ``reg/2 |q_i|^2`` is then
    charged on the vector the layer returns.
    """

    def __init__(self, num_users, num_movies, embedding_dim, *, global_mean=0.0, user_bags=None,
                 movie_bags=None, init_std=0.1, seed=0, dtype=np.float64, user_table=None, movie_table=None):
        num_users = _checks.positive(num_users, "num_users")
        num_movies = _checks.positive(num_movies, "num_movies")
        embedding_dim = _checks.count(embedding_dim, "embedding_dim")
        self.user_bags = _check_bags(user_bags, num_users, "user_bags")
        self.movie_bags = _check_bags(movie_bags, num_movies, "movie_bags")
        bag_sizes = [0 if b is None else b[2] for b in (self.user_bags, self.movie_bags)]
        w = initial_tables(num_users, num_movies, embedding_dim, *bag_sizes, init_std=init_std, seed=seed)
        w = {name: table.astype(dtype) for name, table in w.items()}
        self.global_mean = float(global_mean)
        self.user_bias = Embedding.from_weight(w["user_bias"])
        self.movie_bias = Embedding.from_weight(w["movie_bias"])
        # With embedding_dim=0 there is nothing to learn beyond the biases: no tables of width 0.
        self.user = Embedding.from_weight(w["user"]) if embedding_dim else None
        self.movie = Embedding.from_weight(w["movie"]) if embedding_dim else None
        self.user_bag = EmbeddingBag.from_weight(w["user_bag"]) if embedding_dim and bag_sizes[0] else None
        self.movie_bag = EmbeddingBag.from_weight(w["movie_bag"]) if embedding_dim and bag_sizes[1] else None
        if user_table is not None:
            self.user = check_table(user_table, num_users, embedding_dim, "user_table")
        if movie_table is not None:
            self.movie = check_table(movie_table, num_movies, embedding_dim, "movie_table")
        self._saved = None

    @property
    def tables(self) -> dict:
        """The trainable layers by name, in the order of :data:`TABLES`, leaving out absent ones."""
        return {name: getattr(self, name) for name in TABLES if getattr(self, name) is not None}

    def user_vectors(self, users=None) -> np.ndarray:
        """``p_u + x_u``: what a user's embedding is dotted with (all users by default)."""
        users = np.arange(self.user_bias.num_embeddings) if users is None else np.asarray(users)
        return _plus_bag_means(self.user.weight[users], self.user_bag, self.user_bags, users)

    def movie_vectors(self, movies=None) -> np.ndarray:
        """``q_i + zbar_i``: each movie's place in the embedding space (chapter 7), all by default."""
        movies = np.arange(self.movie_bias.num_embeddings) if movies is None else np.asarray(movies)
        return _plus_bag_means(self.movie.weight[movies], self.movie_bag, self.movie_bags, movies)

    def forward(self, users, movies) -> np.ndarray:
        """Predicted ratings, shape ``(B,)``; remembers what ``backward`` and ``penalty`` need."""
        users, movies = _arrays.indices(users, "users"), _arrays.indices(movies, "movies")
        if users.ndim != 1 or users.shape != movies.shape:
            raise ValueError(f"users and movies must be 1-D and of the same length, got shapes "
                             f"{users.shape} and {movies.shape}")
        s = {"b_u": self.user_bias(users)[:, 0], "b_i": self.movie_bias(movies)[:, 0]}
        prediction = self.global_mean + s["b_u"] + s["b_i"]
        if self.user is not None:
            s["p"], s["q"] = self.user(users), self.movie(movies)
            s["x"] = _bag_means(self.user_bag, self.user_bags, users)
            s["y"] = _bag_means(self.movie_bag, self.movie_bags, movies)
            s["user_total"] = s["p"] if s["x"] is None else s["p"] + s["x"][0]
            s["movie_total"] = s["q"] if s["y"] is None else s["q"] + s["y"][0]
            prediction = prediction + np.einsum("bd,bd->b", s["user_total"], s["movie_total"])
        self._saved = s
        return prediction

    __call__ = forward

    def penalty(self, reg, bag_reg=None) -> float:
        """The regularisation term of the objective (module docstring) for the last forward's batch."""
        s = self._saved_or_raise()
        bag_reg = reg if bag_reg is None else bag_reg
        total = reg * (np.sum(s["b_u"] ** 2) + np.sum(s["b_i"] ** 2))
        if "p" in s:
            total += reg * (np.sum(s["p"] ** 2) + np.sum(s["q"] ** 2))
            total += bag_reg * sum(np.sum(s[k][0] ** 2) for k in ("x", "y") if s[k] is not None)
        return float(total / 2)

    def backward(self, error, reg=0.0, bag_reg=None) -> None:
        """Add to each layer's sparse gradient the gradient of the batch objective (module docstring).

        ``error`` is ``r_hat - r`` for each rating of the last forward. Through the dot product
        ``(p_u + x_u) . (q_i + zbar_i)``, the user side's gradient is ``error * (q_i + zbar_i)`` and the
        movie side's ``error * (p_u + x_u)``; each layer's ``backward`` adds its rows' share up.
        """
        s = self._saved_or_raise()
        bag_reg = reg if bag_reg is None else bag_reg
        e = _arrays.floats(error, "error")
        _checks.same_shape(e.shape, s["b_u"].shape, "error", "one value per rating of the last forward")
        e = e[:, None]
        self.user_bias.backward(e + reg * s["b_u"][:, None])
        self.movie_bias.backward(e + reg * s["b_i"][:, None])
        if self.user is None:
            return
        self.user.backward(e * s["movie_total"] + reg * s["p"])
        self.movie.backward(e * s["user_total"] + reg * s["q"])
        _bag_backward(self.user_bag, s["x"], e * s["movie_total"], bag_reg)
        _bag_backward(self.movie_bag, s["y"], e * s["user_total"], bag_reg)

    def step(self, lr) -> None:
        """One SGD step in every table, on the rows the batch touched only."""
        for layer in self.tables.values():
            layer.step(lr)

    def zero_grad(self) -> None:
        for layer in self.tables.values():
            layer.zero_grad()

    def _saved_or_raise(self):
        if self._saved is None:
            raise RuntimeError("backward() and penalty() need a forward() first")
        return self._saved

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}={layer.weight.shape}" for name, layer in self.tables.items())
        return f"MatrixFactorization({shapes})"


def check_table(layer, num_rows, embedding_dim, name):
    """A layer given in place of the user or movie table, checked against the model's shape; or None."""
    if layer is None:
        return None
    if embedding_dim == 0:
        raise ValueError(f"{name} replaces an embedding table, but embedding_dim=0 leaves only the biases")
    shape = (getattr(layer, "num_embeddings", None), getattr(layer, "embedding_dim", None))
    if shape != (num_rows, embedding_dim):
        raise ValueError(f"{name} must stand for a ({num_rows}, {embedding_dim}) table "
                         f"(num_embeddings, embedding_dim), got {shape}")
    return layer


def _check_bags(bags, num_owners, name):
    """``(indices, offsets, num_embeddings)`` checked: int64 arrays, one offset per owner, in range."""
    if bags is None:
        return None
    indices, offsets, num_embeddings = bags
    indices = _arrays.indices(indices, f"{name} indices").astype(np.int64).reshape(-1)
    offsets = _arrays.indices(offsets, f"{name} offsets").astype(np.int64)
    num_embeddings = _checks.positive(num_embeddings, f"{name} num_embeddings")
    if offsets.shape != (num_owners,):
        raise ValueError(f"{name} needs one offset per owner, shape ({num_owners},), got {offsets.shape}")
    if num_owners and (offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > indices.size):
        raise ValueError(f"{name} offsets must start at 0, never decrease and stay within the "
                         f"{indices.size} indices")
    _arrays.in_range(indices, num_embeddings, f"{name} index")
    return indices, offsets, num_embeddings


def _bag_means(layer, bags, owners):
    """The bag means of ``owners`` as ``(values, inverse)``, each distinct bag reduced once; or None.

    A batch names a popular movie or an active user several times, and its bag is the same each
    time; so reduce each distinct owner's bag once and copy the result where it is needed.
    """
    if layer is None:
        return None
    distinct, inverse = np.unique(owners, return_inverse=True)
    return layer(*bags_of(distinct, bags[0], bags[1]))[inverse], inverse


def _bag_backward(layer, saved, grad, bag_reg):
    """The copies' gradients, added per distinct owner, go to the bag layer's ``backward``."""
    if layer is None:
        return
    values, inverse = saved
    layer.backward(_segments.segment_sum(inverse, grad + bag_reg * values)[1])


def _plus_bag_means(vectors, layer, bags, owners):
    if layer is None:
        return vectors
    bag_indices, bag_offsets = bags_of(owners, bags[0], bags[1])
    return vectors + embedding_bag(bag_indices, layer.weight, bag_offsets, mode="mean")


def rmse(model, users, movies, ratings, *, batch_size=65_536) -> float:
    """Root mean squared error of ``model``'s predictions of ``ratings`` (chapter 6)."""
    ratings = np.asarray(ratings, dtype=np.float64)
    squared = 0.0
    for start in range(0, len(ratings), batch_size):
        part = slice(start, start + batch_size)
        squared += float(np.sum((np.asarray(model(users[part], movies[part]), dtype=np.float64)
                                 - ratings[part]) ** 2))
    return float(np.sqrt(squared / max(len(ratings), 1)))


def batch_order(num_ratings, batch_size, rng):
    """One epoch's batches: a fresh random order of the ratings, cut into pieces of ``batch_size``."""
    order = rng.permutation(num_ratings)
    return [order[start:start + batch_size] for start in range(0, num_ratings, batch_size)]


def train_sgd(model, users, movies, ratings, *, epochs, lr, reg, bag_reg=None, lr_decay=1.0, batch_size=64,
              seed=0, curves=None, progress=True) -> dict:
    """Train ``model`` by mini-batch SGD on sparse gradients; returns its learning curves (chapter 6).

    Epoch ``t`` (from 0) visits the ratings in a new order drawn from ``np.random.default_rng(seed)``
    (the torch version draws the same orders) with learning rate ``lr * lr_decay**t``.
    ``curves={"name": (users, movies, ratings), ...}`` are measured after every epoch, as is the
    training set itself (``"train"``). Returns ``{"train": [rmse per epoch], "name": [...], ...}``.
    """
    users, movies = _arrays.indices(users, "users"), _arrays.indices(movies, "movies")
    ratings = _arrays.floats(ratings, "ratings")
    epochs = _checks.count(epochs, "epochs")
    batch_size = _checks.positive(batch_size, "batch_size")
    if not (users.shape == movies.shape == ratings.shape) or users.ndim != 1:
        raise ValueError(f"users, movies and ratings must be 1-D and of the same length, got shapes "
                         f"{users.shape}, {movies.shape} and {ratings.shape}")
    curves = {"train": (users, movies, ratings), **(curves or {})}
    history = {name: [] for name in curves}
    rng = np.random.default_rng(seed)
    bar = progress_bar(epochs, progress)
    for epoch in range(epochs):
        for batch in batch_order(len(ratings), batch_size, rng):
            error = model(users[batch], movies[batch]) - ratings[batch]
            model.zero_grad()
            model.backward(error, reg, bag_reg)
            model.step(lr * lr_decay**epoch)
        for name, data in curves.items():
            history[name].append(rmse(model, *data))
        bar.set_postfix({f"{name} rmse": f"{values[-1]:.4f}" for name, values in history.items()}, refresh=False)
        bar.update()
    bar.close()
    return history


def progress_bar(epochs, enabled=True):
    """A text progress bar over epochs on stdout, the same in a terminal and in a notebook.

    A fixed format: no rates, and elapsed/remaining time in the ``[mm:ss<mm:ss`` form that the
    book's output checks mask. Plain tqdm rather than ``tqdm.auto``: a notebook widget would look
    different wherever ipywidgets is installed. One refresh per epoch, so every run prints the same.
    """
    import sys

    from tqdm import tqdm  # imported here: embedlib itself does not need tqdm

    return tqdm(total=epochs, desc="training", unit="epoch", file=sys.stdout, disable=not enabled,
                mininterval=0, miniters=1, ascii=False, dynamic_ncols=False, ncols=None,
                bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} epochs "
                           "[{elapsed}<{remaining}{postfix}]")
