"""ccc.json (affpipe evaluate) and the regression plots, on hand-made predictions files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from affpipe import metrics
from affpipe.cli import main
from affpipe.faces.advice import GENERIC_HINT
from affpipe.io.atomic import write_parquet
from affpipe.regress.predictions import predictions_schema

N = 50


def _video(rng, vid, part, *, labelled=True, filled_first=5, quality=0.8, const_pred=False):
    t = np.linspace(0, 4 * np.pi, N)
    true = np.stack([0.5 * np.sin(t + rng.uniform(0, 3)), 0.4 * np.cos(t + rng.uniform(0, 3))], axis=1)
    pred = quality * true + rng.normal(scale=0.1, size=true.shape)
    if const_pred:
        pred[:] = 0.1
    if not labelled:
        true[:] = np.nan
    filled = np.zeros(N, bool)
    filled[:filled_first] = True
    return {
        "video": [vid] * N, "partition": [part] * N, "frame": np.arange(N, dtype=np.int32),
        "time_s": np.arange(N) / 25.0,
        "valence_pred": pred[:, 0].astype(np.float32), "arousal_pred": pred[:, 1].astype(np.float32),
        "valence_true": true[:, 0].astype(np.float32), "arousal_true": true[:, 1].astype(np.float32),
        "filled": filled,
    }


def _write(path, videos, **meta):
    cols = {k: np.concatenate([np.asarray(v[k]) for v in videos]) for k in videos[0]}
    table = pa.table(cols, schema=predictions_schema())
    base = {"label": "", "input": "dfm", "regressor": "bgru", "fill_rule": "nearest", "settings_sha256": "abc",
            "selected_epoch": "3"}
    base.update(meta)
    write_parquet(table, path, metadata=base)
    return table


def _manifest(path, videos):
    write_parquet(pa.Table.from_pylist([{"video": v, "partition": p, "fps": 25.0} for v, p in videos]), path,
                  metadata={"dataset": "toy"})


@pytest.fixture
def toy(tmp_path):
    rng = np.random.default_rng(0)
    layout = [("d1", "devel"), ("d2", "devel"), ("t1", "test"), ("t2", "test"), ("tr", "train")]
    good = [_video(np.random.default_rng(i), v, p) for i, (v, p) in enumerate(layout)]
    bad = [_video(np.random.default_rng(i), v, p, const_pred=True, filled_first=N if v == "t2" else 5)
           for i, (v, p) in enumerate(layout)]
    del rng
    _write(tmp_path / "good.parquet", good, label="Good+BGRU")
    _write(tmp_path / "bad.parquet", bad, label="Collapsed")
    _manifest(tmp_path / "manifest.parquet", layout)
    return tmp_path, good, bad


def _evaluate(tmp_path, *extra, names=("good", "bad")):
    out = tmp_path / "ccc.json"
    rc = main(["evaluate", "--manifest", str(tmp_path / "manifest.parquet"), "--predictions",
               *[f"{n}={tmp_path / (n + '.parquet')}" for n in names], "--out", str(out), *extra])
    return rc, out


def test_ccc_json_values_match_the_metrics(toy):
    tmp_path, good, _ = toy
    rc, out = _evaluate(tmp_path)
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["format"] == "affpipe-ccc" and r["dataset"] == "toy" and r["affpipe_version"]
    assert len(r["config_hash"]) == 64
    assert list(r["experiments"]) == ["good", "bad"]
    g = r["experiments"]["good"]
    assert g["label"] == "Good+BGRU" and g["input"] == "dfm" and g["selected_epoch"] == 3
    assert set(g["partitions"]) == {"devel", "test"}
    test = g["partitions"]["test"]
    # t2 has no feature row in experiment `bad`: no prediction of its own, left out of every experiment
    assert (test["videos"], test["frames"], test["filled_frames"]) == (1, N, 5)
    assert test["filled_share"] == pytest.approx(0.1)
    assert r["excluded"] == [{"video": "t2", "partition": "test", "stage": "evaluate",
                              "reason": "no feature row in any frame (experiment(s) bad): no prediction"}]
    tv = [v for v in good if v["video"][0] == "t1"]
    p = np.concatenate([v["valence_pred"] for v in tv]).astype(float)
    t = np.concatenate([v["valence_true"] for v in tv]).astype(float)
    val = test["dimensions"]["valence"]
    assert val["concatenated"]["ccc"] == pytest.approx(metrics.ccc(p, t))
    assert val["concatenated"]["ccc_avec_script"] == pytest.approx(metrics.ccc(p, t, variant="avec_script"))
    assert val["concatenated"]["pcc"] == pytest.approx(metrics.pcc(p, t))
    assert val["concatenated"]["mse"] == pytest.approx(metrics.mse(p, t))
    per = [metrics.ccc(v["valence_pred"].astype(float), v["valence_true"].astype(float)) for v in tv]
    assert val["per_video_mean"]["ccc"] == pytest.approx(np.mean(per))
    assert val["per_video_mean"]["videos"] == 1
    assert r["summary"]["ccc"]["good"]["test"]["valence"] == pytest.approx(metrics.ccc(p, t))
    assert set(r["metrics"]) == {"ccc", "ccc_avec_script", "pcc", "mse"}
    assert set(r["aggregations"]) == {"concatenated", "per_video_mean"}


def test_collapse_shows_as_zero_ccc_and_undefined_pcc(toy):
    tmp_path, _, _ = toy
    _, out = _evaluate(tmp_path)
    bad = json.loads(out.read_text())["experiments"]["bad"]["partitions"]["test"]
    conc = bad["dimensions"]["arousal"]["concatenated"]
    assert conc["ccc"] == 0.0 and conc["pred_std"] == 0.0
    assert conc["pcc"] is None and "predictions are constant" in conc["undefined"]["pcc"]
    assert bad["dimensions"]["arousal"]["per_video_mean"]["videos_undefined"] == {"pcc": 1}
    assert bad["videos_without_features"] == 0  # t2 (every frame filled) is excluded, not scored


def test_unlabelled_partition_is_listed_not_scored(tmp_path):
    layout = [("d1", "devel"), ("t1", "test"), ("tr", "train")]
    vids = [_video(np.random.default_rng(i), v, p, labelled=(p != "test")) for i, (v, p) in enumerate(layout)]
    _write(tmp_path / "good.parquet", vids)
    _manifest(tmp_path / "manifest.parquet", layout)
    rc, out = _evaluate(tmp_path, names=("good",))
    assert rc == 0
    r = json.loads(out.read_text())
    test = r["experiments"]["good"]["partitions"]["test"]
    assert test["scored"] is False and test["videos"] == 1 and test["frames"] == N
    assert test["dimensions"]["valence"] == {"labelled_frames": 0, "scored": False}
    assert r["summary"]["ccc"]["good"]["test"] == {"valence": None, "arousal": None}


def test_partitions_setting(toy):
    tmp_path, _, _ = toy
    _, out = _evaluate(tmp_path, "--settings", '{"partitions": ["train", "test"]}')
    assert set(json.loads(out.read_text())["experiments"]["good"]["partitions"]) == {"train", "test"}


def test_config_hash_is_stable_and_tracks_settings(toy):
    tmp_path, _, _ = toy
    _, out = _evaluate(tmp_path)
    h1 = json.loads(out.read_text())["config_hash"]
    _, out = _evaluate(tmp_path)
    assert json.loads(out.read_text())["config_hash"] == h1
    _, out = _evaluate(tmp_path, "--settings", '{"partitions": ["test"]}')
    assert json.loads(out.read_text())["config_hash"] != h1


def test_missing_video_is_an_error_naming_the_file(toy, capsys):
    tmp_path, good, _ = toy
    _write(tmp_path / "good.parquet", good[:-1])
    rc, _ = _evaluate(tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "good.parquet: predictions do not match the manifest: 1 manifest video(s) missing (e.g. tr)" in err


def test_non_finite_prediction_is_an_error(toy, capsys):
    tmp_path, good, _ = toy
    good[0]["valence_pred"] = good[0]["valence_pred"].copy()
    good[0]["valence_pred"][7] = np.nan
    _write(tmp_path / "good.parquet", good)
    rc, _ = _evaluate(tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "good.parquet: 1 frames have no finite prediction (e.g. d1:7)" in err


def test_experiments_scored_on_different_labels_is_an_error(toy, capsys):
    tmp_path, _, bad = toy
    bad[2]["valence_true"] = bad[2]["valence_true"] + 0.1
    _write(tmp_path / "bad.parquet", bad)
    rc, _ = _evaluate(tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "bad.parquet: covers other label values than" in err


def test_bad_arguments(toy, capsys):
    tmp_path, _, _ = toy
    rc = main(["evaluate", "--predictions", "good", "--out", str(tmp_path / "x.json")])
    assert rc == 2 and "NAME=PATH" in capsys.readouterr().err
    rc = main(["evaluate", "--predictions", f"a={tmp_path / 'missing.parquet'}", "--out", str(tmp_path / "x.json")])
    assert rc == 2 and "missing.parquet: predictions file does not exist" in capsys.readouterr().err


def test_regression_report_writes_every_figure(toy):
    tmp_path, _, _ = toy
    _, ccc = _evaluate(tmp_path)
    out = tmp_path / "report" / "regression"
    rc = main(["regression-report", "--ccc", str(ccc), "--out", str(out)])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ccc_bars.png", "scatter_devel_arousal.png", "scatter_devel_valence.png",
                     "scatter_test_arousal.png", "scatter_test_valence.png", "trace_t1.png", "trace_t2.png"]
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    # re-running replaces the folder as a whole
    rc = main(["regression-report", "--ccc", str(ccc), "--out", str(out), "--settings", '{"trace_partitions": []}'])
    assert rc == 0 and not any(p.name.startswith("trace_") for p in out.iterdir())
    assert not list(out.parent.glob("*.tmp-*"))


def test_manifest_exclusions_and_videos_without_a_face_are_listed(tmp_path):
    """ccc.json's `excluded`: the manifest's exclusions (from its metadata) and, at evaluation, a video
    with no feature row in any frame, named as "no face found" when its faces table has no face."""
    layout = [("d1", "devel"), ("d2", "devel"), ("t1", "test"), ("tr", "train")]
    vids = [_video(np.random.default_rng(i), v, p, filled_first=N if v == "d2" else 5) for i, (v, p) in enumerate(layout)]
    _write(tmp_path / "good.parquet", vids)
    gone = {"video": "x", "path": "/data/x.mp4", "partition": "train", "stage": "manifest",
            "reason": "cannot open video: not a video container FFmpeg understands, or corrupt", "file": "/data/x.mp4"}
    write_parquet(pa.Table.from_pylist([{"video": v, "partition": p, "fps": 25.0} for v, p in layout]),
                  tmp_path / "manifest.parquet", metadata={"dataset": "toy", "excluded": json.dumps([gone])})
    faces = tmp_path / "faces"
    faces.mkdir()
    write_parquet(pa.table({"status": ["lost"] * N}), faces / "d2.parquet")
    rc, out = _evaluate(tmp_path, "--faces", str(faces), names=("good",))
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["excluded"] == [gone, {"video": "d2", "partition": "devel", "stage": "evaluate",
                                    "reason": "no face found in any frame: no prediction",
                                    "hint": GENERIC_HINT}]  # this faces table records no settings
    devel = r["experiments"]["good"]["partitions"]["devel"]
    assert devel["videos"] == 1 and devel["frames"] == N  # d2 is not scored, and nothing is filled in for it


def test_frames_a_truncated_video_does_not_have_are_not_scored(tmp_path):
    layout = [("d1", "devel"), ("t1", "test"), ("tr", "train")]
    _write(tmp_path / "good.parquet", [_video(np.random.default_rng(i), v, p) for i, (v, p) in enumerate(layout)])
    _manifest(tmp_path / "manifest.parquet", layout)
    faces = tmp_path / "faces"
    faces.mkdir()
    for v, _ in layout:
        write_parquet(pa.table({"status": ["detected"] * (N - 3 if v == "t1" else N)}), faces / f"{v}.parquet")
    rc, out = _evaluate(tmp_path, "--faces", str(faces), names=("good",))
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["excluded"] == []
    assert r["frames_not_scored"] == [{"video": "t1", "partition": "test", "frames": 3, "reason":
                                       f"truncated video: {N - 3} frames decode, the labels cover {N}; "
                                       "frames without an image are not scored"}]
    test = r["experiments"]["good"]["partitions"]["test"]
    assert test["frames"] == N - 3 and test["dimensions"]["valence"]["labelled_frames"] == N - 3
