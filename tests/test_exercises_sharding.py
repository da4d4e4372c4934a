"""Checkers of the chapter on sharded tables (embedlib/exercises/sharding.py): right answers pass, known
mistakes get their hint, and the reference traffic is what count_traffic counts on real ranks."""
import numpy as np
import pytest

from embedlib.exercises import CheckResult, check_balanced_rows, check_rowwise_traffic
from embedlib.exercises.sharding import _rowwise_traffic, balanced_rows


def text(result) -> str:
    """The report on one line (long problems and hints are folded)."""
    return " ".join(repr(result).split())


# --- the traffic of a row-wise lookup -------------------------------------------------------------

def owner_of(ids, num_embeddings, world_size):
    # RowShards: the first V % W ranks hold one row more
    base, extra = divmod(num_embeddings, world_size)
    sizes = [base + (r < extra) for r in range(world_size)]
    return np.searchsorted(np.cumsum(sizes), ids, side="right")


def rowwise_traffic(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    world_size = len(ids_per_rank)
    sent = np.zeros(world_size, dtype=np.int64)
    if world_size == 1:
        return sent
    row = embedding_dim * value_bytes
    for rank, ids in enumerate(ids_per_rank):
        remote = int((owner_of(ids, num_embeddings, world_size) != rank).sum())
        sent[rank] += (world_size - 1) * id_bytes  # the counts, one int64 to each other rank
        sent[rank] += remote * id_bytes  # the ids, to their owners
        sent[rank] += remote * row  # backward: the gradient rows, to the owners
        for other, their_ids in enumerate(ids_per_rank):  # forward: the rows the others asked for
            if other != rank:
                sent[rank] += int((owner_of(their_ids, num_embeddings, world_size) == rank).sum()) * row
    return sent


def rowwise_traffic_by_matrix(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    world_size = len(ids_per_rank)
    asks = np.array([np.bincount(owner_of(ids, num_embeddings, world_size), minlength=world_size)
                     for ids in ids_per_rank])  # asks[r, s]: rank r's ids that rank s holds
    remote = asks - np.diag(np.diag(asks))
    row = embedding_dim * value_bytes
    sent = (world_size - 1) * 8 + remote.sum(1) * (id_bytes + row) + remote.sum(0) * row
    return sent * (world_size > 1)


def test_traffic_solutions_pass():
    for fn in (rowwise_traffic, rowwise_traffic_by_matrix):
        result = check_rowwise_traffic(fn)
        assert result, repr(result)
        assert isinstance(result, CheckResult)
        assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


def keeps_own_bytes(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    world_size = len(ids_per_rank)
    row = embedding_dim * value_bytes
    asks = np.array([np.bincount(owner_of(ids, num_embeddings, world_size), minlength=world_size)
                     for ids in ids_per_rank])
    return world_size * 8 + asks.sum(1) * (id_bytes + row) + asks.sum(0) * row


def forgets_backward(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    full = rowwise_traffic_by_matrix(ids_per_rank, num_embeddings, embedding_dim, value_bytes=value_bytes)
    world_size = len(ids_per_rank)
    remote = np.array([(owner_of(ids, num_embeddings, world_size) != r).sum() for r, ids in enumerate(ids_per_rank)])
    return full - remote * embedding_dim * value_bytes * (world_size > 1)


def forgets_counts(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    world_size = len(ids_per_rank)
    full = rowwise_traffic_by_matrix(ids_per_rank, num_embeddings, embedding_dim, value_bytes=value_bytes)
    return full - (world_size - 1) * 8


def rows_received(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    world_size = len(ids_per_rank)
    remote = np.array([(owner_of(ids, num_embeddings, world_size) != r).sum() for r, ids in enumerate(ids_per_rank)])
    return ((world_size - 1) * 8 + remote * (id_bytes + 2 * embedding_dim * value_bytes)) * (world_size > 1)


def ignores_value_bytes(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    return rowwise_traffic(ids_per_rank, num_embeddings, embedding_dim)


def cuts_by_ceil(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    world_size = len(ids_per_rank)
    block = -(-num_embeddings // world_size)
    return _rowwise_traffic(ids_per_rank, num_embeddings, embedding_dim, value_bytes=value_bytes,
                            owner=lambda ids: np.minimum(ids // block, world_size - 1))


@pytest.mark.parametrize("wrong, hint", [
    (keeps_own_bytes, "sent to *other* ranks"),
    (forgets_backward, "the backward pass sends traffic too"),
    (forgets_counts, "exchange_counts"),
    (rows_received, "*sends* the rows that the other ranks asked it for"),
    (ignores_value_bytes, "value_bytes is 8 here, not 4"),
    (cuts_by_ceil, "not i // ceil(V / W)"),
])
def test_traffic_mistakes_get_their_hint(wrong, hint):
    result = check_rowwise_traffic(wrong)
    assert not result
    assert "✗" in repr(result) and "problem:" in repr(result)
    assert hint in text(result), repr(result)


def test_traffic_report_shows_each_ranks_ids():
    result = check_rowwise_traffic(forgets_backward)
    assert "ids_per_rank[0] = [0, 5, 6]" in repr(result) and "ids_per_rank[1] = [1]" in repr(result)
    assert "expected [60, 52], got [36, 40]" in text(result), repr(result)


@pytest.mark.parametrize("wrong, problem, hint", [
    (lambda ids, v, d, **kw: int(rowwise_traffic(ids, v, d, **kw).sum()), "expected shape (2,)", "not the total"),
    (lambda ids, v, d, **kw: np.r_[rowwise_traffic(ids, v, d, **kw), 0], "got shape (3,)", "one number per rank"),
    (lambda ids, v, d, **kw: rowwise_traffic(ids, v, d, **kw).astype(np.float64), "integer array", "np.int64"),
    (lambda ids, v, d, **kw: None, "returned None", None),
    (lambda ids, v, d, **kw: [str(x) for x in rowwise_traffic(ids, v, d, **kw)], "expected numbers", None),
])
def test_traffic_wrong_shapes_and_types_are_reported(wrong, problem, hint):
    result = check_rowwise_traffic(wrong)
    assert not result and problem in text(result), repr(result)
    assert hint is None or hint in text(result), repr(result)


def sorts_ids_in_place(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
    for ids in ids_per_rank:
        ids.sort()
    return rowwise_traffic(ids_per_rank, num_embeddings, embedding_dim, value_bytes=value_bytes)


def test_traffic_input_changed_in_place_is_reported():
    result = check_rowwise_traffic(sorts_ids_in_place)
    assert not result and "changed its input `ids_per_rank` in place" in repr(result), repr(result)
    # the report shows the ids as they were before the call
    assert "ids_per_rank[0] = [0, 3, 3, 1]" in repr(result), repr(result)


def test_traffic_checker_leaves_its_cases_alone_and_wants_a_function():
    assert repr(check_rowwise_traffic(rowwise_traffic)) == repr(check_rowwise_traffic(rowwise_traffic))
    with pytest.raises(TypeError, match="pass your function itself"):
        check_rowwise_traffic(rowwise_traffic([np.array([0])], 1, 1))


def test_an_exception_names_the_line():
    def crashes(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4):
        return np.stack(ids_per_rank)  # ragged batches
    result = check_rowwise_traffic(crashes)
    assert not result and "raised ValueError" in repr(result) and "of crashes)" in repr(result), repr(result)


# --- the reference against count_traffic on real ranks --------------------------------------------

REAL_CASES = [  # (ids of each rank, V, D, dtype)
    ([[0, 5, 6], [1, 1, 9, 4, 3]], 10, 3, "float32"),  # uneven batches
    ([[2, 2, 2, 2], []], 5, 4, "float64"),  # an empty batch, V odd, float64 rows
    ([[0, 0, 1], [0, 9, 0], [], [0, 0, 0, 0, 0, 10]], 11, 2, "float32"),  # skewed, V % W = 3
    ([[2], [1, 2], [0, 0], [2]], 3, 5, "float32"),  # more ranks than rows
]


def traffic_scenario(rank, world_size, cases):
    import torch

    import embedlib.distributed as ed

    sent = []
    for ids_per_rank, num_embeddings, dim, dtype in cases:
        if len(ids_per_rank) != world_size:
            continue
        layer = ed.ShardedEmbedding(num_embeddings, dim, sharding="row", seed=1, dtype=getattr(torch, dtype))
        ids = torch.tensor(ids_per_rank[rank], dtype=torch.int64)
        with ed.count_traffic() as traffic:
            out = layer(ids)
            out.backward(torch.ones_like(out))
        sent.append(traffic.bytes)
    return sent


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
@pytest.mark.parametrize("world_size", [2, 4])
def test_reference_traffic_is_what_count_traffic_counts(world_size):
    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from embedlib.distributed.launch import run_local

    import embedlib.torch as el

    el.Embedding(3, 2)(torch.tensor([1])).sum().backward()  # warm up before forking
    cases = [c for c in REAL_CASES if len(c[0]) == world_size]
    measured = np.array(run_local(traffic_scenario, world_size, REAL_CASES, timeout=60)).T  # (case, rank)
    assert len(cases) == len(measured) == 2
    for (ids_per_rank, num_embeddings, dim, dtype), counted in zip(cases, measured):
        ids = [np.array(i, dtype=np.int64) for i in ids_per_rank]
        value_bytes = np.dtype(dtype).itemsize
        np.testing.assert_array_equal(_rowwise_traffic(ids, num_embeddings, dim, value_bytes=value_bytes), counted)
        np.testing.assert_array_equal(rowwise_traffic(ids, num_embeddings, dim, value_bytes=value_bytes), counted)


def test_one_rank_sends_nothing():
    assert _rowwise_traffic([np.array([0, 1, 1])], 2, 4).tolist() == [0]
    # every batch empty: only the counts travel, even though every count is 0
    assert _rowwise_traffic([np.array([], dtype=np.int64)] * 3, 5, 4).tolist() == [16, 16, 16]


# --- rows placed by load --------------------------------------------------------------------------

def deal(counts, world_size):
    order = np.argsort(-counts, kind="stable")
    owner = np.empty(len(counts), dtype=np.int64)
    owner[order] = np.arange(len(counts)) % world_size
    return owner


def snake(counts, world_size):
    order = np.argsort(-counts, kind="stable")
    k = np.arange(len(counts))
    rank = np.where((k // world_size) % 2 == 0, k % world_size, world_size - 1 - k % world_size)
    owner = np.empty(len(counts), dtype=np.int64)
    owner[order] = rank
    return owner


def greedy_with_room(counts, world_size):
    room = [len(counts) // world_size + (r < len(counts) % world_size) for r in range(world_size)]
    load = [0] * world_size
    owner = np.empty(len(counts), dtype=np.int64)
    for row in np.argsort(-counts, kind="stable"):
        rank = min((r for r in range(world_size) if room[r]), key=lambda r: load[r])
        owner[row], room[rank], load[rank] = rank, room[rank] - 1, load[rank] + counts[row]
    return owner


def test_placement_solutions_pass():
    for fn in (deal, snake, greedy_with_room, balanced_rows):
        result = check_balanced_rows(fn)
        assert result, repr(result)
        assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


def contiguous(counts, world_size):
    base, extra = divmod(len(counts), world_size)
    return np.repeat(np.arange(world_size), [base + (r < extra) for r in range(world_size)])


def greedy_without_room(counts, world_size):
    load = np.zeros(world_size)
    owner = np.empty(len(counts), dtype=np.int64)
    for row in np.argsort(-counts, kind="stable"):
        owner[row] = int(np.argmin(load))
        load[owner[row]] += counts[row]
    return owner


def ignores_counts(counts, world_size):
    return np.arange(len(counts)) % world_size


def gathers_instead_of_scatters(counts, world_size):
    return np.argsort(-counts, kind="stable") % world_size


@pytest.mark.parametrize("wrong, hint", [
    (contiguous, "contiguous blocks, the cut of row_shards"),
    (greedy_without_room, "memory must balance too"),
    (ignores_counts, "ignores the counts"),
    (gathers_instead_of_scatters, "owner is indexed by row"),
])
def test_placement_mistakes_get_their_hint(wrong, hint):
    result = check_balanced_rows(wrong)
    assert not result
    assert hint in text(result), repr(result)
    assert "loads per rank [" in text(result) and "rows per rank [" in text(result), repr(result)
    assert "the reference (rows dealt round-robin, most popular first) gives loads" in text(result)


def test_placement_report_shows_loads_and_rows():
    result = check_balanced_rows(contiguous)
    assert "counts = [9, 7, 1, 1, 1, 1, 0, 0]" in repr(result)
    assert "loads per rank [18, 2], rows per rank [4, 4]" in text(result), repr(result)
    assert "gives loads [11, 9] and rows [4, 4]" in text(result), repr(result)


@pytest.mark.parametrize("wrong, problem", [
    (lambda c, w: deal(c, w)[:-1], "expected shape"),
    (lambda c, w: deal(c, w).astype(np.float64), "integer array"),
    (lambda c, w: deal(c, w) + 1, "which is not a rank"),
    (lambda c, w: None, "returned None"),
])
def test_placement_wrong_shapes_and_values_are_reported(wrong, problem):
    result = check_balanced_rows(wrong)
    assert not result and problem in text(result), repr(result)


def sorts_counts_in_place(counts, world_size):
    owner = deal(counts, world_size)
    counts.sort()
    return owner


def test_placement_input_changed_in_place_is_reported():
    result = check_balanced_rows(sorts_counts_in_place)
    assert not result and "changed its input `counts` in place" in repr(result), repr(result)
    assert "a.sort() changes a itself" in text(result)


def test_reference_placement_meets_both_bounds_and_contiguous_blocks_do_not():
    rng = np.random.default_rng(0)
    for _ in range(300):
        world_size, num_embeddings = int(rng.integers(1, 8)), int(rng.integers(1, 80))
        counts = rng.geometric(rng.uniform(0.02, 0.9), num_embeddings) * rng.integers(0, 2, num_embeddings)
        for fn in (balanced_rows, snake, greedy_with_room):
            owner = fn(counts, world_size)
            rows = np.bincount(owner, minlength=world_size)
            loads = np.bincount(owner, weights=counts, minlength=world_size)
            assert rows.max() - rows.min() <= 1 and rows.sum() == num_embeddings
            assert world_size * loads.max() <= counts.sum() + (world_size - 1) * counts.max()
    zipf = (10_000 / np.arange(1, 101)).astype(np.int64)  # a vocabulary numbered by frequency
    loads = np.bincount(contiguous(zipf, 4), weights=zipf)
    assert 4 * loads.max() > zipf.sum() + 3 * zipf.max()


def test_docstrings_name_the_chapter():
    import embedlib.exercises.sharding as module

    for thing in (module, check_rowwise_traffic, check_balanced_rows, balanced_rows):
        assert "the chapter on sharded tables" in " ".join(thing.__doc__.split())
