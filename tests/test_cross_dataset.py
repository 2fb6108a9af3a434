"""Trained models applied to other data (`experiments.<name>.source`, docs/regression.md): the source's
regressor predicts another dataset exactly as it predicts its own videos, with or without labels;
ccc.json records the source; a dataset without labels is predicted but not scored; the DAG-build errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from affpipe.cli import main
from affpipe.config import section_settings
from affpipe.errors import ConfigError
from affpipe.io.atomic import write_parquet
from affpipe.regress.experiment import Experiment, SourceModel, run_experiment
from support.regress_support import FAST_SETTINGS, make_dataset, write_features

ROOT = Path(__file__).resolve().parent.parent


def _settings(**over):
    return section_settings("regression", {**FAST_SETTINGS, "max_epochs": 3, **over})


def _exp(ds_root: Path, manifest: Path, regressor: str, name: str, input_name: str = "dfm"):
    return Experiment(name=name, input=input_name, regressor=regressor, backbone=None, label=None, manifest=manifest,
                      features_dir=ds_root / "features" / "dfm", labels_dir=ds_root / "labels")


def _subset(src, root: Path, videos: list[str], *, labelled: bool) -> Path:
    """Dataset B: `videos` of dataset `src` (same feature files), all in `test`, labels kept or all NaN."""
    (root / "features" / "dfm").mkdir(parents=True)
    rows = [r for r in pq.read_table(src.manifest).to_pylist() if r["video"] in videos]
    for r in rows:
        r["partition"] = "test"
        shutil.copy(src.features_dir / f"{r['video']}.h5", root / "features" / "dfm" / f"{r['video']}.h5")
        labels = pq.read_table(src.labels_dir / f"{r['video']}.parquet")
        if not labelled:
            nan = pa.array(np.full(labels.num_rows, np.nan, np.float32))
            labels = labels.set_column(2, "valence", nan).set_column(3, "arousal", nan)
        write_parquet(labels, root / "labels" / f"{r['video']}.parquet")
    manifest = root / "manifest.parquet"
    write_parquet(pa.Table.from_pylist(rows), manifest, metadata={"dataset": "b"})
    return manifest


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Dataset A (synthetic, with the CNN's per-frame `pred`) and its trained bgru and per-frame experiments."""
    a = make_dataset(tmp_path_factory.mktemp("a"), with_pred=True)
    runs = {}
    for regressor, name in (("bgru", "dfm_bgru"), ("cnn", "dfm_cnn")):
        out = a.root / "experiments" / name / "predictions.parquet"
        run_experiment(_exp(a.root, a.manifest, regressor, name), _settings(), out=out,
                       summary_out=out.with_name("training.json"))
        runs[name] = out
    return a, runs


def _frame(path: Path):
    return pq.read_table(path).to_pandas().set_index(["video", "frame"])


@pytest.mark.train
@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize(("regressor", "name"), [("bgru", "dfm_bgru"), ("cnn", "dfm_cnn")])
def test_applied_model_predicts_as_on_its_own_dataset(source, tmp_path, regressor, name, labelled):
    """B = two of A's videos (one train, one test): A's model applied to B gives, bit for bit, the
    predictions A's own run wrote for them (same features, same inference code); nothing is trained."""
    a, runs = source
    videos = ["train_01", "test_00"]
    manifest = _subset(a, tmp_path / "b", videos, labelled=labelled)
    out = tmp_path / "b" / "experiments" / name / "predictions.parquet"
    summary = run_experiment(_exp(tmp_path / "b", manifest, regressor, name), _settings(max_epochs=99, seed=7),
                             out=out, summary_out=out.with_name("training.json"),
                             source=SourceModel(dataset="a", experiment_dir=runs[name].parent))
    mine, theirs = _frame(out), _frame(runs[name]).loc[videos]
    for col in ("valence_pred", "arousal_pred", "filled"):
        np.testing.assert_array_equal(mine[col].to_numpy(), theirs.loc[mine.index, col].to_numpy(), err_msg=col)
    assert set(mine["partition"]) == {"test"}
    if labelled:
        np.testing.assert_array_equal(mine["valence_true"].to_numpy(), theirs.loc[mine.index, "valence_true"].to_numpy())
    else:
        assert mine["valence_true"].isna().all() and mine["arousal_true"].isna().all()
    assert "history" not in summary and not out.with_name("model.pt").exists()  # nothing trained here
    trained = json.loads(runs[name].with_name("training.json").read_text())
    assert summary["settings"] == trained["settings"]  # the source's settings, not the ones passed
    assert summary["source"]["dataset"] == "a"
    meta = json.loads(pq.read_schema(out).metadata[b"source"])
    assert meta["dataset"] == "a" and meta["training_summary"].endswith(f"{name}/training.json")
    if regressor == "bgru":
        model = runs[name].with_name("model.pt")
        assert meta["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    # evaluate: the source is recorded; without labels nothing is scored, and it says so
    ccc = tmp_path / "ccc.json"
    assert main(["evaluate", "--manifest", str(manifest), "--predictions", f"{name}={out}", "--out", str(ccc)]) == 0
    report = json.loads(ccc.read_text())
    assert report["experiments"][name]["source"]["dataset"] == "a"
    assert report["scored"] is labelled
    if labelled:
        assert report["summary"]["ccc"][name]["test"]["valence"] is not None
    else:
        assert "no labelled frame" in report["not_scored_reason"]
        assert all(v is None for part in report["summary"]["ccc"][name].values() for v in part.values())
        figs = tmp_path / "figs"
        assert main(["regression-report", "--ccc", str(ccc), "--out", str(figs)]) == 0
        assert sorted(p.name for p in figs.iterdir()) == ["trace_test_00.png", "trace_train_01.png"]
        md = tmp_path / "r.md"
        assert main(["results-table", "--ccc", str(ccc), "--md", str(md), "--tex", str(tmp_path / "r.tex"),
                     "--html", str(tmp_path / "r.html")]) == 0
        assert "nothing to score" in md.read_text()


@pytest.mark.train
def test_cli_applies_the_source_dir(source, tmp_path):
    a, runs = source
    manifest = _subset(a, tmp_path / "b", ["test_01"], labelled=False)
    out = tmp_path / "b" / "experiments" / "dfm_bgru" / "predictions.parquet"
    assert main(["regress", "--manifest", str(manifest), "--features", str(tmp_path / "b" / "features" / "dfm"),
                 "--labels", str(tmp_path / "b" / "labels"), "--input", "dfm", "--regressor", "bgru",
                 "--out", str(out), "--source-dir", str(runs["dfm_bgru"].parent)]) == 0
    summary = json.loads(out.with_name("training.json").read_text())
    assert summary["source"]["dataset"] == a.root.name  # default: the folder of results/<dataset>/experiments/<name>
    np.testing.assert_array_equal(_frame(out)["valence_pred"].to_numpy(),
                                  _frame(runs["dfm_bgru"]).loc[["test_01"], "valence_pred"].to_numpy())


@pytest.mark.train
def test_other_features_or_experiment_are_errors_naming_the_file(source, tmp_path):
    a, runs = source
    manifest = _subset(a, tmp_path / "b", ["test_00"], labelled=False)
    src = SourceModel(dataset="a", experiment_dir=runs["dfm_bgru"].parent)
    out = tmp_path / "out" / "predictions.parquet"
    with pytest.raises(ConfigError, match="regressor is 'bgru'") as err:
        run_experiment(_exp(tmp_path / "b", manifest, "attention", "dfm_bgru"), _settings(), out=out, source=src)
    assert "training.json" in str(err.value)
    with pytest.raises(ConfigError, match="input is 'dfm'"):
        run_experiment(_exp(tmp_path / "b", manifest, "bgru", "dfm_bgru", input_name="sfa"), _settings(), out=out,
                       source=src)
    # features of another width (another CNN) than the model was trained on
    path = tmp_path / "b" / "features" / "dfm" / "test_00.h5"
    frames = np.arange(18, 200)
    write_features(path, frames, np.zeros((frames.size, 5)), np.ones(frames.size, bool))
    with pytest.raises(ConfigError, match="trained on") as err:
        run_experiment(_exp(tmp_path / "b", manifest, "bgru", "dfm_bgru"), _settings(), out=out, source=src)
    assert "test_00.h5" in str(err.value)
    missing = SourceModel(dataset="a", experiment_dir=tmp_path / "nothing")
    with pytest.raises(ConfigError, match="run experiment 'dfm_bgru' of dataset 'a' first"):
        run_experiment(_exp(tmp_path / "b", manifest, "bgru", "dfm_bgru"), _settings(), out=out, source=missing)
    assert not out.exists()


# --- DAG build: the checks of `source`, on the shipped configuration (demo_unlabelled applies the demo's models)
def _dry(work: Path, *config: str):
    """`snakemake -n` of the default target (rule all) in a fresh working directory, with the shipped
    workflow_config.yaml and `--config` overrides."""
    import subprocess
    import sys

    shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
                          "-n", *(("--config", *config) if config else ())], cwd=work,
                         capture_output=True, text=True, timeout=120)
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize(("override", "names"), [
    ("datasets={demo_unlabelled: {static: {size: 96}}}",
     ("`static.size` (demo_unlabelled: 96, demo: 112)", "datasets.demo_unlabelled.experiments.dfm_bgru.source")),
    ("datasets={demo_unlabelled: {dynamic: {T: 6}}}", ("`dynamic.T` (demo_unlabelled: 6, demo: 10)",)),
    ("datasets={demo_unlabelled: {experiments: {dfm_bgru: {regressor: attention}}}}",
     ("`regressor` (demo_unlabelled: 'attention', demo: 'bgru')",)),
    ("datasets={demo_unlabelled: {experiments: {dfm_bgru: {source: nosuch}}}}",
     ("names dataset `nosuch`, which is not configured", "datasets.nosuch")),
    ("datasets={demo_unlabelled: {experiments: {dfm_bgru: {source: demo_unlabelled}}}}", ("names the dataset itself",)),
    ("datasets={demo_unlabelled: {experiments: {dfm_nope: {input: dfm, source: demo}}}}",
     ("dataset `demo` has no enabled experiment `dfm_nope`",)),
])
def test_source_mismatch_stops_the_dag_build_naming_the_keys(override, names, tmp_path):
    code, out = _dry(tmp_path, override)
    assert code != 0
    for name in names:
        assert name in out, out[-3000:]


def test_shipped_config_applies_the_demo_models_to_the_unlabelled_demo(tmp_path):
    code, out = _dry(tmp_path)
    assert code == 0, out[-3000:]
    assert "results/demo_unlabelled/ccc.json" in out


def test_a_change_to_the_source_leaves_other_targets_alone(tmp_path):
    """demo_unlabelled's check runs when one of its jobs is planned, not for a target that leaves it out."""
    code, out = _dry(tmp_path, "datasets={demo: {dynamic: {T: 6}}}")
    assert code != 0 and "`dynamic.T` (demo_unlabelled: 10, demo: 6)" in out, out[-3000:]
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                          str(tmp_path), "-n", "results/demo/manifest.parquet", "--config",
                          "datasets={demo: {dynamic: {T: 6}}}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


# --- the workflow on the tiny demo run: an unlabelled and a labelled second dataset -------------------------
def start_cross_run(tmp_path_factory, tiny_work: Path):
    """A copy of the tiny run (so its outputs stay as the other tests compare them) with two more
    datasets applying tiny's dfm_bgru, and the run of their targets started in the background:
    ``(copy, snakemake command without targets, BackgroundRun)``. Called by the session fixture
    `_cross_run_started` (tests/conftest.py) once the tiny demo run has ended."""
    import sys

    from support.background import BackgroundRun
    from test_workflow import TINY_CONFIG

    base = tmp_path_factory.mktemp("cross_dataset")
    copy = base / "work"
    shutil.copytree(tiny_work, copy, symlinks=True)
    raw = copy / "results" / "tiny" / "raw"
    (raw / "cross.csv").write_text("video,path,partition,labels\n"
                                   "man_video_01,videos/man_video_01.mp4,devel,labels/man_video_01.csv\n"
                                   "woman_video_01,videos/woman_video_01.mp4,test,labels/woman_video_01.csv\n")
    off = {n: {"enabled": False} for n in ("dfs_bgru", "dfa_dfs_bgru", "sfa_bgru", "mdr_cnn")}
    config = json.loads(json.dumps(TINY_CONFIG))
    tiny = config["datasets"]["tiny"]
    for name, tab in (("tiny_new", "unlabelled.csv"), ("tiny_cross", "cross.csv")):
        config["datasets"][name] = {"adapter": "csv", "root": "results/tiny/raw", "generated": True, "table": tab,
                                    "static": tiny["static"], "dynamic": tiny["dynamic"],
                                    "experiments": {"dfm_bgru": {"label": "DFM+BGRU", "input": "dfm", "source": "tiny"},
                                                    **off}}
    (copy / "cross.yaml").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(copy),
           "--configfile", str(copy / "cross.yaml"), "--cores", "2"]
    targets = ["results/tiny_new/ccc.json", "results/tiny_new/report/regression", "results/tiny_new/report/summary.json",
               "results/tiny_new/report/results.md", "results/tiny_cross/ccc.json"]
    return copy, cmd, BackgroundRun([*cmd, *targets], cwd=copy, env=None, log_dir=base, timeout=1500)


@pytest.fixture(scope="module")
def cross_run(_cross_run_started):
    """`start_cross_run`'s result, started in the background by the session (tests/conftest.py)."""
    return _cross_run_started.result()


@pytest.mark.slow
def test_tiny_demo_models_applied_to_other_datasets(tiny_run, cross_run):
    """On a copy of the tiny run (so its outputs stay as the other tests compare them): `tiny_new`, the tiny
    demo's unlabelled.csv (its test video, no labels), and `tiny_cross`, a table of its devel and test videos
    with their labels, both applying tiny's dfm_bgru. Nothing is trained for them; the features and the
    predictions equal tiny's own, bit for bit; tiny_new is predicted and plotted but not scored; tiny_cross is
    scored exactly as tiny scores those videos. An unlabelled dataset's experiment without `source` stops the
    DAG build saying to set it. (The run goes on in the background: `start_cross_run`.)"""
    import re
    import subprocess

    import h5py

    copy, base, run = cross_run
    table = (copy / "results" / "tiny" / "raw" / "unlabelled.csv").read_text().splitlines()
    assert table[0] == "video,path,partition,labels,subject" and len(table) == 2 and ",test,," in table[1]
    res = run.wait()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    ran = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", out, re.M)
    assert "cnn_train" not in ran and "dr_train" not in ran and "demo_data" not in ran, ran
    assert ran.count("cnn_features_from") == 2 and ran.count("regress") == 2, ran

    results = copy / "results"
    for ds in ("tiny_new", "tiny_cross"):
        exp = results / ds / "experiments" / "dfm_bgru"
        assert not (exp / "model.pt").exists() and not (results / ds / "cnn").exists()  # nothing trained
        theirs = _frame(results / "tiny" / "experiments" / "dfm_bgru" / "predictions.parquet")
        mine = _frame(exp / "predictions.parquet")
        for col in ("valence_pred", "arousal_pred", "filled"):
            np.testing.assert_array_equal(mine[col].to_numpy(), theirs.loc[mine.index, col].to_numpy(), err_msg=col)
        for vid in set(mine.index.get_level_values("video")):
            with h5py.File(results / ds / "features_from" / "tiny" / "dfm" / f"{vid}.h5") as a, \
                    h5py.File(results / "tiny" / "features" / "dfm" / f"{vid}.h5") as b:
                np.testing.assert_array_equal(a["features"][:], b["features"][:])
        report = json.loads((results / ds / "ccc.json").read_text())
        src = report["experiments"]["dfm_bgru"]["source"]
        model = results / "tiny" / "experiments" / "dfm_bgru" / "model.pt"
        assert src["dataset"] == "tiny" and src["model"] == "results/tiny/experiments/dfm_bgru/model.pt"
        assert src["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    new = json.loads((results / "tiny_new" / "ccc.json").read_text())
    assert new["scored"] is False and "no labelled frame" in new["not_scored_reason"]
    assert new["summary"]["ccc"]["dfm_bgru"] == {"devel": {"valence": None, "arousal": None},
                                                 "test": {"valence": None, "arousal": None}}
    summary = json.loads((results / "tiny_new" / "report" / "summary.json").read_text())
    assert summary["scored"] is False and summary["totals"]["labelled_frames"] == 0
    assert sorted(p.name for p in (results / "tiny_new" / "report" / "regression").glob("*.png")) == \
        ["trace_woman_video_01.png"]
    assert "No partition has labels" in (results / "tiny_new" / "report" / "results.md").read_text()

    cross = json.loads((results / "tiny_cross" / "ccc.json").read_text())
    own = json.loads((results / "tiny" / "ccc.json").read_text())
    assert cross["scored"] is True and "not_scored_reason" not in cross
    assert own["experiments"]["dfm_bgru"]["source"] is None
    for part in ("devel", "test"):  # tiny's devel and test are these two videos, one each
        assert cross["summary"]["ccc"]["dfm_bgru"][part] == own["summary"]["ccc"]["dfm_bgru"][part]
        assert cross["summary"]["ccc"]["dfm_bgru"][part]["valence"] is not None

    # an experiment without `source` on a dataset without labels: a clear error at DAG build
    res = subprocess.run([*base, "-n", "results/tiny_new/ccc.json", "--config",
                          "datasets={tiny_new: {experiments: {dfm_own: {input: dfm}}}}"],
                         cwd=copy, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "dataset `tiny_new` has no labels" in out and "datasets.tiny_new.experiments.dfm_own.source" in out, \
        out[-3000:]
