"""The chapters read well in JupyterLab: opened in a real browser, with jupyterlab-myst rendering them.

JupyterLab runs from this venv on 127.0.0.1 with its own empty settings, and a headless Chromium
(Playwright drives the system's browser: Debian's `chromium` package; no browser is downloaded)
opens every chapter. In each, the rendered Markdown must show no MyST it could not render: no
reference or citation jupyterlab-myst flags as not found, no role left as text, no "%s" of a
numbered reference, while the proofs, exercises and numbers that the website shows are there. A
screenshot of each chapter is kept in _build/jupyterlab/ for a person to look at. Skipped where
Playwright or Chromium is missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from conftest import ROOT

playwright = pytest.importorskip("playwright.sync_api")
BROWSER = os.environ.get("CHROMIUM") or next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no Chromium here (Debian: apt-get install chromium)")]

CHAPTERS = sorted(p.name for p in (ROOT / "book").glob("*.ipynb"))
SHOTS = ROOT / "_build" / "jupyterlab"
# What each chapter must show once rendered (text that only a working MyST renderer produces).
EXPECTED = {
    "02_lookup.ipynb": ["Proposition 1 (A one-hot product is a row lookup)", "Exercise 1"],
    "06_movielens.ipynb": ["the 100,004 ratings that users", "(Harper and Konstan, 2015)"],
    "08_in_practice.ipynb": ["Chapter 6", "Figure 8.1"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving the repository, with fresh settings; its base URL."""
    home = tmp_path_factory.mktemp("jupyterlab")
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab"
    # Render every cell (JupyterLab 4 otherwise renders only those near the viewport), start no kernel,
    # and ask nothing (no news, no kernel dialog).
    for extension, values in {
        "notebook-extension/tracker": {"windowingMode": "none"},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{extension}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_DATA_DIR=str(home / "data"))
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    server = subprocess.Popen(
        [jupyter, "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.root_dir={ROOT}",
         "--IdentityProvider.token=", "--ServerApp.password=", "--LabApp.news_url=", "--allow-root"],
        env=env, stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (home / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser(lab):
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


def rendered_markdown(browser, lab, name):
    """Open book/NAME in a fresh JupyterLab tab; its rendered Markdown (text, HTML), once rendering settles."""
    cells_in_file = sum(cell.cell_type == "markdown"
                        for cell in nbformat.read(ROOT / "book" / name, as_version=4).cells)
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    # ?reset: a fresh workspace, so the chapters opened before this one are not reopened with it
    page.goto(f"{lab}/lab/tree/book/{name}?reset", timeout=120_000)
    cells = page.locator(".jp-MarkdownCell .myst")
    deadline = time.monotonic() + 120
    while cells.count() < cells_in_file:  # JupyterLab renders the cells a few at a time
        assert time.monotonic() < deadline, f"{name}: {cells.count()} of {cells_in_file} Markdown cells rendered"
        time.sleep(0.5)
    previous, stable_since = None, time.monotonic()
    while time.monotonic() - stable_since < 2:  # MathJax and MyST finish asynchronously
        text = "\n".join(cells.all_inner_texts())
        if text != previous:
            previous, stable_since = text, time.monotonic()
        assert time.monotonic() < deadline, f"{name}: the rendered text kept changing"
        time.sleep(0.25)
    return page, previous, "".join(cells.evaluate_all("els => els.map(e => e.innerHTML)"))


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_reads_in_jupyterlab(browser, lab, name):
    page, text, html = rendered_markdown(browser, lab, name)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name.removesuffix('.ipynb')}.png"))
    page.close()
    assert len(text) > 2000, f"{name}: only {len(text)} characters of prose rendered"
    not_found = re.findall(r'title="([^"]*Not Found)"[^>]*>(?:<svg.*?</svg>)?([^<]*)', html)
    assert not not_found, f"{name}: jupyterlab-myst could not resolve {not_found}"
    raw = re.findall(r"\{[a-z]+(?::[a-z]+)?\}`[^`]*`|%s|(?m:^\([\w-]+\)=$)|<!--", text)
    assert not raw, f"{name}: MyST shown as text: {raw[:10]}"
    for expected in EXPECTED.get(name, []):
        assert expected in " ".join(text.split()), f"{name}: {expected!r} is not rendered"
