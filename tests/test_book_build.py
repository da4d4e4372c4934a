"""The book builds into a website with no Sphinx warning (a broken reference or citation fails).

The cross-references must also read in JupyterLab, where jupyterlab-myst sees one notebook at a
time: a reference to another chapter, or to a figure (whose label and caption live in the code
cell's metadata, which only MyST-NB reads), must carry its text, as in {ref}`Figure 8.1 <fig-x>`,
and that text must be the number the website gives the target.
"""
import pathlib
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROLE = re.compile(r"\{(ref|numref|prf:ref|eq|doc)\}`([^`]*)`")
NUMBERED_TEXT = re.compile(r"^(Chapter|chapter|Figure|Proposition|Corollary) ([0-9]+(?:\.[0-9]+)?)$")


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
        assert "](references.md)" not in page, f"{name}: a citation left as raw Markdown"
        prose = re.sub(r"<!--.*?-->|<pre>.*?</pre>", "", page, flags=re.S)  # not comments, not code
        assert "{glue:" not in prose, f"{name}: a glue role left as text"
    assert check_written_numbers(html) > 80


def chapters_in_order():
    """The numbered chapters' notebooks, in the order (and so with the numbers) the website gives them."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [ROOT / f"{chapter['file']}.ipynb" for part in toc["parts"] if part.get("numbered")
            for chapter in part["chapters"]]


def targets():
    """Every label a chapter defines -> (notebook, seen by jupyterlab-myst: False for figure metadata)."""
    found = {}
    for path in chapters_in_order():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                for label in re.findall(r"^\((\S+)\)=|:(?:label|name): *(\S+)|\$\$ *\((\S+)\)", cell.source, re.M):
                    found["".join(label)] = (path, True)
            figure = cell.metadata.get("mystnb", {}).get("figure", {})
            if "name" in figure:
                found[figure["name"]] = (path, False)
    return found


def references():
    """(notebook, role, text or None, label) for every cross-reference in the chapters' Markdown."""
    for path in chapters_in_order():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                for role, arg in ROLE.findall(cell.source):
                    explicit = re.fullmatch(r"(.*\S)\s*<(\S+)>", arg, re.S)
                    text, label = (" ".join(explicit.group(1).split()), explicit.group(2)) if explicit else (None, arg)
                    yield path, role, text, label


def test_every_reference_reads_in_jupyterlab():
    """Each reference jupyterlab-myst cannot resolve (another notebook, figure metadata) has its text."""
    defined, unreadable = targets(), []
    for path, role, text, label in references():
        if role == "doc" or label not in defined:
            continue  # {doc} shows its text or the page name; unknown labels fail the build instead
        where, visible = defined[label]
        if (where != path or not visible) and (text is None or "%s" in text):
            unreadable.append(f"{path.name}: {{{role}}}`{label}`")
    assert not unreadable, "give these references their text, e.g. {ref}`Chapter 2 <ch-lookup>`:\n" + \
        "\n".join(unreadable)


def test_chapter_numbers_written_in_references_follow_the_table_of_contents():
    order = chapters_in_order()
    chapter_labels = {}
    for number, path in enumerate(order, start=1):
        first = nbformat.read(path, as_version=4).cells[0].source
        match = re.match(r"\((\S+)\)=", first)
        assert match, f"{path.name} does not open with a (label)= target"
        chapter_labels[match.group(1)] = number
    checked = 0
    for path, role, text, label in references():
        numbered = NUMBERED_TEXT.match(text or "")
        if numbered and numbered.group(1).lower() == "chapter":
            assert label in chapter_labels, f"{path.name}: '{text}' points at {label}, not at a chapter"
            assert int(numbered.group(2)) == chapter_labels[label], f"{path.name}: '{text}' is {label}"
            checked += 1
    assert checked > 50


def website_numbers(html):
    """label -> the number the website prints for it: 'Figure 3.1', 'Proposition 2.1', 'Chapter 6'."""
    numbers = {}
    for page in html.glob("book/*.html"):
        text = page.read_text()
        chapter = re.search(r'<h1><span class="section-number">([0-9]+)\. </span>', text)
        for match in re.finditer(r'id="([^"]+)"', text):
            after = text[match.end():match.end() + 3000]
            caption = re.match(r'[^<]*(?:<[^>]*>\s*){0,12}?[^<]*?<span class="caption-number">'
                               r'(Fig\.|Proposition|Corollary) ([0-9.]+) ', after)
            if caption:
                kind = "Figure" if caption.group(1) == "Fig." else caption.group(1)
                numbers.setdefault(match.group(1), f"{kind} {caption.group(2)}")
        first = re.search(r'<span id="([^"]+)"></span><h1>', text)
        if chapter and first:
            numbers[first.group(1)] = f"Chapter {chapter.group(1)}"
    return numbers


def check_written_numbers(html):
    """Each 'Figure 8.1'-style reference text is the number the built website gives its target."""
    numbers, wrong, checked = website_numbers(html), [], 0
    for path, role, text, label in references():
        numbered = NUMBERED_TEXT.match(text or "")
        if numbered:
            written = f"{numbered.group(1).capitalize()} {numbered.group(2)}"
            if numbers.get(label) != written:
                wrong.append(f"{path.name}: '{text}' for {label}, the website numbers it {numbers.get(label)}")
            checked += 1
    assert not wrong, "\n".join(wrong)
    return checked
