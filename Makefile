# `make book` builds the website into _build/html; `make test` runs every test (library, notebooks, book build).
# Both create .venv on first use and install requirements.txt into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: book test serve env clean

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

book: env
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html  (or run 'make serve')"

serve: book
	$(BIN)/python -m http.server --directory _build/html 8000

test: env
	$(BIN)/python -m pytest

clean:
	rm -rf _build .pytest_cache .hypothesis
