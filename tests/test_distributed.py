"""embedlib.distributed: row-wise sharded tables over torch.distributed, checked against one process.

Each test starts 2 or 4 worker processes on the CPU with ``embedlib.distributed.launch.run_local``
(forked from this one: about 0.05 s each), which join a gloo process group through a ``file://``
rendezvous in a temporary directory (no TCP store: every listener stays on 127.0.0.1). The parent
waits at most ``TIMEOUT`` seconds for all of them, kills every worker that is left and fails the test
if any hangs. The references are ``embedlib.torch``'s ``Embedding`` / ``EmbeddingBag`` in this process,
on the ranks' batches taken together, compared bit for bit.
"""
from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist

import embedlib.distributed as ed
from embedlib.distributed.launch import WorkerError, run_local
import embedlib.torch as el

TIMEOUT = 60.0  # seconds for a whole run of workers
LR = 0.5

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
    # Python 3.12+ warns on fork() from a process with threads (torch's thread pool): each worker sets
    # one thread of its own at once and touches no lock the parent's threads could hold
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"),
]


# --------------------------------------------------------------------------------------------------
# Starting workers, and bounding them in time
# --------------------------------------------------------------------------------------------------
_WARM = []


def warm_up() -> None:
    """What every worker would otherwise pay for once, paid once here before forking: the first
    optimiser step (about 1.5 s of lazy imports) and the first lookups and bags."""
    if not _WARM:
        train_step(el.Embedding(3, 2), lambda m: m(torch.tensor([1])), torch.ones(1, 2))
        train_step(el.EmbeddingBag(3, 2), lambda m: m(torch.tensor([[1]])), torch.ones(1, 2))
        _WARM.append(True)


def run_ranks(world_size: int, scenario, *args, timeout: float = TIMEOUT) -> list:
    """What ``scenario(rank, world_size, *args)`` returned on each of ``world_size`` forked workers
    (:func:`embedlib.distributed.launch.run_local`). A rank's error fails the test with every failed
    rank's traceback (the first cause is usually on the rank whose error is not a closed connection);
    a rank still running after ``timeout`` seconds fails it too, once every worker left is killed."""
    warm_up()
    try:
        return run_local(scenario, world_size, *args, timeout=timeout)
    except TimeoutError as hung:
        pytest.fail(str(hung))


def hang_scenario(rank, world_size):
    if rank == 1:
        time.sleep(3600)  # a rank that never comes back
    return rank


def test_a_hanging_rank_is_killed_and_fails_the_test():
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"ranks \[1\] of 2 still ran after 2 s: killed"):
        run_ranks(2, hang_scenario, timeout=2)
    assert time.monotonic() - started < 10


def failing_scenario(rank, world_size):
    print("a line printed by rank", rank)  # goes to the rank's own log, not to the parent's output
    if rank == 1:
        raise ValueError("rank 1 cannot go on")
    return {"rank": rank, "table": torch.arange(3) * rank}


def test_run_local_returns_each_ranks_value_and_reports_a_ranks_error(capfd):
    warm_up()
    values = run_local(failing_scenario, 1)
    assert values[0]["rank"] == 0 and torch.equal(values[0]["table"], torch.zeros(3, dtype=torch.int64))
    with pytest.raises(WorkerError, match="rank 1 raised ValueError: rank 1 cannot go on") as failed:
        run_local(failing_scenario, 2)
    assert "Traceback" in str(failed.value) and "rank 0 raised" not in str(failed.value)
    assert failed.value.results[0]["ok"]["rank"] == 0 and failed.value.results[1]["error"] == "ValueError"
    outcomes = run_local(failing_scenario, 2, outcomes=True)
    assert "ok" in outcomes[0] and outcomes[1]["message"] == "rank 1 cannot go on"
    assert "a line printed" not in capfd.readouterr().out


@pytest.mark.parametrize("bad", [{"world_size": 0}, {"timeout": 0}, {"timeout": "1"}])
def test_run_local_refuses_bad_arguments(bad):
    arguments = {"world_size": 2, "timeout": 5.0, **bad}
    with pytest.raises((ValueError, TypeError), match="world_size|timeout"):
        run_local(failing_scenario, arguments["world_size"], timeout=arguments["timeout"])


# --------------------------------------------------------------------------------------------------
# The problems: one table, each rank's own batch (uneven sizes, one of them empty, skewed ids)
# --------------------------------------------------------------------------------------------------
def case(num_embeddings: int, dim: int, world_size: int, seed: int = 0):
    """``(table, ids per rank, output gradients per rank)``: 80% of the ids fall in the last rank's rows."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(num_embeddings, dim, generator=gen)
    sizes = [23, 0, 9, 41][:world_size] if world_size > 2 else [23, 7]
    start, stop = ed.row_shards(num_embeddings, world_size).bounds(world_size - 1)
    ids, grads = [], []
    for n in sizes:
        hot = torch.randint(start, stop, (n,), generator=gen)
        anywhere = torch.randint(0, num_embeddings, (n,), generator=gen)
        ids.append(torch.where(torch.rand(n, generator=gen) < 0.8, hot, anywhere))
        grads.append(torch.randn(n, dim, generator=gen))
    return table, ids, grads


def bags_of(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Offsets cutting ``ids`` into bags of 0 to 4 entries."""
    gen = torch.Generator().manual_seed(seed)
    cuts, at = [0], 0
    while at < ids.numel():
        at = min(ids.numel(), at + int(torch.randint(0, 5, (1,), generator=gen)))
        cuts.append(at)
    return torch.tensor(cuts[:-1] if len(cuts) > 1 else [0])


def train_step(layer, forward, grad_out):
    """Forward, backward with the given output gradient, one SGD step: ``(out, grad, weight after)``."""
    opt = torch.optim.SGD(layer.parameters(), lr=LR)
    out = forward(layer)
    out.backward(grad_out)
    grad = layer.weight.grad.clone()
    opt.step()
    return out.detach(), grad, layer.weight.detach().clone()


# --------------------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------------------
LOOKUP_OPTIONS = [{}, {"padding_idx": 1}]


def lookup_scenario(rank, world_size, num_embeddings, dim, sharding):
    table, ids, grads = case(num_embeddings, dim, world_size)
    results = []
    for options in LOOKUP_OPTIONS:
        layer = ed.ShardedEmbedding.from_full(table, **placement(sharding, world_size), **options)
        # a 2-D batch on rank 0 (the shape is kept), 1-D elsewhere
        mine, grad = ids[rank], grads[rank]
        if rank == 0:
            mine, grad = mine[:22].reshape(2, 11), grad[:22].reshape(2, 11, dim)
        results.append((layer.block(), *train_step(layer, lambda m: m(mine), grad)))
    return results


SHARDINGS = ["row", "column", "table"]


def placement(sharding: str, world_size: int) -> dict:
    """The layer's sharding options: a table-wise table on the last rank (not rank 0)."""
    return {"sharding": sharding, "table_rank": world_size - 1 if sharding == "table" else 0}


@pytest.mark.parametrize("sharding", SHARDINGS)
@pytest.mark.parametrize("world_size, num_embeddings", [(2, 11), (4, 10)])
def test_lookup_forward_backward_step_match_one_process(world_size, num_embeddings, sharding):
    dim = 5  # not divisible by 2 or 4 either: uneven column shards
    got = run_ranks(world_size, lookup_scenario, num_embeddings, dim, sharding)
    table, ids, grads = case(num_embeddings, dim, world_size)
    ids[0], grads[0] = ids[0][:22], grads[0][:22]
    for k, options in enumerate(LOOKUP_OPTIONS):
        ref = el.Embedding.from_weight(table, **options)
        out, grad, after = train_step(ref, lambda m: m(torch.cat(ids)), torch.cat(grads))
        outs = torch.split(out, [len(i) for i in ids])
        for rank, results in enumerate(got):
            block, r_out, r_grad, r_after = results[k]
            if sharding == "row":
                assert block == (slice(*ed.row_shards(num_embeddings, world_size).bounds(rank)), slice(0, dim))
            elif sharding == "table":
                assert block == (slice(0, num_embeddings if rank == world_size - 1 else 0), slice(0, dim))
            else:
                assert block == (slice(0, num_embeddings), slice(*ed.column_shards(num_embeddings, dim,
                                                                                   world_size).bounds(rank)))
            assert torch.equal(r_out.reshape(-1, dim), outs[rank])
            assert torch.equal(r_grad, grad[block]), (rank, options)
            assert torch.equal(r_after, after[block]), (rank, options)


# --------------------------------------------------------------------------------------------------
# Bags
# --------------------------------------------------------------------------------------------------
BAG_OPTIONS = [{"mode": "sum", "weighted": True}, {"mode": "mean", "padding_idx": 3}, {"mode": "max"},
               {"mode": "sum", "include_last_offset": True}]


def bag_inputs(ids, grads, options, rank):
    offsets = bags_of(ids, seed=rank)
    if options.get("include_last_offset"):
        offsets = torch.cat([offsets, torch.tensor([ids.numel()])])
    num_bags = offsets.numel() - (1 if options.get("include_last_offset") else 0)
    psw = grads[:, 0].clone() if options.get("weighted") else None
    grad_out = torch.randn(num_bags, grads.shape[1], generator=torch.Generator().manual_seed(100 + rank))
    return offsets, psw, grad_out


def layer_options(options):
    return {k: v for k, v in options.items() if k != "weighted"}


def bag_scenario(rank, world_size, num_embeddings, dim, sharding):
    table, ids, grads = case(num_embeddings, dim, world_size, seed=1)
    results = []
    for options in BAG_OPTIONS:
        layer = ed.ShardedEmbeddingBag.from_full(table, **placement(sharding, world_size), **layer_options(options))
        offsets, psw, grad_out = bag_inputs(ids[rank], grads[rank], options, rank)
        results.append((layer.block(), *train_step(layer, lambda m: m(ids[rank], offsets, psw), grad_out)))
    return results


def rows_then_bags(layer, ids, offsets, psw, options):
    """Bags in one process as the sharded bags compute them: every entry's row, then the bags of those
    rows (a padding entry reads an extra zero row that the bag code leaves out as padding)."""
    pad, n = options.get("padding_idx"), ids.numel()
    rows = layer(ids)
    local = torch.arange(n)
    if pad is not None:
        rows = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])
        local = torch.where(ids == pad, n, local)
    return el.embedding_bag(local, rows, offsets, mode=options["mode"], per_sample_weights=psw,
                            padding_idx=None if pad is None else n,
                            include_last_offset=options.get("include_last_offset", False))


@pytest.mark.parametrize("sharding", SHARDINGS)
@pytest.mark.parametrize("world_size, num_embeddings", [(2, 11), (4, 10)])
def test_bags_forward_backward_step_match_one_process(world_size, num_embeddings, sharding):
    dim = 5
    got = run_ranks(world_size, bag_scenario, num_embeddings, dim, sharding)
    table, ids, grads = case(num_embeddings, dim, world_size, seed=1)
    for k, options in enumerate(BAG_OPTIONS):
        inputs = [bag_inputs(ids[r], grads[r], options, r) for r in range(world_size)]
        # the ranks' bags one after the other: offsets shifted by the entries before them
        offsets, before = [], 0
        for r, (off, _, _) in enumerate(inputs):
            off = off[:-1] if options.get("include_last_offset") else off
            offsets.append(off + before)
            before += ids[r].numel()
        all_offsets = torch.cat(offsets + ([torch.tensor([before])] if options.get("include_last_offset") else []))
        psw = torch.cat([i[1] for i in inputs]) if options.get("weighted") else None
        all_ids, grad_out = torch.cat(ids), torch.cat([i[2] for i in inputs])
        # bitwise reference: one process, the rows looked up and then reduced bag by bag (each row's
        # gradient adds its entries in batch order)
        ref = el.Embedding.from_weight(table)
        out, grad, after = train_step(ref, lambda m: rows_then_bags(m, all_ids, all_offsets, psw, options), grad_out)
        # embedlib.torch.EmbeddingBag (PyTorch's CPU kernels): the same outputs; its backward adds a row's
        # repeated entries in the order of an unstable sort of the batch, so its gradient may differ in
        # the last bits
        bag_ref = el.EmbeddingBag.from_weight(table, **layer_options(options))
        bag_out, bag_grad, bag_after = train_step(bag_ref, lambda m: m(all_ids, all_offsets, psw), grad_out)
        assert torch.equal(out, bag_out)
        torch.testing.assert_close(grad, bag_grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(after, bag_after, rtol=1e-5, atol=1e-5)
        outs = torch.split(out, [i[2].shape[0] for i in inputs])
        for rank, (block, r_out, r_grad, r_after) in enumerate(g[k] for g in got):
            assert torch.equal(r_out, outs[rank]), (rank, options)
            assert torch.equal(r_grad, grad[block]), (rank, options)
            assert torch.equal(r_after, after[block]), (rank, options)


# --------------------------------------------------------------------------------------------------
# Bad input on one rank: every rank raises, none hangs, and the group still works afterwards
# --------------------------------------------------------------------------------------------------
def error_scenario(rank, world_size, num_embeddings, bad_rank, sharding):
    table = torch.arange(num_embeddings * 2, dtype=torch.float32).reshape(num_embeddings, 2)
    layer = ed.ShardedEmbedding.from_full(table, sharding=sharding)
    bags = ed.ShardedEmbeddingBag.from_full(table, mode="sum", sharding=sharding)
    seen = []
    for bad in ([num_embeddings], [-1], [0.5]):  # too large, negative, not an integer
        ids = torch.tensor(bad) if rank == bad_rank else torch.tensor([0, num_embeddings - 1])
        for call in (lambda: layer(ids), lambda: bags(ids, torch.tensor([0]))):
            try:
                call()
                seen.append(None)
            except (IndexError, TypeError) as failure:
                seen.append((type(failure).__name__, str(failure)))
    try:  # the function on a shard of the wrong shape on one rank: every rank raises
        shard = layer.weight if rank != bad_rank else layer.weight[:0]
        ed.sharded_lookup(torch.tensor([0]), shard, num_embeddings, embedding_dim=2, sharding=sharding)
        seen.append(None)
    except ValueError as failure:
        seen.append((type(failure).__name__, str(failure)))
    try:  # a file that no rank can read: every rank raises
        ed.load_sharded(os.path.join(os.path.dirname(__file__), "no such table.pt"))
        seen.append(None)
    except (FileNotFoundError, RuntimeError) as failure:
        seen.append((type(failure).__name__, str(failure)))
    # the processes and the group are still usable: a good lookup on every rank
    good = layer(torch.tensor([rank % num_embeddings, num_embeddings - 1]))
    return seen, good.detach()


@pytest.mark.parametrize("world_size, sharding", [(2, "column"), (4, "row")])
def test_bad_input_on_one_rank_raises_on_every_rank(world_size, sharding):
    num_embeddings, bad_rank = 7, 1
    got = run_ranks(world_size, error_scenario, num_embeddings, bad_rank, sharding)
    for rank, (seen, good) in enumerate(got):
        assert len(seen) == 8 and None not in seen, (rank, seen)
        kinds = [kind for kind, _ in seen]
        assert kinds == ["IndexError"] * 4 + ["TypeError"] * 2 + ["ValueError", "FileNotFoundError"], (rank, seen)
        if rank == bad_rank:  # embedlib's own words, on the rank that sent the id
            assert "index 7 is out of range for num_embeddings=7" in seen[0][1]
            assert "index -1 is out of range for num_embeddings=7" in seen[2][1]
            assert "must be integers" in seen[4][1]
        else:  # the others name the rank and the value
            assert "rank 1 sent index 7" in seen[0][1] and "num_embeddings=7" in seen[0][1]
            assert "rank 1 sent index -1" in seen[2][1]
            assert "rank 1" in seen[4][1]
        table = torch.arange(14, dtype=torch.float32).reshape(7, 2)
        assert torch.equal(good, table[[rank % 7, 6]])


# --------------------------------------------------------------------------------------------------
# Save on 4 ranks, load on 2 (and in one process)
# --------------------------------------------------------------------------------------------------
def save_scenario(rank, world_size, path, num_embeddings, dim, sharding):
    table, ids, grads = case(num_embeddings, dim, world_size, seed=2)
    layer = ed.ShardedEmbeddingBag.from_full(table, mode="max", padding_idx=2, **placement(sharding, world_size))
    bags = torch.arange(ids[rank].numel() + 1)[:-1] if ids[rank].numel() else torch.tensor([0])
    train_step(layer, lambda m: m(ids[rank], bags), torch.ones(bags.numel(), dim))  # a step, so the table changed
    ed.save_sharded(layer, path)
    return layer.weight.detach().clone()


def load_scenario(rank, world_size, path, ids, sharding):
    layer = ed.load_sharded(path, **placement(sharding, world_size))
    return (type(layer).__name__, layer.mode, layer.padding_idx, layer.block(), layer.weight.detach().clone(),
            layer(ids[rank], torch.tensor([0])).detach())


@pytest.mark.parametrize("saved_as, loaded_as", [("row", "row"), ("column", "row"), ("row", "column"),
                                                  ("table", "row"), ("row", "table")])
def test_save_on_four_ranks_load_on_two(tmp_path, saved_as, loaded_as):
    num_embeddings, dim = 10, 3
    path = str(tmp_path / "table.pt")
    shards = run_ranks(4, save_scenario, path, num_embeddings, dim, saved_as)
    full = torch.cat(shards, dim=1 if saved_as == "column" else 0)
    saved = torch.load(path, weights_only=True)  # one process reads it with torch.load alone
    assert saved["format"] == "embedlib.sharded" and saved["saved_world_size"] == 4
    assert saved["config"] == {"num_embeddings": 10, "embedding_dim": 3, "padding_idx": 2, "sharding": saved_as,
                               "table_rank": 3 if saved_as == "table" else 0,
                               "mode": "max",
                               "include_last_offset": False}
    assert torch.equal(saved["weight"], full)
    ids = [torch.tensor([9, 0, 4]), torch.tensor([5, 5, 1, 8])]
    got = run_ranks(2, load_scenario, path, ids, loaded_as)
    for rank, (name, mode, pad, block, weight, out) in enumerate(got):
        assert (name, mode, pad) == ("ShardedEmbeddingBag", "max", 2)
        shards = {"row": ed.row_shards(10, 2), "column": ed.column_shards(10, 3, 2),
                  "table": ed.TableShards(10, 2, 1)}[loaded_as]
        assert block[1 if loaded_as == "column" else 0] == slice(*shards.bounds(rank))
        assert torch.equal(weight, full[block])
        assert torch.equal(out, el.embedding_bag(ids[rank], full, torch.tensor([0]), mode="max", padding_idx=2))
    one = ed.load_sharded(path, table_rank=0)  # without a process group: one rank holding every row
    assert (one.row_start, one.row_stop) == (0, 10) and torch.equal(one.weight, full)


def test_row_shards_give_the_first_ranks_one_more_row():
    shards = ed.row_shards(10, 4)
    assert [shards.bounds(r) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert shards.sizes() == [3, 3, 2, 2]
    assert shards.owner(torch.arange(10)).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert ed.row_shards(2, 4).sizes() == [1, 1, 0, 0]
    with pytest.raises(ValueError):
        ed.row_shards(10, 0)


def traffic_scenario(rank, world_size):
    table = torch.randn(10, 3)
    ids = torch.tensor([0, 5, 6]) if rank == 0 else torch.tensor([1])
    sent = []
    for sharding in ("row", "column"):
        layer = ed.ShardedEmbedding.from_full(table, sharding=sharding)
        with ed.count_traffic() as forward:
            out = layer(ids)
        with ed.count_traffic() as backward:
            out.sum().backward()
        sent.append((forward.bytes, forward.calls, backward.bytes, backward.calls))
    return sent


def test_traffic_counts_the_bytes_sent_to_other_ranks():
    """Rows 0:5 on rank 0 and 5:10 on rank 1 (row-wise), columns 0:2 and 2:3 (column-wise); D = 3
    float32 (12 bytes a row), int64 ids and counts. Rank 0 looks up 0, 5, 6; rank 1 looks up 1."""
    got = run_ranks(2, traffic_scenario)
    # row-wise, rank 0: counts 8 + two ids 16 + one row for rank 1's id 12; backward: two gradient rows 24
    assert got[0][0] == (8 + 16 + 12, 3, 24, 1)
    # rank 1: counts 8 + one id 8 + two rows 24; backward: one gradient row 12
    assert got[1][0] == (8 + 8 + 24, 3, 12, 1)
    # column-wise, rank 0: counts 8 + its 3 ids to rank 1 24 + its 2 columns of rank 1's row 8;
    # backward: column 2 of its 3 rows 12
    assert got[0][1] == (8 + 24 + 8, 3, 12, 1)
    # rank 1: counts 8 + its id 8 + its column of rank 0's 3 rows 12; backward: columns 0:2 of its row 8
    assert got[1][1] == (8 + 8 + 12, 3, 8, 1)


def test_place_tables_balances_sizes_largest_first():
    assert ed.place_tables([100, 10, 60, 50], 2) == [0, 0, 1, 1]  # 100 + 10 against 60 + 50
    assert ed.place_tables([5, 5, 5], 4) == [0, 1, 2]
    assert ed.TableShards(7, 3, 2).sizes() == [0, 0, 7]
    assert ed.TableShards(7, 3, 2).owner(torch.tensor([0, 6])).tolist() == [2, 2]
    with pytest.raises(ValueError, match="table_rank"):
        ed.ShardedEmbedding(7, 2, sharding="table", table_rank=1)  # one process: only rank 0
    with pytest.raises(ValueError, match="sharding"):
        ed.ShardedEmbedding(7, 2, sharding="diagonal")


@pytest.mark.parametrize("name", ed.__all__)
def test_docstrings_name_the_chapter(name):
    import inspect
    import re

    doc = inspect.getdoc(getattr(ed, name)) or ""
    assert re.search(r"the chapter on sharded\s+tables", doc), f"embedlib.distributed.{name}: no chapter named"
