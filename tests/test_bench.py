"""embedlib.bench: the timing tools, the targets' arithmetic, and a whole run at small sizes.

No timing is asserted here (speed targets belong to the benchmark's own report): the tests check
that the benchmark runs, measures what it says, and writes what it promises.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embedlib import bench
from embedlib.bench import __main__ as cli
from embedlib.bench import report as rep


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One CLI run at the small sizes, with its JSON file and printed table."""
    path = tmp_path_factory.mktemp("bench") / "out.json"
    import contextlib
    import io
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["--sizes", "small", "--json", str(path), "--quiet", "--threads", "1"])
    return code, json.loads(path.read_text()), printed.getvalue()


def test_cli_writes_valid_json_with_environment_results_and_targets(small_run):
    code, data, _ = small_run
    assert code in (0, cli.TARGET_NOT_MET)  # 3 only when a target failed, which a busy machine may cause
    assert set(data) == {"environment", "sizes", "results", "targets"}
    env = data["environment"]
    for key in ("date", "device", "numpy", "torch", "triton", "python", "cpu_count", "embedlib"):
        assert key in env
    assert env["device"] == "cpu" and data["sizes"]["name"] == "small"
    names = {(r["suite"], r["name"]) for r in data["results"]}
    expected = {("onehot", "onehot_matmul"), ("onehot", "lookup"), ("forward", "W[idx]"), ("forward", "np.take"),
                ("forward", "embedlib.numpy.lookup"), ("forward", "F.embedding"), ("forward", "embedlib.torch.lookup"),
                ("backward", "np.add.at"), ("backward", "embedlib.numpy.lookup_backward"),
                ("backward", "PyTorch backward"), ("backward", "embedlib.torch backward"),
                ("backward", "embedlib.torch backward (deterministic)"), ("bags", "F.embedding_bag (sum)"),
                ("bags", "embedlib.torch.embedding_bag (sum)")}
    # on the CPU, every embedlib.torch operation against PyTorch's own, forward and forward+backward
    expected |= {("backward", f"{who} forward+backward") for who in (
        "F.embedding", "embedlib.torch.lookup", "nn.Embedding", "embedlib.torch.Embedding")}
    expected |= {("bags", f"{who} ({mode}){what}") for who in ("F.embedding_bag", "embedlib.torch.embedding_bag")
                 for mode in ("sum", "mean", "max") for what in ("", " forward+backward")}
    expected |= {("bags", "nn.EmbeddingBag forward+backward"), ("bags", "embedlib.torch.EmbeddingBag forward+backward")}
    assert expected <= names, expected - names
    for r in data["results"]:
        if "seconds" in r:
            assert r["seconds"] > 0 and len(r["samples"]) >= 3 and r["number"] >= 1
            assert r["seconds"] == pytest.approx(float(np.median(r["samples"])))
            if "bytes" in r:
                assert r["gbps"] == pytest.approx(r["bytes"] / r["seconds"] / 1e9)


def test_cpu_targets_are_ratios_of_this_runs_timings(small_run):
    _, data, _ = small_run
    by_id = {t["id"]: t for t in data["targets"]}
    assert {"cpu-lookup-vs-take", "cpu-lookup-vs-fancy", "cpu-backward-vs-add-at"} <= set(by_id)
    seconds = {r["name"]: r["seconds"] for r in data["results"] if r["suite"] == "forward" and "seconds" in r}
    t = by_id["cpu-lookup-vs-fancy"]
    assert t["ratio"] == pytest.approx(seconds["W[idx]"] / seconds["embedlib.numpy.lookup"])
    assert t["passed"] == (t["ratio"] >= 1.5) and t["needed"] == 1.5


def test_cpu_torch_targets_compare_every_operation_with_pytorchs_in_this_run(small_run):
    """One target per pair, each PyTorch's time over embedlib.torch's (embedlib's share of PyTorch's
    speed), needing 0.8; the table prints every ratio."""
    _, data, printed = small_run
    by_id = {t["id"]: t for t in data["targets"]}
    seconds = {(r["suite"], r["name"]): r["seconds"] for r in data["results"] if "seconds" in r}
    for tid, suite, theirs, mine, what in rep.CPU_TORCH_PAIRS:
        t = by_id[tid]
        assert t["needed"] == 0.8 and t["slow"] == theirs and t["fast"] == mine
        assert t["ratio"] == pytest.approx(seconds[(suite, theirs)] / seconds[(suite, mine)])
        assert t["passed"] == (t["ratio"] >= 0.8)
        assert any(line.startswith(t["description"]) and f" {t['ratio']:.2f} " in line
                   for line in printed.splitlines()), t["description"]
    assert len({tid for tid, *_ in rep.CPU_TORCH_PAIRS}) == 11


def test_cpu_torch_targets_arithmetic_and_only_what_was_measured():
    def rec(suite, name, seconds, device="cpu"):
        return dict(suite=suite, name=name, device=device, params=dict(V=10, D=4), seconds=seconds)
    results = [rec("forward", "F.embedding", 1.0), rec("forward", "embedlib.torch.lookup", 1.25),
               rec("bags", "F.embedding_bag (max)", 2.0), rec("bags", "embedlib.torch.embedding_bag (max)", 4.0),
               rec("bags", "embedlib.torch.embedding_bag (sum)", 1.0, device="cuda:0")]  # not a CPU target
    by_id = {t["id"]: t for t in rep.targets(results)}
    assert {i for i in by_id if i.startswith("cpu-")} == {"cpu-torch-lookup", "cpu-torch-bag-max"}
    assert by_id["cpu-torch-lookup"]["ratio"] == pytest.approx(0.8) and by_id["cpu-torch-lookup"]["passed"]
    assert by_id["cpu-torch-bag-max"]["ratio"] == pytest.approx(0.5) and by_id["cpu-torch-bag-max"]["passed"] is False
    assert "0.8x PyTorch's speed on the CPU" in by_id["cpu-torch-bag-max"]["description"]


def test_table_shows_times_targets_and_verdicts(small_run):
    code, data, printed = small_run
    assert "embedlib.numpy.lookup at least as fast as np.take" in printed
    assert ("PASS" in printed or "FAIL" in printed) and "GB/s" in printed
    assert printed.strip().splitlines()[-1].startswith("wrote ")
    assert code == (cli.TARGET_NOT_MET if any(t["passed"] is False for t in data["targets"]) else 0)


def test_onehot_sizes_over_the_limit_are_skipped_with_the_guards_words():
    cfg = dict(bench.SIZES["small"], onehot_v=[1_000, 50_000], repeats=3, min_sample=1e-4)
    from embedlib.bench import suites
    for backend in ("numpy", "torch"):  # torch is what a GPU run uses
        records = suites.onehot_vs_lookup(cfg, "cpu", max_onehot_bytes=1 << 20, log=lambda *a: None,
                                          backend=backend)
        skipped = [r for r in records if "skipped" in r]
        assert len(skipped) == 1 and skipped[0]["params"]["V"] == 50_000
        assert "use lookup(indices, weight)" in skipped[0]["skipped"]
        assert skipped[0]["onehot_bytes"] == 64 * 50_000 * 4
        lookups = [r for r in records if r["name"] == "lookup"]
        assert len(lookups) == 2 and all("seconds" in r for r in lookups)  # the lookup runs at every size
        assert all(r["backend"] == backend for r in records)


def test_peak_bytes_sees_the_one_hot_and_not_much_more_for_the_lookup():
    from embedlib import numpy as el
    idx = np.arange(256) % 5_000
    w = np.ones((5_000, 12), dtype=np.float32)
    onehot = bench.peak_bytes(lambda: el.onehot_matmul(idx, w))
    lookup = bench.peak_bytes(lambda: el.lookup(idx, w))
    assert onehot >= 256 * 5_000 * 4  # the (B, V) one-hot was allocated
    assert 256 * 12 * 4 <= lookup < 2 * 256 * 12 * 4 + 4096  # the output, and nothing of size V


def test_peak_bytes_is_the_median_peak_of_its_repeats():
    """Another thread's allocation during one call (here: the first call's own extra megabyte), or
    its freeing of something, moves that call's peak; the median of the repeats leaves it out."""
    calls = []

    def fn():
        calls.append(1)
        stray = np.ones(2**20, dtype=np.uint8) if len(calls) in (1, 4) else None
        return np.ones(1_000, dtype=np.uint8), stray

    assert bench.peak_bytes(fn, repeats=1) >= 2**20
    calls.clear()
    assert 1_000 <= bench.peak_bytes(fn) < 2**16 and len(calls) == 5
    with pytest.raises(ValueError, match="repeats"):
        bench.peak_bytes(fn, repeats=0)


def test_measure_interleaves_warms_up_and_takes_the_median():
    calls = []
    timings = bench.measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=4,
                            min_sample=0.0)
    assert set(timings) == {"a", "b"}
    for t in timings.values():
        assert t.number == 1 and len(t.samples) == 4 and t.median == pytest.approx(np.median(t.samples))
    assert calls[:4] == ["a", "a", "b", "b"]  # two warm-up calls each, then the rounds
    assert calls[4:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # who goes first alternates


def test_targets_arithmetic_on_made_up_gpu_results():
    def rec(suite, name, seconds, d=12, moved=1e9):
        return dict(suite=suite, name=name, device="cuda:0", params=dict(V=10, D=d, B=4), seconds=seconds,
                    bytes=moved, gbps=moved / seconds / 1e9)
    results = [rec("forward", "device-to-device copy", 1.0), rec("forward", "embedlib.torch.lookup", 1.2),
               rec("forward", "F.embedding", 10.0), rec("backward", "PyTorch backward", 9.0),
               rec("backward", "embedlib.torch backward", 2.0),
               rec("backward", "embedlib.torch backward (deterministic)", 10.0),
               rec("bags", "F.embedding_bag (sum)", 1.0), rec("bags", "embedlib.torch.embedding_bag (sum)", 0.5)]
    by_id = {t["id"]: t for t in rep.targets(results)}
    assert by_id["gpu-lookup-bandwidth-D12"]["ratio"] == pytest.approx(1 / 1.2)
    assert by_id["gpu-lookup-bandwidth-D12"]["passed"] is True
    assert by_id["gpu-pytorch-lookup-bandwidth-D12"]["passed"] is None  # shown for comparison only
    assert by_id["gpu-backward-D12"]["ratio"] == pytest.approx(4.5) and by_id["gpu-backward-D12"]["passed"]
    assert by_id["gpu-deterministic-backward-D12"]["passed"] is False
    assert by_id["gpu-bag-sum"]["ratio"] == pytest.approx(2.0)


def test_run_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="sizes must be one of"):
        bench.run(sizes="huge")
    with pytest.raises(ValueError, match="unknown suites"):
        bench.run(suites=("forward", "sideways"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            bench.run(device="cuda", suites=("forward",))


def test_importing_embedlib_bench_does_not_run_anything():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, embedlib.bench; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # torch is imported by the suites that need it, when they run


def test_gpu_only_records_can_be_produced_on_the_cpu():
    """The copy limit and the bitwise check normally run on CUDA only; run that code here too."""
    from embedlib.bench import suites
    cfg = dict(bench.SIZES["small"], gpu_dims=[3], cpu_d=3, cpu_b=64, cpu_v=50, min_sample=1e-4)
    records = suites.torch_lookups(cfg, "cpu", log=lambda *a: None, gpu_extras=True)
    names = {r["name"] for r in records}
    assert {"device-to-device copy", "deterministic backward repeats bitwise"} <= names
    copy = next(r for r in records if r["name"] == "device-to-device copy")
    assert copy["bytes"] == 2 * 64 * 3 * 4
    assert next(r for r in records if r["name"] == "deterministic backward repeats bitwise")["equal"] is True
    with pytest.raises(ValueError, match="needs --device cuda"):
        bench.run(suites=("tune",))
