"""Execute notebooks in place, storing fresh outputs, the way nbval will re-run them.

    .venv/bin/python scripts/execute_notebooks.py book/02_lookup.ipynb [more.ipynb ...]

Each runs in its own folder with the `python3` kernel; no execution-time metadata is written, so
re-running an unchanged notebook leaves the file unchanged.
"""
import os
import sys

import nbformat
from nbclient import NotebookClient


def main(paths):
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        # coalesce_streams: a progress bar's refreshes are stored as its final state, not one line each
        client = NotebookClient(nb, kernel_name="python3", timeout=900, record_timing=False, coalesce_streams=True,
                                resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
        client.execute()
        nbformat.write(nb, path)
        print("executed", path)


if __name__ == "__main__":
    main(sys.argv[1:] or sorted(os.path.join("book", f) for f in os.listdir("book") if f.endswith(".ipynb")))
