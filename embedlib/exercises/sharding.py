"""Checkers for the chapter on sharded tables: what a row-wise lookup sends, and rows placed by load.

Both exercises take plain NumPy inputs and count or place things; nothing here needs torch:

- :func:`check_rowwise_traffic`: the bytes each rank sends to the other ranks during one row-wise
  sharded lookup and its backward pass, as ``embedlib.distributed.count_traffic`` counts them for
  ``ShardedEmbedding(sharding="row")``;
- :func:`check_balanced_rows`: a placement of the rows on the ranks that balances both memory (rows
  per rank) and lookups (how often each rank's rows are read), where the contiguous blocks of
  :func:`embedlib.distributed.row_shards` put every popular row of a frequency-ordered vocabulary
  on rank 0.

:func:`balanced_rows` is the reference placement (rows dealt round-robin, most popular first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from embedlib.exercises import _harness
from embedlib.exercises._harness import CheckResult

#: bytes of one count in the counts exchange that precedes every all-to-all of ids (an int64)
COUNT_BYTES = 8


@dataclass
class _Case:
    """One hidden case: the arguments, their names, and ``judge(got) -> (problem, hint) | None``."""

    description: str
    args: tuple
    names: tuple
    judge: Callable[[np.ndarray], tuple[str, str | None] | None]


def _copy(arg):
    if isinstance(arg, np.ndarray):
        return arg.copy()
    if isinstance(arg, (list, tuple)):
        return type(arg)(_copy(a) for a in arg)
    return arg


def _changed(before, after) -> bool:
    if isinstance(before, np.ndarray):
        return (not isinstance(after, np.ndarray) or before.shape != after.shape or before.dtype != after.dtype
                or not np.array_equal(before, after))
    if isinstance(before, (list, tuple)):
        return (not isinstance(after, (list, tuple)) or len(before) != len(after)
                or any(_changed(b, a) for b, a in zip(before, after)))
    return False


def _show(name: str, value) -> list[str]:
    """Report lines for one input; a list of per-rank arrays gets one line a rank."""
    if isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
        return [_harness._show(f"{name}[{r}]", v) for r, v in enumerate(value)]
    return [_harness._show(name, value)]


def _run(name: str, fn, cases: list[_Case], summary: str) -> CheckResult:
    """``_harness.run`` for inputs that include a list of arrays (one per rank) and answers judged by
    a function rather than compared with one expected array; the first problem is the report."""
    total = len(cases)
    for number, case in enumerate(cases, start=1):
        kept = tuple(_copy(a) for a in case.args)
        problem = _problem(fn, case, kept)
        if problem is not None:
            text, hint = problem
            lines = [f"✗ {name} failed hidden case {number} of {total}: {case.description}", "  inputs:"]
            for arg_name, value in zip(case.names, kept):
                lines += _show(arg_name, value)
            lines.append(_harness._wrap(f"  problem: {text}"))
            if hint:
                lines.append(_harness._wrap(f"  hint: {hint}"))
            return CheckResult(name, False, number, total, "\n".join(lines))
    return CheckResult(name, True, total, total, f"✓ {name} passed all {total} hidden cases ({summary})")


def _problem(fn, case: _Case, kept: tuple) -> tuple[str, str | None] | None:
    got, error = _harness._call(fn, case.args)
    if error is not None:
        return error, None
    if got is None:
        return "returned None: did you forget `return`?", None
    try:
        got_np = _harness.to_numpy(got)
    except ValueError as exc:
        return f"returned something that is not an array of numbers ({exc})", None
    problem = case.judge(got_np)
    if problem is not None:
        return problem
    for arg_name, before, after in zip(case.names, kept, case.args):
        if _changed(before, after):
            return (f"the function changed its input `{arg_name}` in place; it must only read it",
                    "work on a copy: np.sort(a) and a[order] give new arrays, a.sort() changes a itself")
    return None


def _integers(got: np.ndarray, length: int, what: str) -> tuple[str, str | None] | None:
    """A problem when ``got`` is not an integer vector of ``length`` entries."""
    if got.shape != (length,):
        return f"expected shape ({length},), {what}, got shape {got.shape}", None
    if got.dtype.kind not in "iu":
        if got.dtype.kind in "fb" and got.size and np.array_equal(got, np.round(got.astype(np.float64))):
            return (f"expected an integer array, got dtype {got.dtype}",
                    "return np.int64 numbers (np.zeros(n, dtype=np.int64), or .astype(np.int64))")
        return f"expected an integer array, got dtype {got.dtype}", None
    return None


# --- the traffic of a row-wise lookup -------------------------------------------------------------

def _row_owner(ids: np.ndarray, num_embeddings: int, world_size: int) -> np.ndarray:
    """The rank that holds each id under :class:`embedlib.distributed.RowShards`: contiguous blocks,
    the first ``V % W`` ranks one row more."""
    base, extra = divmod(num_embeddings, world_size)
    ranks = np.arange(world_size)
    stops = ranks * base + np.minimum(ranks, extra) + base + (ranks < extra)
    return np.searchsorted(stops, ids, side="right")


def _asks(ids_per_rank, num_embeddings: int, owner=None) -> np.ndarray:
    """``asks[r, s]``: how many of rank ``r``'s ids rank ``s`` holds."""
    world_size = len(ids_per_rank)
    owner = owner or (lambda ids: _row_owner(ids, num_embeddings, world_size))
    asks = np.zeros((world_size, world_size), dtype=np.int64)
    for r, ids in enumerate(ids_per_rank):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        asks[r] = np.bincount(owner(ids), minlength=world_size)[:world_size]
    return asks


def _rowwise_traffic(ids_per_rank, num_embeddings: int, embedding_dim: int, *, id_bytes: int = 8,
                     value_bytes: int = 4, owner=None, own: bool = False, counts: bool = True,
                     backward: bool = True, received: bool = False) -> np.ndarray:
    """The reference: bytes each rank sends to the others in one row-wise lookup and its backward.

    From the code of :mod:`embedlib.distributed.rowwise` and ``_collectives``: ``route`` first
    exchanges the counts (one int64 to each other rank, ``(W - 1) * 8`` bytes, even when every count
    is 0), then sends each owner its ids (int64); the forward sends back the rows the other ranks
    asked this rank for (``D * value_bytes`` each); the backward sends each gradient row of an id
    that another rank holds to that rank. With ``W = 1`` nothing is sent (the exchanges return before
    they count). The keyword flags build the known mistakes: ``own`` counts what a rank keeps,
    ``counts=False`` and ``backward=False`` forget a step, ``received`` counts the rows a rank
    receives in the forward instead of those it sends.
    """
    world_size = len(ids_per_rank)
    if world_size == 1 and not own:
        return np.zeros(1, dtype=np.int64)
    asks = _asks(ids_per_rank, num_embeddings, owner)
    kept = np.zeros(world_size, dtype=np.int64) if own else np.diag(asks)
    my_ids_elsewhere = asks.sum(axis=1) - kept  # ids this rank sends; gradient rows it sends back
    asked_of_me = asks.sum(axis=0) - kept  # rows this rank sends in the forward
    row = embedding_dim * value_bytes
    sent = my_ids_elsewhere * id_bytes
    sent += (my_ids_elsewhere if received else asked_of_me) * row
    if backward:
        sent += my_ids_elsewhere * row
    if counts:
        sent += (world_size - (0 if own else 1)) * COUNT_BYTES
    return sent


def _traffic_hint(ids_per_rank, num_embeddings, embedding_dim, value_bytes):
    world_size = len(ids_per_rank)

    def ceil_owner(ids):
        return np.minimum(ids // -(-num_embeddings // world_size), world_size - 1)

    def floor_owner(ids):
        return np.minimum(ids // max(1, num_embeddings // world_size), world_size - 1)

    def variant(**options):
        options.setdefault("value_bytes", value_bytes)
        return _rowwise_traffic(ids_per_rank, num_embeddings, embedding_dim, **options)

    candidates = [
        (variant(own=True), "count only the bytes sent to *other* ranks: the ids a rank owns itself, and "
                            "the rows it reads from its own shard, never leave it (count_traffic skips them, and "
                            "so does the counts exchange: W - 1 counts, not W)"),
        (variant(own=True, counts=False), "count only the bytes sent to *other* ranks (the ids and rows a "
                                          "rank keeps for itself are not sent); and do not forget the counts "
                                          "exchange: one int64 count to each other rank before the ids"),
        (variant(backward=False), "the backward pass sends traffic too: each gradient row goes back to the "
                                  "rank that holds its row, D * value_bytes bytes for each of this rank's ids "
                                  "that another rank holds"),
        (variant(counts=False), "before the ids, every rank tells every other how many ids it will send "
                                "(exchange_counts): one int64 count, 8 bytes, to each of the W - 1 other ranks, "
                                "even when the count is 0"),
        (variant(backward=False, counts=False), "two steps are missing: the counts exchange before the ids "
                                                "((W - 1) * 8 bytes) and the backward pass (a gradient row back "
                                                "to the owner of each of this rank's remote ids)"),
        (variant(received=True), "in the forward a rank *sends* the rows that the other ranks asked it for "
                                 "(ids other ranks sent here), not the rows it receives for its own ids"),
        (variant(value_bytes=4), f"a row is embedding_dim * value_bytes bytes; value_bytes is {value_bytes} "
                                 "here, not 4"),
        (variant(value_bytes=1), "a row is embedding_dim * value_bytes bytes: multiply by the bytes of "
                                 "one value"),
        (variant(owner=ceil_owner), "the rows are cut as RowShards cuts them: the first V % W ranks hold "
                                    "V // W + 1 rows and the others V // W, so the owner of id i is not "
                                    "i // ceil(V / W)"),
        (variant(owner=floor_owner), "the rows are cut as RowShards cuts them: the first V % W ranks hold "
                                     "V // W + 1 rows and the others V // W, so the owner of id i is not "
                                     "i // (V // W)"),
    ]
    expected = variant()

    def hint(got):
        if got.shape == (world_size + 1,) or (got.ndim == 2 and got.shape[0] == world_size):
            return "return one number per rank: a vector of W = len(ids_per_rank) byte counts"
        if got.shape == ():
            return "return the bytes of every rank, a vector of W = len(ids_per_rank) numbers, not the total"
        if got.shape != expected.shape:
            return None
        texts = [text for candidate, text in candidates
                 if not np.array_equal(candidate, expected) and np.array_equal(got, candidate)]
        return texts[0] if texts else None
    return hint


def _traffic_judge(ids_per_rank, num_embeddings, embedding_dim, value_bytes):
    expected = _rowwise_traffic(ids_per_rank, num_embeddings, embedding_dim, value_bytes=value_bytes)
    hint = _traffic_hint(ids_per_rank, num_embeddings, embedding_dim, value_bytes)
    world_size = len(ids_per_rank)

    def judge(got):
        if got.shape != (world_size,):
            return f"expected shape ({world_size},), one number of bytes per rank, got shape {got.shape}", hint(got)
        if got.dtype.kind not in "fiub":
            return f"expected numbers, got dtype {got.dtype}", None
        diff = _harness._first_difference(got.astype(np.float64), expected.astype(np.float64), True, 0, 0)
        if diff is not None:
            return f"{diff} (expected {expected.tolist()}, got {got.tolist()})", hint(got)
        return _integers(got, world_size, "one number of bytes per rank")
    return judge


def check_rowwise_traffic(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(ids_per_rank, num_embeddings, embedding_dim, *, id_bytes=8, value_bytes=4)``: the
    bytes each rank sends to the other ranks in one row-wise sharded lookup and its backward pass
    (the chapter on sharded tables).

    ``ids_per_rank`` is a list of ``W`` 1-D int64 arrays, the ids that each rank looks up (possibly
    none); the ``num_embeddings`` rows of the table are cut into contiguous blocks as by
    ``embedlib.distributed.row_shards`` (the first ``V % W`` ranks hold one row more). ``fn`` must
    return an integer array of ``W`` numbers: what ``embedlib.distributed.count_traffic`` counts on
    each rank around ``ShardedEmbedding(num_embeddings, embedding_dim, sharding="row")`` forward and
    backward. Ids and counts are int64 (``id_bytes``), table values ``value_bytes`` each (4 for
    float32, 8 for float64). There is no padding row.
    """
    rng = np.random.default_rng(seed)
    cases = []

    def add(description, ids_per_rank, num_embeddings, embedding_dim, value_bytes=4):
        ids = [np.asarray(i, dtype=np.int64) for i in ids_per_rank]
        cases.append(_Case(f"{description}: W={len(ids)}, V={num_embeddings}, D={embedding_dim}", (ids,
                           num_embeddings, embedding_dim, value_bytes),
                           ("ids_per_rank", "num_embeddings", "embedding_dim", "value_bytes"),
                           _traffic_judge(ids, num_embeddings, embedding_dim, value_bytes)))

    add("the chapter's example, rows 0:5 and 5:10", [[0, 5, 6], [1]], 10, 3)
    add("one rank: nothing leaves it", [[0, 3, 3, 1]], 4, 2)
    add("every id on its own rank: only the counts travel", [[0, 1], [4, 3, 2], [5]], 6, 4)
    add("every batch empty", [[], [], []], 7, 2)
    add("uneven batches, one rank looks nothing up", [[0, 9, 9, 3], [], [7], [1, 2, 8, 6, 5]], 10, 3)
    add("V not divisible by W, repeated ids", [[9, 9, 0, 4], [3, 3, 3], [8]], 10, 2)
    add("skewed: every rank asks for row 0", [[0, 0, 0], [0, 0], [0, 0, 0, 0]], 9, 5)
    add("more ranks than rows: the last ranks hold none", [[0, 2], [1], [2, 2], [0], []], 3, 2)
    add("float64 table (8 bytes a value)", [[1, 6], [0, 2, 7], [5]], 8, 3, 8)
    add("float16 table (2 bytes a value)", [[3, 0], [2, 1, 1]], 5, 4, 2)
    for _ in range(6):
        world_size = int(rng.integers(1, 6))
        num_embeddings = int(rng.integers(1, 40))
        skew = float(rng.uniform(0.0, 2.0))
        popularity = 1.0 / np.arange(1, num_embeddings + 1) ** skew
        popularity /= popularity.sum()
        ids = [rng.choice(num_embeddings, size=int(rng.integers(0, 12)), p=popularity) for _ in range(world_size)]
        add(f"random batches, skew {skew:.1f}", ids, num_embeddings, int(rng.integers(1, 17)),
            int(rng.choice([2, 4, 8])))

    name = _harness.name_of(fn)
    _harness.require_callable(fn, name)

    def with_value_bytes(ids_per_rank, num_embeddings, embedding_dim, value_bytes):
        if value_bytes == 4:
            return fn(ids_per_rank, num_embeddings, embedding_dim)
        return fn(ids_per_rank, num_embeddings, embedding_dim, value_bytes=value_bytes)

    return _run(name, with_value_bytes, cases, summary="one rank, empty batches, ids all local, V not divisible "
                "by W, more ranks than rows, skewed ids, 2-, 4- and 8-byte values")


# --- rows placed by load --------------------------------------------------------------------------

def balanced_rows(counts, world_size) -> np.ndarray:
    """The reference placement (the chapter on sharded tables): ``owner[i]``, the rank that holds row
    ``i`` of a table whose rows are looked up ``counts[i]`` times, balancing rows and lookups.

    The rows are dealt like cards, most popular first: the most looked-up row to rank 0, the next to
    rank 1, ..., to rank W - 1, then back to rank 0 (ties in the order of the rows). Every rank gets
    ``V // W`` or ``V // W + 1`` rows, the first ``V % W`` ranks one more.

    Why the lookups balance: write the sorted counts ``c_1 >= c_2 >= ...`` in rounds of ``W`` and let
    ``a_k`` be the first (largest) count of round ``k``, the one rank 0 gets. In every round rank 0's
    row is at least any other rank's, so rank 0 has the largest load, ``L = a_0 + a_1 + ... + a_K``.
    Each full round ``k < K`` sums to at least ``a_k + (W - 1) a_{k+1}`` (its other counts are at
    least the next round's first), and round ``K`` to at least ``a_K``, so the total ``S`` is at least
    ``sum_{k<K} a_k + (W - 1) sum_{k>=1} a_k + a_K``. Dividing by ``W`` and subtracting,
    ``L - S / W <= (1 - 1/W) a_0``: the largest load is at most the mean load plus
    ``(1 - 1/W) max(counts)``, the bound that :func:`check_balanced_rows` asks of every answer.
    """
    counts = np.asarray(counts).reshape(-1)
    order = np.argsort(-counts.astype(np.float64), kind="stable")
    owner = np.empty(counts.size, dtype=np.int64)
    owner[order] = np.arange(counts.size) % int(world_size)
    return owner


def _contiguous(num_embeddings: int, world_size: int) -> np.ndarray:
    """The owner of each row under ``row_shards``: contiguous blocks, the first ``V % W`` one row more."""
    return _row_owner(np.arange(num_embeddings), num_embeddings, world_size)


def _loads(counts: np.ndarray, owner: np.ndarray, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.bincount(owner, minlength=world_size)
    loads = np.bincount(owner, weights=counts.astype(np.float64), minlength=world_size).astype(np.int64)
    return loads, rows


def _placement_judge(counts: np.ndarray, world_size: int):
    num_embeddings = counts.size
    total, largest = int(counts.sum()), int(counts.max(initial=0))
    low, high = num_embeddings // world_size, -(-num_embeddings // world_size)
    best_loads, best_rows = _loads(counts, balanced_rows(counts, world_size), world_size)
    limit = total / world_size + (1 - 1 / world_size) * largest
    reference = (f"the reference (rows dealt round-robin, most popular first) gives loads {best_loads.tolist()} "
                 f"and rows {best_rows.tolist()}")

    def judge(got):
        shape = _integers(got, num_embeddings, "the rank of each row")
        if shape is not None:
            hint = ("return one rank per row: owner[i] is the rank that holds row i"
                    if got.shape != (num_embeddings,) else shape[1])
            return shape[0], hint
        if got.size and (got.min() < 0 or got.max() >= world_size):
            bad = int(got[(got < 0) | (got >= world_size)][0])
            return f"owner holds {bad}, which is not a rank: every value must be in [0, {world_size})", None
        loads, rows = _loads(counts, got, world_size)
        seen = f"loads per rank {loads.tolist()}, rows per rank {rows.tolist()}"
        if rows.min(initial=low) < low or rows.max(initial=high) > high:
            hint = (f"memory must balance too: every rank holds V // W = {low} or ceil(V / W) = {high} rows; "
                    "when you give each row to the least loaded rank, skip the ranks that already hold "
                    "their share of rows")
            return f"a rank holds too many or too few rows: {seen} ({reference})", hint
        if world_size * int(loads.max(initial=0)) > total + (world_size - 1) * largest:
            problem = (f"the lookups are not balanced: {seen}; the largest load {int(loads.max())} is above "
                       f"the mean load plus (1 - 1/W) max(counts) = {limit:.6g} ({reference})")
            return problem, _placement_hint(got, counts, world_size)
        return None
    return judge


def _placement_hint(got, counts, world_size):
    num_embeddings = counts.size
    if np.array_equal(got, _contiguous(num_embeddings, world_size)):
        return ("contiguous blocks, the cut of row_shards, balance memory only: a vocabulary numbered by "
                "frequency puts its popular rows together, on one rank. Deal the rows like cards, most "
                "popular first: rank 0, 1, ..., W - 1, then rank 0 again")
    if np.array_equal(got, np.arange(num_embeddings) % world_size):
        return ("owner[i] must be the rank of row i; dealing ranks 0, 1, ..., W - 1 in the order of the rows "
                "ignores the counts (write owner[order] = np.arange(V) % W, with order the rows sorted "
                "by count)")
    order = np.argsort(-counts.astype(np.float64), kind="stable")  # the rows, most popular first
    if np.array_equal(got, order % world_size):
        return ("owner is indexed by row: owner[order] = np.arange(V) % W gives the k-th most popular row "
                "(row order[k]) rank k % W, while (np.arange(V) % W)[order] or order % W does not")
    return "deal the rows like cards, most popular first: rank 0, 1, ..., W - 1, then rank 0 again"


def check_balanced_rows(fn, *, seed: int = 0) -> CheckResult:
    """Check ``fn(counts, world_size)``: which rank holds each row, balancing memory and lookups (the
    chapter on sharded tables).

    ``counts[i]`` is how often row ``i`` of a ``V``-row table is looked up. ``fn`` must return
    ``owner``, an integer array of ``V`` ranks in ``[0, world_size)``, such that

    - every rank holds ``V // W`` or ``V // W + 1`` rows (memory balanced), and
    - the largest load, ``counts[owner == r].sum()`` over the ranks ``r``, is at most the mean load
      ``counts.sum() / W`` plus ``(1 - 1/W) * counts.max()`` (lookups balanced).

    Dealing the rows sorted by count round-robin, like cards, meets both (:func:`balanced_rows`
    proves it); the contiguous blocks of ``embedlib.distributed.row_shards`` fail the second on a
    vocabulary numbered by frequency. Many answers are right: the checker tests the two conditions,
    not one placement.
    """
    rng = np.random.default_rng(seed)
    cases = []

    def add(description, counts, world_size):
        counts = np.asarray(counts, dtype=np.int64)
        cases.append(_Case(f"{description}: V={counts.size}, W={world_size}", (counts, world_size),
                           ("counts", "world_size"), _placement_judge(counts, world_size)))

    add("a vocabulary numbered by frequency", [9, 7, 1, 1, 1, 1, 0, 0], 2)
    add("one rank holds everything", [3, 0, 5, 1], 1)
    add("V not divisible by W, popular rows first", [40, 31, 20, 11, 9, 5, 3, 2, 1, 1], 3)
    add("popular rows last", [0, 0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55], 4)
    add("more ranks than rows", [4, 9, 2], 5)
    add("every count equal", [6] * 10, 4)
    add("no lookups at all", [0] * 7, 3)
    add("one row looked up far more than the rest", [1, 1, 500, 1, 1, 1, 1, 1, 1], 3)
    zipf = (10_000 / np.arange(1, 101)).astype(np.int64)
    add("a Zipf vocabulary numbered by frequency", zipf, 4)
    for _ in range(5):
        world_size = int(rng.integers(2, 7))
        num_embeddings = int(rng.integers(world_size, 60))
        skew = float(rng.uniform(0.5, 2.0))
        counts = (1_000 / np.arange(1, num_embeddings + 1) ** skew).astype(np.int64)
        if rng.random() < 0.5:
            counts = rng.permutation(counts)
        add(f"random counts, skew {skew:.1f}", counts, world_size)

    name = _harness.name_of(fn)
    _harness.require_callable(fn, name)
    return _run(name, fn, cases, summary="frequency-ordered and shuffled vocabularies, V not divisible by W, "
                "more ranks than rows, equal and zero counts, one dominant row")
