"""Every command line README.md and docs/*.md show (and the header comments of the Snakefile,
workflow_config.yaml and profiles/) is run here, exactly as written, or listed below with the reason
it cannot run in a test: a documented command must never silently break again.

Commands run in a scratch working directory whose workflow files and `.venv` are symlinks to this
checkout (so `.venv/bin/...` works as documented and nothing is written into the checkout), with
the venv's bin/ first on PATH (bare `python` / `snakemake` as in an activated venv). Commands on a
real dataset whose root does not exist here run as dry runs (`-n` appended): once as written (the
DAG build must get as far as the missing-root error, past config parsing and validation) and once
with the root pointed at a small tree in that dataset's layout (the DAG must build without error).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from support.docs_commands import ROOT, doc_commands

VENV_BIN = ROOT / ".venv" / "bin"
LINKED = ("Snakefile", "config", "rules", "profiles", "workflow_config.yaml", "affpipe", ".venv", "Makefile",
          "pyproject.toml", "resources", "envs", "bench")
TIMEOUT_S = 120

RUN = "run"  # run exactly as written; must exit 0
REAL_DATASET = "real dataset"  # run as written with -n, then with the root pointed at a fixture tree
DRY = "dry run"  # a long run: run as written with -n appended; the DAG must build
SYNOPSIS = "synopsis"  # cannot run (placeholders, or minutes long): the (sub)command and every flag shown must exist
SLOW = "slow"  # needs a finished run: placeholders filled from the tiny demo (slow test)

# Every command line the docs show, and how it is checked (or why it cannot run here).
COMMANDS: dict[str, tuple[str, str]] = {
    # --- run as written -------------------------------------------------------------------------
    "python -m affpipe --help": (RUN, "usage: affpipe"),
    "python -m affpipe config-docs -o docs/config.md": (RUN, ""),
    "make lint": (RUN, "Congratulations"),
    "snakemake --lint": (RUN, "Congratulations"),
    "snakemake -n": (RUN, "This was a dry-run"),
    "snakemake --unlock": (RUN, "Unlocked working directory"),
    ".venv/bin/snakemake --workflow-profile profiles/slurm results/semaine/ccc.json --unlock": (RUN, "Unlocked working directory"),
    ".venv/bin/snakemake -n results/demo/manifest.parquet --config 'faces={redetect_every: 5, detector: cnn}'": (RUN, "This was a dry-run"),
    ".venv/bin/snakemake -n results/demo/manifest.parquet --config 'datasets={demo: {dynamic: {T: 6}}}'": (RUN, "This was a dry-run"),
    "snakemake --cores 2 results/demo/ccc.json     # the embedded demo, end to end": (DRY, "This was a dry-run"),
    # --- a real dataset: dry runs (the value names the dataset; <dataset> is filled with it) -----
    "snakemake --cores 32 results/semaine/ccc.json --config 'datasets={semaine: {root: /data/AVEC2012}}'": (REAL_DATASET, "semaine"),
    "snakemake --cores 32 results/semaine/report/summary.json --config 'datasets={semaine: {root: /data/AVEC2012}}'": (REAL_DATASET, "semaine"),
    "snakemake --workflow-profile profiles/slurm results/<dataset>/ccc.json": (REAL_DATASET, "semaine"),
    ".venv/bin/snakemake --cores 32 results/semaine/ccc.json --config 'datasets={semaine: {root: /data/AVEC2012}}'": (REAL_DATASET, "semaine"),
    ".venv/bin/snakemake --cores 32 results/semaine/ccc.json --config 'datasets={semaine: {root: /data/AVEC2012}}' 'static={size: 112}' 'dr={width: 16, depth: 3}' 'cnn={backbone: small, optimizer: adam, lr: 0.001}'": (REAL_DATASET, "semaine"),
    ".venv/bin/snakemake --workflow-profile profiles/slurm results/semaine/ccc.json": (REAL_DATASET, "semaine"),
    ".venv/bin/snakemake --cores 8 results/semaine/ccc.json --configfile config/cpu.yaml --config 'datasets={semaine: {root: /data/AVEC2012}}'": (REAL_DATASET, "semaine"),
    ".venv/bin/snakemake --workflow-profile profiles/slurm results/semaine/ccc.json --config 'datasets={semaine: {root: /data/AVEC2012}}'": (REAL_DATASET, "semaine"),
    # --- usage lines with placeholders ({ds}, JSON, N, PATH, [optional]) --------------------------
    "python -m affpipe": (SYNOPSIS, ""),
    "python -m affpipe faces": (SYNOPSIS, ""),
    "python -m affpipe faces --video PATH --out results/{ds}/faces/{video}.parquet --settings JSON [--side left|right [--paired]] [--threads N]": (SYNOPSIS, ""),
    "python -m affpipe show-faces --video PATH --faces OUT.parquet -o sheet.png [--n 12] [--columns 4]": (SYNOPSIS, ""),
    "python -m affpipe dynamic --static results/{ds}/static/{video}.h5 --out results/{ds}/dynamic/{video}.h5 --settings JSON --threads N": (SYNOPSIS, ""),
    "python -m affpipe dr-train --manifest results/{src}/manifest.parquet --static-dir results/{src}/static --T 3 --out results/{src}/dr/model_T3.pt --settings JSON --threads N": (SYNOPSIS, ""),
    "python -m affpipe dr-infer --models results/{src}/dr/model_T3.pt results/{src}/dr/model_T5.pt --manifest results/{ds}/manifest.parquet --static-dir results/{ds}/static --out-dir results/{ds}/dr/videos --settings JSON --threads N        # every video; one video: --static results/{ds}/static/{video}.h5 --out V.h5": (SYNOPSIS, ""),
    "python -m affpipe dr-rank  --models ...model_T3.pt ...model_T5.pt --manifest results/{ds}/manifest.parquet --static-dir results/{ds}/static --out results/{ds}/dr/ranking.json      # or --static A.h5 B.h5 ...": (SYNOPSIS, ""),
    "python -m affpipe show results/{ds}/static/{video}.h5 results/{ds}/dr/videos/{video}.h5 --frame auto -o m.png": (SYNOPSIS, ""),
    "python -m affpipe regress --manifest results/{ds}/manifest.parquet --features results/{ds}/features/{input} --labels results/{ds}/labels --input {input} --regressor bgru --experiment {name} --out results/{ds}/experiments/{name}/predictions.parquet --settings JSON --threads N": (SYNOPSIS, ""),
    "python -m affpipe evaluate --manifest results/{ds}/manifest.parquet --predictions {name}=results/{ds}/experiments/{name}/predictions.parquet ... --out results/{ds}/ccc.json": (SYNOPSIS, ""),
    "python -m affpipe regression-report --ccc results/{ds}/ccc.json --out results/{ds}/report/regression": (SYNOPSIS, ""),
    "python -m affpipe dr-chart --ranking results/{ds}/dr/ranking.json -o results/{ds}/report/dr_ranking.png": (SYNOPSIS, ""),
    "python -m affpipe results-table --ccc results/{ds}/ccc.json --md results/{ds}/report/results.md --tex results/{ds}/report/results.tex --html results/{ds}/report/results.html": (SYNOPSIS, ""),
    # benchmarks (minutes each): flags checked against --help
    "python bench/bench_dag.py --videos 1000": (SYNOPSIS, ""),
    "python bench/bench_dag.py --skip-dag --chain 2": (SYNOPSIS, ""),
    ".venv/bin/python bench/bench_cost.py": (SYNOPSIS, ""),
    # re-fits a constant of affpipe/faces/landmarks.py (minutes of face detection)
    "python -m affpipe.faces.fit_box_model": (SYNOPSIS, ""),
    # --- need a finished demo: run on the tiny demo in test_commands_on_a_finished_run ------------
    ".venv/bin/python -m affpipe inspect results/demo/dynamic/<video>.h5     # datasets, shapes, dtypes, provenance": (SLOW, ""),
    ".venv/bin/python -m affpipe show results/demo/static/<video>.h5 results/demo/dynamic/<video>.h5 --frame 120 -o m.png": (SLOW, ""),
    ".venv/bin/python -m affpipe show-faces --video <video.mp4> --faces results/demo/faces/<video>.parquet -o sheet.png": (SLOW, ""),
    ".venv/bin/python -m affpipe results-table --ccc results/demo/ccc.json --md r.md --tex r.tex --html r.html": (SLOW, ""),
    ".venv/bin/python -m affpipe quality-table --summary results/demo/report/summary.json --md q.md --html q.html": (SLOW, ""),
    ".venv/bin/python -m affpipe dr-chart --ranking results/demo/dr/ranking.json -o dr.png": (SLOW, ""),
    ".venv/bin/python bench/demo_times.py results/demo": (SLOW, "| **all** |"),
}

# Shown but not run by this test, with the reason.
NOT_RUN: dict[str, str] = {
    "make": "the tool's name in the list of prerequisites, not a command",
    "make demo   # creates .venv, installs the pinned dependencies, runs the pipeline on the demo data":
        "the full demo, ~30 min on 2 cores; CI runs it; the tiny demo (tests/test_workflow.py) runs every rule",
    "make demo": "the full demo, ~30 min on 2 cores (see above)",
    "snakemake --cores 2": "what `make demo` runs: the full demo, ~30 min on 2 cores",
    "make test   # creates .venv, installs, runs the whole test suite (including the workflow end to end)":
        "the whole test suite, which contains this test",
    "make test": "the whole test suite, which contains this test",
    "make test-fast": "the fast test suite, which contains this test",
    ".venv/bin/pytest -m unit": "the unit tier of the test suite, which contains this test",
    "make setup": "builds the .venv these tests run in (pip install, minutes)",
    "make slurm-deps": "installs Debian packages with apt-get as root",
    "make browser-deps": "installs Debian's chromium with apt-get as root",
    ".venv/bin/snakemake --cores 2 --report report.html     # after `make demo`; open report.html in a browser":
        "needs the finished full demo; tests/test_report_browser.py builds the tiny demo's report and opens it in Chromium",
    "snakemake --report report.html":
        "needs a finished run; tests/test_report_browser.py builds the tiny demo's report and opens it in Chromium",
    "make bench": "benchmarks taking minutes; figures, never asserts",
    "python3 -m venv": "part of a sentence on what `make setup` does",
    "pip install -e .": "part of a sentence on what `make setup` does (installs into the .venv these tests run in)",
    "python tests/support/slurm_cluster.py start DIR": "starts a SLURM cluster: needs slurm-wlm, munge and root; tests/test_slurm.py runs it",
    "python tests/support/slurm_cluster.py start /tmp/slurm": "starts a SLURM cluster: needs slurm-wlm, munge and root; tests/test_slurm.py runs it",
    "python tests/support/slurm_cluster.py stop /tmp/slurm": "stops the cluster the command above starts",
    ".venv/bin/snakemake --cores 2 results/<ds>/ccc.json --configfile config/cpu.yaml ci.yaml --config 'datasets={<ds>: {root: <tree>}}'":
        "what tests/test_real_layouts.py (slow) runs on its SEMAINE, RECOLA and Aff-Wild2 trees, with its own ci.yaml",
    "snakemake -n results/big/ccc.json":
        "dataset `big` exists only inside bench/bench_dag.py, which configures and builds it (1,000 videos)",
    "snakemake -n --rerun-triggers mtime results/big/ccc.json":
        "dataset `big` exists only inside bench/bench_dag.py, which configures and builds it (1,000 videos)",
}


def _unique(kind: str | None = None) -> list[str]:
    seen = []
    for cmd in doc_commands():
        if cmd.text not in seen and (kind is None or COMMANDS.get(cmd.text, ("",))[0] == kind):
            seen.append(cmd.text)
    return seen


def test_every_documented_command_is_run_or_listed():
    shown = doc_commands()
    unknown = [str(c) for c in shown if c.text not in COMMANDS and c.text not in NOT_RUN]
    assert not unknown, (
        "documented commands this test neither runs nor lists (add each to COMMANDS, or to NOT_RUN "
        "with the reason it cannot run here):\n" + "\n".join(unknown)
    )
    texts = {c.text for c in shown}
    stale = [t for t in (*COMMANDS, *NOT_RUN) if t not in texts]
    assert not stale, "listed here but no longer in the docs (remove):\n" + "\n".join(stale)
    assert not set(COMMANDS) & set(NOT_RUN)


def test_extraction_sees_blocks_continuations_prompts_and_inline_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "Run `make lint` or `snakemake-executor-plugin-slurm` (a package).\n\n"
        "```bash\n$ .venv/bin/snakemake --cores 2 \\\n    results/x.json   # note\necho no\n```\n\n"
        "```text\nmake demo\n```\n\n"
        "```\naffpipe manifest: warning: output, not a command\npython -m affpipe x --y Z\n```\n"
    )
    got = [(c.text, c.line, c.inline) for c in doc_commands(tmp_path)]
    assert got == [
        (".venv/bin/snakemake --cores 2 results/x.json   # note", 4, False),
        ("python -m affpipe x --y Z", 15, False),
        ("make lint", 1, True),
    ]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A working directory that looks like the checkout (symlinks) but keeps results/, .snakemake/
    and docs/ to itself."""
    work = tmp_path_factory.mktemp("docs_commands")
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    (work / "docs").mkdir()
    return work


def _env() -> dict:
    return dict(os.environ, PATH=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env())
    res.out = res.stdout + res.stderr  # type: ignore[attr-defined]
    return res


@pytest.mark.parametrize("command", _unique(RUN))
def test_documented_command_runs(command, scratch):
    if command.startswith("make ") and _shell("make -q setup", scratch).returncode != 0:
        # the target depends on `setup`: out of date, it would pip-install the scratch copy into .venv
        pytest.skip("`make setup` is out of date (pyproject.toml newer than .venv/.installed): run it first")
    res = _shell(command, scratch)
    assert res.returncode == 0, f"`{command}` failed:\n{res.out[-3000:]}"
    expected = COMMANDS[command][1]
    assert expected in res.out, res.out[-3000:]
    if command.startswith("python -m affpipe config-docs"):
        assert (scratch / "docs" / "config.md").read_text() == (ROOT / "docs" / "config.md").read_text()


def _without_comment(command: str) -> str:
    return re.sub(r"\s+#\s.*$", "", command)


@pytest.fixture(scope="module")
def dataset_trees(tmp_path_factory) -> dict[str, Path]:
    """Small trees in each real dataset's layout (a dry run only looks at the root)."""
    from test_datasets import semaine_tree

    base = tmp_path_factory.mktemp("datasets")
    return {"semaine": semaine_tree(base / "AVEC2012", n=5)}


_ROOT_IN_CONFIG = re.compile(r"(\{root: )([^}]+)(\})")


def _dry_runs(command: str, trees: dict[str, Path]) -> tuple[str, ...]:
    """The dry runs that check a DRY or REAL_DATASET command: (as written,) or (as written, root pointed at a tree).
    `.venv/bin/snakemake` is written `snakemake`, the program it names on the commands' PATH (`_env`), so that
    commands the docs show both ways share their dry runs."""
    kind, ds = COMMANDS[command]
    command = re.sub(r"^\.venv/bin/snakemake ", "snakemake ", _without_comment(command))
    if kind == DRY:
        return (f"{command} -n",)
    command = command.replace("<dataset>", ds)
    tree = str(trees[ds])
    if _ROOT_IN_CONFIG.search(command):
        pointed = _ROOT_IN_CONFIG.sub(lambda m: m.group(1) + tree + m.group(3), command)
    else:
        pointed = f"{command} --config {shlex.quote(f'datasets={{{ds}: {{root: {tree}}}}}')}"
    return f"{command} -n", f"{pointed} -n"


@pytest.fixture(scope="module")
def dry_run(scratch, dataset_trees) -> dict[str, subprocess.CompletedProcess]:
    """Every dry run of the two tests below, run up front a few at a time (each is one
    single-threaded Snakemake DAG build; dry runs take no lock and write no output): shell command -> result."""
    runs = list(dict.fromkeys(run for c in (*_unique(DRY), *_unique(REAL_DATASET)) for run in _dry_runs(c, dataset_trees)))
    assert shutil.which("snakemake", path=_env()["PATH"]) == str(VENV_BIN / "snakemake")
    return _concurrently(runs, lambda run: _shell(run, scratch))


def _concurrently(keys: list[str], fn) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        return dict(zip(keys, pool.map(fn, keys)))


@pytest.mark.parametrize("command", _unique(DRY))
def test_documented_long_command_builds_its_dag(command, dry_run, dataset_trees):
    (run,) = _dry_runs(command, dataset_trees)
    res = dry_run[run]
    assert res.returncode == 0, f"`{run}` failed:\n{res.out[-3000:]}"
    assert COMMANDS[command][1] in res.out, res.out[-3000:]


@pytest.mark.parametrize("command", _unique(REAL_DATASET))
def test_documented_real_dataset_command_builds_its_dag(command, dry_run, dataset_trees):
    ds = COMMANDS[command][1]
    as_written, pointed = _dry_runs(command, dataset_trees)
    # as written: config parsed and valid, the DAG build stops only at the dataset's missing root
    res = dry_run[as_written]
    assert res.returncode != 0
    assert re.search(rf"config key `datasets\.{ds}\.root` is not set|dataset root folder does not exist \(config key `datasets\.{ds}\.root`\)", res.out), res.out[-3000:]
    assert "invalid configuration" not in res.out, res.out[-3000:]
    # the same command with the root set to a tree in the dataset's layout: the DAG builds
    res = dry_run[pointed]
    assert res.returncode == 0, f"`{pointed}` failed:\n{res.out[-3000:]}"
    assert re.search(r"^manifest\s+1$", res.out, re.M), res.out[-3000:]


_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _synopsis(command: str) -> tuple[list[str], list[str]]:
    """(the program as words after `python`, the words after it) of a usage line."""
    words = _without_comment(command).split()
    if words[0] == ".venv/bin/python":  # the venv's interpreter, as README shows it
        words[0] = "python"
    assert words[0] == "python", command
    if words[1:3] == ["-m", "affpipe"]:  # python -m affpipe [subcommand] ...
        program = words[1:3] + [w for w in words[3:4] if not w.startswith("-")]
    elif words[1] == "-m":  # python -m module ...
        program = words[1:3]
    else:  # python script.py ...
        program = words[1:2]
    return program, words[1 + len(program):]


@pytest.fixture(scope="module")
def program_help() -> dict[str, subprocess.CompletedProcess]:
    """`python PROGRAM --help` of every program a synopsis shows, run up front a few at a time."""
    programs = sorted({" ".join(_synopsis(c)[0]) for c in _unique(SYNOPSIS) if _without_comment(c).split()[0]
                       in ("python", ".venv/bin/python")})  # (any other fails its test, in _synopsis)
    return _concurrently(programs, lambda program: subprocess.run(
        [str(VENV_BIN / "python"), *program.split(), "--help"], capture_output=True, text=True,
        timeout=TIMEOUT_S, env=_env(), cwd=ROOT))


@pytest.mark.parametrize("command", _unique(SYNOPSIS))
def test_documented_synopsis_matches_the_cli(command, program_help):
    """A usage line with placeholders cannot run, but its subcommand and every flag it shows must exist."""
    program, rest = _synopsis(command)
    res = program_help[" ".join(program)]
    assert res.returncode == 0, res.stdout + res.stderr
    usage = res.stdout
    flags = set(_FLAG.findall(" ".join(rest)))
    missing = sorted(f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", usage))
    assert not missing, f"`{command}` shows {missing}, which `python {' '.join(program)} --help` does not have"


@pytest.mark.slow
def test_commands_on_a_finished_run(tiny_run, tmp_path):
    """README's commands that need a finished demo, on the tiny demo: results/demo is the tiny run's
    results/tiny; <video> is one of its videos and <video.mp4> that video's file."""
    import pyarrow.parquet as pq

    work, _ = tiny_run
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "demo").symlink_to(work / "results" / "tiny")
    rows = pq.read_table(work / "results" / "tiny" / "manifest.parquet").to_pylist()
    row = sorted(rows, key=lambda r: r["video"])[0]
    video, path = row["video"], Path(row["path"])
    path = path if path.is_absolute() else work / path
    commands = _unique(SLOW)
    assert len(commands) == 7
    for command in commands:
        filled = command.replace("<video.mp4>", shlex.quote(str(path))).replace("<video>", video)
        res = _shell(filled, tmp_path)
        assert res.returncode == 0, f"`{filled}` failed:\n{res.out[-3000:]}"
        assert COMMANDS[command][1] in res.out, f"`{filled}` printed:\n{res.out[-3000:]}"
        for out in re.findall(r"(?:-o|--md|--tex|--html) (\S+)", filled):
            assert (tmp_path / out).stat().st_size > 0, out
