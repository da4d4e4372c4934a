"""The book builds into a website with no Sphinx warning (a broken reference or citation fails)."""
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
    chapters = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    assert chapters, "no chapter notebooks found"
    for stem in chapters:
        page = (html / "book" / f"{stem}.html").read_text()
        assert "<img" in page or "<svg" in page, f"{stem}: no figure on the page"
        assert "math" in page, f"{stem}: no math on the page"
