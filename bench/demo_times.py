"""Per-stage time table of a finished run, from its Snakemake benchmark files (prints, no asserts).

    .venv/bin/python bench/demo_times.py [results/demo] [--log .snakemake/log/<run>.snakemake.log]

Every rule writes ``results/{ds}/benchmarks/<rule>/...tsv`` (Snakemake's ``benchmark:``): one row with
the job's wall seconds (``s``) and CPU seconds (``cpu_time``). This sums them per rule (the first path
component under ``benchmarks/``; a file at the top is its own rule, e.g. ``manifest.tsv``) and prints
a Markdown table: jobs, job-seconds (sum of wall), CPU seconds, median job seconds. With ``--log``,
the run's wall time from the first to the last timestamp of that Snakemake log.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from datetime import datetime
from pathlib import Path


def rule_times(results: Path) -> dict[str, list[tuple[float, float]]]:
    """{rule: [(wall s, cpu s) per job]} from ``results/benchmarks``."""
    bench = results / "benchmarks"
    if not bench.is_dir():
        raise SystemExit(f"{bench}: no benchmarks folder (run the workflow first)")
    out: dict[str, list[tuple[float, float]]] = {}
    for tsv in sorted(bench.rglob("*.tsv")):
        rel = tsv.relative_to(bench)
        rule = rel.parts[0] if len(rel.parts) > 1 else tsv.stem
        with tsv.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        for row in rows[-1:]:  # the last run of that job
            cpu = row.get("cpu_time", "")
            out.setdefault(rule, []).append((float(row["s"]), float(cpu) if cpu not in ("", "NA") else float("nan")))
    return out


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def log_wall(log: Path) -> float:
    """Seconds between the first and the last timestamp line of a Snakemake log."""
    stamps = [datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
              for line in log.read_text().splitlines() if (m := STAMP.match(line))]
    if len(stamps) < 2:
        raise SystemExit(f"{log}: fewer than two timestamps")
    return (stamps[-1] - stamps[0]).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="results/demo", type=Path)
    ap.add_argument("--log", type=Path, help="the run's Snakemake log, for its wall time")
    args = ap.parse_args()
    times = rule_times(args.results)
    print("| rule | jobs | job-seconds | CPU seconds | median job s |")
    print("|---|---|---|---|---|")
    order = sorted(times, key=lambda r: -sum(w for w, _ in times[r]))
    for rule in order:
        walls = [w for w, _ in times[rule]]
        cpus = [c for _, c in times[rule]]
        print(f"| {rule} | {len(walls)} | {sum(walls):.0f} | {sum(cpus):.0f} | {statistics.median(walls):.1f} |")
    walls = [w for r in times for w, _ in times[r]]
    cpus = [c for r in times for _, c in times[r]]
    print(f"| **all** | {len(walls)} | {sum(walls):.0f} | {sum(cpus):.0f} | |")
    if args.log:
        print(f"\nwall time of the run: {log_wall(args.log):.0f} s")


if __name__ == "__main__":
    main()
