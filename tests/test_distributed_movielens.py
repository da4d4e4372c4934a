"""embedlib.distributed.movielens: chapter 6's model trained with sharded tables equals one process.

The workers are forked by ``embedlib.distributed.launch.run_local`` (gloo, a ``file://`` rendezvous:
every listener stays on the loopback interface; ``torchrun`` is not run here, since its TCP store
listens on every interface). The reference is ``embedlib.torch.train_sgd`` in this process, on the
same ratings with the same settings. The two agree to rounding, not bit for bit (the bag means'
gradients are added per rank first), so the RMSEs are compared to 1e-9 and the tables to 1e-12; the
differences measured are about 1e-16.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.distributed as dist

from embedlib.datasets import load_movielens, train_test_split
from embedlib.distributed import movielens as ml
from embedlib.distributed.launch import run_local
from embedlib.torch.factorization import MatrixFactorization, sgd_step, train_sgd

TIMEOUT = 60.0
# Chapter 6's settings, but batches of 500 (fewer steps) and so a smaller step (the loss is a sum)
SETTINGS = {**{k: ml.CHAPTER_6[k] for k in ("reg", "bag_reg", "lr_decay", "seed")}, "lr": 0.003, "batch_size": 500}

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"),
]


@functools.cache
def movielens():
    data = load_movielens()
    train, test = train_test_split(len(data.ratings), 0.2, seed=0)
    return data, train, test


def part(rows):
    data = movielens()[0]
    return torch.as_tensor(data.users[rows]), torch.as_tensor(data.movies[rows]), torch.as_tensor(data.ratings[rows])


_WARM = []


def warm_up() -> None:
    """Paid once here before forking rather than in every worker: the data, and a first step and
    lookup of the model (lazy imports)."""
    if not _WARM:
        data, train, _ = movielens()
        model = ml.movielens_model(data, train[:64])
        sgd_step(model, *part(train[:64]), lr=0.01, reg=0.1)
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        _WARM.append(True)


def run_ranks(world_size, scenario, *args):
    warm_up()
    try:
        return run_local(scenario, world_size, *args, timeout=TIMEOUT)
    except TimeoutError as hung:
        pytest.fail(str(hung))


def train_scenario(rank, world_size, sharding, num_ratings, epochs):
    data, train, test = movielens()
    rows = train[:num_ratings]
    model = ml.shard_model(ml.movielens_model(data, rows), sharding=sharding)
    history = ml.train_sharded(model, *part(rows), epochs=epochs, curves={"test": part(test)}, **SETTINGS)
    return {"test": history["test"], "tables": ml.gather_tables(model)}


@functools.cache
def one_process(num_ratings, epochs):
    data, train, test = movielens()
    rows = train[:num_ratings]
    model = ml.movielens_model(data, rows)
    history = train_sgd(model, *part(rows), epochs=epochs, curves={"test": part(test)}, progress=False, **SETTINGS)
    return history["test"], {name: layer.weight.detach() for name, layer in model.tables.items()}


# 3002 ratings in batches of 500: the last batch holds 2, so at 4 ranks two ranks step on nothing.
@pytest.mark.parametrize("world_size, sharding", [(2, "row"), (4, "column"), (4, "table")])
def test_sharded_training_equals_one_process(world_size, sharding):
    results = run_ranks(world_size, train_scenario, sharding, 3002, 2)
    expected_rmse, expected_tables = one_process(3002, 2)
    assert all(r["test"] == results[0]["test"] for r in results)  # every rank gets the all-reduced RMSE
    assert np.isfinite(expected_rmse).all() and np.abs(np.array(results[0]["test"]) - expected_rmse).max() <= 1e-9
    assert all(r["tables"] is None for r in results[1:])
    for name, table in expected_tables.items():
        assert results[0]["tables"][name].shape == table.shape
        assert (results[0]["tables"][name] - table).abs().max() <= 1e-12, name


def main_scenario(rank, world_size):
    return ml.main(["--ratings", "2000", "--epochs", "1", "--compare"])


def test_main_compares_with_one_process_on_rank_0():
    first, second = run_ranks(2, main_scenario)
    assert first["world_size"] == second["world_size"] == 2 and first["sharding"] == "row"
    assert first["backend"] == "gloo" and first["ratings"] == 2000 and len(first["test_rmse"]) == 1
    assert first["final_test_rmse"] == second["final_test_rmse"] == first["test_rmse"][-1]
    assert abs(first["single_process_rmse"] - first["final_test_rmse"]) == first["rmse_difference"] <= 1e-9
    assert first["table_difference"] <= 1e-12
    assert set(first["table_differences"]) == {"user_bias", "movie_bias", "user", "movie", "movie_bag"}
    assert "single_process_rmse" not in second


def test_one_process_without_a_group_is_the_model_itself():
    data, train, test = movielens()
    plain = ml.movielens_model(data, train[:100])
    sharded = ml.shard_model(ml.movielens_model(data, train[:100]), sharding="column")
    assert type(sharded.movie_bag).__name__ == "ShardedEmbeddingBag" and sharded.movie_bag.mode == "mean"
    users, movies, _ = part(test[:500])
    assert torch.equal(sharded(users, movies), plain(users, movies))
    assert ml.sharded_rmse(sharded, *part(test)) == pytest.approx(ml.rmse(plain, *part(test)), abs=1e-12)


def test_bad_arguments_are_refused():
    data, train, _ = movielens()
    with pytest.raises(TypeError, match="MatrixFactorization"):
        ml.shard_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="sharding must be one of"):
        ml.shard_model(ml.movielens_model(data, train[:10]), sharding="diagonal")
    with pytest.raises(ValueError, match="sharded already"):
        ml.shard_model(ml.shard_model(MatrixFactorization(3, 4, 2)))
    for argv in (["--sharding", "diagonal"], ["--ratings", "0"], ["--epochs", "-1"], ["--backend", "nccl"]):
        with pytest.raises(SystemExit):
            ml.main(argv)


def test_share_gives_the_first_ranks_one_more():
    assert [ml.share(10, r, 4) for r in range(4)] == [slice(0, 3), slice(3, 6), slice(6, 8), slice(8, 10)]
    assert [ml.share(2, r, 4) for r in range(4)] == [slice(0, 1), slice(1, 2), slice(2, 2), slice(2, 2)]
