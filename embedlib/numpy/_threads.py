"""Fast row gathers and copies on every core (chapter 3 measures them; ``python -m embedlib.bench``).

NumPy releases the GIL while ``np.take`` copies rows, so cutting a large gather into one slice per
thread, each written into its part of one output array, gives the same bytes sooner.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


#: Gathers and copies of at least this many bytes are split across threads. Below it, waking the
#: threads costs about as much as they save (measured on 2 cores: a 4 MiB gather took 0.44 ms on one
#: thread, 0.5 ms on two; a 32 MiB one 8.3 ms and 4.9 ms, where fresh pages are faulted in too).
PARALLEL_MIN_BYTES = 16 << 20

_pool = None
_pool_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _threads() -> int:
    """The cores this process may use (the affinity mask, not the machine's count), at most 8;
    looked up once."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="embedlib")
        return _pool


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it starts a pool of its own when needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


#: Pieces per thread: small enough that a thread which gets no core for a while leaves its share
#: to the others, large enough that each piece is worth handing out.
PIECES_PER_THREAD = 2


class _Chooser:
    """Threads or not, decided by measuring: the seconds per byte of each way, smoothed over recent
    large calls, and the faster way wins.

    Whether a second core speeds up a gather depends on the machine at that moment: on an idle
    2-core machine two threads took 12 ms where one took 21 ms; with another program busy on the
    other core they took 23 ms. No rule of thumb (core counts, load averages) predicted which, so
    each large call is timed: the first two calls try both ways, then the faster one is used, and
    every 16th call tries the other again in case the machine changed. The bytes computed are the
    same either way; only the time differs.
    """

    EXPLORE_EVERY = 16

    def __init__(self):
        self.rate = {False: None, True: None}  # seconds per byte, exponentially smoothed
        self.calls = 0
        self.lock = threading.Lock()

    def pick(self) -> bool:
        with self.lock:
            self.calls += 1
            if self.rate[True] is None:
                return True
            if self.rate[False] is None:
                return False
            faster = self.rate[True] <= self.rate[False]
            return (not faster) if self.calls % self.EXPLORE_EVERY == 0 else faster

    def record(self, threaded: bool, seconds: float, nbytes: int) -> None:
        with self.lock:
            rate, old = seconds / max(nbytes, 1), self.rate[threaded]
            self.rate[threaded] = rate if old is None else 0.7 * old + 0.3 * rate


_GATHER, _COPY = _Chooser(), _Chooser()


def _split(n: int, nbytes: int, threaded: bool = True):
    """``[(start, stop)]`` slices of ``range(n)``: one, or a few per thread when the work is worth it
    and ``threaded``."""
    threads = _threads()
    if not threaded or threads == 1 or nbytes < PARALLEL_MIN_BYTES or n < 2 * threads:
        return [(0, n)]
    pieces = min(threads * PIECES_PER_THREAD, max(threads, nbytes // max(1, PARALLEL_MIN_BYTES // 4)))
    cuts = np.linspace(0, n, pieces + 1).astype(np.int64).tolist()
    return list(zip(cuts[:-1], cuts[1:]))


def _timed(chooser: _Chooser, n: int, nbytes: int, run) -> None:
    """``run(parts)`` with the parts of ``_split``; large calls are timed for ``chooser``."""
    if nbytes < PARALLEL_MIN_BYTES or _threads() == 1:
        run([(0, n)])
        return
    threaded = chooser.pick()
    start = time.perf_counter()
    run(_split(n, nbytes, threaded))
    chooser.record(threaded, time.perf_counter() - start, nbytes)


def _run(jobs) -> None:
    """Run ``(function, *args)`` jobs: this thread and the pool's take them one at a time from a
    shared queue until none is left, and the first error is re-raised here.

    This thread works too, and nobody waits for a job assigned in advance: on a busy machine, where
    the pool's threads may get no core for a while, this thread simply does more of the jobs, so
    the result comes about as fast as without threads, never much slower; with idle cores, the
    jobs run side by side. NumPy releases the GIL inside each job.
    """
    if len(jobs) == 1:
        jobs[0][0](*jobs[0][1:])
        return
    queue = iter(jobs)
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                job = next(queue, None)
            if job is None:
                return
            job[0](*job[1:])

    helpers = [_executor().submit(work) for _ in range(min(_threads(), len(jobs)) - 1)]
    try:
        work()
    finally:
        for helper in helpers:
            if not helper.cancel():  # a helper that has not started has nothing left to do
                helper.result()


def take_rows(w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``w[idx]`` for a 2-D ``w`` and indices already checked to lie in ``[0, len(w))``.

    ``np.take`` copies each row with one ``memcpy``, 1.5 to 2.6 times faster than ``w[idx]``, and
    releases the GIL while it does; large gathers may be cut into slices that the cores take in turn,
    each into its part of one output array (:func:`_run`), when that has been the faster way lately
    (:class:`_Chooser`). The result is the same bytes either way.
    """
    nbytes = idx.size * w.shape[1] * w.itemsize
    if nbytes < PARALLEL_MIN_BYTES or _threads() == 1:
        return np.take(w, idx, axis=0)
    result = []

    def run(parts):
        if len(parts) == 1:
            result.append(np.take(w, idx, axis=0))
            return
        # With out=, mode="raise" would copy through a buffer; "clip" writes in place and skips a
        # bounds test that the caller has done already.
        out = np.empty(idx.shape + w.shape[1:], dtype=w.dtype)
        flat_idx, flat_out = idx.reshape(-1), out.reshape(idx.size, w.shape[1])
        _run([(np.take, w, flat_idx[a:b], 0, flat_out[a:b], "clip") for a, b in parts])
        result.append(out)

    _timed(_GATHER, idx.size, nbytes, run)
    return result[0]


def _copy_rows(out, rows, src, src_rows) -> None:
    out[rows] = np.take(src, src_rows, axis=0)


def copy_rows(out: np.ndarray, rows: np.ndarray, src: np.ndarray, src_rows: np.ndarray) -> None:
    """``out[rows] = src[src_rows]`` for distinct ``rows``, on several threads when large and faster.

    Distinct target rows make the slices independent, and NumPy releases the GIL while it copies.
    Writing into a fresh ``np.zeros`` array is also where the operating system hands out (and
    zeroes) its memory pages, page by page on first touch; threads share that cost too.
    """
    _timed(_COPY, rows.size, rows.size * src[:1].nbytes,
           lambda parts: _run([(_copy_rows, out, rows[a:b], src, src_rows[a:b]) for a, b in parts]))
