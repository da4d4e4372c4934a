"""Execute notebooks in place, storing fresh outputs, the way nbval will re-run them.

    .venv/bin/python scripts/execute_notebooks.py book/02_lookup.ipynb [more.ipynb ...]
    .venv/bin/python scripts/execute_notebooks.py --only-cells-with check_ book/0*.ipynb

Each runs in its own folder with the `python3` kernel; no execution-time metadata is written, so
re-running an unchanged notebook leaves the file unchanged. With ``--only-cells-with TEXT`` the
whole notebook still runs, but only the cells whose source contains TEXT get the new outputs; the
others keep what is stored (their timings and figures do not churn when, say, only the wording of
the exercise checkers' reports has changed). After each run, the glued numbers written in the prose
are brought up to date with the new outputs (scripts/prose_text.py).
"""
import argparse
import copy
import os

import nbformat
from nbclient import NotebookClient

from prose_text import load_bibliography, sync


def execute(path, only_cells_with=None):
    stored = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(stored)
    # coalesce_streams: a progress bar's refreshes are stored as its final state, not one line each
    client = NotebookClient(nb, kernel_name="python3", timeout=900, record_timing=False, coalesce_streams=True,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    client.execute()
    if only_cells_with is not None:
        for old, new in zip(stored.cells, nb.cells):
            if new.cell_type == "code" and only_cells_with in new.source:
                old.outputs = new.outputs
        nb = stored
    for index, role, old, new in sync(nb, load_bibliography()):
        print(f"{path}: cell {index}: {role}: {old!r} -> {new!r}")
    nbformat.write(nb, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="notebooks (default: every notebook in book/)")
    parser.add_argument("--only-cells-with", metavar="TEXT",
                        help="store new outputs only for the code cells whose source contains TEXT")
    args = parser.parse_args()
    paths = args.paths or sorted(os.path.join("book", f) for f in os.listdir("book") if f.endswith(".ipynb"))
    for path in paths:
        execute(path, args.only_cells_with)
        print("executed", path)


if __name__ == "__main__":
    main()
