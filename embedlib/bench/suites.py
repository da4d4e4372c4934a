"""What the benchmark measures: one function per suite, each returning result records.

A record is a dict: ``suite``, ``name`` (what ran), ``device``, ``params`` (sizes), and either the
timing (``seconds``: the median per call, ``samples``, ``number``), the bytes the operation must
move at the least (``bytes``) and the rate ``gbps`` = bytes / seconds / 1e9, or ``skipped``: why not.

"Bytes moved" is the traffic the operation cannot avoid, each byte counted once per read or write:

* lookup: read the indices, read the B selected rows, write the B output rows;
* backward: read the indices and the B gradient rows, write the (V, D) gradient table;
* bag: read the indices (and offsets, per-sample weights), read their rows, write one row per bag;
* device-to-device copy of N bytes: N read + N written, the practical limit of the memory system;
* one-hot matmul: write the (B, V) one-hot, read it and the (V, D) table, write the (B, D) output.
"""
from __future__ import annotations

import numpy as np

from embedlib.bench.timing import measure, peak_bytes

_VOCABS = [1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
#: onehot_*: the one-hot sweep (chapter 3); cpu_*: the CPU targets' lookups; gpu_*: lookups on a GPU, one
#: run per D in gpu_dims; bag_*/bags/bag_size (CPU) and gpu_bags/gpu_bag_size: embedding bags.
SIZES = {
    # a few seconds: the tests and a quick look
    "small": dict(onehot_b=64, onehot_d=12, onehot_v=[100, 1_000, 10_000, 100_000],
                  cpu_v=10_000, cpu_d=64, cpu_b=4_096,
                  gpu_v=10_000, gpu_dims=[12, 64], gpu_b=1 << 14,
                  bag_v=10_000, bag_d=16, bags=256, bag_size=8, gpu_bags=1_024, gpu_bag_size=8,
                  repeats=3, min_sample=1e-3),
    # the targets' shapes; under two minutes on a 2-core CPU
    "default": dict(onehot_b=1_024, onehot_d=12, onehot_v=_VOCABS,
                    cpu_v=1_000_000, cpu_d=64, cpu_b=262_144,
                    gpu_v=1_000_000, gpu_dims=[12, 16, 32, 64, 128], gpu_b=1 << 22,
                    bag_v=1_000_000, bag_d=64, bags=16_384, bag_size=16, gpu_bags=65_536, gpu_bag_size=32,
                    repeats=7, min_sample=None),
    # more indices per call: closer to the bandwidth limit, where fixed costs per call fade
    "large": dict(onehot_b=1_024, onehot_d=12, onehot_v=_VOCABS,
                  cpu_v=1_000_000, cpu_d=64, cpu_b=1 << 20,
                  gpu_v=1_000_000, gpu_dims=[12, 16, 32, 64, 128], gpu_b=1 << 24,
                  bag_v=1_000_000, bag_d=64, bags=65_536, bag_size=32, gpu_bags=262_144, gpu_bag_size=32,
                  repeats=9, min_sample=None),
}


def _record(suite, name, device, params, timing=None, moved=None, **extra):
    rec = dict(suite=suite, name=name, device=str(device), params=params)
    if timing is not None:
        rec.update(seconds=timing.median, samples=list(timing.samples), number=timing.number)
        if moved is not None:
            rec.update(bytes=int(moved), gbps=moved / timing.median / 1e9)
    rec.update(extra)
    return rec


def _time(candidates, cfg, device, budget):
    return measure(candidates, device=device, repeats=cfg["repeats"], min_sample=cfg["min_sample"], budget=budget)


def _cuda(device) -> bool:
    return str(device).startswith("cuda")


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def available_bytes(device) -> int:
    """Memory free for new arrays on ``device`` now (host RAM, or the GPU's free memory)."""
    if _cuda(device):
        import torch
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil is optional: fall back to the library's guard alone
        import os
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


# --------------------------------------------------------------------------------------------------
def onehot_vs_lookup(cfg, device="cpu", max_onehot_bytes=None, log=print, backend=None):
    """Chapter 3: one-hot matmul against lookup as V grows (B and D fixed), time and peak memory.

    Sizes whose one-hot would exceed ``max_onehot_bytes`` (default: the library's guard,
    ``DEFAULT_MAX_BYTES``, or a quarter of the free memory if that is less) are skipped, and the
    record says why; the guard itself raises before allocating, which the record also shows.
    ``backend`` is "numpy" or "torch"; by default torch on a GPU and NumPy on the CPU.
    """
    from embedlib import _checks
    b, d = cfg["onehot_b"], cfg["onehot_d"]
    limit = min(_checks.DEFAULT_MAX_BYTES, available_bytes(device) // 4) if max_onehot_bytes is None \
        else max_onehot_bytes
    backend = backend or ("torch" if _cuda(device) else "numpy")
    if backend == "torch":
        import torch

        from embedlib import torch as el
        gen = torch.Generator(device="cpu").manual_seed(0)

        def make(v):
            w = torch.randn(v, d, generator=gen).to(device)
            idx = torch.randint(0, v, (b,), generator=gen).to(device)
            return idx, w
    else:
        from embedlib import numpy as el
        rng = np.random.default_rng(0)

        def make(v):
            return rng.integers(0, v, size=b), rng.standard_normal((v, d), dtype=np.float32)
    out = []
    for v in cfg["onehot_v"]:
        params = dict(B=b, D=d, V=v)
        idx, w = make(v)
        need = b * v * 4
        look = lambda: el.lookup(idx, w)  # noqa: E731
        if need > limit:
            try:  # the guard refuses before allocating; keep its words
                el.onehot_matmul(idx, w, max_bytes=limit)
                reason = "the guard did not refuse"
            except ValueError as err:
                reason = str(err)
            t = _time({"lookup": look}, cfg, device, 2.0)
            out.append(_record("onehot", "onehot_matmul", device, params, skipped=reason, onehot_bytes=need,
                               backend=backend))
        else:
            mat = lambda: el.onehot_matmul(idx, w, max_bytes=limit)  # noqa: E731
            t = _time({"onehot_matmul": mat, "lookup": look}, cfg, device, 4.0)
            moved = 2 * need + v * d * 4 + b * d * 4
            out.append(_record("onehot", "onehot_matmul", device, params, t["onehot_matmul"], moved,
                               peak_bytes=peak_bytes(mat, device, repeats=1),  # megabytes: one call is enough
                               onehot_bytes=need, backend=backend))
        out.append(_record("onehot", "lookup", device, params, t["lookup"], b * 8 + 2 * b * d * 4,
                           peak_bytes=peak_bytes(look, device), backend=backend))
        log(f"  one-hot vs lookup, V={v:,}: done")
    return out


# --------------------------------------------------------------------------------------------------
def numpy_lookups(cfg, log=print):
    """The CPU targets' shapes: gathers and scatter-adds in NumPy and embedlib.numpy."""
    from embedlib import numpy as el
    v, d, b = cfg["cpu_v"], cfg["cpu_d"], cfg["cpu_b"]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((v, d), dtype=np.float32)
    idx = rng.integers(0, v, size=b)
    g = rng.standard_normal((b, d), dtype=np.float32)
    params = dict(V=v, D=d, B=b)
    fwd = {
        "W[idx]": lambda: w[idx],
        "np.take": lambda: np.take(w, idx, axis=0),
        "embedlib.numpy.lookup": lambda: el.lookup(idx, w),
    }
    # The targets compare these three within a few per cent: more repeats steady their medians.
    t = _time(fwd, dict(cfg, repeats=2 * cfg["repeats"] + 1), "cpu", 15.0)
    moved = b * 8 + 2 * b * d * 4
    out = [_record("forward", name, "cpu", params, t[name], moved) for name in fwd]
    log("  numpy forward: done")

    def add_at_2d():
        dense = np.zeros((v, d), dtype=np.float32)
        np.add.at(dense, idx, g)
        return dense

    def add_at_flat():
        dense = np.zeros((v, d), dtype=np.float32)
        np.add.at(dense.reshape(-1), (idx[:, None] * d + np.arange(d)).reshape(-1), g.reshape(-1))
        return dense

    bwd = {"np.add.at": add_at_2d, "np.add.at (flattened)": add_at_flat,
           "embedlib.numpy.lookup_backward": lambda: el.lookup_backward(idx, g, v)}
    t = _time(bwd, cfg, "cpu", 25.0)
    moved = b * 8 + b * d * 4 + v * d * 4
    out += [_record("backward", name, "cpu", params, t[name], moved) for name in bwd]
    log("  numpy backward: done")
    return out


# --------------------------------------------------------------------------------------------------
def torch_lookups(cfg, device="cpu", log=print, gpu_extras=None, forward=True, backward=True, sink=None):
    """Forward and backward in torch: F.embedding and its autograd backward against embedlib.torch
    (on the CPU also forward and backward together, the functions and the layers against PyTorch's;
    on CUDA: the Triton kernels, atomic and deterministic backward, the kernel alone without the
    range check, and a device-to-device copy of the same bytes). ``gpu_extras`` (default: on CUDA)
    adds the copy and the bitwise check elsewhere too, so the tests can run that code on a CPU.
    ``sink``, if given, receives the records of each D as soon as they are measured."""
    import torch

    out = []
    extras = _cuda(device) if gpu_extras is None else gpu_extras
    v = cfg["gpu_v"] if _cuda(device) else cfg["cpu_v"]
    b = cfg["gpu_b"] if _cuda(device) else cfg["cpu_b"]
    dims = cfg["gpu_dims"] if extras else [cfg["cpu_d"]]
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, v, (b,), generator=gen).to(device)
    for d in dims:
        params = dict(V=v, D=d, B=b)
        w = torch.randn(v, d, generator=gen).to(device)
        records = _torch_forward(cfg, device, extras, idx, w, params) if forward else []
        if backward:
            records += _torch_backward(cfg, device, extras, idx, w, params, gen)
            if not _cuda(device):
                records += _torch_train(cfg, device, idx, w, params, gen)
        out += records
        if sink is not None:
            sink(records)
        log(f"  torch lookups, D={d}: done")
        del w
        if _cuda(device):
            torch.cuda.empty_cache()
    return out


def _torch_forward(cfg, device, extras, idx, w, params):
    import torch
    import torch.nn.functional as F

    from embedlib import torch as el
    from embedlib.torch import _triton
    b, d = idx.numel(), w.shape[1]
    fwd = {"F.embedding": lambda: F.embedding(idx, w), "embedlib.torch.lookup": lambda: el.lookup(idx, w),
           "embedlib.torch.lookup (deferred check)": lambda: el.lookup(idx, w, bounds_check="deferred")}
    if extras:
        if _triton.enabled(w):
            fwd["embedlib kernel alone"] = lambda: _triton.gather(idx, w)  # no range check, no host sync
        src = torch.empty(b, d, device=device)
        dst = torch.empty_like(src)
        fwd["device-to-device copy"] = lambda: dst.copy_(src)
    t = _time(fwd, cfg, device, 10.0)
    moved = b * idx.element_size() + 2 * b * d * 4
    return [_record("forward", name, device, params, t[name],
                    2 * b * d * 4 if name == "device-to-device copy" else moved) for name in fwd]


def _torch_backward(cfg, device, extras, idx, w, params, gen):
    import torch
    import torch.nn.functional as F

    from embedlib import torch as el
    (v, d), b = w.shape, idx.numel()
    g = torch.randn(b, d, generator=gen).to(device)
    w_ref = w.clone().requires_grad_()
    w_el = w.clone().requires_grad_()
    out_ref = F.embedding(idx, w_ref)
    out_atomic = el.lookup(idx, w_el, deterministic=False)
    out_det = el.lookup(idx, w_el, deterministic=True)
    bwd = {
        "PyTorch backward": lambda: torch.autograd.grad(out_ref, w_ref, g, retain_graph=True),
        "embedlib.torch backward": lambda: torch.autograd.grad(out_atomic, w_el, g, retain_graph=True),
        "embedlib.torch backward (deterministic)": lambda: torch.autograd.grad(out_det, w_el, g, retain_graph=True),
    }
    t = _time(bwd, cfg, device, 15.0)
    moved = b * idx.element_size() + b * d * 4 + v * d * 4
    out = [_record("backward", name, device, params, t[name], moved) for name in bwd]
    if extras:
        first = torch.autograd.grad(out_det, w_el, g, retain_graph=True)[0]
        again = torch.autograd.grad(out_det, w_el, g, retain_graph=True)[0]
        out.append(dict(suite="backward", name="deterministic backward repeats bitwise", device=str(device),
                        params=params, equal=bool(torch.equal(first, again))))
    return out


def _torch_train(cfg, device, idx, w, params, gen):
    """Forward and backward together, as a training step runs them: the lookup function and the
    Embedding layer, each against PyTorch's own (F.embedding, nn.Embedding). Each call returns the
    dense (V, D) gradient of the table."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from embedlib import torch as el
    g = torch.randn(idx.numel(), w.shape[1], generator=gen).to(device)
    ref = nn.Embedding.from_pretrained(w.clone(), freeze=False)
    mine = el.Embedding.from_weight(w)

    def step(forward, table):
        return lambda: torch.autograd.grad(forward(idx, table), table, g)
    cands = {
        "F.embedding forward+backward": step(F.embedding, ref.weight),
        "embedlib.torch.lookup forward+backward": step(el.lookup, mine.weight),
        "nn.Embedding forward+backward": lambda: torch.autograd.grad(ref(idx), ref.weight, g),
        "embedlib.torch.Embedding forward+backward": lambda: torch.autograd.grad(mine(idx), mine.weight, g),
    }
    t = _time(cands, cfg, device, 15.0)
    return [_record("backward", name, device, params, t[name]) for name in cands]


# --------------------------------------------------------------------------------------------------
def bags(cfg, device="cpu", log=print):
    """F.embedding_bag against embedlib's bags (sum and mean, and max on the CPU; forward, and forward
    + backward); on the CPU also the EmbeddingBag layer against nn.EmbeddingBag (forward + backward)."""
    import torch
    import torch.nn.functional as F

    from embedlib import torch as el
    v, d = cfg["bag_v"], cfg["bag_d"]
    n_bags, size = (cfg["gpu_bags"], cfg["gpu_bag_size"]) if _cuda(device) else (cfg["bags"], cfg["bag_size"])
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, v, (n_bags * size,), generator=gen).to(device)
    offsets = torch.arange(0, n_bags * size, size).to(device)
    w = torch.randn(v, d, generator=gen).to(device)
    params = dict(V=v, D=d, bags=n_bags, bag_size=size)
    moved = idx.numel() * 8 + offsets.numel() * 8 + idx.numel() * d * 4 + n_bags * d * 4
    out = []
    for mode in ("sum", "mean") if _cuda(device) else ("sum", "mean", "max"):
        cands = {
            f"F.embedding_bag ({mode})": lambda: F.embedding_bag(idx, w, offsets, mode=mode),
            f"embedlib.torch.embedding_bag ({mode})": lambda: el.embedding_bag(idx, w, offsets, mode=mode),
            f"embedlib.torch.embedding_bag ({mode}, deferred check)":
                lambda: el.embedding_bag(idx, w, offsets, mode=mode, bounds_check="deferred"),
        }
        if not _cuda(device):
            from embedlib import numpy as eln
            idx_np, off_np, w_np = idx.numpy(), offsets.numpy(), w.numpy()
            cands[f"embedlib.numpy.embedding_bag ({mode})"] = lambda: eln.embedding_bag(idx_np, w_np, off_np,
                                                                                         mode=mode)
        t = _time(cands, cfg, device, 8.0)
        out += [_record("bags", name, device, dict(params, mode=mode), t[name], moved) for name in cands]
        wr = w.clone().requires_grad_()
        g = torch.randn(n_bags, d, generator=gen).to(device)
        train = {
            f"F.embedding_bag ({mode}) forward+backward":
                lambda: torch.autograd.grad(F.embedding_bag(idx, wr, offsets, mode=mode), wr, g),
            f"embedlib.torch.embedding_bag ({mode}) forward+backward":
                lambda: torch.autograd.grad(el.embedding_bag(idx, wr, offsets, mode=mode), wr, g),
        }
        t = _time(train, cfg, device, 8.0)
        out += [_record("bags", name, device, dict(params, mode=mode), t[name]) for name in train]
        log(f"  bags, mode={mode}: done")
    if not _cuda(device):
        from torch import nn
        g = torch.randn(n_bags, d, generator=gen).to(device)
        ref = nn.EmbeddingBag.from_pretrained(w.clone(), freeze=False, mode="mean")
        mine = el.EmbeddingBag.from_weight(w, mode="mean")
        layers = {
            "nn.EmbeddingBag forward+backward": lambda: torch.autograd.grad(ref(idx, offsets), ref.weight, g),
            "embedlib.torch.EmbeddingBag forward+backward":
                lambda: torch.autograd.grad(mine(idx, offsets), mine.weight, g),
        }
        t = _time(layers, cfg, device, 8.0)
        out += [_record("bags", name, device, dict(params, mode="mean"), t[name]) for name in layers]
        log("  bag layers: done")
    return out


# --------------------------------------------------------------------------------------------------
def tune(cfg, device="cuda", log=print):
    """Block sizes for the gather, the atomic scatter-add and the bag kernels: the time of each
    ``(elements per program, warps)`` for a few D (chapter 9's tuning table). Not in the default run."""
    import torch
    import triton

    from embedlib.torch._triton import kernels as k
    v, b = cfg["gpu_v"], cfg["gpu_b"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, v, (b,), generator=gen).to(device)
    out = []
    for d in (12, 64, 128):
        w = torch.randn(v, d, generator=gen).to(device)
        g = torch.randn(b, d, generator=gen).to(device)
        res = torch.empty(b, d, device=device)
        acc = torch.zeros(v, d, device=device)
        bd = k.block_d(d)
        a = k.align(d, 4, d)
        cands = {}
        for elements in (2048, 4096, 8192, 16384):
            bn = k.block_n(bd, elements)
            for warps in (4, 8):
                grid = (triton.cdiv(b, bn), triton.cdiv(d, bd))
                cands[("gather", elements, warps)] = (
                    lambda grid=grid, bn=bn, warps=warps: k._gather_kernel[grid](
                        idx, w, res, b, w.stride(0), w.stride(1), D=d, ALIGN=a, OUT_ALIGN=a, BLOCK_N=bn,
                        BLOCK_D=bd, num_warps=warps))
                cands[("scatter_add", elements, warps)] = (
                    lambda grid=grid, bn=bn, warps=warps: k._scatter_add_kernel[grid](
                        idx, g, acc, b, g.stride(0), g.stride(1), -1, D=d, ALIGN=a, OUT_ALIGN=a, BLOCK_N=bn,
                        BLOCK_D=bd, num_warps=warps))
        t = _time(cands, cfg, device, 10.0)
        for (kernel, elements, warps), timing in t.items():
            moved = b * 8 + (2 * b * d * 4 if kernel == "gather" else b * d * 4 + v * d * 4)
            out.append(_record("tune", kernel, device, dict(V=v, D=d, B=b, elements=elements, warps=warps,
                                                            default=elements == k.ELEMENTS_PER_PROGRAM and
                                                            warps == k.warps(k.block_n(bd), bd)), timing, moved))
        log(f"  tuning, D={d}: done")
        del w, g, res, acc

    # the bag kernel (mode "sum") at the bag benchmark's sizes
    import triton.language as tl
    d, n_bags, size = cfg["bag_d"], cfg["gpu_bags"], cfg["gpu_bag_size"]
    w = torch.randn(cfg["bag_v"], d, generator=gen).to(device)
    flat = torch.randint(0, cfg["bag_v"], (n_bags * size,), generator=gen).to(device)
    bounds = torch.arange(0, n_bags * size + 1, size, device=device)
    res = torch.empty(n_bags, d, device=device)
    bd = k.block_d(d)
    a = k.align(d, 4, d)
    cands = {}
    for elements in (1024, 2048, 4096):
        bb = k.block_n(bd, elements)
        for warps in (2, 4, 8):
            grid = (triton.cdiv(n_bags, bb), triton.cdiv(d, bd))
            cands[("bag_forward", elements, warps)] = (
                lambda grid=grid, bb=bb, warps=warps: k._bag_forward_kernel[grid](
                    flat, w, bounds, bounds, res, bounds, bounds, n_bags, w.stride(0), w.stride(1), -1, D=d, ALIGN=a,
                    OUT_ALIGN=a, MODE=0, HAS_PSW=False, SAVE_ARGMAX=False, ACC=tl.float32, BLOCK_B=bb, BLOCK_D=bd,
                    num_warps=warps))
    t = _time(cands, cfg, device, 10.0)
    moved = flat.numel() * 8 + bounds.numel() * 8 + flat.numel() * d * 4 + n_bags * d * 4
    for (kernel, elements, warps), timing in t.items():
        default = elements == 2048 and warps == k.warps(k.block_n(bd, 2048), bd)
        out.append(_record("tune", kernel, device, dict(V=cfg["bag_v"], D=d, bags=n_bags, bag_size=size,
                                                        elements=elements, warps=warps, default=default),
                           timing, moved))
    log("  tuning, bags: done")
    return out
