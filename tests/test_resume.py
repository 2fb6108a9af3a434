"""Resumability: the tiny demo killed hard (SIGKILL to Snakemake's whole process group) at several
points, then re-run with the same command, ends with outputs identical to an uninterrupted run.

Each kill lands while a job of the named stage is running (its log file, or for the CNN features
job, which writes every video's file into one hidden temporary folder, that folder has appeared), so the
interrupted jobs leave half-written temporaries, incomplete-job markers, partial checkpoints and
Snakemake's directory lock behind. The user's recovery (docs/cluster.md, "Interrupted runs") is
`snakemake --unlock` with the same arguments, then the same command again; that run must rerun
exactly the incomplete jobs (`rerun-incomplete` in profiles/default), never treat a half-written
file as done, remove the temporaries, and reach the
same HDF5 datasets, Parquet tables, model weights and ccc.json numbers, bit for bit, as the
uninterrupted run (the session fixture `tiny_run`). The killed run starts in a fresh folder, so the
comparison also shows that two fresh runs give the same outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import run_outputs
from test_workflow import ROOT, SNAKEMAKE, TINY_CONFIG, TINY_TARGETS

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
RUN_TIMEOUT_S = 1500


def _start(work: Path, args: list[str]) -> subprocess.Popen:
    # a new session: the process group holds Snakemake and every job it starts
    with open(work / "snakemake.err", "ab") as err:
        return subprocess.Popen([*SNAKEMAKE, *args], cwd=work, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # jobs of the group die with it; wait until none is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("processes of the killed run are still alive after 60 s")


def _wait_for(work: Path, pattern: str, proc: subprocess.Popen, stage: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not list(work.glob(pattern)):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before reaching {stage}; "
                                 f"see {work / 'snakemake.err'}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{stage} not reached within {RUN_TIMEOUT_S} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(tiny_run, tmp_path_factory):
    ref, _ = tiny_run
    work = tmp_path_factory.mktemp("resume")
    shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
    (work / "tiny.yaml").write_text(json.dumps(TINY_CONFIG))
    # the command a user re-types after a crash: no extra flag (profiles/default sets rerun-incomplete)
    args = ["-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(work / "tiny.yaml"),
            "--cores", "2", *TINY_TARGETS]

    killed_during = []
    for stage, pattern, delay in KILL_POINTS:
        proc = _start(work, args)
        _wait_for(work, pattern, proc, stage)
        time.sleep(delay)
        assert proc.poll() is None, f"the run ended before it could be killed during {stage}"
        _kill_group(proc)
        killed_during.append(stage)
        # a SIGKILLed Snakemake cannot release its lock: the next run refuses until --unlock
        res = subprocess.run([*SNAKEMAKE, *args, "--unlock"], cwd=work, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    assert len(killed_during) == len(KILL_POINTS)
    # something was left half-done by the last kill: Snakemake's incomplete-job markers
    assert any((work / ".snakemake" / "incomplete").rglob("*")), "the kills left no incomplete job"

    res = subprocess.run([*SNAKEMAKE, *args], cwd=work, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    leftovers = [str(p.relative_to(work)) for pat in LEFTOVER_PATTERNS for p in (work / "results").rglob(pat)]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    run_outputs.assert_same_outputs(work, ref, what="killed-and-resumed and uninterrupted")
    # and the finished run is complete: nothing left to do
    res = subprocess.run([*SNAKEMAKE, *args, "-n"], cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr, res.stderr[-3000:]
