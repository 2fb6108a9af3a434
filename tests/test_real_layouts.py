"""The user's commands on tiny real-layout copies of SEMAINE, RECOLA and Aff-Wild2 with the CPU preset.

Each tree (tests/support/real_layouts.py) holds real face video in the distribution's file names, containers,
frame rates and label formats. The test runs exactly what README.md tells a researcher to run,

    .venv/bin/snakemake --cores 2 results/<ds>/ccc.json --configfile config/cpu.yaml \
        --config 'datasets={<ds>: {root: <tree>}}'

plus a second --configfile that only shortens the trainings for CI (numbers go through a file:
nested --config values are read as strings), and checks ccc.json: every experiment scored with
finite values, every video scored, nothing excluded, and no CPU cost warning (the preset has no
paper-size model). A dry run without the preset then shows the warning before any training, and
one with the SLURM profile (which gives the training rules a GPU) does not.

The three runs start in the background once the session's tiny demo and cross-dataset runs have ended (fixture
`layout_runs`, tests/conftest.py): most later tests use one core, and SEMAINE's DR chain is mostly one
job at a time, so beside them the runs use a core that would otherwise idle.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.background import BackgroundRun
from support.real_layouts import AFFWILD2_TEST_LIST, BUILDERS, FRAMES

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "config" / "cpu.yaml"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"  # the venv's, as README.md runs it
WARNING = "will train WITHOUT A GPU"

# CI only: shorter trainings on 4 tiny videos and two experiments that between them use every stage
# (dynamic images + CNN + BGRU; DR UNets + MDR CNN per-frame), the DR one on SEMAINE only (the DR
# stages do not depend on the layout; CI time is tight). Everything else is the preset.
DFM_BGRU = {"dfm_bgru": {"label": "DFM+BGRU", "input": "dfm", "regressor": "bgru"}}
CI_EXPERIMENTS = {
    "semaine": {**DFM_BGRU, "mdr_cnn": {"label": "MDR+CNN per-frame", "input": "mdr", "regressor": "cnn"}},
    "recola": DFM_BGRU,
    "affwild2": DFM_BGRU,
}
CI_OVERRIDES = {
    "dr": {"epochs": 1, "windows_per_epoch": 32, "val_windows": 16, "rank_windows_per_video": 10,
           "theta_calibration_windows": 16},
    "cnn": {"epochs": 1, "loader_workers": 0},
    "regression": {"seq_len": 40, "train_hop": 20, "batch_size": 4, "max_epochs": 2, "bgru": {"hidden_units": 16}},
}
#: scored partitions and videos per partition (Aff-Wild2's test labels are not distributed)
EXPECTED = {
    "semaine": {"devel": 1, "test": 1},
    "recola": {"devel": 1, "test": 1},
    "affwild2": {"devel": 1},
}


def _run(work: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(work), *args]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)


def _config_arg(ds: str, root: Path) -> str:
    extra = f", test_list: {AFFWILD2_TEST_LIST}" if ds == "affwild2" else ""
    return f"datasets={{{ds}: {{root: {root}{extra}}}}}"


def start_layouts(tmp_path_factory) -> dict:
    """Build each layout's tree and working directory and start its run of the README command in the
    background, SEMAINE's (the longest) first: ``ds -> (root, work, BackgroundRun)``. Called by the
    session fixture `_layout_runs_started` (tests/conftest.py) once the tiny demo and cross-dataset
    runs have ended."""
    runs = {}
    try:
        for ds, build in BUILDERS.items():
            base = tmp_path_factory.mktemp(f"layout-{ds}")
            root = build(base / "data" / ds)
            work = base / "work"
            work.mkdir()
            shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
            (work / "ci.yaml").write_text(yaml.safe_dump({**CI_OVERRIDES, "experiments": CI_EXPERIMENTS[ds]}))
            cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(work),
                   "--cores", "2", f"results/{ds}/ccc.json", "--configfile", str(PRESET), str(work / "ci.yaml"),
                   "--config", _config_arg(ds, root)]
            runs[ds] = root, work, BackgroundRun(cmd, cwd=work, env=None, log_dir=base, timeout=1500)
    except BaseException:
        for _, _, run in runs.values():
            run.stop()
        raise
    return runs


@pytest.fixture(scope="module")
def layout_runs(_layout_runs_started):
    """The three runs of `start_layouts`, started in the background by the session (tests/conftest.py)."""
    return _layout_runs_started.result()


@pytest.mark.slow
@pytest.mark.parametrize("ds", list(BUILDERS))
def test_real_layout_end_to_end_with_cpu_preset(ds, layout_runs):
    root, work, run = layout_runs[ds]
    target = f"results/{ds}/ccc.json"
    res = run.wait()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert WARNING not in out  # the preset trains no paper-size model

    ccc = json.loads((work / target).read_text())
    assert ccc["dataset"] == ds
    assert ccc["excluded"] == [], ccc["excluded"]
    assert list(ccc["experiments"]) == list(CI_EXPERIMENTS[ds])
    for name, exp in ccc["experiments"].items():
        for part, n_videos in EXPECTED[ds].items():
            res_part = exp["partitions"][part]
            assert res_part["scored"], (name, part)
            assert res_part["videos"] == n_videos, (name, part)
            for dim in ("valence", "arousal"):
                d = res_part["dimensions"][dim]
                assert d["labelled_frames"] > FRAMES // 2, (name, part, dim)
                for metric in ("ccc", "pcc", "mse"):
                    assert math.isfinite(d["concatenated"][metric]), (name, part, dim, metric)
    manifest_rows = {"semaine": 4, "recola": 4, "affwild2": 5}[ds]  # Aff-Wild2: the two people of one video
    assert len(list((work / f"results/{ds}/labels").glob("*.parquet"))) == manifest_rows

    if ds == "semaine":
        # Without the preset (paper sizes) and without a GPU, the plan warns before any training,
        # already on a dry run, naming the estimate and the switches.
        res = _run(work, "-n", target, "--config", _config_arg(ds, root))
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        from affpipe.cost import gpu_visible

        if not gpu_visible():
            assert out.count(WARNING) == 1, out[-4000:]
            assert "--configfile config/cpu.yaml" in out and "--workflow-profile profiles/slurm" in out
            assert "per-frame CNN (vgg16, 224 px) on dfm" in out and "DR UNet T=3 (width 64" in out
            assert f"{4 * FRAMES:,} frames" in out
        # the SLURM profile gives the training rules a GPU: no warning (also on a dry run)
        res = _run(work, "-n", target, "--workflow-profile", str(ROOT / "profiles" / "slurm"),
                   "--config", _config_arg(ds, root))
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        assert WARNING not in out
