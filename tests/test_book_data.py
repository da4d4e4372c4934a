"""The reference measurements in book/data/ that chapters 3 and 9 load: they parse, hold the keys the
chapters read, and are the files whose checksums book/data/README.md records (copied unchanged from
the shared measurements, which CI does not have)."""
import hashlib
import json
import pathlib
import re

import pytest

DATA = pathlib.Path(__file__).resolve().parents[1] / "book" / "data"
ANCHORS = DATA / "2026-11-27-h100-torch-anchors.json"
PROBE = DATA / "2026-11-27-h100-triton-gather-probe.json"
SHAPE = re.compile(r"V(\d+)_D(\d+)_B(\d+)")


def positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_anchors_hold_what_chapters_3_and_9_read():
    anchors = json.loads(ANCHORS.read_text())
    assert positive(anchors["d2d_copy_GBps"])
    for V in (1_000, 10_000, 100_000, 300_000, 1_000_000):  # chapter 3 quotes 300,000 and 1,000,000
        product_s, lookup_s, ratio = anchors[f"onehot_vs_lookup_V{V}"]
        assert positive(product_s) and positive(lookup_s)
        assert ratio == pytest.approx(product_s / lookup_s)
    shapes = {int(m.group(2)): key for key in anchors if (m := SHAPE.fullmatch(key))}
    assert {12, 128} <= set(shapes)  # chapter 9 quotes D = 12 and D = 128
    for key in shapes.values():
        assert all(positive(anchors[key][k]) for k in ("fwd_ms", "fwd_GBps", "index_select_ms", "bwd_ms",
                                                         "index_add_ms", "zeros_ms"))
    assert all(positive(anchors[f"bag_{mode}_ms"]) for mode in ("sum", "mean", "max"))


def test_probe_holds_what_chapter_9_reads():
    probe = json.loads(PROBE.read_text())
    dims = set()
    for key, r in probe.items():
        dims.add(int(SHAPE.fullmatch(key).group(2)))
        assert positive(r["F.embedding_ms"])
        assert [k for k in r if k.startswith("triton_r")] and all(positive(r[k]) for k in r if k.startswith("triton_r"))
    assert {12, 128} <= dims and len(dims) >= 3  # D = 12 and 128 quoted, and at least one D > 12 besides 128


def test_readme_records_the_checksums_of_the_copied_files():
    readme = (DATA / "README.md").read_text()
    for path in (ANCHORS, PROBE):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}` | `{digest}`" in readme, f"{path.name} changed since it was copied (or the README did)"
