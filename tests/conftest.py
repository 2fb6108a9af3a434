"""Fixtures shared by several test modules, and the test tiers.

Tiers (markers registered in pyproject.toml): every test is exactly one of ``unit``, ``train`` or
``slow``. A module of one tier sets it with ``pytestmark = pytest.mark.train`` (or ``slow``); in a
module without one, tests are marked one by one; a test with no tier is ``unit``. ``gpu`` tests are
skipped, naming the reason, where torch sees no CUDA device.
"""

from __future__ import annotations

import pytest

TIERS = ("unit", "train", "slow")


#: fixtures whose work runs in the background once the tiny demo run has ended (the session fixtures
#: below: the cross-dataset and the killed-and-resumed runs at once, then the real-layout runs, then
#: the bad-input run); the tests using them run last, in this order, so that the other tests run meanwhile
BACKGROUND_RESULTS = ("cross_run", "resumed_run", "layout_runs", "bad_run")


def _background_rank(item) -> int:
    names = getattr(item, "fixturenames", ())
    return next((1 + i for i, name in enumerate(BACKGROUND_RESULTS) if name in names), 0)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_background_rank)  # stable: every other test keeps its place
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


@pytest.fixture(scope="session", autouse=True)
def _tiny_run_started(request, tmp_path_factory):
    """Starts the tiny demo run (fixture `tiny_run`) with the session, in the background, when a
    selected test needs it: most tests are single-threaded, so on 2 cores the run takes the other
    core instead of minutes of the session's time. Stopped if the session ends before it does.
    (The SLURM run, below, compares with it only at the end, so they may run at the same time.)"""
    if not any("tiny_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    from test_workflow import start_tiny

    work, args, run = start_tiny(tmp_path_factory)
    yield work, args, run
    run.stop()


@pytest.fixture(scope="session", autouse=True)
def _slurm_run_started(request, tmp_path_factory):
    """Likewise the SLURM run of tests/test_slurm.py (fixture `slurm_run`) and the local cluster it
    needs: started with the session when a selected test needs it, stopped at its end."""
    if not any("slurm_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    from test_slurm import start_slurm_run

    started = start_slurm_run(tmp_path_factory)
    yield started
    started.stop()


def _ended(started, runs) -> bool:
    """Whether the background work `started` (a Deferred, or None if not needed) has started and its
    commands (``runs(value)``: BackgroundRuns) have ended."""
    if started is None:
        return True
    if not started.done():
        return False
    return all(run.proc.poll() is not None for run in runs(started.peek()))


def _layout_commands(runs) -> list:
    return [run for _, _, run in (runs or {}).values()]


def _bad_commands(started) -> list:
    return [started[2]] if started else []


_cross_commands = _bad_commands  # (copy, command, BackgroundRun)


@pytest.fixture(scope="session", autouse=True)
def _cross_run_started(request, tmp_path_factory, _tiny_run_started):
    """Likewise the run of tests/test_cross_dataset.py on a copy of the tiny demo run (fixture
    `cross_run`), once the tiny demo run has ended: until then that run and the tests keep both cores
    busy; afterwards most tests use one core, and the runs started this way take the other."""
    if not any("cross_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    from support.background import Deferred
    from test_cross_dataset import start_cross_run

    work, _, tiny = _tiny_run_started
    started = Deferred(lambda: start_cross_run(tmp_path_factory, work), ready=lambda: tiny.proc.poll() is not None,
                       on_stop=lambda value: [run.stop() for run in _cross_commands(value)])
    yield started
    started.stop()


@pytest.fixture(scope="session", autouse=True)
def _layout_runs_started(request, tmp_path_factory, _tiny_run_started, _cross_run_started):
    """Likewise the real-layout runs of tests/test_real_layouts.py (fixture `layout_runs`), once the
    tiny demo run and the cross-dataset run have ended (at once without them)."""
    if not any("layout_runs" in item.fixturenames for item in request.session.items):
        yield None
        return
    from support.background import Deferred
    from test_real_layouts import start_layouts

    tiny = _tiny_run_started[2] if _tiny_run_started else None

    def ready() -> bool:
        return (tiny is None or tiny.proc.poll() is not None) and _ended(_cross_run_started, _cross_commands)

    started = Deferred(lambda: start_layouts(tmp_path_factory), ready=ready,
                       on_stop=lambda runs: [run.stop() for run in _layout_commands(runs)])
    yield started
    started.stop()


@pytest.fixture(scope="session", autouse=True)
def _bad_run_started(request, tmp_path_factory, _tiny_run_started, _layout_runs_started):
    """Likewise the bad-input run of tests/test_bad_input.py (fixture `bad_run`), once the tiny demo
    run and the real-layout runs have ended (it has many jobs that can run side by side: it keeps both
    cores busy at the end of the session)."""
    if not any("bad_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    from support.background import Deferred
    from test_bad_input import start_bad_run

    tiny = _tiny_run_started[2] if _tiny_run_started else None

    def ready() -> bool:
        return (tiny is None or tiny.proc.poll() is not None) and _ended(_layout_runs_started, _layout_commands)

    started = Deferred(lambda: start_bad_run(tmp_path_factory), ready=ready,
                       on_stop=lambda value: [run.stop() for run in _bad_commands(value)])
    yield started
    started.stop()


@pytest.fixture(scope="session", autouse=True)
def _resumed_run_started(request, tmp_path_factory, _tiny_run_started):
    """Likewise the killed-and-resumed run of tests/test_resume.py (fixture `resumed_run`), once the
    tiny demo run has ended (mostly one job at a time: it goes beside the cross-dataset run)."""
    if not any("resumed_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    from support.background import Deferred
    from test_resume import kill_and_resume, stop_runs

    tiny = _tiny_run_started[2] if _tiny_run_started else None

    started = Deferred(lambda: kill_and_resume(tmp_path_factory),
                       ready=lambda: tiny is None or tiny.proc.poll() is not None, on_stop=lambda _: stop_runs())
    yield started
    started.stop()


@pytest.fixture(scope="session")
def tiny_run(_tiny_run_started):
    """The tiny demo run once locally per test session: ``(work dir, snakemake args)``.

    Used by tests/test_workflow.py (end to end, no-op rerun), tests/test_slurm.py (a SLURM run must
    give the same outputs), tests/test_resume.py (so must a killed and resumed one), the report
    browser test and the docs commands test, so the ~2-minute local run happens once.
    """
    work, args, run = _tiny_run_started
    res = run.wait()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return work, args
