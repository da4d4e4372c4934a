"""scripts/prose_text.py: the glued numbers and citations written as text in the chapters' prose."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import nbformat
import pytest
from myst_nb.core.variables import format_plain_text

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("prose_text", ROOT / "scripts" / "prose_text.py")
pt = importlib.util.module_from_spec(_spec)
sys.modules["prose_text"] = pt
_spec.loader.exec_module(pt)

CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
BIB = {"one2020a": ("One", "2020"), "two2019b": ("Two and Deux", "2019"), "many2018c": ("Many et al.", "2018")}


def glue_output(name, text):
    return nbformat.v4.new_output("display_data", data={pt.GLUE_MIME: text},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}})


def notebook(markdown, glued):
    code = nbformat.v4.new_code_cell("glue(...)")
    code.outputs = [glue_output(name, text) for name, text in glued.items()]
    return nbformat.v4.new_notebook(cells=[code, nbformat.v4.new_markdown_cell(markdown)])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_written_number_and_citation_is_what_the_stored_outputs_give(path):
    nb = nbformat.read(path, as_version=4)
    assert pt.sync(nb, pt.load_bibliography()) == [], "stale text: run scripts/prose_text.py"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_leaves_a_role_that_jupyterlab_shows_raw(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            assert not pt.BARE_ROLE.search(pt.MARKER.sub("", cell.source)), cell.source[:200]
    assert sum(len(pt.MARKER.findall(c.source)) for c in nb.cells if c.cell_type == "markdown") > 0


@pytest.mark.parametrize("text,fmt", [
    ("10000", ","), ("10000", ""), ("10000", "s"), ("0.87312", ".3f"), ("0.87312", ".1%"), ("12.0", ".0f"),
    ("3", "d"), ("1234567.891", ",.1f"), ("'9 January 1995'", "s"), ("9 January 1995", "s"), ("True", "s"),
    ("1e-07", ".1e"), ("-0.0", ".2f"), ("2.5", "g"), ("255", "x"),
])
def test_numbers_are_formatted_exactly_as_myst_nb_formats_glue_text(text, fmt):
    assert pt.format_glued(text, fmt) == format_plain_text(text, fmt)


def test_sync_writes_the_glued_value_and_reports_the_change():
    nb = notebook("RMSE <!--{glue:text}`rmse:.3f`-->0.9<!--/--> on <!--{glue:text}`n:,`-->?<!--/--> ratings.",
                  {"rmse": "0.87312", "n": "100004"})
    changes = pt.sync(nb, BIB)
    assert nb.cells[1].source == ("RMSE <!--{glue:text}`rmse:.3f`-->0.873<!--/--> on "
                                  "<!--{glue:text}`n:,`-->100,004<!--/--> ratings.")
    assert [(old, new) for _, _, old, new in changes] == [("0.9", "0.873"), ("?", "100,004")]
    assert pt.sync(nb, BIB) == []  # a second run changes nothing


def test_sync_writes_author_year_citations_that_link_to_the_references():
    nb = notebook("as <!--{cite:t}`two2019b`-->x<!--/--> found <!--{cite:p}`one2020a,many2018c`-->x<!--/-->.", {})
    pt.sync(nb, BIB)
    assert nb.cells[1].source == (
        "as <!--{cite:t}`two2019b`-->[Two and Deux (2019)](references.md)<!--/--> found "
        "<!--{cite:p}`one2020a,many2018c`-->([One, 2020; Many et al., 2018](references.md))<!--/-->.")


@pytest.mark.parametrize("markdown,glued,message", [
    ("a <!--{glue:text}`missing`-->1<!--/-->", {}, "no stored output glues 'missing'"),
    ("a <!--{glue:text}`x:.3f`-->1<!--/-->", {"x": "'not a number'"}, "cannot format"),
    ("a <!--{glue:text}`x`-->1<!--/-->", {"x": "'a*b*c'"}, "would be read as Markdown"),
    ("a <!--{glue:text}`x`-->1<!--/-->", {"x": "'$5'"}, "would be read as Markdown"),
    ("a <!--{cite:p}`nobody1900`-->1<!--/-->", {}, "not in references.bib: nobody1900"),
    ("a <!--{numref}`fig-a`-->1<!--/-->", {}, "unknown role 'numref'"),
    ("a bare {glue:text}`x` role", {"x": "1"}, "a bare {glue:text}`"),
    ("a bare {cite:p}`one2020a` role", {}, "a bare {cite:p}`"),
    ("text\n<!--{glue:text}`x`-->1<!--/--> more", {"x": "1"}, "a line opens with a marker"),
    ("<!--{glue:text}`x`-->1<!--/--> first", {"x": "1"}, "a line opens with a marker"),
])
def test_sync_refuses_what_it_cannot_render_and_changes_nothing(markdown, glued, message):
    nb = notebook(markdown, glued)
    with pytest.raises(pt.ProseError, match=message.replace("*", r"\*").replace("$", r"\$")):
        pt.sync(nb, BIB)
    assert nb.cells[1].source == markdown


def test_a_value_may_be_one_whole_code_span():
    nb = notebook("adds with <!--{glue:text}`op`-->?<!--/-->.", {"op": "'`atom.add.v4.f32`'"})
    pt.sync(nb, BIB)
    assert nb.cells[1].source == "adds with <!--{glue:text}`op`-->`atom.add.v4.f32`<!--/-->."


def test_the_bibliography_gives_sphinxcontrib_bibtex_author_year_labels():
    bib = pt.load_bibliography()
    assert bib["guo2016entity"] == ("Guo and Berkhahn", "2016")
    assert bib["koren2009matrix"] == ("Koren et al.", "2009")
    assert bib["drepper2007memory"] == ("Drepper", "2007")
    assert bib["schonemann1966generalized"] == ("Schönemann", "1966")  # LaTeX accents decoded
    assert bib["tensorflow2017feature"] == ("TensorFlow Team", "2017")  # an institution, braced


def test_check_mode_fails_on_stale_text_and_leaves_the_file_alone(tmp_path, capsys):
    path = tmp_path / "stale.ipynb"
    nbformat.write(notebook("n = <!--{glue:text}`n`-->41<!--/-->", {"n": "42"}), path)
    before = path.read_text()
    assert pt.main(["--check", str(path)]) == 1
    assert "'41' -> '42'" in capsys.readouterr().out
    assert path.read_text() == before
    assert pt.main([str(path)]) == 0
    assert "-->42<!--/-->" in path.read_text()
    assert pt.main(["--check", str(path)]) == 0
