"""embedlib.numpy._threads: the threaded gathers and copies give the same bytes as one thread."""
import numpy as np
import pytest


def test_the_threaded_paths_give_the_same_bytes(monkeypatch):
    """The speed-ups that the benchmark measures (threads in embedlib.numpy's gather and
    scatter-add) must not change a single bit; force them on for tiny arrays and compare."""
    from embedlib import numpy as el
    from embedlib.numpy import _threads
    monkeypatch.setattr(_threads, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_threads._Chooser, "pick", lambda self: True)
    monkeypatch.setattr(_threads, "_threads", lambda: 3)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((50, 7)).astype(np.float32)
    idx = rng.integers(0, 50, size=(9, 11))
    assert _threads._split(idx.size, 1 << 30) != [(0, idx.size)]  # the threaded path is taken
    np.testing.assert_array_equal(el.lookup(idx, w), w[idx])
    g = rng.standard_normal((9, 11, 7)).astype(np.float32)
    monkeypatch.setattr(_threads._Chooser, "pick", lambda self: False)
    serial = el.lookup_backward(idx, g, 50)
    monkeypatch.setattr(_threads._Chooser, "pick", lambda self: True)
    assert el.lookup_backward(idx, g, 50).tobytes() == serial.tobytes()
    unique = rng.permutation(50)[:20]  # no repeats: the threaded copy alone
    rows = rng.standard_normal((20, 7))
    expected = np.zeros((50, 7))
    expected[unique] = rows
    assert el.lookup_backward(unique, rows, 50).tobytes() == expected.tobytes()


def test_threaded_jobs_reraise_errors_and_finish_everything(monkeypatch):
    from embedlib.numpy import _threads
    monkeypatch.setattr(_threads, "_threads", lambda: 3)
    done = []
    _threads._run([(done.append, i) for i in range(10)])
    assert sorted(done) == list(range(10))

    def boom(i):
        if i == 3:
            raise RuntimeError("job 3 failed")
    with pytest.raises(RuntimeError, match="job 3 failed"):
        _threads._run([(boom, i) for i in range(6)])


def test_the_chooser_tries_both_ways_then_keeps_the_faster():
    from embedlib.numpy._threads import _Chooser
    c = _Chooser()
    assert c.pick() is True  # each way once, threads first
    c.record(True, 1.0, 100)
    assert c.pick() is False
    c.record(False, 3.0, 100)
    picks = [c.pick() for _ in range(32)]
    assert picks.count(True) == 30 and picks.count(False) == 2  # the slower way is retried now and then
    for _ in range(10):
        c.record(True, 9.0, 100)  # the machine got busy: threads became the slower way
    assert [c.pick() for _ in range(5)].count(False) >= 4
