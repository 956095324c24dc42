# recon-lightning: every target that needs the virtual environment depends on it, so `make test`
# on a fresh clone installs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KEOPS_CACHE_FOLDER ?= $(CURDIR)/.cache/keops
export HF_HUB_OFFLINE ?= 1
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-full lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m recon_lightning.cli.demo --output-dir outputs/demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q

test-full: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(PY) -m pip install -c constraints.txt -q -e '.[bench]'
	$(PY) benchmarks/ops.py
	$(PY) benchmarks/pretrain_step.py

clean:
	rm -rf $(VENV) .cache build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
