"""Run a notebook's code cells without Jupyter and compare what they print with the stored outputs.

nbval needs Jupyter; the GPU machine (scripts/gpu_check.sh) has none. This script is a small stand-in
for it there: it runs the code cells of each notebook in order, in one namespace, from the
notebook's folder, captures what each cell prints (and the value of its last expression, as
Jupyter shows it), and compares that with the cell's stored ``stdout`` and ``execute_result``
outputs after the same masking that nbval applies (``tests/nbval_sanitize.cfg``). Figures and glued
values are not compared: ``myst_nb.glue`` is replaced by a no-op, and figures are drawn off screen.

    python scripts/check_notebook_outputs.py book/05_pytorch_gpu.ipynb book/09_fast_gpu_lookup.ipynb

Exit status 0 when every cell ran and printed what is stored, 1 otherwise; the report names each
cell that differs and shows both versions.

A cell tagged ``output-depends-on-gpu`` prints something else on a GPU than what the book stores
from its CPU build (a measurement made live on the GPU, the outcome of a deliberate race): on a
machine with a CUDA GPU it is run but its output is not compared (``--gpu-tagged`` overrides).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import io
import json
import linecache
import os
import pathlib
import re
import subprocess
import sys
import time
import traceback
import types

ROOT = pathlib.Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


def sanitize_patterns(text: str) -> list[tuple[str, str]]:
    """The (regex, replace) pairs of an nbval sanitize file: a `regex: ` line, then `replace: `."""
    pairs, regex = [], None
    for line in text.splitlines():
        if line.startswith("regex: "):
            regex = line[len("regex: "):]
        elif line.startswith("replace:") and regex is not None:
            pairs.append((regex, line[len("replace:"):].removeprefix(" ")))
            regex = None
    return pairs


def sanitize(text: str, pairs) -> str:
    for regex, replace in pairs:
        text = re.sub(regex, replace, text)
    return text


def stored_text(cell) -> str:
    """What the stored outputs printed: stdout streams, then the text of the execute_result."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and out["name"] == "stdout":
            parts.append("".join(out["text"]))
        elif out["output_type"] == "execute_result":
            parts.append("".join(out["data"].get("text/plain", "")) + "\n")
    return "".join(parts)


def run_cell(source: str, namespace: dict, name: str = "<cell>") -> str:
    """Run one cell like Jupyter: a last bare expression is evaluated and its repr shown (unless None
    or the line ends with a semicolon). The source is registered under ``name`` in ``linecache``, as
    IPython does, so that ``inspect.getsource`` finds it: ``triton.jit`` needs the source of the
    functions it compiles, and tracebacks show the cell's lines."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    tree = ast.parse(source, name)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(tree, name, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, name, "eval"), namespace)
            if value is not None:
                print(repr(value))
    return buffer.getvalue()


def _stub_modules() -> None:
    """No Jupyter here: myst_nb.glue becomes a no-op, and figures are drawn off screen and dropped."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Outside a Jupyter kernel myst_nb.glue would print its value; the stand-in records nothing.
    stub = types.ModuleType("myst_nb")
    stub.glue = lambda name, value, display=True: None
    sys.modules["myst_nb"] = stub


GPU_TAG = "output-depends-on-gpu"


def on_a_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def check(path: pathlib.Path, pairs, log, skip_gpu_tagged: bool = False) -> bool:
    nb = json.loads(path.read_text(encoding="utf-8"))
    namespace = {"__name__": "__main__"}
    here = os.getcwd()
    os.chdir(path.parent)
    ok, start = True, time.perf_counter()
    try:
        code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
        for number, cell in enumerate(code_cells, start=1):
            source = "".join(cell["source"])
            try:
                printed = run_cell(source, namespace, f"<{path.name}, code cell {number}>")
            except Exception:
                log(f"{path.name}, code cell {number}: raised\n{traceback.format_exc()}")
                return False
            finally:
                import matplotlib.pyplot as plt
                plt.close("all")
            if skip_gpu_tagged and GPU_TAG in cell.get("metadata", {}).get("tags", []):
                log(f"{path.name}, code cell {number}: ran; output not compared (tagged {GPU_TAG})")
                continue
            want, got = sanitize(stored_text(cell), pairs), sanitize(printed, pairs)
            if want != got:
                ok = False
                diff = "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), "stored", "this run",
                                                      lineterm=""))
                log(f"{path.name}, code cell {number}: printed output differs (after masking)\n{diff}\n")
    finally:
        os.chdir(here)
    log(f"{path.name}: {'all cells match' if ok else 'DIFFERENCES'} ({time.perf_counter() - start:.0f} s)")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=pathlib.Path)
    parser.add_argument("--in-this-process", action="store_true",
                        help="run the (single) notebook here instead of in a child process")
    parser.add_argument("--gpu-tagged", choices=("auto", "compare", "skip"), default="auto",
                        help=f"cells tagged {GPU_TAG}: compare their output, skip the comparison, or "
                             "(auto, the default) skip it only when a CUDA GPU is present")
    args = parser.parse_args(argv)
    if not args.in_this_process:
        # One process per notebook, as Jupyter gives each its own kernel: a notebook may set
        # TRITON_INTERPRET before its first `import triton`, which only works in a fresh process.
        codes = [subprocess.run([sys.executable, __file__, "--in-this-process", "--gpu-tagged", args.gpu_tagged,
                                 str(p)]).returncode
                 for p in args.notebooks]
        return 0 if all(code == 0 for code in codes) else 1
    _stub_modules()
    sys.path.insert(0, str(ROOT))  # embedlib from this checkout, installed or not
    pairs = sanitize_patterns(SANITIZE.read_text(encoding="utf-8"))
    skip = args.gpu_tagged == "skip" or (args.gpu_tagged == "auto" and on_a_gpu())
    ok = all(check(p.resolve(), pairs, lambda text: print(text, flush=True), skip) for p in args.notebooks)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
