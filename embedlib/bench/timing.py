"""Timing and memory measurement that chapters 3 and 9 and the benchmark share.

Timings on a shared machine wander: other processes, frequency scaling, page faults. Three habits
make the ratios between candidates trustworthy even so:

* **warm-up**: each candidate runs once before it is timed (compiles kernels, faults in pages);
* **interleaving**: the repeats go round the candidates in turn, so a slow patch of time hurts all
  of them rather than one;
* **median** of the repeats, which a single interruption cannot move.

On a GPU, work is queued and runs later, so host clocks measure the queueing, not the work. There
``torch.cuda.Event``s recorded around the calls time the GPU itself, after a synchronize.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
import tracemalloc
from typing import Callable, NamedTuple


class Timing(NamedTuple):
    """Seconds per call: the median of ``samples`` (each the mean of ``number`` back-to-back calls);
    what :func:`measure` returns (chapter 3)."""

    median: float
    samples: tuple
    number: int

    @property
    def spread(self) -> float:
        """(max - min) / median of the samples: how much this machine wandered during the repeats."""
        return (max(self.samples) - min(self.samples)) / self.median if self.median > 0 else 0.0


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def _clock(device):
    """A function that runs ``fn`` ``number`` times and returns the seconds per call."""
    if _is_cuda(device):
        import torch

        def run(fn, number):
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / number
        return run

    def run(fn, number):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    return run


def measure(candidates: dict, *, device="cpu", repeats: int = 5, min_sample: float | None = None,
            budget: float | None = None) -> dict:
    """Time each callable in ``candidates`` (name -> zero-argument function): ``{name: Timing}``
    (chapter 3 times the one-hot product and the lookup with it, chapter 9 the GPU kernels).

    Each is warmed up once, then called ``number`` times per sample, where ``number`` makes one
    sample last at least ``min_sample`` seconds (default 10 ms on a CPU, 2 ms on a GPU: enough to
    hide the clock's and the launch's overheads). ``repeats`` samples each, interleaved; with a
    ``budget`` in seconds, fewer repeats (never under 3) when the candidates are slow.
    """
    clock = _clock(device)
    min_sample = (2e-3 if _is_cuda(device) else 1e-2) if min_sample is None else min_sample
    numbers, estimate = {}, 0.0
    for name, fn in candidates.items():
        first = clock(fn, 1)  # warm-up, and a first estimate of the time per call
        second = clock(fn, 1)
        per_call = max(min(first, second), 1e-7)
        numbers[name] = max(1, math.ceil(min_sample / per_call)) if per_call < min_sample else 1
        estimate += per_call * numbers[name]
    if budget is not None and estimate > 0:
        repeats = max(3, min(repeats, int(budget / estimate)))
    samples = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(repeats):
        turn = names[r % len(names):] + names[:r % len(names)]  # a different one goes first each round
        for name in turn:
            samples[name].append(clock(candidates[name], numbers[name]))
    return {name: Timing(statistics.median(s), tuple(s), numbers[name]) for name, s in samples.items()}


def peak_bytes(fn: Callable, device="cpu", *, repeats: int = 5) -> int:
    """Bytes allocated at the peak of one call of ``fn``, above what was allocated before it
    (chapter 3: the one-hot product's memory grows with V, the lookup's does not).

    On a CPU this counts NumPy's and Python's allocations (``tracemalloc``; NumPy reports its array
    buffers to it); torch CPU tensors are not counted. On a GPU it is torch's allocator peak.
    Either counts what every thread of the process allocates, and a notebook kernel's own threads
    allocate now and then (sending a cell's messages, flushing its output); on a CPU, Python also
    reuses freed small objects, so whether a call needs new memory for its few hundred bytes of
    Python objects depends on what ran just before. The result is therefore the median of
    ``repeats`` calls, which leaves out what happened in fewer than half of them; expect the last
    few hundred bytes of a small peak to vary all the same.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    return int(statistics.median_low([_peak_of_one_call(fn, device) for _ in range(repeats)]))


def _peak_of_one_call(fn: Callable, device) -> int:
    gc.collect()
    if _is_cuda(device):
        import torch
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del result
        return int(peak)
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - before
    del result
    if not tracing:
        tracemalloc.stop()
    return int(peak)
