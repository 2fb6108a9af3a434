"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny demo run once locally per test session: ``(work dir, snakemake args)``.

    Used by tests/test_workflow.py (end to end, no-op rerun) and tests/test_slurm.py (a SLURM run
    must give the same outputs), so the ~2-minute local run happens once.
    """
    from test_workflow import run_tiny

    return run_tiny(tmp_path_factory)
