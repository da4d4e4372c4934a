"""Benchmarks of embedlib: ``python -m embedlib.bench`` (chapters 3 and 9 use them).

One run measures, on the chosen device and in the same process, so that the ratios compare like
with like:

* one-hot matmul against lookup as the vocabulary grows (chapter 3);
* forward lookups: ``W[idx]``, ``np.take``, ``embedlib.numpy.lookup``, ``F.embedding``,
  ``embedlib.torch.lookup``; backward: ``np.add.at``, ``embedlib.numpy.lookup_backward``, PyTorch's
  backward, ``embedlib.torch``'s (atomic and deterministic); bags: ``F.embedding_bag`` against
  embedlib's; on a GPU also a device-to-device copy of the same bytes, the limit to compare with;

and checks the targets, each a ratio of two of these timings. ``run`` returns everything as a dict
(what ``--json`` writes); :func:`measure` and :func:`peak_bytes` are the timing tools underneath.

    python -m embedlib.bench                      # CPU, default sizes, under two minutes
    python -m embedlib.bench --device cuda --json gpu.json
"""
from __future__ import annotations

from embedlib.bench.report import environment, format_table, targets, write_json
from embedlib.bench.suites import SIZES
from embedlib.bench.timing import Timing, measure, peak_bytes

SUITES = ("onehot", "forward", "backward", "bags")
#: Measured only when asked for by name (GPU only): block sizes of the kernels.
EXTRA_SUITES = ("tune",)

__all__ = ["SIZES", "SUITES", "Timing", "environment", "format_table", "measure", "peak_bytes", "run",
           "targets", "write_json"]


def run(device="cpu", sizes="default", suites=SUITES, max_onehot_bytes=None, log=print, partial=None) -> dict:
    """Run the chosen ``suites`` at the preset ``sizes`` ("small", "default", "large") on ``device``
    ("cpu" or "cuda"): ``{"environment", "sizes", "results", "targets"}``.

    The NumPy measurements run on the CPU runs only; the torch ones on ``device``. ``partial``, if
    given, receives the report so far after each suite (the CLI saves it, so that a run cut short
    still leaves its measurements behind).
    """
    from embedlib.bench import suites as s

    if sizes not in SIZES:
        raise ValueError(f"sizes must be one of {tuple(SIZES)}, got {sizes!r}")
    unknown = set(suites) - set(SUITES) - set(EXTRA_SUITES)
    if unknown:
        raise ValueError(f"unknown suites {sorted(unknown)}; choose from {SUITES + EXTRA_SUITES}")
    device = str(device)
    torch = s._torch()
    if device.startswith("cuda") and (torch is None or not torch.cuda.is_available()):
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if "tune" in suites and not device.startswith("cuda"):
        raise ValueError("the tune suite times the Triton kernels: it needs --device cuda")
    cfg = SIZES[sizes]
    results = []
    report = dict(environment=environment(device), sizes=dict(name=sizes, **cfg), results=results, targets=[])

    def done():
        report["targets"] = targets(results)
        if partial is not None:
            partial(report)

    if "onehot" in suites:
        log("one-hot matmul against lookup")
        results += s.onehot_vs_lookup(cfg, device, max_onehot_bytes, log)
        done()
    if "forward" in suites or "backward" in suites:
        log("lookups, forward and backward")
        if not device.startswith("cuda"):
            results += s.numpy_lookups(cfg, log)
            done()
        if torch is not None:
            s.torch_lookups(cfg, device, log, forward="forward" in suites, backward="backward" in suites,
                            sink=lambda records: (results.extend(records), done()))
    if "bags" in suites and torch is not None:
        log("bags")
        results += s.bags(cfg, device, log)
        done()
    if "tune" in suites:
        log("kernel block sizes")
        results += s.tune(cfg, device, log)
        done()
    report["targets"] = targets(results)
    return report
