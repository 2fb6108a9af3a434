"""The Snakemake workflow itself: lint, config errors at DAG-build time, and the demo end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


NETGUARD = Path(__file__).resolve().parent / "support" / "netguard"  # sitecustomize.py refusing internet sockets


def _snakemake(*args: str, cwd: Path = ROOT, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def guarded_env(log: Path) -> dict:
    """The environment with the network guard on (tests/support/netguard): attempts are logged to `log`."""
    path = os.pathsep.join(p for p in (str(NETGUARD), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, AFFPIPE_NETGUARD_LOG=str(log))


def test_lint_is_clean():
    res = _snakemake("--lint")
    out = res.stdout + res.stderr
    assert "Lints for" not in out, out
    assert res.returncode == 0, out


def test_unset_dataset_root_fails_at_once_naming_the_key():
    res = _snakemake("-n", "results/semaine/report/summary.json")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "datasets.semaine.root" in out, out


def test_config_override_of_root_is_used(tmp_path):
    missing = tmp_path / "no-such-AVEC2016"
    res = _snakemake("-n", "results/recola/report/summary.json", "--config", f"datasets={{recola: {{root: {missing}}}}}")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert str(missing) in out and "datasets.recola.root" in out, out


def test_unknown_dataset_is_named():
    res = _snakemake("-n", "results/nosuchdata/report/summary.json")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "datasets.nosuchdata" in out, out


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("faces={detector: magic}", ("faces.detector",)),
        # a per-dataset stage override is checked at once too, not after the manifest checkpoint
        ("datasets={demo: {dynamic: {T: -3}}}", ("dynamic.T", "dataset `demo`")),
        ("datasets={demo: {on_bad_input: skip}}", ("datasets.demo.on_bad_input",)),
    ],
)
def test_invalid_config_value_is_named(override, names):
    res = _snakemake("-n", "--config", override)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    for name in names:
        assert name in out, out


# A small demo (4 identities, one short video each) that still exercises every rule. The full
# default demo runs in CI through `make demo`.
TINY_DEMO = {
    "identities": ["astronaut", "group_1", "man_video", "woman_video"],
    "partitions": {"train": ["astronaut", "group_1"], "devel": ["man_video"], "test": ["woman_video"]},
    "videos_per_identity": 1,
    "frames_per_video": 60,
    "frame_width": 192,
    "frame_height": 192,
    "preview": False,
}
TINY_CONFIG = {
    "datasets": {
        "tiny": {
            "adapter": "csv",
            "root": "results/tiny/raw",
            "generated": True,
            "demo": TINY_DEMO,
            "static": {"size": 64},
            "dynamic": {"T": 6},
            # a very small UNet: this checks the DR rules run end to end, not its accuracy
            "dr": {"width": 4, "depth": 2, "epochs": 1, "windows_per_epoch": 32, "val_windows": 16,
                   "rank_windows_per_video": 10, "theta_calibration_windows": 32},
            # the small CNN and a small BGRU, one or two epochs: the rules run end to end on every
            # default experiment (single-input, two-branch dfa+dfs, and the per-frame mdr CNN)
            "cnn": {"backbone": "small", "optimizer": "adam", "lr": 0.001, "epochs": 1, "batch_size": 16,
                    "loader_workers": 0},
            "regression": {"seq_len": 20, "train_hop": 10, "batch_size": 4, "max_epochs": 2,
                           "bgru": {"hidden_units": 16}},
        }
    },
    "report": {"montages_per_dataset": 2},
}
TINY_TARGET = "results/tiny/report/summary.json"
TINY_DR = "results/tiny/dr/ranking.json"
TINY_CCC = "results/tiny/ccc.json"
TINY_REPORT = "results/tiny/report/regression"
TINY_EXPERIMENTS = ("dfm_bgru", "dfs_bgru", "dfa_dfs_bgru", "sfa_bgru", "mdr_cnn")
# the report's tables and DR chart (cheap; the browser test opens the report built from this run)
TINY_TABLES = ("results/tiny/report/results.md", "results/tiny/report/quality.html", "results/tiny/report/dr_ranking.png")
TINY_TARGETS = (TINY_TARGET, TINY_DR, TINY_CCC, TINY_REPORT, *TINY_TABLES)


def start_tiny(tmp_path_factory):
    """Start the workflow on the tiny demo in a scratch working directory, in the background:
    ``(work dir, snakemake args, BackgroundRun)``. The session fixture `tiny_run` in conftest.py
    starts it with the session and waits for it; tests/test_slurm.py and tests/test_resume.py
    compare their runs with it."""
    from support.background import BackgroundRun

    work = tmp_path_factory.mktemp("workflow")
    shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
    (work / "tiny.yaml").write_text(json.dumps(TINY_CONFIG))
    args = [
        "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(work / "tiny.yaml"),
        "--cores", "2", *TINY_TARGETS,
    ]
    # with the network guard: the whole run must never open an internet socket
    run = BackgroundRun([*SNAKEMAKE, *args], cwd=work, env=guarded_env(work / "network.log"),
                        log_dir=tmp_path_factory.mktemp("workflow-output"), timeout=1800)
    return work, args, run


@pytest.mark.slow
def test_tiny_demo_end_to_end(tiny_run):
    work, _ = tiny_run
    summary = json.loads((work / TINY_TARGET).read_text())
    assert summary["totals"]["videos"] == 4
    assert summary["problems"] == []
    for vid, entry in summary["videos"].items():
        assert entry["faces"]["frames_decoded"] == 60, vid
        assert entry["faces"]["lost"] == 0, vid  # a face in every generated frame
        assert entry["labels"]["labelled_frames"] == 60, vid
        assert entry["static"]["valid"] == 60, vid
        # T=6, stride 2: the first full window ends at frame 10, so 50 windows per video
        assert entry["dynamic"]["rows"] == 50 and entry["dynamic"]["valid"] == 50, vid
    sheets = sorted((work / "results/tiny/report/faces").glob("*.png"))
    montages = sorted((work / "results/tiny/report/montages").glob("*.png"))
    assert len(sheets) == 2 and len(montages) == 2
    # DR models trained on the train identities, ranking scored on the unseen ones
    ranking = json.loads((work / TINY_DR).read_text())
    assert set(ranking["levels"]) == {"T3", "T5"}
    for level in ranking["levels"].values():
        for key in ("dr", "ranksvm_upper_bound", "similarity_baseline"):
            assert 0.0 <= level[key]["accuracy"] <= 1.0, key
            assert level[key]["pairs"] > 0, key
    scored = {v["video"] for v in ranking["videos"]}
    assert scored == {"man_video_01", "woman_video_01"}  # never the training videos
    # no temporary files left behind
    assert not [p for p in (work / "results").rglob("*.tmp-*")]


@pytest.mark.slow
def test_tiny_demo_reaches_ccc_json(tiny_run):
    """Features -> every default experiment -> ccc.json and the regression plots."""
    import h5py
    import pyarrow.parquet as pq

    work, _ = tiny_run
    ccc = json.loads((work / TINY_CCC).read_text())
    assert ccc["format"] == "affpipe-ccc" and ccc["dataset"] == "tiny"
    assert list(ccc["experiments"]) == list(TINY_EXPERIMENTS)
    for name, exp in ccc["experiments"].items():
        for part in ("devel", "test"):
            res = exp["partitions"][part]
            assert res["scored"], (name, part)
            assert res["videos"] == 1 and res["frames"] == 60, (name, part)
            for dim in ("valence", "arousal"):
                d = res["dimensions"][dim]
                assert d["labelled_videos"] == 1 and d["labelled_frames"] == 60, (name, part, dim)
                assert -1.0 <= d["concatenated"]["ccc"] <= 1.0, (name, part, dim)
                assert 0.0 <= d["filled_share"] < 1.0, (name, part, dim)
        table = pq.read_table(work / f"results/tiny/experiments/{name}/predictions.parquet")
        assert table.num_rows == 4 * 60, name  # every frame of every video has a prediction
        filled = table.column("filled").to_numpy()
        # dynamic inputs have no feature before the first full window (frame 10); static ones, and
        # the MDR (inferred from each still image), have one on every frame with a face
        if name in ("sfa_bgru", "mdr_cnn"):
            assert not filled.any()
        else:
            assert filled.sum() >= 4 * 10, name
    # the two-branch input concatenates two CNNs' features; every frame row is stored
    with h5py.File(work / "results/tiny/features/dfa+dfs/woman_video_01.h5", "r") as f:
        with h5py.File(work / "results/tiny/features/dfm/woman_video_01.h5", "r") as g:
            assert f["features"].shape[1] == 2 * g["features"].shape[1]
    plots = sorted(p.name for p in (work / TINY_REPORT).glob("*.png"))
    assert plots, "no regression plots"
    # the paper-style tables name every experiment; the quality table every video
    tex = (work / "results/tiny/report/results.tex").read_text()
    assert tex.count(r"\toprule") == 2 and all(exp["label"] in tex for exp in ccc["experiments"].values())
    quality = (work / "results/tiny/report/quality.md").read_text()
    assert all(v.replace("_", "\\_") in quality for v in ("astronaut_01", "group_1_01", "man_video_01", "woman_video_01"))
    assert (work / "results/tiny/report/dr_ranking.png").stat().st_size > 0


@pytest.mark.slow
def test_tiny_demo_never_reaches_for_the_network(tiny_run):
    """Every process of the run had internet sockets and name lookups refused and logged."""
    work, _ = tiny_run
    log = work / "network.log"
    assert not log.exists(), log.read_text()


def test_network_guard_works(tmp_path):
    """The guard the test above relies on does refuse and log (so its silence means something)."""
    log = tmp_path / "net.log"
    code = "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\nexcept OSError as e:\n    print(e)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=guarded_env(log), timeout=60)
    assert "blocked by the affpipe test guard" in res.stdout, res.stdout + res.stderr
    assert "192.0.2.1" in log.read_text()


@pytest.mark.slow
def test_tiny_demo_rerun_is_a_no_op(tiny_run):
    work, args = tiny_run
    res = _snakemake(*args, "-n", cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.slow
def test_tiny_demo_batched_stages_keep_their_files_and_rerun_per_input(tiny_run):
    """Labels (written by the manifest job), DR inference (one job per dataset) and CNN features (one
    job per input) keep one file per video; a retrained CNN re-runs its own input's features and the
    experiments reading them, not the other inputs'."""
    import re

    work, args = tiny_run
    results = work / "results" / "tiny"
    videos = sorted(p.stem for p in (results / "static").glob("*.h5"))
    assert len(videos) == 4
    folders = ["labels", "dr/videos", *(f"features/{i}" for i in ("dfm", "dfs", "dfa+dfs", "sfa", "mdr"))]
    for folder in folders:
        suffix = ".parquet" if folder == "labels" else ".h5"
        assert sorted(p.name for p in (results / folder).iterdir() if p.name != ".snakemake_timestamp") == \
            [f"{v}{suffix}" for v in videos], folder
    log = sorted((work / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    ran = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", log, re.M)
    assert "labels" not in ran and ran.count("dr_infer") == 1 and ran.count("cnn_features") == 5
    res = _snakemake(*args, "-n", "-p", "--forcerun", "results/tiny/cnn/dfm/model.pt", cwd=work, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1].split("Reasons:")[0], re.M))
    assert stats["cnn_train"] == stats["cnn_features"] == stats["regress"] == "1", stats
    assert "dr_infer" not in stats and "manifest" not in stats, stats
    assert "--out-dir results/tiny/features/dfm " in out and "--experiment dfm_bgru " in out
    assert not re.search(r"--out-dir results/tiny/features/(?!dfm )", out), out


@pytest.mark.slow
def test_affwild2_left_and_right_of_one_video_are_tracked_jointly(tmp_path):
    """The manifest has X_left and X_right of one video: both faces jobs get `--side S --paired`
    (docs/faces.md, Side tracks); a video with one side only or none is not paired."""
    from test_datasets import affwild2_tree

    root = affwild2_tree(tmp_path / "Aff-Wild2")
    shutil.copy(ROOT / "workflow_config.yaml", tmp_path / "workflow_config.yaml")
    (tmp_path / "aw.yaml").write_text(json.dumps(
        {"datasets": {"aw": {"adapter": "affwild2", "root": str(root), "test_list": "test_set_release.txt"}}}))
    base = ["-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(tmp_path / "aw.yaml"),
            "--cores", "1"]
    res = _snakemake(*base, "results/aw/manifest.parquet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    res = _snakemake(*base, "-n", "-p", *(f"results/aw/faces/{v}.parquet" for v in
                                          ("video10_1_left", "video10_1_right", "1-30-640x360")), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    commands = {line.split("--out ")[1].split()[0]: line for line in (res.stdout + res.stderr).splitlines()
                if "affpipe faces" in line}
    assert " --side left --paired " in commands["results/aw/faces/video10_1_left.parquet"]
    assert " --side right --paired " in commands["results/aw/faces/video10_1_right.parquet"]
    assert "--side" not in commands["results/aw/faces/1-30-640x360.parquet"]


@pytest.mark.slow
def test_astnet_attribute_input_is_the_features_store_regress_reads(tiny_run):
    """regression.astnet.attribute_input names another CNN input: the regress rule depends on and reads
    its features (docs/regression.md, AST-Net); by default the experiment's own input."""
    work, args = tiny_run
    base = [a for a in args if a not in TINY_TARGETS]
    commands = {}
    for name, astnet in (("attr_astnet", "{attribute_input: sfa}"), ("own_astnet", "{}")):
        override = (f"datasets={{tiny: {{experiments: {{{name}: {{input: dfm, regressor: astnet, "
                    f"regression: {{astnet: {astnet}}}}}}}}}}}")
        res = _snakemake(*base, "-n", "-p", f"results/tiny/experiments/{name}/predictions.parquet",
                         "--config", override, cwd=work)
        assert res.returncode == 0, res.stderr[-3000:]
        commands[name] = next(line for line in (res.stdout + res.stderr).splitlines() if "affpipe regress" in line)
    assert "--input dfm" in commands["attr_astnet"] and "--features results/tiny/features/sfa " in commands["attr_astnet"]
    assert "--features results/tiny/features/dfm " in commands["own_astnet"]
