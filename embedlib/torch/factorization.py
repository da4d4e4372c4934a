"""Matrix factorisation with user and movie embeddings and bags, in PyTorch (chapter 6).

The same model, objective and training loop as ``embedlib.numpy.factorization`` (whose docstring
states them), built from ``embedlib.torch``'s layers, with autograd in place of the hand-written
backward. With the same seed both start from the same numbers; ``train_sgd`` draws the same batches
and takes the same SGD steps, so on the same data the two agree to rounding (chapter 6 checks it).
The model runs on CPU or CUDA tensors.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from embedlib import _checks
from embedlib.numpy import factorization as _np_factorization
from embedlib.numpy.factorization import TABLES, batch_order, check_table, initial_tables, progress_bar
from embedlib.torch import _tensors
from embedlib.torch.bag import embedding_bag
from embedlib.torch.layers import Embedding, EmbeddingBag


def bags_of(owners, bag_indices, bag_offsets):
    """The bags of the given owners, as ``(indices, offsets)`` for ``embedding_bag`` (chapter 6).

    Tensors in, tensors out, on their device; see ``embedlib.numpy.factorization.bags_of``.
    """
    ends = torch.cat([bag_offsets[1:], bag_offsets.new_tensor([bag_indices.numel()])])
    starts = bag_offsets[owners]
    sizes = ends[owners] - starts
    offsets = torch.cumsum(sizes, 0) - sizes
    positions = torch.repeat_interleave(starts - offsets, sizes) + torch.arange(
        int(sizes.sum()), device=sizes.device)
    return bag_indices[positions], offsets


class MatrixFactorization(nn.Module):
    """User and movie embeddings whose dot product, plus biases, predicts a rating (chapter 6).

    The arguments of ``embedlib.numpy.MatrixFactorization``, plus ``device`` and ``dtype`` (float64
    by default, like the NumPy model). ``user_table`` / ``movie_table`` (chapter 14) are modules used
    in place of the plain tables, with ``num_embeddings``, ``embedding_dim`` and a ``weight``
    property; their parameters are trained with the rest. ``forward(users, movies)`` returns the predictions;
    ``penalty(reg, bag_reg)`` the regularisation term of the last forward's batch, to add to the loss.
    """

    def __init__(self, num_users, num_movies, embedding_dim, *, global_mean=0.0, user_bags=None,
                 movie_bags=None, init_std=0.1, seed=0, device=None, dtype=torch.float64, user_table=None,
                 movie_table=None):
        super().__init__()
        num_users = _checks.positive(num_users, "num_users")
        num_movies = _checks.positive(num_movies, "num_movies")
        embedding_dim = _checks.count(embedding_dim, "embedding_dim")
        # The NumPy model checks the bags with the same words; reuse its checks, then move the arrays.
        user_bags = _np_factorization._check_bags(_numpy_bags(user_bags), num_users, "user_bags")
        movie_bags = _np_factorization._check_bags(_numpy_bags(movie_bags), num_movies, "movie_bags")
        bag_sizes = [0 if b is None else b[2] for b in (user_bags, movie_bags)]
        w = initial_tables(num_users, num_movies, embedding_dim, *bag_sizes, init_std=init_std, seed=seed)
        w = {name: torch.as_tensor(table, dtype=dtype, device=device) for name, table in w.items()}
        self.global_mean = float(global_mean)
        self.user_bias = Embedding.from_weight(w["user_bias"])
        self.movie_bias = Embedding.from_weight(w["movie_bias"])
        self.user = Embedding.from_weight(w["user"]) if embedding_dim else None
        self.movie = Embedding.from_weight(w["movie"]) if embedding_dim else None
        self.user_bag = EmbeddingBag.from_weight(w["user_bag"]) if embedding_dim and bag_sizes[0] else None
        self.movie_bag = EmbeddingBag.from_weight(w["movie_bag"]) if embedding_dim and bag_sizes[1] else None
        if user_table is not None:
            self.user = check_table(user_table, num_users, embedding_dim, "user_table")
        if movie_table is not None:
            self.movie = check_table(movie_table, num_movies, embedding_dim, "movie_table")
        # The bags' layout moves with the model (.to(device)) as buffers, not as trainable weights.
        for side, bags in (("user", user_bags), ("movie", movie_bags)):
            self.register_buffer(f"{side}_bag_indices", None if bags is None else torch.as_tensor(bags[0], device=device))
            self.register_buffer(f"{side}_bag_offsets", None if bags is None else torch.as_tensor(bags[1], device=device))
        self._saved = None

    @property
    def tables(self) -> dict:
        """The trainable layers by name, in the order of the NumPy model's ``tables``."""
        return {name: getattr(self, name) for name in TABLES if getattr(self, name) is not None}

    @torch.no_grad()
    def user_vectors(self, users=None) -> torch.Tensor:
        """``p_u + x_u`` for the given users (all by default), without gradient."""
        users = self._all_or(users, self.user_bias)
        return self._plus_bag_means(self.user.weight[users], self.user_bag, "user", users)

    @torch.no_grad()
    def movie_vectors(self, movies=None) -> torch.Tensor:
        """``q_i + zbar_i`` for the given movies (all by default), without gradient."""
        movies = self._all_or(movies, self.movie_bias)
        return self._plus_bag_means(self.movie.weight[movies], self.movie_bag, "movie", movies)

    def forward(self, users, movies) -> torch.Tensor:
        """Predicted ratings, shape ``(B,)``; remembers what ``penalty`` needs."""
        device = self.user_bias.weight.device
        users, movies = _tensors.indices(users, device, "users"), _tensors.indices(movies, device, "movies")
        if users.dim() != 1 or users.shape != movies.shape:
            raise ValueError(f"users and movies must be 1-D and of the same length, got shapes "
                             f"{tuple(users.shape)} and {tuple(movies.shape)}")
        s = {"b_u": self.user_bias(users)[:, 0], "b_i": self.movie_bias(movies)[:, 0]}
        prediction = self.global_mean + s["b_u"] + s["b_i"]
        if self.user is not None:
            s["p"], s["q"] = self.user(users), self.movie(movies)
            s["x"] = self._bag_means(self.user_bag, "user", users)
            s["y"] = self._bag_means(self.movie_bag, "movie", movies)
            user_total = s["p"] if s["x"] is None else s["p"] + s["x"]
            movie_total = s["q"] if s["y"] is None else s["q"] + s["y"]
            prediction = prediction + (user_total * movie_total).sum(dim=1)
        self._saved = s
        return prediction

    def penalty(self, reg, bag_reg=None) -> torch.Tensor:
        """The regularisation term of the objective for the last forward's batch, differentiable."""
        if self._saved is None:
            raise RuntimeError("penalty() needs a forward() first")
        s = self._saved
        bag_reg = reg if bag_reg is None else bag_reg
        total = reg * (s["b_u"].square().sum() + s["b_i"].square().sum())
        if "p" in s:
            total = total + reg * (s["p"].square().sum() + s["q"].square().sum())
            for key in ("x", "y"):
                if s[key] is not None:
                    total = total + bag_reg * s[key].square().sum()
        return total / 2

    def _bag_means(self, layer, side, owners):
        """Each distinct owner's bag mean, computed once and copied to every rating that needs it."""
        if layer is None:
            return None
        distinct, inverse = torch.unique(owners, return_inverse=True)
        indices, offsets = bags_of(distinct, getattr(self, f"{side}_bag_indices"), getattr(self, f"{side}_bag_offsets"))
        return layer(indices, offsets)[inverse]

    def _plus_bag_means(self, vectors, layer, side, owners):
        if layer is None:
            return vectors
        indices, offsets = bags_of(owners, getattr(self, f"{side}_bag_indices"), getattr(self, f"{side}_bag_offsets"))
        return vectors + embedding_bag(indices, layer.weight, offsets, mode="mean")

    def _all_or(self, ids, bias):
        if ids is None:
            return torch.arange(bias.num_embeddings, device=bias.weight.device)
        return _tensors.indices(ids, bias.weight.device)


def _numpy_bags(bags):
    """Bags given as tensors or arrays, as NumPy arrays for the shared checks."""
    if bags is None:
        return None
    indices, offsets, num_embeddings = bags
    as_numpy = (lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
    return as_numpy(indices), as_numpy(offsets), num_embeddings


@torch.no_grad()
def rmse(model, users, movies, ratings, *, batch_size=65_536) -> float:
    """Root mean squared error of ``model``'s predictions of ``ratings`` (chapter 6)."""
    device = model.user_bias.weight.device
    ratings = torch.as_tensor(ratings, dtype=torch.float64, device=device)
    squared = 0.0
    for start in range(0, len(ratings), batch_size):
        part = slice(start, start + batch_size)
        prediction = model(users[part], movies[part]).to(torch.float64)
        squared += float(((prediction - ratings[part]) ** 2).sum())
    return float(np.sqrt(squared / max(len(ratings), 1)))


def sgd_step(model, users, movies, ratings, *, lr, reg, bag_reg=None) -> None:
    """One SGD step of ``train_sgd`` on one batch (chapter 6; the chapter on sharded tables takes the
    same step on each rank's part of the batch): the loss ``sum(1/2 (r_hat - r)^2) +
    model.penalty(reg, bag_reg)``, summed and not averaged, its gradient by ``loss.backward()``, and
    ``weight -= lr * weight.grad`` for every weight that has one."""
    error = model(users, movies) - ratings
    loss = 0.5 * error.square().sum() + model.penalty(reg, bag_reg)
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for weight in model.parameters():
            if weight.grad is not None:
                weight -= lr * weight.grad


def train_sgd(model, users, movies, ratings, *, epochs, lr, reg, bag_reg=None, lr_decay=1.0, batch_size=64,
              seed=0, curves=None, progress=True) -> dict:
    """Train ``model`` by mini-batch SGD with autograd; returns its learning curves (chapter 6).

    The arguments and the batches of ``embedlib.numpy.train_sgd``. The loss of a batch is
    ``sum(1/2 (r_hat - r)^2) + model.penalty(reg, bag_reg)``; ``loss.backward()`` puts its gradient
    in each table's ``.grad`` (zero in the rows the batch did not use), and the step subtracts
    ``lr * grad`` from every weight, which leaves those rows as they were.
    """
    device = model.user_bias.weight.device
    users = _tensors.indices(users, device, "users")
    movies = _tensors.indices(movies, device, "movies")
    ratings = torch.as_tensor(ratings, dtype=model.user_bias.weight.dtype, device=device)
    epochs = _checks.count(epochs, "epochs")
    batch_size = _checks.positive(batch_size, "batch_size")
    if not (users.shape == movies.shape == ratings.shape) or users.dim() != 1:
        raise ValueError(f"users, movies and ratings must be 1-D and of the same length, got shapes "
                         f"{tuple(users.shape)}, {tuple(movies.shape)} and {tuple(ratings.shape)}")
    curves = {"train": (users, movies, ratings), **(curves or {})}
    history = {name: [] for name in curves}
    rng = np.random.default_rng(seed)
    bar = progress_bar(epochs, progress)
    for epoch in range(epochs):
        step = lr * lr_decay**epoch
        for batch in batch_order(len(ratings), batch_size, rng):
            batch = torch.as_tensor(batch, device=device)
            sgd_step(model, users[batch], movies[batch], ratings[batch], lr=step, reg=reg, bag_reg=bag_reg)
        for name, (u, m, r) in curves.items():
            history[name].append(rmse(model, u, m, r))
        bar.set_postfix({f"{name} rmse": f"{values[-1]:.4f}" for name, values in history.items()}, refresh=False)
        bar.update()
    bar.close()
    return history
