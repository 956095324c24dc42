# recon-lightning: every target that needs the virtual environment depends on it, so `make test`
# on a fresh clone installs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KEOPS_CACHE_FOLDER ?= $(CURDIR)/.cache/keops
export HF_HUB_OFFLINE ?= 1
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-full lint format bench gpu-wheels clean

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
	$(PY) benchmarks/partseg_step.py

# Wheels for benchmarks/gpu_session.sh on a CUDA machine with no registry whose Python (3.12, with
# torch, lightning, timm, triton, numba, ...) lacks these: the pure-Python packages our code
# imports, pykdtree built for CPython 3.12, and setuptools for building our own wheel there. The
# versions are this venv's; the sdist-only ones (antlr4 4.9.3, KeOps) are built here into
# pure-Python wheels. wandb is left out (a 20 MB binary wheel needing opentelemetry, pydantic
# and more that the machine lacks): the tests that need it are not part of the session. The folder
# (4-5 MiB) is git-ignored: carry it with the run, which sends at most 64 MiB with the tree.
GPU_WHEELS := gpu-wheels
GPU_WHEEL_NAMES := hydra-core omegaconf hydra-submitit-launcher submitit open_clip_torch ftfy \
	wcwidth pykdtree setuptools
GPU_SDIST_NAMES := antlr4-python3-runtime pykeops keopscore
GPU_WHEELS_MAX_MIB := 40
GPU_PLATFORM := --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
# name==version of each package as the venv has it (names spelled as pip freeze spells them).
gpu_pins = $(foreach n,$(1),$(or $(shell $(PY) -m pip freeze --all 2>/dev/null | grep -i '^$(n)=='),\
	$(error $(n) is not installed in $(VENV))))

gpu-wheels: $(STAMP)
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: $(GPU_PLATFORM) -d $(GPU_WHEELS) \
	    $(call gpu_pins,$(GPU_WHEEL_NAMES))
	$(PY) -m pip wheel -q --no-deps -w $(GPU_WHEELS) $(call gpu_pins,$(GPU_SDIST_NAMES))
	ls -l $(GPU_WHEELS)
	du -sh $(GPU_WHEELS)
	test $$(du -sm $(GPU_WHEELS) | cut -f1) -le $(GPU_WHEELS_MAX_MIB) \
	    || { echo "$(GPU_WHEELS) is over $(GPU_WHEELS_MAX_MIB) MiB"; exit 1; }

clean:
	rm -rf $(VENV) .cache build dist .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
