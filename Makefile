# One entry point for developers and CI. Every target creates .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest run proto proto-check bench-storage bench-service bench-security bench-observability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) proto-check lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that must fail loudly, never pass.
pytest: $(STAMP)
	$(BIN)/pytest || { rc=$$?; [ $$rc -ne 5 ] || echo 'pytest ran no tests: failing' >&2; exit $$rc; }

run: $(STAMP)
	$(BIN)/proglog serve

proto: $(STAMP)
	PYTHON=$(BIN)/python scripts/gen_proto.sh

# Fails when the checked-in generated code differs from what `make proto` makes.
proto-check: $(STAMP)
	PYTHON=$(BIN)/python scripts/check_proto.sh

bench-storage: $(STAMP)
	$(BIN)/python bench/storage.py

bench-service: $(STAMP)
	$(BIN)/python bench/service.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

bench-security: $(STAMP)
	$(BIN)/python bench/security.py

bench-observability: $(STAMP)
	$(BIN)/python bench/observability.py
