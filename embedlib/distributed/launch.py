"""Starting a few ranks on this machine from Python, bounded in time (the chapter on sharded tables).

:func:`run_local` runs ``fn(rank, world_size, *args)`` on ``world_size`` worker processes that join
one process group (gloo by default) through a ``file://`` rendezvous in a fresh temporary directory,
so every listener stays on the loopback interface, and returns what each rank returned. It is how
the chapter, the tests and an exercise start their workers; ``torchrun`` is how a real job starts
them (the chapter's MovieLens script).

Workers are forked where the platform allows it: a fork starts in a few hundredths of a second, and
``fn`` may be any function, one defined in a notebook included. Where fork is missing (Windows,
or ``start="spawn"``) the workers are spawned, which takes seconds and needs ``fn`` importable from
a module. Each worker uses one thread (several ranks share a few cores), writes what it prints to a
log of its own, and its result or its error to a file; the parent waits at most ``timeout`` seconds
in all, kills every worker still running, and raises.
"""
from __future__ import annotations

import datetime
import multiprocessing
import os
import sys
import tempfile
import time
import traceback

import torch
import torch.distributed as dist

from embedlib import _checks


class WorkerError(RuntimeError):
    """One or more ranks raised: the message holds each failed rank's error and traceback, and
    ``results`` every rank's outcome (``{"ok": value}`` or ``{"error": name, "message": ..., "traceback": ...}``)."""

    def __init__(self, message: str, results: list):
        super().__init__(message)
        self.results = results


def _worker(rank, world_size, tmp, backend, timeout, fn, args):
    log = open(os.path.join(tmp, f"log{rank}.txt"), "w", buffering=1)  # noqa: SIM115  closed by os._exit
    sys.stdout = sys.stderr = log  # not the parent's streams (a notebook's would wait on its kernel)
    try:
        torch.set_num_threads(1)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
        dist.init_process_group(backend, init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        result = {"ok": fn(rank, world_size, *args)}
    except BaseException as failure:  # noqa: BLE001  reported to the parent
        result = {"error": type(failure).__name__, "message": str(failure), "traceback": traceback.format_exc()}
    try:
        torch.save(result, os.path.join(tmp, f"result{rank}.pt"))
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        log.flush()
        os._exit(0)  # no exit handlers of the parent's (pytest's, Jupyter's) in a forked child


def run_local(fn, world_size: int, *args, timeout: float = 60.0, backend: str = "gloo", start: str | None = None,
              outcomes: bool = False) -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` local processes in one process group (the
    chapter on sharded tables); return each rank's return value, rank 0's first.

    ``timeout``: seconds for the whole run; past it every worker left is killed and ``TimeoutError``
    names the ranks that were still running. If any rank raises, :class:`WorkerError` carries every
    failed rank's traceback (usually one rank's error is the cause, and the others report a closed
    connection). With ``outcomes=True`` nothing is raised for a rank's error: each rank's outcome is
    returned as ``{"ok": value}`` or ``{"error": name, "message": ..., "traceback": ...}``. Values
    travel through ``torch.save``: tensors, NumPy arrays, numbers, strings, lists and dicts of them.
    ``start``: ``"fork"`` (the default where available) or ``"spawn"``."""
    world_size = _checks.positive(world_size, "world_size")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    start = start or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    ctx = multiprocessing.get_context(start)
    with tempfile.TemporaryDirectory(prefix="embedlib-ranks-") as tmp:
        procs = [ctx.Process(target=_worker, args=(r, world_size, tmp, backend, timeout, fn, args), daemon=True)
                 for r in range(world_size)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        if hung:
            raise TimeoutError(f"ranks {hung} of {world_size} still ran after {timeout:g} s: killed")
        results = []
        for r, p in enumerate(procs):
            path = os.path.join(tmp, f"result{r}.pt")
            if not os.path.exists(path):
                log = os.path.join(tmp, f"log{r}.txt")
                printed = open(log).read()[-2000:] if os.path.exists(log) else ""
                results.append({"error": "ProcessDied", "message": f"exit code {p.exitcode}", "traceback": printed})
            else:
                results.append(torch.load(path, weights_only=False))
    if outcomes:
        return results
    failed = [f"rank {r} raised {res['error']}: {res['message']}\n{res['traceback']}"
              for r, res in enumerate(results) if "ok" not in res]
    if failed:
        raise WorkerError("\n".join(failed), results)
    return [res["ok"] for res in results]
