# The README's two commands: `make quickstart` and `make test`. Both create and use the project
# virtual environment .venv (so they work with a distribution's own python3, which refuses
# `pip install` outside one), installing torch==2.13.0 first when the environment has no torch.
# GPU users: create .venv with their CUDA build of torch before, or point VENV at an
# environment that has it (make quickstart VENV=/path/to/env).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup quickstart test test-fast lint wheel-check docs docs-serve

$(PY):
	@$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): on Debian/Ubuntu install python3-venv (apt install python3-venv)"; exit 1; }

setup: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"

quickstart: setup
	$(PY) -m nudiff quickstart --out runs/quickstart --overwrite

# torch-fidelity without its dependencies: the FID tests need only its Inception network, and
# its torchvision would replace the CPU build of torch
test: setup
	$(PY) -m pip install -q --no-deps "torch-fidelity>=0.3"
	$(PY) -m ruff check src tests
	$(PY) -m mkdocs build --strict --quiet --site-dir build/site
	$(PY) -m pytest -q
	bash scripts/check_wheel.sh $(PY)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" -x

lint: setup
	$(PY) -m ruff check src tests

wheel-check: setup
	bash scripts/check_wheel.sh $(PY)

# the documentation site (mkdocs.yml): build it strictly into build/site, or serve it while
# editing at http://127.0.0.1:8000
docs: setup
	$(PY) -m mkdocs build --strict --site-dir build/site

docs-serve: setup
	$(PY) -m mkdocs serve
