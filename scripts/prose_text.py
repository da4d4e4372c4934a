"""The computed numbers and the citations in the chapters' prose, written out as plain text.

A chapter's prose must read the same on the website and in JupyterLab (with jupyterlab-myst), where
MyST-NB's ``{glue:text}`` role and sphinxcontrib-bibtex's ``{cite:p}`` are not available: there the
reader would see ``rmse_test:.3f`` where a number should stand. So each such number or citation is
written into the Markdown as text, between two HTML comments, the first of which holds the role it
stands for:

    an error of <!--{glue:text}`rmse_test:.3f`-->0.873<!--/--> stars, as
    <!--{cite:t}`guo2016entity`-->[Guo and Berkhahn (2016)](references.md)<!--/--> found

Every Markdown renderer hides the comments. This script rewrites the text between them from the
notebook's stored outputs (glued values, formatted the way MyST-NB formats ``{glue:text}``) and from
``book/references.bib`` (author-year citations that link to the references page), so the text never
goes stale: ``scripts/execute_notebooks.py`` runs it after each execution, and the test suite checks
with ``--check`` that every written value is the one the stored outputs give.

    .venv/bin/python scripts/prose_text.py [--check] [book/06_movielens.ipynb ...]
"""
from __future__ import annotations

import argparse
import ast
import functools
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIBFILE = ROOT / "book" / "references.bib"
GLUE_MIME = "application/papermill.record/text/plain"

# <!--{role}`argument`-->text<!--/-->; the text is one line of Markdown without a comment in it.
MARKER = re.compile(r"<!--\{(?P<role>[a-z:]+)\}`(?P<arg>[^`]*)`-->(?P<text>[^\n]*?)<!--/-->")
ROLES = ("glue:text", "cite:p", "cite:t")
# The roles that must not appear bare in a chapter's Markdown: JupyterLab cannot render them.
BARE_ROLE = re.compile(r"(?<!<!--)\{(glue:text|glue|cite|cite:[a-z]+)\}`")
# Characters that would change the meaning of the surrounding Markdown if a value brought them in.
MARKDOWN_SPECIAL = re.compile(r"[`*_\[\]<>$\\|]")


class ProseError(ValueError):
    """A marker that cannot be rendered: unknown role, glue key or citation key, or a bad format."""


def format_glued(text: str, fmt_spec: str) -> str:
    """Format a stored ``text/plain`` glue value exactly as MyST-NB's ``{glue:text}`` role does."""
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if fmt_spec == "":
        return str(value)
    type_char = fmt_spec[-1]
    if type_char == "s":
        value = str(value)
    elif type_char in ("b", "c", "d", "o", "x", "X"):
        value = int(value)
    elif type_char in ("e", "E", "f", "F", "g", "G", "n", "%"):
        value = float(value)
    return format(value, fmt_spec)


def glued_values(nb) -> dict[str, str]:
    """Every value the notebook's stored outputs glue, by name, as stored (``text/plain``)."""
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None and GLUE_MIME in output.get("data", {}):
                values[name] = output["data"][GLUE_MIME]
    return values


def render_glue(arg: str, values: dict[str, str]) -> str:
    key, _, fmt_spec = arg.partition(":")  # MyST-NB splits at the last colon; keys have none
    if ":" in fmt_spec:
        raise ProseError(f"glue key with a colon: {arg!r}")
    if key not in values:
        raise ProseError(f"no stored output glues {key!r}")
    try:
        text = format_glued(values[key], fmt_spec or "s")
    except (TypeError, ValueError) as exc:
        raise ProseError(f"cannot format {key!r} = {values[key]!r} with {fmt_spec!r}: {exc}") from None
    code_span = re.fullmatch(r"`[^`\n]+`", text)  # a value may be one whole code span, nothing more
    if not code_span and MARKDOWN_SPECIAL.search(text) or "\n" in text or "-->" in text:
        raise ProseError(f"glued {key!r} = {text!r} would be read as Markdown, not as text")
    return text


@functools.lru_cache(maxsize=None)
def load_bibliography(path=BIBFILE) -> dict[str, tuple[str, str]]:
    """Each entry's key -> (author label, year), the labels of sphinxcontrib-bibtex's author_year style."""
    from pybtex.database import parse_file
    from pybtex.richtext import Text

    def plain(latex):
        return Text.from_latex(latex).render_as("text")

    entries = {}
    for key, entry in parse_file(str(path)).entries.items():
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [plain(" ".join(person.prelast_names + person.last_names)) for person in people]
        if not names:
            raise ProseError(f"{key}: no author")
        if len(names) == 1:
            label = names[0]
        elif len(names) == 2:
            label = f"{names[0]} and {names[1]}"
        else:
            label = f"{names[0]} et al."
        entries[key] = (label, entry.fields["year"])
    return entries


def render_cite(role: str, arg: str, bibliography: dict[str, tuple[str, str]]) -> str:
    keys = [key.strip() for key in arg.split(",")]
    missing = [key for key in keys if key not in bibliography]
    if missing:
        raise ProseError(f"not in {BIBFILE.name}: {', '.join(missing)}")
    if role == "cite:p":
        inner = "; ".join(f"{bibliography[key][0]}, {bibliography[key][1]}" for key in keys)
        return f"([{inner}](references.md))"
    inner = "; ".join(f"{bibliography[key][0]} ({bibliography[key][1]})" for key in keys)
    return f"[{inner}](references.md)"


def render(role: str, arg: str, values, bibliography) -> str:
    """The text that stands for ``{role}`arg```."""
    if role == "glue:text":
        return render_glue(arg, values)
    if role in ("cite:p", "cite:t"):
        return render_cite(role, arg, bibliography)
    raise ProseError(f"unknown role {role!r} (known: {', '.join(ROLES)})")


def marker(role: str, arg: str, text: str) -> str:
    return f"<!--{{{role}}}`{arg}`-->{text}<!--/-->"


def sync(nb, bibliography) -> list[tuple[int, str, str, str]]:
    """Rewrite every marked text of the notebook's Markdown cells in place.

    Returns (cell index, marker, old text, new text) for each text that changed. Raises ProseError on
    a marker that cannot be rendered, or on a bare glue or cite role (one JupyterLab would show raw).
    """
    values = glued_values(nb)
    changes = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        line_start = re.search(r"(?:^|\n) {0,3}<!--", cell.source)
        if line_start:  # CommonMark reads a line that opens with <!-- as a raw HTML block, not as text
            raise ProseError(f"cell {index}: a line opens with a marker; join it to the line before: "
                             f"{cell.source[line_start.start():line_start.start() + 60]!r}")
        bare = BARE_ROLE.search(MARKER.sub("", cell.source))
        if bare:
            raise ProseError(f"cell {index}: a bare {bare.group(0)}...` role; write it as "
                             f"{marker(bare.group(1), '...', 'text')}")

        def replace(match):
            role, arg, old = match.group("role"), match.group("arg"), match.group("text")
            try:
                new = render(role, arg, values, bibliography)
            except ProseError as exc:
                raise ProseError(f"cell {index}: {match.group(0)[:80]}: {exc}") from None
            if new != old:
                changes.append((index, f"{{{role}}}`{arg}`", old, new))
            return marker(role, arg, new)

        cell.source = MARKER.sub(replace, cell.source)
    return changes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="notebooks (default: every notebook in book/)")
    parser.add_argument("--check", action="store_true", help="change nothing; fail if any text is stale")
    args = parser.parse_args(argv)
    paths = [pathlib.Path(p) for p in args.paths] or sorted((ROOT / "book").glob("*.ipynb"))
    bibliography = load_bibliography()
    failed = False
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        try:
            changes = sync(nb, bibliography)
        except ProseError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        for index, role, old, new in changes:
            print(f"{path}: cell {index}: {role}: {old!r} -> {new!r}")
        if changes and args.check:
            failed = True
        elif changes:
            nbformat.write(nb, path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
