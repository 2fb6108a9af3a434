"""Resumability: the tiny demo killed hard (SIGKILL to Snakemake's whole process group) at several
points, then re-run with the same command, ends with outputs identical to an uninterrupted run.

Each kill lands while a job of the named stage is running (its log file, or for the CNN features
job, which writes every video's file into one hidden temporary folder, that folder has appeared), so the
interrupted jobs leave half-written temporaries, incomplete-job markers, partial checkpoints and
Snakemake's directory lock behind. The user's recovery (docs/cluster.md, "Interrupted runs") is
`snakemake --unlock` with the same arguments, then the same command again; that run must rerun
exactly the incomplete jobs (`rerun-incomplete` in profiles/default), never treat a half-written
file as done, remove the temporaries, and reach the
same HDF5 datasets, Parquet tables (the predictions among them) and model weights, bit for bit, as the
uninterrupted run (the session fixture `tiny_run`). The killed run starts in a fresh folder, so the
comparison also shows that two fresh runs give the same outputs.

The killed run's target is one experiment's predictions (dfm_bgru: demo data -> faces -> static ->
dynamic images -> CNN training -> CNN features -> BGRU), the path through every stage it is killed in;
the other experiments, DR and the report are the same rules on other inputs and would only make this
second run of the tiny demo longer. Every file it writes is compared with the uninterrupted run's.

The killing and resuming runs in the background (`kill_and_resume`, started by tests/conftest.py once
the tiny demo run has ended), on the core most tests leave idle; the test checks its outcome, at the
end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import run_outputs
from test_workflow import ROOT, SNAKEMAKE, TINY_CONFIG

pytestmark = pytest.mark.slow

#: (stage, files whose appearance means a job of the stage is running, seconds to wait after)
KILL_POINTS = (
    ("demo generation", "results/tiny/logs/demo_data.log", 2.0),
    ("dynamic images", "results/tiny/logs/dynamic/*.log", 1.0),
    ("CNN training", "results/tiny/logs/cnn_train/*.log", 3.0),
    # while one job writes every video's features of an input into its hidden temporary folder
    ("CNN features", "results/tiny/features/.*.tmp-*", 0.0),
    ("sequence regression", "results/tiny/logs/regress/*.log", 1.0),
)
#: temporaries of affpipe's atomic writes (affpipe/io/atomic.py) and of `affpipe dynamic`'s parts
LEFTOVER_PATTERNS = ("*.tmp-*", ".*.tmp-*", "*.old-*", ".*.old-*", "*.part*-*.h5")
#: the killed run's target, and a file of each stage on its way that it must have written
TARGET = "results/tiny/experiments/dfm_bgru/predictions.parquet"
STAGE_FILES = ("raw/videos/man_video_01.mp4", "manifest.parquet", "labels/man_video_01.parquet",
               "faces/man_video_01.parquet", "static/man_video_01.h5", "dynamic/man_video_01.h5",
               "cnn/dfm/model.pt", "features/dfm/man_video_01.h5", "experiments/dfm_bgru/model.pt")
RUN_TIMEOUT_S = 1500


def _start(work: Path, args: list[str]) -> subprocess.Popen:
    # a new session: the process group holds Snakemake and every job it starts
    with open(work / "snakemake.err", "ab") as err:
        return subprocess.Popen([*SNAKEMAKE, *args], cwd=work, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # killed already, every process of the group gone
        pass
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # jobs of the group die with it; wait until none is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("processes of the killed run are still alive after 60 s")


#: watches for a kill point's files and kills the run's process group: a process of its own, so that
#: its 10 ms polls are not held up by the test session's threads (the tiny run's CNN features job keeps
#: its hidden temporary folder for well under a second, and a poll in a thread of the loaded session
#: once missed it). argv: work dir, glob pattern, process group, seconds to wait after, timeout.
_WATCHER = """
import os, signal, sys, time
from pathlib import Path
work, pattern, pgid, delay, timeout = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
deadline = time.monotonic() + timeout
while not any(work.glob(pattern)):
    if time.monotonic() > deadline:
        sys.exit(4)
    time.sleep(0.01)
time.sleep(delay)
os.killpg(pgid, signal.SIGKILL)
"""


def _kill_when(work: Path, pattern: str, delay: float, proc: subprocess.Popen, stage: str) -> None:
    """Kill the run `proc` (its whole process group) ``delay`` seconds after a file matching `pattern`
    appears under `work`; fails if the run ends first."""
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(work), pattern, str(proc.pid), str(delay),
                                str(RUN_TIMEOUT_S)])
    try:
        while watcher.poll() is None:
            if proc.poll() is not None:  # the run ended: killed by the watcher, or before it could be
                try:
                    watcher.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                if watcher.returncode != 0:
                    raise AssertionError(f"the run ended (status {proc.returncode}) before {stage}; "
                                         f"see {work / 'snakemake.err'}")
            time.sleep(0.05)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    if watcher.returncode == 4:
        raise AssertionError(f"{stage} not reached within {RUN_TIMEOUT_S} s")
    assert watcher.returncode == 0, f"the watcher failed (status {watcher.returncode})"
    _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended (status {proc.returncode}) before it could be killed during {stage}; "
        f"see {work / 'snakemake.err'}")


#: the Snakemake process of `kill_and_resume` that is running, if any (stopped by `stop_runs`)
_RUNNING: list[subprocess.Popen] = []


def stop_runs() -> None:
    """End the run of `kill_and_resume` still going, with every job it started (an interrupted session)."""
    for proc in list(_RUNNING):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_and_resume(tmp_path_factory) -> tuple[Path, list[str], list[str], subprocess.CompletedProcess]:
    """Start the tiny demo's run of `TARGET` in a fresh folder, kill it at each of `KILL_POINTS` and
    recover as a user does; then run it to the end: ``(work dir, args, stages killed in, that last run)``.
    Called by the session fixture `_resumed_run_started` (tests/conftest.py) in the background, once the
    tiny demo run has ended."""
    work = tmp_path_factory.mktemp("resume")
    shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
    (work / "tiny.yaml").write_text(json.dumps(TINY_CONFIG))
    # the command a user re-types after a crash: no extra flag (profiles/default sets rerun-incomplete)
    args = ["-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(work / "tiny.yaml"),
            "--cores", "2", TARGET]

    killed_during = []
    for stage, pattern, delay in KILL_POINTS:
        proc = _start(work, args)
        _RUNNING[:] = [proc]
        _kill_when(work, pattern, delay, proc, stage)
        killed_during.append(stage)
        # a SIGKILLed Snakemake cannot release its lock: the next run refuses until --unlock
        res = subprocess.run([*SNAKEMAKE, *args, "--unlock"], cwd=work, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    # something was left half-done by the last kill: Snakemake's incomplete-job markers
    assert any((work / ".snakemake" / "incomplete").rglob("*")), "the kills left no incomplete job"

    proc = subprocess.Popen([*SNAKEMAKE, *args], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _RUNNING[:] = [proc]
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_runs()
        raise AssertionError(f"the resumed run did not finish within {RUN_TIMEOUT_S} s") from None
    finally:
        _RUNNING.clear()
    return work, args, killed_during, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def resumed_run(_resumed_run_started):
    """`kill_and_resume`'s result, run in the background by the session (tests/conftest.py)."""
    return _resumed_run_started.result()


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(tiny_run, resumed_run):
    ref, _ = tiny_run
    work, args, killed_during, res = resumed_run
    assert killed_during == [stage for stage, _, _ in KILL_POINTS]
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    leftovers = [str(p.relative_to(work)) for pat in LEFTOVER_PATTERNS for p in (work / "results").rglob(pat)]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    missing = [f for f in (TARGET, *(f"results/tiny/{f}" for f in STAGE_FILES)) if not (work / f).is_file()]
    assert not missing, f"the resumed run did not write {missing}"
    run_outputs.assert_same_outputs(work, ref, what="killed-and-resumed and uninterrupted", part=True)
    # and the finished run is complete: nothing left to do
    res = subprocess.run([*SNAKEMAKE, *args, "-n"], cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stderr[-3000:]
