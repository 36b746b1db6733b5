# The README's two commands: `make quickstart` and `make test`.
PYTHON ?= python3

.PHONY: setup quickstart test test-fast lint

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[dev]"

quickstart: setup
	$(PYTHON) -m nudiff quickstart --out runs/quickstart --overwrite

test: setup
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow" -x
