# The two commands of the README: `make demo` (run) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transit-gateway demo

serve: $(STAMP)
	$(BIN)/transit-gateway serve

lint: $(STAMP)
	$(BIN)/ruff check gateway feeds tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache  # the import boundaries: [tool.importlinter] in pyproject.toml

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
