"""The workflow on a real SLURM cluster: the tiny demo through `--workflow-profile profiles/slurm`
on a single-node cluster started on this machine (tests/support/slurm_cluster.py), checked job by job
against SLURM's own records and file by file against the local run of the tiny demo.

The SLURM run trains two of the tiny demo's five experiments (`SLURM_EXPERIMENTS`), which between
them run every rule of the local run; the other three are the same rules on other inputs. On SLURM each
job also starts Snakemake twice (the batch step and the job step), about 7 s of CPU per job on the test
machine, so the three would cost the test session about 100 s of CPU for no other check.

Skips, naming the reason, where a cluster cannot be started here (not root, `slurm-wlm`/`munge`
not installed: `make slurm-deps`, a SLURM configuration of the machine's own). A cluster that is
installed but does not start is a failure, with the daemons' logs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support import run_outputs, slurm_cluster
from test_workflow import ROOT, SNAKEMAKE, TINY_CONFIG, TINY_EXPERIMENTS, TINY_TARGETS

PROFILE = ROOT / "profiles" / "slurm"
#: the test node's CPUs and memory (MB): at least 4 CPUs and 64 GB, so that on a 2-core, 24 GB machine
#: the tiny demo's jobs run side by side as they would on a real node (its 2-thread jobs, and its
#: GPU jobs, which the profile gives 8-16 GB each) instead of one after another, each waiting for
#: SLURM's status checks; the tiny jobs use a few hundred MB, and share the machine with the other
#: tests anyway
CLUSTER_CPUS = max(4, os.cpu_count() or 1)
CLUSTER_MEM_MB = max(64000, slurm_cluster.machine_mem_mb())
#: the tiny demo's experiments the SLURM run trains: DFM+BGRU (dynamic images, a CNN, a sequence
#: regressor) and MDR+CNN (the DR UNets, the per-frame CNN regressor); the others are disabled
SLURM_EXPERIMENTS = ("dfm_bgru", "mdr_cnn")
SLURM_CONFIG = copy.deepcopy(TINY_CONFIG)
SLURM_CONFIG["datasets"]["tiny"]["experiments"] = {
    name: {"enabled": False} for name in TINY_EXPERIMENTS if name not in SLURM_EXPERIMENTS}
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
#: a job Snakemake ran, in its log: `rule X:`/`checkpoint X:` when scheduling it, `localrule X:`/
#: `localcheckpoint X:` when running it in this process (inside a SLURM job: the srun step)
EXECUTED = re.compile(r"^local(?:rule|checkpoint) (\w+):$", re.M)
#: a job in the local run's log, scheduled or run: its rule and its outputs
LOCAL_JOB = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):\n(?:    (?!output:).*\n)*    output: (.*)$", re.M)


@dataclass
class SlurmStart:
    """The cluster and the SLURM run, started with the session (the autouse fixture in
    tests/conftest.py), or why there is no cluster: ``skip`` (cannot start here) or ``fail``."""

    skip: str | None = None
    fail: str | None = None
    cluster: slurm_cluster.Cluster | None = None
    work: Path | None = None
    run: object | None = None  # support.background.BackgroundRun

    def stop(self) -> None:
        interrupted = self.run is not None and self.run.proc.poll() is None
        if self.run is not None:
            self.run.stop()
        if self.cluster is not None:
            if interrupted:  # the session ended first: the jobs Snakemake submitted run under slurmd
                try:
                    self.cluster.run("scancel", "--partition", slurm_cluster.PARTITION, check=False)
                except (OSError, subprocess.SubprocessError):
                    pass
            self.cluster.stop()


def start_slurm_run(tmp_path_factory) -> SlurmStart:
    """Start the local cluster, then the tiny demo through the SLURM profile in its own scratch
    working directory, in the background: most of that run is spent waiting between SLURM status
    checks, so it goes on beside the other tests."""
    from support.background import BackgroundRun

    reason = slurm_cluster.why_unavailable()
    if reason:
        return SlurmStart(skip=f"no local SLURM cluster: {reason}")
    try:
        c = slurm_cluster.start(tmp_path_factory.mktemp("slurm"), cpus=CLUSTER_CPUS, mem_mb=CLUSTER_MEM_MB)
    except slurm_cluster.ClusterUnavailable as err:
        return SlurmStart(fail=f"SLURM is installed but the local cluster did not start: {err}")
    work = tmp_path_factory.mktemp("workflow-slurm")
    shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
    (work / "tiny.yaml").write_text(json.dumps(SLURM_CONFIG))
    args = [
        "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(work / "tiny.yaml"),
        "--workflow-profile", str(PROFILE),
        # short jobs: poll soon (MinJobAge is an hour here, far above the plugin's 3 x 2 s threshold)
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
        *TINY_TARGETS,
    ]
    run = BackgroundRun([*SNAKEMAKE, *args], cwd=work, env=c.env, log_dir=tmp_path_factory.mktemp("workflow-slurm-output"),
                        timeout=2400)
    return SlurmStart(cluster=c, work=work, run=run)


@pytest.fixture(scope="module")
def cluster(_slurm_run_started):
    started = _slurm_run_started
    if started.skip:
        pytest.skip(started.skip)
    if started.fail:
        pytest.fail(started.fail)
    return started.cluster


@pytest.fixture(scope="module")
def slurm_run(cluster, _slurm_run_started):
    """The tiny demo (`SLURM_EXPERIMENTS`) through the SLURM profile, in its own scratch working directory:
    ``(work, output)``."""
    res = _slurm_run_started.run.wait()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:] + "\n" + slurm_cluster._log_tail(cluster.root / "log/slurmctld.log")
    return _slurm_run_started.work, out


def _profile_gpu_rules() -> set[str]:
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    return {rule for rule, res in profile["set-resources"].items() if res.get("gpu", 0) > 0}


def test_profile_documents_the_keys_users_set():
    text = (PROFILE / "config.yaml").read_text()
    profile = yaml.safe_load(text)
    assert profile["executor"] == "slurm"
    # squeue, not sacct: clusters without accounting storage have no working sacct
    assert profile["slurm-status-command"] == "squeue"
    for key in ("slurm_partition", "slurm_account", "runtime", "mem_mb", "cpus_per_task", "gpu"):
        assert re.search(rf"^#.*\b{key}\b", text, re.M), f"{key} is not documented in profiles/slurm/config.yaml"
    # GPU rules only: a CPU rule must never hold a GPU
    assert _profile_gpu_rules() == {"cnn_train", "cnn_features", "dr_train", "dr_infer", "dr_rank", "regress"}
    assert "gpu" not in profile["default-resources"] and "gres" not in profile["default-resources"]


@pytest.mark.slow
def test_every_job_went_through_sbatch(cluster, slurm_run, tiny_run):
    work, out = slurm_run
    local_work, _ = tiny_run
    submitted = SUBMITTED.findall(out)
    assert submitted, out[-3000:]
    slurm_ids = [jid for _, jid, _ in submitted]
    assert len(set(slurm_ids)) == len(slurm_ids), "one SLURM job id reported twice"

    # Each SLURM job's log (kept with --slurm-keep-successful-logs) is the jobstep's Snakemake
    # output: it names the rules the job ran (in the srun step). Together they must be exactly the local run's jobs
    # (the local run's log lists every job; `rule all` is a local rule on the submit side).
    gpu_rules = _profile_gpu_rules()
    ran_on_slurm: Counter = Counter()
    for _, jid, log in submitted:
        text = Path(log).read_text()
        rules = EXECUTED.findall(text)
        assert rules, f"SLURM job {jid}: no rule ran, says its log {log}"
        ran_on_slurm.update(rules)
        info = cluster.job_info(jid)
        assert info["JobState"] == "COMPLETED", (jid, info)
        assert info["Partition"] == slurm_cluster.PARTITION, (jid, info)
        assert info["WorkDir"] == str(work), (jid, info)
        # GPUs for GPU rules only, from the profile
        wants_gpu = bool(gpu_rules & set(rules))
        assert info["JOB_GRES"] == ("gpu:1" if wants_gpu else "(null)"), (jid, rules, info["JOB_GRES"])
        # CPUs: the job's threads (one rule) or what the group's jobs need together
        if len(rules) == 1:
            threads = re.findall(r"^\s+threads: (\d+)$", text, re.M)
            assert int(info["NumCPUs"]) == (int(threads[0]) if threads else 1), (jid, rules, info["NumCPUs"])
    local_logs = sorted((local_work / ".snakemake" / "log").glob("*.snakemake.log"))
    # the first log is the tiny run's own (start_tiny runs one invocation); later ones come from tests that
    # run Snakemake again in the same directory (the no-op rerun, the report build)
    ran_locally = [(rule, output) for rule, output in LOCAL_JOB.findall(local_logs[0].read_text()) if rule != "all"]
    # every rule of the local run ran on SLURM; exactly the local run's jobs whose outputs the SLURM run has
    # (those of the two experiments), each once
    assert set(ran_on_slurm) == {rule for rule, _ in ran_locally}
    assert ran_on_slurm == Counter(rule for rule, output in ran_locally if (work / output.split(", ")[0]).exists())
    # and the SLURM logs the plugin wrote are those jobs' logs
    on_disk = {p.stem for p in (work / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert on_disk == set(slurm_ids)


@pytest.mark.slow
def test_grouped_jobs_stay_per_video(slurm_run):
    """A group job runs one video's face/static/dynamic chain, never several videos or all of them."""
    work, out = slurm_run
    groups = [p for p in (work / ".snakemake" / "slurm_logs").glob("group_*/*.log")]
    assert groups, "no group job ran"
    for log in groups:
        videos = set(re.findall(r"^\s+wildcards: ds=\w+, video=(\S+)$", log.read_text(), re.M))
        assert len(videos) == 1, (log, videos)


@pytest.mark.slow
def test_outputs_equal_a_local_run(slurm_run, tiny_run):
    """Same files as the local run's for the two experiments, same content: HDF5 datasets and model
    weights bit-identical, Parquet tables and JSON equal (ccc.json for the two experiments), pictures
    byte-identical; only provenance (times, durations, input mtimes, the working directory) may differ."""
    work, _ = slurm_run
    local_work, _ = tiny_run
    for name in SLURM_EXPERIMENTS:
        assert (work / f"results/tiny/experiments/{name}/predictions.parquet").is_file(), name
    run_outputs.assert_same_outputs(work, local_work, what="SLURM and local", experiments=SLURM_EXPERIMENTS)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
