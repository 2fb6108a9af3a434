"""Fixtures shared by several test modules, and the test tiers.

Tiers (markers registered in pyproject.toml): every test is exactly one of ``unit``, ``train`` or
``slow``. A module of one tier sets it with ``pytestmark = pytest.mark.train`` (or ``slow``); in a
module without one, tests are marked one by one; a test with no tier is ``unit``. ``gpu`` tests are
skipped, naming the reason, where torch sees no CUDA device.
"""

from __future__ import annotations

import pytest

TIERS = ("unit", "train", "slow")


def pytest_collection_modifyitems(config, items):
    gpu_reason = None
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} has more than one test tier {sorted(tiers)}: "
                                    f"mark it (or its module) with one of {', '.join(TIERS)}")
        if not tiers:
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("gpu") is not None:
            if gpu_reason is None:
                gpu_reason = _why_no_gpu()
            if gpu_reason:
                item.add_marker(pytest.mark.skip(reason=gpu_reason))


def _why_no_gpu() -> str:
    """'' where torch sees a CUDA device, otherwise the reason gpu tests skip."""
    import torch

    if torch.version.cuda is None:
        return f"needs a CUDA device: torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "needs a CUDA device: torch.cuda.is_available() is False"
    return ""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny demo run once locally per test session: ``(work dir, snakemake args)``.

    Used by tests/test_workflow.py (end to end, no-op rerun) and tests/test_slurm.py (a SLURM run
    must give the same outputs), so the ~2-minute local run happens once.
    """
    from test_workflow import run_tiny

    return run_tiny(tmp_path_factory)
