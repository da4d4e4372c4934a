"""The book builds into a website with no Sphinx warning (a broken reference or citation fails)."""
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def toc_files(node):
    """Every ``file:`` named in _toc.yml, depth first."""
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for key in ("root", "parts", "chapters", "sections"):
            value = node.get(key)
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                for child in value:
                    yield from toc_files(child)


def test_every_chapter_notebook_is_in_the_table_of_contents():
    listed = set(toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text())))
    notebooks = {f"book/{p.stem}" for p in (ROOT / "book").glob("*.ipynb")}
    assert notebooks <= listed, f"not in _toc.yml: {sorted(notebooks - listed)}"


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    jb = shutil.which("jupyter-book", path=str(pathlib.Path(sys.executable).parent))
    assert jb, "jupyter-book is not installed next to this Python"
    result = subprocess.run(
        [jb, "build", str(ROOT), "--path-output", str(tmp_path), "--warningiserror", "--nitpick", "--keep-going"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").is_file()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax must ship with the site (offline)"
    chapters = [f for f in toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
                if (ROOT / f"{f}.ipynb").is_file()]
    assert chapters, "no chapter notebooks in _toc.yml"
    for name in chapters:
        page = (html / f"{name}.html").read_text()
        assert "<img" in page or "<svg" in page, f"{name}: no figure on the page"
        assert "math" in page, f"{name}: no math on the page"
