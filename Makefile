# Two commands do all set-up on a fresh machine:
#   make demo   trains the default MLP on spirals and writes sample.gif
#   make test   runs lint and the test suite (what CI runs)
VENV ?= .venv
PYTHON ?= python3
# PyTorch, installed before the package. Which build this pin gives depends on the index pip
# reads: from the public index (PyPI) on Linux x86-64 it is the CUDA build (several GB with its
# CUDA libraries); TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU-only wheel
# from PyTorch's own index instead (about 200 MB). Empty: pip's configured index.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

# The package alone (what `make demo` needs), then the test tools and every optional output.
$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.core
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/losstrail run --out sample.gif

test: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_default_job.py
	$(PY) benchmarks/bench_surface.py
	$(PY) benchmarks/bench_render.py
	$(PY) benchmarks/bench_hessian.py
	$(PY) benchmarks/bench_compare.py
	$(PY) benchmarks/bench_scale.py

clean:
	rm -rf $(VENV) checkpoints sample.gif
