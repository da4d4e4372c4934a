"""tests/scrambled_clock.py: the lying clock the notebook kernels run with, and that they do run with it."""
from __future__ import annotations

import os
import time
import timeit

import pytest

import scrambled_clock


@pytest.fixture
def scrambled():
    scrambled_clock.install(seed=1234)
    try:
        yield
    finally:
        scrambled_clock.uninstall()


def test_each_interval_is_scaled_by_its_own_factor_between_a_quarter_and_four():
    real_times = iter([10.0, 10.5, 10.5, 12.0, 15.0, 15.001])  # a stand-in for the real clock
    drawn = []
    draw = scrambled_clock.factors(seed=3)

    def factor():
        drawn.append(draw())
        return drawn[-1]

    clock = scrambled_clock.ScrambledClock(lambda: next(real_times), factor)  # reads 10.0
    readings = [clock() for _ in range(5)]
    fake = [b - a for a, b in zip([10.0] + readings, readings)]
    assert fake == pytest.approx([d * f for d, f in zip([0.5, 0.0, 1.5, 3.0, 0.001], drawn)])
    assert all(0.25 <= f <= 4 for f in drawn) and len(set(drawn)) == 5


def test_factors_spread_over_the_whole_range_both_ways():
    draw = scrambled_clock.factors(seed=11)
    draws = [draw() for _ in range(2_000)]
    assert 0.25 <= min(draws) < 0.3 and 3.7 < max(draws) <= 4
    assert 0.45 < sum(d < 1 for d in draws) / len(draws) < 0.55  # log-uniform: as often slower as faster


def test_nanosecond_clocks_stay_integers():
    real_ns = iter([1_000, 1_003, 2_000_000])
    clock = scrambled_clock.ScrambledClock(lambda: next(real_ns), lambda: 2.5, integer=True)
    assert [clock(), clock()] == [1_000 + 8, 1_000 + 8 + round((2_000_000 - 1_003) * 2.5)]


def test_clocks_stay_monotonic_and_keep_their_types(scrambled):
    readings = [time.perf_counter() for _ in range(1_000)]
    assert readings == sorted(readings)
    ns = [time.perf_counter_ns() for _ in range(1_000)]
    assert ns == sorted(ns) and all(isinstance(x, int) for x in ns)
    for name in scrambled_clock.FLOAT_CLOCKS:
        assert isinstance(getattr(time, name)(), float), name
    for name in scrambled_clock.NS_CLOCKS:
        assert isinstance(getattr(time, name)(), int), name
    assert timeit.default_timer is time.perf_counter


def test_a_comparison_of_two_equal_durations_flips(scrambled):
    """What the scrambled clock is for: the same work timed twice no longer looks the same."""
    def work():
        start = time.perf_counter()
        time.sleep(0.001)
        return time.perf_counter() - start

    outcomes = {work() > work() for _ in range(40)}
    assert outcomes == {True, False}


def test_same_seed_same_factors():
    a, b = scrambled_clock.factors(7), scrambled_clock.factors(7)
    draws = [a() for _ in range(100)]
    assert draws == [b() for _ in range(100)]
    assert all(0.25 <= x <= 4 for x in draws)


def test_uninstall_restores_the_real_clocks(scrambled):
    assert scrambled_clock.installed()
    scrambled_clock.uninstall()
    assert not scrambled_clock.installed()
    assert time.perf_counter is scrambled_clock._REAL["perf_counter"]
    assert timeit.default_timer is scrambled_clock._REAL["perf_counter"]


@pytest.mark.skipif(os.environ.get("SCRAMBLED_CLOCK", "1") == "0", reason="SCRAMBLED_CLOCK=0: real clock asked for")
def test_notebook_kernels_start_with_the_scrambled_clock():
    """A kernel started as nbval starts one (in this environment) runs the startup file that
    tests/conftest.py wrote: nbval discards the kernel's stderr, so a broken startup file would
    otherwise leave the real clock in place without a word."""
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME, RunningKernel

    kernel = RunningKernel(CURRENT_ENV_KERNEL_NAME)
    try:
        msg_id = kernel.execute_cell_input("import time, timeit\n"
                                           "print(type(time.perf_counter).__name__,"
                                           " type(timeit.default_timer).__name__)")
        kernel.await_reply(msg_id, timeout=60)
        printed = []
        while True:
            msg = kernel.get_message("iopub", timeout=30)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    finally:
        kernel.stop()
    assert "".join(printed).split() == ["ScrambledClock", "ScrambledClock"]


def test_a_forked_child_reads_the_real_clocks(scrambled):
    # a fork while another thread holds a scrambled clock's lock must not leave the child hanging
    clock = time.monotonic
    clock._lock.acquire()  # as if another thread were reading the clock at the moment of the fork
    try:
        pid = os.fork()
        if pid == 0:  # the child: the real clocks (checked first: a scrambled one would hang here)
            os._exit(1 if scrambled_clock.installed() else 0 if time.monotonic() > 0 else 2)
    finally:
        clock._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
