"""The Snakemake workflow itself: lint, config errors at DAG-build time, and the demo end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_lint_is_clean():
    res = _snakemake("--lint")
    out = res.stdout + res.stderr
    assert "Lints for" not in out, out
    assert res.returncode == 0, out


def test_unset_dataset_root_fails_at_once_naming_the_key():
    res = _snakemake("-n", "results/semaine/report/summary.json")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "datasets.semaine.root" in out, out


def test_config_override_of_root_is_used(tmp_path):
    missing = tmp_path / "no-such-AVEC2016"
    res = _snakemake("-n", "results/recola/report/summary.json", "--config", f"datasets={{recola: {{root: {missing}}}}}")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert str(missing) in out and "datasets.recola.root" in out, out


def test_unknown_dataset_is_named():
    res = _snakemake("-n", "results/nosuchdata/report/summary.json")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "datasets.nosuchdata" in out, out


def test_invalid_config_value_is_named():
    res = _snakemake("-n", "--config", "faces={detector: magic}")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "faces.detector" in out, out
