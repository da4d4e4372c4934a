"""A clock that lies: every duration measured with it comes out scaled by a random factor.

The notebooks are tested by comparing what they print with what the book shows (nbval). Timings
are masked there, but a timing can leak into an output in other ways: a word chosen by comparing
two times ("faster" or "slower"), an order, an assertion, a count of loop iterations. To prove that
no compared output depends on how fast the machine happened to be, the test command runs every
notebook kernel with this clock installed (``tests/conftest.py`` puts :func:`install` in an IPython
startup file): each interval between two consecutive readings of a clock is multiplied by an
independent random factor, log-uniform between ``1 / SPREAD`` and ``SPREAD``. A duration measured
between two readings is then off by that factor; a longer one, spanning other readings, by a
weighted mix of factors, which stays in the same range. Each clock stays monotonic.

Set ``SCRAMBLED_CLOCK_SEED`` to choose the factors' seed (the test run prints the one it used);
``SCRAMBLED_CLOCK=0`` runs the notebooks with the real clock.
"""
from __future__ import annotations

import math
import os
import random
import threading
import time
import timeit

SPREAD = 4.0  # factors lie between 1/4 and 4

# The clocks that code uses to measure durations: float seconds and integer nanoseconds.
# (Not thread_time: each thread has its own, and nothing in the book measures with it.)
FLOAT_CLOCKS = ("perf_counter", "monotonic", "time", "process_time")
NS_CLOCKS = ("perf_counter_ns", "monotonic_ns", "time_ns", "process_time_ns")

_REAL = {name: getattr(time, name) for name in FLOAT_CLOCKS + NS_CLOCKS}


class ScrambledClock:
    """A stand-in for one clock function of :mod:`time`, scaling each interval by a random factor."""

    def __init__(self, real, factor, *, integer: bool = False):
        self._real = real
        self._factor = factor
        self._integer = integer
        self._lock = threading.Lock()  # the kernel reads its clocks from several threads
        self._last_real = real()
        self._now = self._last_real

    def __call__(self):
        with self._lock:
            real = self._real()
            elapsed = real - self._last_real
            self._last_real = real
            self._now += round(elapsed * self._factor()) if self._integer else elapsed * self._factor()
            return self._now


def factors(seed) -> callable:
    """A function returning independent factors, log-uniform in [1/SPREAD, SPREAD]."""
    rng = random.Random(seed)
    lock = threading.Lock()
    log_spread = math.log(SPREAD)

    def draw() -> float:
        with lock:
            return math.exp(rng.uniform(-log_spread, log_spread))
    return draw


def install(seed) -> None:
    """Replace the clocks of :mod:`time` (and :func:`timeit.default_timer`) by scrambled ones."""
    draw = factors(seed)
    for name in FLOAT_CLOCKS:
        setattr(time, name, ScrambledClock(_REAL[name], draw))
    for name in NS_CLOCKS:
        setattr(time, name, ScrambledClock(_REAL[name], draw, integer=True))
    timeit.default_timer = time.perf_counter
    if not _FORK_HOOK:
        # A process forked from the kernel (chapter 13 starts its ranks so) may have been forked while
        # another thread held a clock's lock; its copy of that lock would stay locked for ever, and
        # its first clock reading would hang. The child gets the real clocks instead.
        os.register_at_fork(after_in_child=uninstall)
        _FORK_HOOK.append(True)


_FORK_HOOK: list = []


def uninstall() -> None:
    """Put the real clocks back."""
    for name, real in _REAL.items():
        setattr(time, name, real)
    timeit.default_timer = _REAL["perf_counter"]


def installed() -> bool:
    return isinstance(time.perf_counter, ScrambledClock)
