"""scripts/check_notebook_outputs.py, the stand-in for nbval on the GPU machine (no Jupyter there)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "check_notebook_outputs.py"


def notebook(path, cells):
    """A notebook of code cells given as (source, stored stdout, stored result text or None)."""
    out = []
    for source, stdout, result in cells:
        outputs = []
        if stdout:
            outputs.append({"output_type": "stream", "name": "stdout", "text": stdout})
        if result is not None:
            outputs.append({"output_type": "execute_result", "execution_count": 1, "metadata": {},
                            "data": {"text/plain": result}})
        out.append({"cell_type": "code", "metadata": {}, "source": source, "outputs": outputs,
                    "execution_count": 1})
    path.write_text(json.dumps({"cells": out, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def run(*paths):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True,
                          timeout=120)


GOOD = [("from myst_nb import glue\nx = 6 * 7\nglue('x', x, display=False)\nprint('x is', x)", "x is 42\n", None),
        ("import time\nprint(f'took {time.perf_counter() % 1 * 1e3:.1f} ms')", "took 12.5 ms\n", None),
        ("x + 1", "", "43"),
        ("x;", "", None)]


def test_matching_outputs_pass_with_timings_masked(tmp_path):
    done = run(notebook(tmp_path / "good.ipynb", GOOD))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "good.ipynb: all cells match" in done.stdout


@pytest.mark.parametrize("cells, expected", [
    ([("print(1 + 1)", "3\n", None)], "code cell 1: printed output differs"),
    ([("print('a')", "a\n", None), ("41", "", "42")], "code cell 2: printed output differs"),
    ([("raise ValueError('boom')", "", None)], "ValueError: boom"),
])
def test_differences_and_errors_fail_and_name_the_cell(tmp_path, cells, expected):
    done = run(notebook(tmp_path / "bad.ipynb", cells))
    assert done.returncode == 1
    assert expected in done.stdout


def test_each_notebook_runs_in_its_own_process(tmp_path):
    first = notebook(tmp_path / "a.ipynb", [("import os\nos.environ['MARK'] = '1'", "", None)])
    second = notebook(tmp_path / "b.ipynb", [("import os\nprint(os.environ.get('MARK'))", "None\n", None)])
    done = run(first, second)
    assert done.returncode == 0, done.stdout + done.stderr


def test_functions_defined_in_a_cell_have_their_source(tmp_path):
    """triton.jit reads the source of the kernels it compiles (inspect.getsource), as does anything that
    prints a cell's function; outside Jupyter that works only if the cell's text is registered."""
    cells = [("import inspect\n\ndef kernel(x):\n    return 2 * x\n\nprint(inspect.getsource(kernel).splitlines()[0])",
              "def kernel(x):\n", None)]
    done = run(notebook(tmp_path / "source.ipynb", cells))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_a_triton_kernel_can_be_defined_in_a_cell(tmp_path):
    """Compiled (not interpreted) Triton refuses a @triton.jit function whose source it cannot find."""
    cells = [("import triton\nimport triton.language as tl\n\n@triton.jit\ndef store_one(x_ptr):\n"
              "    tl.store(x_ptr, 1)\n\nprint(type(store_one).__name__)", "JITFunction\n", None)]
    env_without = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(SCRIPT), str(notebook(tmp_path / "jit.ipynb", cells))],
                          capture_output=True, text=True, timeout=120, env=env_without)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cells_tagged_as_gpu_dependent_run_but_are_compared_only_off_a_gpu(tmp_path):
    path = notebook(tmp_path / "tagged.ipynb", [("print('measured on this GPU')", "no GPU here\n", None),
                                                 ("print('same everywhere')", "same everywhere\n", None)])
    nb = json.loads(path.read_text())
    nb["cells"][0]["metadata"]["tags"] = ["output-depends-on-gpu"]
    path.write_text(json.dumps(nb))
    skipped = subprocess.run([sys.executable, str(SCRIPT), "--gpu-tagged", "skip", str(path)],
                             capture_output=True, text=True, timeout=120)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "code cell 1: ran; output not compared (tagged output-depends-on-gpu)" in skipped.stdout
    compared = subprocess.run([sys.executable, str(SCRIPT), "--gpu-tagged", "compare", str(path)],
                              capture_output=True, text=True, timeout=120)
    assert compared.returncode == 1 and "code cell 1: printed output differs" in compared.stdout
    broken = notebook(tmp_path / "broken.ipynb", [("raise RuntimeError('no kernel')", "", None)])
    nb = json.loads(broken.read_text())
    nb["cells"][0]["metadata"]["tags"] = ["output-depends-on-gpu"]
    broken.write_text(json.dumps(nb))
    failed = subprocess.run([sys.executable, str(SCRIPT), "--gpu-tagged", "skip", str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "RuntimeError: no kernel" in failed.stdout  # a tagged cell must still run
