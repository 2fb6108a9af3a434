"""Fixtures shared by several test modules, and the test tiers.

Tiers (markers registered in pyproject.toml): every test is exactly one of ``unit``, ``train`` or
``slow``. A module of one tier sets it with ``pytestmark = pytest.mark.train`` (or ``slow``); in a
module without one, tests are marked one by one; a test with no tier is ``unit``. ``gpu`` tests are
skipped, naming the reason, where torch sees no CUDA device.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import pytest

TIERS = ("unit", "train", "slow")


#: tests using these fixtures run last, in this order, so that every other test runs while the work
#: they wait for goes on in the background: the runs of `BACKGROUND` (below), then the SLURM run, whose
#: jobs wait on the cluster and which ends last
LAST = ("cross_run", "resumed_run", "layout_runs", "bad_run", "slurm_run")


def _background_rank(item) -> int:
    names = getattr(item, "fixturenames", ())
    return next((1 + i for i, name in enumerate(LAST) if name in names), 0)


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


@dataclass(frozen=True)
class Background:
    """Work of a slow test module started by the session in the background once the tiny demo run and
    the work named in ``after`` have ended: ``module.start(tmp_path_factory[, tiny work dir])`` called
    in a thread (a support.background.Deferred), its value the module's fixture waits for."""

    module: str
    start: str
    #: the value's BackgroundRuns: stopped if the session ends first; the work has ended when they have
    runs: Callable[[Any], list] = lambda value: []
    #: a module function that ends the work instead (work that runs in the start thread itself)
    stop: str | None = None
    after: tuple[str, ...] = ()
    tiny_work: bool = False  # start() is also given the tiny demo run's working directory


#: fixture the tests use -> the background work it waits for. Until the tiny demo run ends, that run and
#: the tests keep both cores busy; afterwards most tests use one core, and these runs take the other.
BACKGROUND = {
    # the cross-dataset run on a copy of the tiny demo run
    "cross_run": Background("test_cross_dataset", "start_cross_run", runs=lambda v: [v[2]] if v else [],
                            tiny_work=True),
    # the killed-and-resumed run: mostly one job at a time, it goes beside the cross-dataset run
    "resumed_run": Background("test_resume", "kill_and_resume", stop="stop_runs"),
    # the real-layout runs, once the cross-dataset run has ended
    "layout_runs": Background("test_real_layouts", "start_layouts", after=("cross_run",),
                              runs=lambda v: [run for _, _, run in (v or {}).values()]),
    # the bad-input run, once the real-layout runs have ended: it has many jobs that can run side by
    # side and keeps both cores busy at the end of the session
    "bad_run": Background("test_bad_input", "start_bad_run", runs=lambda v: [v[2]] if v else [],
                          after=("layout_runs",)),
}


def _ended(started, runs) -> bool:
    """Whether the background work `started` (a Deferred, or None if not needed) has started and its
    commands (``runs(value)``: BackgroundRuns) have ended."""
    if started is None:
        return True
    if not started.done():
        return False
    return all(run.proc.poll() is not None for run in runs(started.peek()))


def _background_fixture(name: str, spec: Background):
    """The autouse session fixture ``_{name}_started`` that starts ``spec``'s work when a selected test
    uses fixture ``name``, and stops it if the session ends first."""

    def started(request, tmp_path_factory, _tiny_run_started):
        if not any(name in item.fixturenames for item in request.session.items):
            yield None
            return
        from support.background import Deferred

        module = importlib.import_module(spec.module)
        tiny = _tiny_run_started[2] if _tiny_run_started else None
        before = [(request.getfixturevalue(f"_{other}_started"), BACKGROUND[other].runs) for other in spec.after]
        args = (tmp_path_factory, _tiny_run_started[0]) if spec.tiny_work else (tmp_path_factory,)

        def ready() -> bool:
            return (tiny is None or tiny.proc.poll() is not None) and all(_ended(s, runs) for s, runs in before)

        def on_stop(value) -> None:
            for run in spec.runs(value):
                run.stop()
            if spec.stop:
                getattr(module, spec.stop)()

        deferred = Deferred(lambda: getattr(module, spec.start)(*args), ready=ready, on_stop=on_stop)
        yield deferred
        deferred.stop()

    started.__doc__ = (f"{spec.module}.{spec.start}, for fixture `{name}`: started in the background once the tiny "
                       f"demo run{''.join(f' and `{a}`' for a in spec.after)} ended, stopped if the session ends first.")
    return pytest.fixture(scope="session", autouse=True, name=f"_{name}_started")(started)


for _name, _spec in BACKGROUND.items():
    globals()[f"_{_name}_started"] = _background_fixture(_name, _spec)


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
