"""The collectives under the sharded tables (the chapter on sharded tables): the all-to-all with
uneven splits, the agreement on errors that keeps every rank from hanging, and gathering a table on
one rank. Every function here is called by every rank of the group, in the same order.

Without an initialised process group everything runs as one rank (rank 0 of 1), with no collective.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

# What a failed check on one rank tells the others, as one int64 per field: the kind of error, and
# for an out-of-range index the value and the table's size, so that every rank can name them.
_KINDS = {IndexError: 1, TypeError: 2, ValueError: 3}
_NAMES = {1: IndexError, 2: TypeError, 3: ValueError}


def world(group=None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group`` (the default group when None); ``(0, 1)`` without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def small_device(group=None) -> torch.device:
    """Where the small tensors of counts and error flags live: the current GPU for NCCL (which moves CUDA
    tensors only), the CPU otherwise (gloo)."""
    if world(group)[1] > 1 and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class InputError(Exception):
    """Raised inside a check to say which value was out of range (``agree`` re-raises ``error``)."""

    def __init__(self, error: Exception, value: int = 0, num_embeddings: int = 0):
        super().__init__(str(error))
        self.error, self.value, self.num_embeddings = error, value, num_embeddings


def agree(check, group=None):
    """Run ``check()`` on every rank, then agree on the outcome with one small ``all_reduce``.

    If ``check`` raised on this rank, its exception is raised here. If it raised on another rank only,
    this rank raises an exception of the same type naming that rank (and the bad index, for an
    ``IndexError``), instead of entering the next collective and waiting for ever for a rank that has
    left. Otherwise returns what ``check`` returned. Call it before any collective that the checked
    input feeds."""
    rank, size = world(group)
    mine, result, info = None, None, (0, 0, 0)
    try:
        result = check()
    except InputError as failure:
        mine = failure.error
        info = (_KINDS.get(type(mine), 4), failure.value, failure.num_embeddings)
    except Exception as failure:  # noqa: BLE001  every failure must be announced, or the others hang
        mine = failure
        info = (_KINDS.get(type(mine), 4), 0, 0)
    if size > 1:
        table = torch.zeros(size, 3, dtype=torch.int64)
        table[rank] = torch.tensor(info)
        on_device = table.to(small_device(group))
        dist.all_reduce(on_device, group=group)
        table = on_device.cpu()
        failed = [r for r in range(size) if table[r, 0] != 0]
    else:
        failed = [rank] if mine is not None else []
    if mine is not None:
        raise mine
    if failed:
        r = failed[0]
        kind, value, num_embeddings = table[r].tolist()
        if kind == 1:
            raise IndexError(f"rank {r} sent index {value}, out of range for num_embeddings={num_embeddings} "
                             f"(that rank raised the error; no rank ran the lookup)")
        raise _NAMES.get(kind, RuntimeError)(f"the input on rank {r} failed its check (see the error raised there); "
                                             "no rank ran the operation")
    return result


@dataclass
class Traffic:
    """What this rank's all-to-alls sent to the other ranks (the chapter on sharded tables counts the
    shardings' traffic with it; the part a rank keeps for itself is not counted):
    ``bytes`` of payload (ids, rows, gradient rows and the counts before them) and ``calls``."""

    bytes: int = 0
    calls: int = 0


_COUNTERS: list[Traffic] = []


@contextmanager
def count_traffic():
    """Count the bytes that this rank's sharded lookups, bags and their backward passes send to other
    ranks inside the ``with`` block (the chapter on sharded tables measures the shardings with it)::

        with count_traffic() as sent:
            layer(ids).backward(grad)
        sent.bytes, sent.calls
    """
    counter = Traffic()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


def _count(send: list[int], item_bytes: int, group) -> None:
    if _COUNTERS:
        rank, _ = world(group)
        for counter in _COUNTERS:
            counter.bytes += (sum(send) - send[rank]) * item_bytes
            counter.calls += 1


def exchange_counts(send: list[int], group=None) -> list[int]:
    """Each rank tells every other how many items it will send it: ``recv[r]`` is what rank ``r`` sends here."""
    rank, size = world(group)
    if size == 1:
        return list(send)
    _count([1] * size, 8, group)
    device = small_device(group)
    out = torch.empty(size, dtype=torch.int64, device=device)
    dist.all_to_all_single(out, torch.tensor(send, dtype=torch.int64, device=device), group=group)
    return out.tolist()


def exchange(values: torch.Tensor, send: list[int], recv: list[int], group=None) -> torch.Tensor:
    """The all-to-all with uneven splits: the first ``send[0]`` rows of ``values`` go to rank 0, the next
    ``send[1]`` to rank 1...; returns the ``sum(recv)`` rows received, rank 0's first."""
    out = values.new_empty(sum(recv), *values.shape[1:])
    if world(group)[1] == 1:
        return out.copy_(values)
    _count(send, values[:1].numel() * values.element_size() if values.dim() > 1 else values.element_size(), group)
    dist.all_to_all_single(out, values.contiguous(), output_split_sizes=recv, input_split_sizes=send, group=group)
    return out


def gather_rows(rows: torch.Tensor, sizes: list[int], group=None) -> torch.Tensor | None:
    """Every rank's ``rows`` (rank ``r`` holds ``sizes[r]`` of them) stacked in rank order on the group's
    rank 0; None elsewhere. Shards are padded to the largest size, since gloo's gather and all_gather
    take only equal sizes."""
    rank, size = world(group)
    if size == 1:
        return rows.detach().clone()
    longest = max(sizes)
    padded = rows.detach().new_zeros(longest, *rows.shape[1:])
    padded[: rows.shape[0]] = rows.detach()
    parts = [torch.empty_like(padded) for _ in range(size)] if rank == 0 else None
    dist.gather(padded, parts, group_dst=0, group=group)
    if rank != 0:
        return None
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def barrier(group=None) -> None:
    if world(group)[1] > 1:
        dist.barrier(group=group)
