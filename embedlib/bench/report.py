"""The targets (ratios measured in the same run), the environment, the printed table and the JSON."""
from __future__ import annotations

import datetime
import json
import os
import platform


def environment(device="cpu") -> dict:
    """Where the numbers come from: machine, library versions, date (UTC), and the GPU if any
    (chapter 9 labels its GPU figures with them)."""
    import numpy as np

    import embedlib
    env = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=str(device), python=platform.python_version(), platform=platform.platform(),
        processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
        embedlib=embedlib.__version__, numpy=np.__version__,
    )
    try:
        env["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:  # how busy the machine was: timings on a shared machine depend on it
        env["load_average_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    try:
        import torch
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   cuda_available=torch.cuda.is_available())
        if str(device).startswith("cuda"):
            props = torch.cuda.get_device_properties(device)
            env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                       gpu_memory_gib=round(props.total_memory / 2**30, 1),
                       gpu_capability=f"{props.major}.{props.minor}",
                       deterministic_algorithms=torch.are_deterministic_algorithms_enabled())
    except ImportError:
        pass
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception:  # not installed, or broken: the torch backend falls back to torch operations
        env["triton"] = None
    return env


def _find(results, suite, name, **params):
    for r in results:
        if r.get("suite") == suite and r.get("name") == name and "seconds" in r and all(
                r["params"].get(k) == v for k, v in params.items()):
            return r
    return None


def _ratio(target_id, description, needed, slow, fast, *, note=""):
    if slow is None or fast is None:
        return dict(id=target_id, description=description, needed=needed, ratio=None, passed=None,
                    note="not measured in this run")
    ratio = slow["seconds"] / fast["seconds"]
    return dict(id=target_id, description=description, needed=needed, ratio=ratio, passed=bool(ratio >= needed),
                slow=slow["name"], fast=fast["name"], params=fast["params"], note=note)


def targets(results: list) -> list:
    """The speed targets that this run measured (chapters 3 and 9): each a ratio of two timings
    from this run.

    Speed targets are "how many times faster": the other candidate's time over embedlib's. The
    bandwidth targets are a share: the lookup's GB/s over the device-to-device copy's GB/s.
    """
    out = []
    fwd = [r for r in results if r.get("suite") == "forward" and r.get("device") == "cpu"]
    if any(r["name"] == "embedlib.numpy.lookup" for r in fwd):
        lk = _find(results, "forward", "embedlib.numpy.lookup")
        out.append(_ratio("cpu-lookup-vs-take", "embedlib.numpy.lookup at least as fast as np.take", 1.0,
                          _find(results, "forward", "np.take"), lk))
        out.append(_ratio("cpu-lookup-vs-fancy", "embedlib.numpy.lookup at least 1.5x faster than W[idx]", 1.5,
                          _find(results, "forward", "W[idx]"), lk))
        out.append(_ratio("cpu-backward-vs-add-at",
                          "embedlib.numpy.lookup_backward at least 2x faster than np.add.at (2-D)", 2.0,
                          _find(results, "backward", "np.add.at"),
                          _find(results, "backward", "embedlib.numpy.lookup_backward")))
    out += _cpu_torch_targets(results)
    gpu = [r for r in results if r.get("device", "").startswith("cuda") and "seconds" in r]
    for d in sorted({r["params"]["D"] for r in gpu if r["suite"] == "forward"}):
        copy = _find(gpu, "forward", "device-to-device copy", D=d)
        for name, needed, tid in (("embedlib.torch.lookup", 0.8, "gpu-lookup-bandwidth"),
                                  ("F.embedding", 0.0, "gpu-pytorch-lookup-bandwidth"),
                                  ("embedlib kernel alone", 0.0, "gpu-kernel-bandwidth")):
            r = _find(gpu, "forward", name, D=d)
            if r is None or copy is None:
                continue
            share = r["gbps"] / copy["gbps"]
            passed = bool(share >= needed) if needed else None
            out.append(dict(id=f"{tid}-D{d}", needed=needed, ratio=share, passed=passed,
                            description=f"{name} bandwidth / device-to-device copy bandwidth, D={d}"
                                        + (" (at least 0.8)" if needed else " (for comparison)"),
                            params=r["params"], slow=copy["name"], fast=r["name"], note=""))
        pt = _find(gpu, "backward", "PyTorch backward", D=d)
        if d <= 64:
            out.append(_ratio(f"gpu-backward-D{d}", f"embedlib.torch backward at least 3x faster than PyTorch's, D={d}",
                              3.0, pt, _find(gpu, "backward", "embedlib.torch backward", D=d)))
        out.append(_ratio(f"gpu-deterministic-backward-D{d}",
                          f"embedlib.torch deterministic backward at least as fast as PyTorch's, D={d}", 1.0, pt,
                          _find(gpu, "backward", "embedlib.torch backward (deterministic)", D=d)))
    for r in results:
        if r.get("name") == "deterministic backward repeats bitwise":
            out.append(dict(id=f"gpu-deterministic-bitwise-D{r['params']['D']}", needed=None, ratio=None,
                            passed=r["equal"], description="deterministic backward: the same bits twice",
                            params=r["params"], note=""))
    out += _deferred_check_comparisons(results)
    for mode in ("sum", "mean"):
        mine = _find(gpu, "bags", f"embedlib.torch.embedding_bag ({mode})")
        if mine is not None:
            out.append(_ratio(f"gpu-bag-{mode}", f"embedlib.torch.embedding_bag ({mode}) at least as fast as "
                              "F.embedding_bag", 1.0, _find(gpu, "bags", f"F.embedding_bag ({mode})"), mine))
    return out


#: (target id, suite, PyTorch's candidate, embedlib.torch's candidate, what is compared): on the CPU,
#: every embedlib.torch operation at least 0.8x PyTorch's own speed
CPU_TORCH_PAIRS = [
    ("cpu-torch-lookup", "forward", "F.embedding", "embedlib.torch.lookup", "lookup forward"),
    ("cpu-torch-lookup-backward", "backward", "PyTorch backward", "embedlib.torch backward", "lookup backward"),
    ("cpu-torch-lookup-forward-backward", "backward", "F.embedding forward+backward",
     "embedlib.torch.lookup forward+backward", "lookup forward+backward"),
    ("cpu-torch-embedding-layer", "backward", "nn.Embedding forward+backward",
     "embedlib.torch.Embedding forward+backward", "Embedding layer forward+backward"),
    *[pair for mode in ("sum", "mean", "max") for pair in (
        (f"cpu-torch-bag-{mode}", "bags", f"F.embedding_bag ({mode})", f"embedlib.torch.embedding_bag ({mode})",
         f"embedding_bag {mode} forward"),
        (f"cpu-torch-bag-{mode}-forward-backward", "bags", f"F.embedding_bag ({mode}) forward+backward",
         f"embedlib.torch.embedding_bag ({mode}) forward+backward", f"embedding_bag {mode} forward+backward"))],
    ("cpu-torch-embedding-bag-layer", "bags", "nn.EmbeddingBag forward+backward",
     "embedlib.torch.EmbeddingBag forward+backward", "EmbeddingBag layer forward+backward"),
]
#: the share of PyTorch's speed each of them must reach
CPU_TORCH_NEEDED = 0.8


def _deferred_check_comparisons(results: list) -> list:
    """The deferred bounds check against the immediate one (issue 12): the immediate call's time
    over the deferred call's, on each device measured; for comparison (no target: the immediate check
    is the default, and these ratios are what that choice rests on)."""
    out = []
    for device in sorted({r.get("device") for r in results if "seconds" in r}):
        here = [r for r in results if r.get("device") == device and "seconds" in r]
        pairs = [("forward", "embedlib.torch.lookup", "lookup")] + [
            ("bags", f"embedlib.torch.embedding_bag ({mode})", f"embedding_bag {mode}") for mode in ("sum", "mean", "max")]
        for suite, name, what in pairs:
            for immediate in [r for r in here if r["suite"] == suite and r["name"] == name]:
                deferred = _find(here, suite, name.replace(")", ", deferred check)") if "(" in name
                                 else f"{name} (deferred check)", **immediate["params"])
                if deferred is None:
                    continue
                kind = "gpu" if str(device).startswith("cuda") else "cpu"
                size = f", D={immediate['params']['D']}" if suite == "forward" else ""
                out.append(dict(id=f"{kind}-deferred-check-{what.replace(' ', '-')}{size.replace(', D=', '-D')}",
                                description=f"{what}{size}: deferred bounds check speed / immediate (for comparison)",
                                needed=0.0, ratio=immediate["seconds"] / deferred["seconds"], passed=None,
                                slow=immediate["name"], fast=deferred["name"], params=immediate["params"], note=""))
    return out


def _cpu_torch_targets(results: list) -> list:
    """embedlib.torch against PyTorch on the CPU, where both run PyTorch's CPU kernels: the ratio is
    PyTorch's time over embedlib's (embedlib's speed as a share of PyTorch's), for the pairs measured."""
    cpu = [r for r in results if r.get("device") == "cpu" and "seconds" in r]
    out = []
    for tid, suite, theirs, mine, what in CPU_TORCH_PAIRS:
        r = _find(cpu, suite, mine)
        if r is not None:
            out.append(_ratio(tid, f"embedlib.torch {what} at least {CPU_TORCH_NEEDED:g}x PyTorch's speed on the CPU",
                              CPU_TORCH_NEEDED, _find(cpu, suite, theirs), r))
    return out


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:,.3g} {unit}"
    return f"{seconds * 1e9:,.3g} ns"


def _params(p: dict) -> str:
    return " ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in p.items())


def format_table(report: dict) -> str:
    """The results and the targets as plain-text tables (what ``python -m embedlib.bench`` prints)."""
    lines = []
    env = report["environment"]
    where = env.get("gpu") or env.get("processor")
    lines.append(f"embedlib benchmark, {env['date']}, device {env['device']} ({where}), "
                 f"numpy {env['numpy']}, torch {env.get('torch')}, triton {env.get('triton')}, "
                 f"{env.get('cpus_usable', env.get('cpu_count'))} CPUs, load average {env.get('load_average_1min')}")
    rows = [("suite", "what", "sizes", "time", "GB/s", "spread")]
    for r in report["results"]:
        if "skipped" in r:
            rows.append((r["suite"], r["name"], _params(r["params"]), "skipped", "", ""))
        elif "seconds" in r:
            spread = (max(r["samples"]) - min(r["samples"])) / r["seconds"] if r["seconds"] else 0.0
            rows.append((r["suite"], r["name"], _params(r["params"]), _time(r["seconds"]),
                         f"{r['gbps']:,.1f}" if "gbps" in r else "", f"{spread:.0%}"))
    lines += _columns(rows)
    skipped = [r for r in report["results"] if "skipped" in r]
    for r in skipped:
        lines.append(f"skipped {r['name']} at {_params(r['params'])}: {r['skipped']}")
    lines.append("")
    rows = [("target", "ratio", "needed", "result")]
    for t in report["targets"]:
        ratio = "" if t["ratio"] is None else f"{t['ratio']:.2f}"
        needed = "" if not t.get("needed") else f"{t['needed']:g}"
        result = {True: "PASS", False: "FAIL", None: "-"}[t["passed"]]
        rows.append((t["description"], ratio, needed, result))
    lines += _columns(rows)
    return "\n".join(lines)


def _columns(rows) -> list:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def write_json(report: dict, path) -> None:
    """Save a report from :func:`embedlib.bench.run` (chapter 9 plots the GPU's from such a file)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, sort_keys=False)
        f.write("\n")
