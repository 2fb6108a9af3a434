"""Dataset adapters on tiny fake trees in each distribution's real layout (real video files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from affpipe.cli import main as cli_main
from affpipe.datasets import MANIFEST_SCHEMA, build_labels, build_manifest, check_root, dataset_settings, manifest_excluded
from affpipe.errors import ConfigError, DatasetError, VideoError

REPO = Path(__file__).resolve().parent.parent
FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}


def write_video(path: Path, n_frames: int, fps: float, size=(32, 24)) -> Path:
    """A real, short video (solid frames of changing grey) written with OpenCV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix]), fps, size)
    assert w.isOpened(), path
    for i in range(n_frames):
        w.write(np.full((size[1], size[0], 3), (7 * i) % 256, np.uint8))
    w.release()
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rows_by_id(table):
    return {r["video"]: r for r in table.to_pylist()}


def meta(table, key):
    return json.loads(table.schema.metadata[key.encode()])


# --- settings and root ---------------------------------------------------------------------------
def test_settings_defaults_come_from_the_schema_and_errors_name_the_key():
    s = dataset_settings("x", {"adapter": "semaine"})
    assert s["root"] is None and s["table"] == "videos.csv" and s["unlabelled_value"] == -5
    assert s["label_drift_warn_s"] < s["label_drift_error_s"]
    with pytest.raises(ConfigError, match=r"`datasets\.x\.adapter`"):
        dataset_settings("x", {"adapter": "avec"})
    with pytest.raises(ConfigError, match=r"`datasets\.x`.*roott"):
        dataset_settings("x", {"roott": "/data"})


@pytest.mark.parametrize("adapter", ["semaine", "recola", "affwild2", "csv"])
def test_unset_root_names_the_config_key(adapter):
    with pytest.raises(DatasetError) as err:
        check_root(adapter, {"adapter": adapter, "root": None})
    msg = str(err.value)
    assert f"config key `datasets.{adapter}.root` is not set" in msg
    assert f"--config 'datasets={{{adapter}: {{root: /path/to/" in msg
    with pytest.raises(DatasetError, match=rf"`datasets\.{adapter}\.root` is not set"):
        build_manifest(adapter, {"adapter": adapter})


def test_missing_root_names_path_and_key(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=rf"{missing}: dataset root folder does not exist \(config key `datasets\.sem\.root`\)"):
        check_root("sem", {"adapter": "semaine", "root": str(missing)})
    write(tmp_path / "file", "x")
    with pytest.raises(DatasetError, match="not a folder"):
        check_root("sem", {"adapter": "semaine", "root": str(tmp_path / "file")})


def test_relative_root_is_taken_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert check_root("d", {"root": "data"}) == (tmp_path / "data").resolve()


# --- SEMAINE (AVEC 2012) -------------------------------------------------------------------------
SEMAINE_FPS = 49.979


def semaine_tree(root: Path, n=20) -> Path:
    rng = np.random.default_rng(1)
    for part in ("train", "devel"):
        write_video(root / "Videos" / part / f"{part}_video001.avi", n, SEMAINE_FPS)
        for dim in ("arousal", "valence", "expectancy", "power"):
            vals = rng.uniform(-0.9, 0.9, n)
            write(root / "emotion labels" / part / f"labels_continuous_{part}001_{dim}.dat", "\n".join(f"{v:.6f}" for v in vals) + "\n")
    write_video(root / "Videos" / "test" / "test_video001.avi", n, SEMAINE_FPS)
    write(root / "audio" / "train_audio001.wav", "RIFF")
    write(root / "transcripts" / "train" / "train_transcript001.txt", "hello")
    write(root / "Videos" / ".DS_Store", "")
    return root


def test_semaine_manifest(tmp_path):
    root = semaine_tree(tmp_path / "AVEC2012")
    table = build_manifest("semaine", {"adapter": "semaine", "root": str(root)})
    assert table.schema.remove_metadata() == MANIFEST_SCHEMA
    rows = rows_by_id(table)
    assert list(rows) == ["devel_video001", "test_video001", "train_video001"]
    tr = rows["train_video001"]
    assert tr["partition"] == "train" and rows["devel_video001"]["partition"] == "devel"
    assert rows["test_video001"]["partition"] == "test" and rows["test_video001"]["label_source"] == ""
    assert tr["n_frames"] == 20 and abs(tr["fps"] - SEMAINE_FPS) < 0.01 and (tr["width"], tr["height"]) == (32, 24)
    assert tr["duration_s"] == pytest.approx(20 / tr["fps"])
    assert Path(tr["path"]).is_absolute() and Path(tr["path"]) == (root / "Videos/train/train_video001.avi").resolve()
    val, aro = tr["label_source"].split(";")
    assert val.endswith("labels_continuous_train001_valence.dat") and aro.endswith("labels_continuous_train001_arousal.dat")
    assert tr["subject"] == "" and tr["side"] == ""
    skipped = meta(table, "skipped")
    assert skipped["expectancy labels (not used)"] == 2 and skipped["power labels (not used)"] == 2
    assert skipped["other files (*.wav)"] == 1 and skipped["other files (*.txt)"] == 1 and skipped["hidden file"] == 1
    assert meta(table, "warnings") == []  # 49.98 vs 49.979 is within tolerance


def test_semaine_labels_index_frames_directly(tmp_path):
    root = semaine_tree(tmp_path / "AVEC2012")
    settings = {"adapter": "semaine", "root": str(root)}
    rows = rows_by_id(build_manifest("semaine", settings))
    labels, warnings = build_labels(rows["train_video001"], settings)
    assert warnings == []
    lbl = root / "emotion labels/train"
    expect_v = np.loadtxt(lbl / "labels_continuous_train001_valence.dat")
    expect_a = np.loadtxt(lbl / "labels_continuous_train001_arousal.dat")
    np.testing.assert_allclose(labels.column("valence").to_numpy(), expect_v, atol=1e-6)
    np.testing.assert_allclose(labels.column("arousal").to_numpy(), expect_a, atol=1e-6)
    assert labels.column("frame").to_pylist() == list(range(20))
    fps = rows["train_video001"]["fps"]
    np.testing.assert_allclose(labels.column("time_s").to_numpy(), np.arange(20) / fps)
    md = labels.schema.metadata
    assert md[b"adapter"] == b"semaine" and md[b"nan_frames_valence"] == b"0"
    sources = json.loads(md[b"source_files"])
    assert len(sources) == 2 and all(len(s["sha256"]) == 64 for s in sources)
    # test video: no labels distributed -> all NaN, with a note
    test_lbl, w = build_labels(rows["test_video001"], settings)
    assert w == [] and test_lbl.num_rows == 20
    assert np.isnan(test_lbl.column("arousal").to_numpy()).all()
    assert b"labels are not distributed" in test_lbl.schema.metadata[b"note"]


def test_semaine_unknown_names_and_missing_labels(tmp_path):
    root = semaine_tree(tmp_path / "AVEC2012")
    settings = {"adapter": "semaine", "root": str(root)}
    write_video(root / "Videos" / "train" / "train_vid002.avi", 3, SEMAINE_FPS)
    write(root / "emotion labels" / "labels_continuous_train01_valance.dat", "0.1\n")
    with pytest.raises(DatasetError, match=r"2 file name\(s\) not understood: .*train_vid002\.avi") as err:
        build_manifest("semaine", settings)
    assert "labels_continuous_train01_valance.dat" in str(err.value)
    os.remove(root / "Videos" / "train" / "train_vid002.avi")
    os.remove(root / "emotion labels" / "labels_continuous_train01_valance.dat")
    os.remove(root / "emotion labels/devel/labels_continuous_devel001_valence.dat")
    with pytest.raises(DatasetError, match=r"missing label file\(s\) labels_continuous_devel001_valence\.dat for video devel_video001\.avi"):
        build_manifest("semaine", settings)
    # labels without their video
    write(root / "emotion labels/devel/labels_continuous_devel001_valence.dat", "0\n" * 20)
    write(root / "emotion labels/labels_continuous_train007_valence.dat", "0\n")
    with pytest.raises(DatasetError, match=r"label files without a video: .*labels_continuous_train007_valence\.dat"):
        build_manifest("semaine", settings)


def test_semaine_label_file_checks(tmp_path):
    root = semaine_tree(tmp_path / "AVEC2012")
    settings = {"adapter": "semaine", "root": str(root)}
    rows = rows_by_id(build_manifest("semaine", settings))
    row = rows["train_video001"]
    val = root / "emotion labels/train/labels_continuous_train001_valence.dat"
    original = val.read_text()
    # missing label file (after the manifest was built)
    val.unlink()
    with pytest.raises(DatasetError, match=rf"{val}: label file of video 'train_video001' does not exist"):
        build_labels(row, settings)
    # NaN lines become NaN and are counted
    lines = original.splitlines()
    lines[3] = "nan"
    write(val, "\n".join(lines) + "\n")
    labels, warnings = build_labels(row, settings)
    assert np.isnan(labels.column("valence").to_numpy()[3]) and labels.schema.metadata[b"nan_frames_valence"] == b"1"
    assert any(w.startswith(str(val)) and "1 NaN/empty of 20 valence samples" in w for w in warnings)
    tracks = json.loads(labels.schema.metadata[b"tracks"])
    assert tracks["valence"]["source_nan"] == 1 and tracks["arousal"]["source_nan"] == 0
    # out of range
    lines[5] = "1.7"
    write(val, "\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{val}: 1 valence value\(s\) outside \[-1, 1\] \(line 6: 1\.7\)"):
        build_labels(row, settings)
    # not a number
    lines[5] = "0.1 0.2"
    write(val, "\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{val}: line 6: expected one value per line"):
        build_labels(row, settings)


def test_semaine_label_length_small_drift_warns_large_drift_errors(tmp_path):
    root = semaine_tree(tmp_path / "AVEC2012")
    settings = {"adapter": "semaine", "root": str(root)}
    row = rows_by_id(build_manifest("semaine", settings))["train_video001"]
    val = root / "emotion labels/train/labels_continuous_train001_valence.dat"
    base = val.read_text().splitlines()
    write(val, "\n".join(base + ["0.5"] * 10) + "\n")  # 30 rows vs 20 frames: 0.2 s
    labels, warnings = build_labels(row, settings)
    drift = [w for w in warnings if "label length differs" in w]
    assert len(drift) == 1 and drift[0].startswith(str(val)) and "30 label frames" in drift[0] and "20 video frames" in drift[0]
    assert labels.num_rows == 20 and json.loads(labels.schema.metadata[b"tracks"])["valence"]["samples_outside_video"] == 10
    write(val, "\n".join(base[:19]) + "\n")  # one row short: 0.02 s, below the warning threshold
    labels, warnings = build_labels(row, settings)
    assert warnings == [] and np.isnan(labels.column("valence").to_numpy()[19])
    labels, warnings = build_labels(row, dict(settings, label_drift_warn_s=0.0))
    assert len(warnings) == 1
    write(val, "\n".join(base + ["0.5"] * 200) + "\n")  # 220 rows vs 20 frames: 4 s
    with pytest.raises(DatasetError) as err:
        build_labels(row, settings)
    msg = str(err.value)
    assert msg.startswith(str(val)) and "220 label frames" in msg and "20 video frames" in msg and "label_drift_error_s" in msg


# --- RECOLA (AVEC 2016) --------------------------------------------------------------------------
def arff(video: str, times, values) -> str:
    head = (
        "@relation GOLDSTANDARD\n\n@attribute Instance_name string\n@attribute frameTime numeric\n"
        "@attribute GoldStandard numeric\n\n@data\n\n"
    )
    return head + "".join(f"'{video}',{t:.6f},{v:.6f}\n" for t, v in zip(times, values))


def recola_tree(root: Path, n=10) -> Path:
    for vid in ("train_1", "dev_1", "test_1"):
        write_video(root / "recordings_video" / f"{vid}.mp4", n, 25.0)
    t = np.arange(n + 1) * 0.04  # AVEC 2016 ratings include the end point: one sample more than frames
    for vid in ("train_1", "dev_1"):
        write(root / "ratings_gold_standard/arousal" / f"{vid}.arff", arff(vid, t, 0.5 * np.sin(t * 20)))
        write(root / "ratings_gold_standard/valence" / f"{vid}.arff", arff(vid, t, 0.1 + t))
    write(root / "recordings_audio" / "train_1.wav", "RIFF")
    write(root / "ratings_individual" / "arousal" / "train_1.csv", "x")
    return root


def test_recola_manifest_and_interpolated_labels(tmp_path):
    root = recola_tree(tmp_path / "AVEC2016")
    settings = {"adapter": "recola", "root": str(root)}
    rows = rows_by_id(build_manifest("recola", settings))
    assert sorted(rows) == ["dev_1", "test_1", "train_1"]
    assert rows["dev_1"]["partition"] == "devel" and rows["test_1"]["label_source"] == ""
    assert rows["train_1"]["subject"] == "train_1" and rows["train_1"]["fps"] == 25.0
    assert rows["train_1"]["label_source"].split(";")[0].endswith("valence/train_1.arff")
    labels, warnings = build_labels(rows["train_1"], settings)
    assert warnings == []  # the trailing sample at 0.40 s is 0.04 s past the last frame: within tolerance
    t = np.arange(10) * 0.04
    np.testing.assert_allclose(labels.column("valence").to_numpy(), 0.1 + t, atol=1e-6)
    np.testing.assert_allclose(labels.column("arousal").to_numpy(), 0.5 * np.sin(t * 20), atol=1e-6)
    assert b"linear interpolation" in labels.schema.metadata[b"resampling"]
    skipped = meta(build_manifest("recola", settings), "skipped")
    assert skipped == {"top-level entries not read (audio, physiology, features, individual ratings)": 2}


def test_recola_labels_at_other_rate_are_interpolated_with_gaps_nan(tmp_path):
    root = recola_tree(tmp_path / "AVEC2016")
    settings = {"adapter": "recola", "root": str(root)}
    t = np.array([0.0, 0.1, 0.2, 0.36])  # 10 Hz labels with a gap after 0.2 s
    write(root / "ratings_gold_standard/valence/train_1.arff", arff("train_1", t, [0.0, 0.2, 0.4, 0.6]))
    row = rows_by_id(build_manifest("recola", settings))["train_1"]
    labels, warnings = build_labels(row, settings)
    v = labels.column("valence").to_numpy()
    np.testing.assert_allclose(v[:6], [0.0, 0.08, 0.16, 0.24, 0.32, 0.4], atol=1e-6)
    assert np.isnan(v[6:9]).all() and v[9] == pytest.approx(0.6)
    assert labels.schema.metadata[b"nan_frames_valence"] == b"3"


def test_recola_arff_header_is_parsed_not_counted(tmp_path):
    root = recola_tree(tmp_path / "AVEC2016")
    settings = {"adapter": "recola", "root": str(root)}
    text = "% produced by the AVEC 2016 organisers\n" + arff("train_1", np.arange(11) * 0.04, np.full(11, 0.25))
    text = text.replace("@attribute frameTime numeric\n", "@attribute frameTime numeric\n% comment\n")
    write(root / "ratings_gold_standard/valence/train_1.arff", text)
    row = rows_by_id(build_manifest("recola", settings))["train_1"]
    labels, _ = build_labels(row, settings)
    np.testing.assert_allclose(labels.column("valence").to_numpy(), 0.25)
    write(root / "ratings_gold_standard/valence/train_1.arff", text.replace("@data", "@dta"))
    with pytest.raises(DatasetError, match="train_1.arff: line .*unexpected line before @data"):
        build_labels(row, settings)
    write(root / "ratings_gold_standard/valence/train_1.arff", arff("dev_3", np.arange(11) * 0.04, np.zeros(11)))
    _, warnings = build_labels(row, settings)
    assert any("Instance_name dev_3 differs from the video id 'train_1'" in w for w in warnings)


def test_recola_layout_errors(tmp_path):
    root = recola_tree(tmp_path / "AVEC2016")
    settings = {"adapter": "recola", "root": str(root)}
    write(root / "recordings_video" / "train_1.avi", "x")
    with pytest.raises(DatasetError, match=r"recordings_video: 1 file name\(s\) not understood: train_1\.avi"):
        build_manifest("recola", settings)
    os.remove(root / "recordings_video" / "train_1.avi")
    os.remove(root / "ratings_gold_standard/arousal/dev_1.arff")
    with pytest.raises(DatasetError, match=r"missing gold-standard rating file\(s\) for video dev_1\.mp4: .*arousal/dev_1\.arff"):
        build_manifest("recola", settings)
    write(root / "ratings_gold_standard/arousal/dev_1.arff", "x")
    write(root / "ratings_gold_standard/arousal/dev_9.arff", "x")
    with pytest.raises(DatasetError, match=r"rating file\(s\) without a video .*dev_9\.arff"):
        build_manifest("recola", settings)


# --- Aff-Wild2 (ABAW) ----------------------------------------------------------------------------
def va_txt(values) -> str:
    return "valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in values)


def affwild2_tree(root: Path) -> Path:
    write_video(root / "batch1" / "1-30-640x360.mp4", 12, 30.0)
    write_video(root / "batch2" / "video10_1.avi", 8, 25.0)
    write_video(root / "batch2" / "video99.mp4", 5, 30.0)  # an AU/EXPR-only video
    write_video(root / "batch2" / "20-24-1920x1080.mp4", 6, 24.0)
    ann = root / "annotations" / "VA_Estimation_Challenge"
    vals = [(round(0.1 * i - 0.5, 3), round(0.05 * i, 3)) for i in range(12)]
    vals[4] = (-5, -5)
    vals[5] = (-5, 0.2)
    write(ann / "Train_Set" / "1-30-640x360.txt", va_txt(vals))
    write(ann / "Validation_Set" / "video10_1_left.txt", va_txt([(0.1, 0.2)] * 8))
    write(ann / "Validation_Set" / "video10_1_right.txt", va_txt([(-0.1, -0.2)] * 8))
    write(root / "test_set_release.txt", "20-24-1920x1080\n")
    return root


def test_affwild2_manifest_sides_test_list_and_skips(tmp_path):
    root = affwild2_tree(tmp_path / "Aff-Wild2")
    settings = {"adapter": "affwild2", "root": str(root), "test_list": "test_set_release.txt"}
    table = build_manifest("affwild2", settings)
    rows = rows_by_id(table)
    assert sorted(rows) == ["1-30-640x360", "20-24-1920x1080", "video10_1_left", "video10_1_right"]
    left, right = rows["video10_1_left"], rows["video10_1_right"]
    assert left["path"] == right["path"] and left["path"].endswith("batch2/video10_1.avi")
    assert (left["side"], right["side"]) == ("left", "right") and left["partition"] == "devel"
    assert left["subject"] == "video10_1_left" and left["fps"] == 25.0 and left["n_frames"] == 8
    assert rows["1-30-640x360"]["partition"] == "train" and rows["1-30-640x360"]["side"] == ""
    assert rows["20-24-1920x1080"]["partition"] == "test" and rows["20-24-1920x1080"]["label_source"] == ""
    assert rows["1-30-640x360"]["label_source"].endswith("Train_Set/1-30-640x360.txt")
    assert meta(table, "skipped") == {"videos without VA annotation (other ABAW challenges)": 1}
    assert meta(table, "skipped_examples")["videos without VA annotation (other ABAW challenges)"][0].endswith("video99.mp4")


def test_affwild2_unlabelled_minus5_becomes_nan_and_is_counted(tmp_path):
    root = affwild2_tree(tmp_path / "Aff-Wild2")
    settings = {"adapter": "affwild2", "root": str(root)}
    row = rows_by_id(build_manifest("affwild2", settings))["1-30-640x360"]
    labels, warnings = build_labels(row, settings)
    v, a = labels.column("valence").to_numpy(), labels.column("arousal").to_numpy()
    assert np.isnan(v[[4, 5]]).all() and np.isnan(a[4]) and a[5] == pytest.approx(0.2)
    assert v[6] == pytest.approx(0.1) and labels.num_rows == 12
    tracks = json.loads(labels.schema.metadata[b"tracks"])
    assert tracks["valence"]["source_unlabelled"] == 2 and tracks["arousal"]["source_unlabelled"] == 1
    assert labels.schema.metadata[b"nan_frames_valence"] == b"2"
    assert any("2 marked unlabelled (-5) of 12 valence samples" in w for w in warnings)


def test_affwild2_layout_errors(tmp_path):
    root = affwild2_tree(tmp_path / "Aff-Wild2")
    settings = {"adapter": "affwild2", "root": str(root)}
    ann = root / "annotations" / "VA_Estimation_Challenge"
    write(ann / "Train_Set" / "notes.csv", "x")
    with pytest.raises(DatasetError, match=r"Train_Set: 1 file name\(s\) not understood: notes\.csv"):
        build_manifest("affwild2", settings)
    os.remove(ann / "Train_Set" / "notes.csv")
    write(ann / "Train_Set" / "video77_right.txt", va_txt([(0, 0)]))
    with pytest.raises(DatasetError, match=r"video77_right\.txt: no video for 'video77_right'"):
        build_manifest("affwild2", settings)
    os.remove(ann / "Train_Set" / "video77_right.txt")
    (root / "old" / "VA_Set").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"2 folders .* named VA_Estimation_Challenge or VA_Set") as err:
        build_manifest("affwild2", settings)
    assert "datasets.affwild2.annotations_dir" in str(err.value)
    ok = build_manifest("affwild2", dict(settings, annotations_dir="annotations/VA_Estimation_Challenge"))
    assert ok.num_rows == 3
    with pytest.raises(DatasetError, match=r"video folder does not exist \(config key `datasets\.affwild2\.video_dirs`\)"):
        build_manifest("affwild2", dict(settings, video_dirs=["batch1", "batch3"]))
    write(root / "batch1" / "readme.txt", "x")
    with pytest.raises(DatasetError, match=r"batch1: 1 file name\(s\) not understood: readme\.txt"):
        build_manifest("affwild2", dict(settings, annotations_dir="annotations/VA_Estimation_Challenge"))


# --- user CSV ------------------------------------------------------------------------------------
def csv_tree(root: Path) -> Path:
    write_video(root / "vids" / "a.mp4", 10, 10.0)
    write_video(root / "vids" / "b.avi", 6, 5.0)
    write_video(root / "vids" / "c.mp4", 4, 10.0)
    t = np.arange(0, 1.0, 0.05)  # 20 Hz labels for a 10 fps video
    write(root / "labels" / "a.csv", "time_s,valence,arousal\n" + "".join(f"{x:.2f},{x - 0.5:.3f},{0.2:.1f}\n" for x in t))
    write(root / "labels" / "b.csv", "frame,valence,arousal\n0,0.1,0.1\n1,0.2,\n3,0.4,0.4\n4,0.5,0.5\n5,0.6,0.6\n")
    write(
        root / "videos.csv",
        "video,path,partition,labels,subject\n"
        "a,vids/a.mp4,train,labels/a.csv,s1\n"
        "b,vids/b.avi,dev,labels/b.csv,s2\n"
        f"c,{root / 'vids' / 'c.mp4'},test,,s3\n",
    )
    return root


def test_csv_manifest_and_labels(tmp_path):
    root = csv_tree(tmp_path / "mine")
    settings = {"adapter": "csv", "root": str(root)}
    rows = rows_by_id(build_manifest("mine", settings))
    assert [rows[v]["partition"] for v in "abc"] == ["train", "devel", "test"]
    assert [rows[v]["subject"] for v in "abc"] == ["s1", "s2", "s3"]
    assert rows["a"]["label_source"] == str((root / "labels/a.csv").resolve()) and rows["c"]["label_source"] == ""
    a, warnings = build_labels(rows["a"], settings)
    assert warnings == []
    np.testing.assert_allclose(a.column("valence").to_numpy(), np.arange(10) / 10 - 0.5, atol=1e-6)
    b, warnings = build_labels(rows["b"], settings)
    np.testing.assert_allclose(b.column("valence").to_numpy(), [0.1, 0.2, np.nan, 0.4, 0.5, 0.6], atol=1e-6)
    assert np.isnan(b.column("arousal").to_numpy()[[1, 2]]).all()
    assert b.schema.metadata[b"nan_frames_valence"] == b"1" and b.schema.metadata[b"nan_frames_arousal"] == b"2"
    assert any("1 NaN/empty of 5 arousal samples" in w for w in warnings)
    c, warnings = build_labels(rows["c"], settings)
    assert np.isnan(c.column("valence").to_numpy()).all() and c.num_rows == 4


@pytest.mark.parametrize(
    ("table_text", "match"),
    [
        ("video,path,partition,labels,fps\n", r"bad header .*unknown: fps"),
        ("video,path,partition\n", r"bad header .*missing: labels"),
        ("video,path,partition,labels\na,../a.mp4,train,\n", r"line 2, path: '\.\./a\.mp4' leaves the table's folder"),
        ("video,path,partition,labels\na,vids/nope.mp4,train,\n", r"nope\.mp4: video named on line 2 of videos\.csv"),
        ("video,path,partition,labels\na,vids/a.mp4,train,labels/nope.csv\n", r"nope\.csv: label file named on line 2"),
        ("video,path,partition,labels\na,vids/a.mp4,holdout,\n", r"line 2: partition 'holdout'"),
        ("video,path,partition,labels\na b,vids/a.mp4,train,\n", r"video id 'a b' is not safe as a file name"),
        ("video,path,partition,labels\na,vids/a.mp4,train,\na,vids/c.mp4,test,\n", r"video id 'a' occurs twice"),
    ],
)
def test_csv_table_errors(tmp_path, table_text, match):
    root = csv_tree(tmp_path / "mine")
    write(root / "videos.csv", table_text)
    with pytest.raises(DatasetError, match=match):
        build_manifest("mine", {"adapter": "csv", "root": str(root)})


def test_csv_label_file_errors(tmp_path):
    root = csv_tree(tmp_path / "mine")
    settings = {"adapter": "csv", "root": str(root)}
    row = rows_by_id(build_manifest("mine", settings))["b"]
    lbl = root / "labels" / "b.csv"
    for text, match in [
        ("frame,valence,arousal,joy\n0,0,0,0\n", r"unknown column\(s\) 'joy'"),
        ("time_s,frame,valence,arousal\n0,0,0,0\n", "exactly one of the columns time_s"),
        ("frame,valence,arousal\n0,0.1,-1.5\n", r"1 arousal value\(s\) outside \[-1, 1\] \(line 2: -1\.5\)"),
        ("frame,valence,arousal\n0.5,0.1,0.1\n", r"line 2, frame: '0\.5' is not an integer"),
        ("frame,valence,arousal\n0,abc,0.1\n", r"line 2, valence: 'abc' is not a number"),
    ]:
        write(lbl, text)
        with pytest.raises(DatasetError, match=match) as err:
            build_labels(row, settings)
        assert str(err.value).startswith(str(lbl.resolve()))


def bad_csv_tree(root: Path) -> Path:
    """csv_tree plus one video for each per-video problem the manifest pre-flight excludes."""
    csv_tree(root)
    vids = root / "vids"
    (vids / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    w = cv2.VideoWriter(str(vids / "zero.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 24))
    w.release()  # a container with no frame
    write_video(vids / "full.avi", 40, 10.0)
    data = (vids / "full.avi").read_bytes()
    (vids / "trunc.avi").write_bytes(data[: len(data) // 2])  # header says 40 frames, ~20 decode
    data = (vids / "c.mp4").read_bytes()
    (vids / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov box) at the end is cut
    write_video(vids / "d.mp4", 10, 10.0)
    write(root / "labels" / "range.csv", "frame,valence,arousal\n" + "".join(f"{i},0.1,1.5\n" for i in range(10)))
    write(root / "labels" / "long.csv", "frame,valence,arousal\n" + "".join(f"{i},0.1,0.1\n" for i in range(100)))
    with open(root / "videos.csv", "a") as f:
        f.write("corrupt,vids/corrupt.mp4,train,,\n"
                "zero,vids/zero.mp4,train,,\n"
                "trunc,vids/trunc.avi,devel,,\n"
                "cut,vids/cut.mp4,devel,,\n"
                "gone,vids/gone.mp4,test,,\n"
                "nolabel,vids/d.mp4,train,labels/gone.csv,\n"
                "range,vids/d.mp4,train,labels/range.csv,\n"
                "drift,vids/d.mp4,devel,labels/long.csv,\n")
    return root


def test_manifest_excludes_bad_videos_and_records_why(tmp_path, capsys):
    root = bad_csv_tree(tmp_path / "mine")
    settings = {"adapter": "csv", "root": str(root)}
    table = build_manifest("mine", settings, max_frame_shortfall=0.05)
    assert sorted(rows_by_id(table)) == ["a", "b", "c"]  # the good videos stay
    excluded = {e["video"]: e for e in manifest_excluded(table.schema.metadata)}
    assert sorted(excluded) == ["corrupt", "cut", "drift", "gone", "nolabel", "range", "trunc", "zero"]
    for e in excluded.values():
        assert e["stage"] == "manifest" and e["partition"] in ("train", "devel", "test") and e["reason"]
    assert "cannot open video" in excluded["corrupt"]["reason"] and excluded["corrupt"]["file"].endswith("corrupt.mp4")
    assert excluded["zero"]["reason"] == "cannot open video: MP4 with no media data (empty mdat box): a zero-frame video"
    assert "truncated: the container reports 40 frames" in excluded["trunc"]["reason"]
    assert excluded["cut"]["reason"].startswith("cannot open video: truncated MP4: box 'moov' needs ")
    assert "does not exist" in excluded["gone"]["reason"] and excluded["gone"]["file"].endswith("gone.mp4")
    assert "label file named on line" in excluded["nolabel"]["reason"]
    assert excluded["nolabel"]["file"].endswith("gone.csv") and excluded["nolabel"]["path"].endswith("d.mp4")
    assert "outside [-1, 1]" in excluded["range"]["reason"] and excluded["range"]["file"].endswith("range.csv")
    assert "label length does not match the video: 100 label frames" in excluded["drift"]["reason"]
    # the CLI prints one warning line per exclusion, naming the file and the cause
    out = tmp_path / "manifest.parquet"
    rc = cli_main(["manifest", "--dataset", "mine", "--settings", json.dumps(settings), "--max-frame-shortfall", "0.05",
                   "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if " excluded: " in ln]
    assert len(lines) == 8
    assert any("video corrupt (train) excluded: " in ln and "corrupt.mp4: cannot open video" in ln for ln in lines)
    assert "3 videos" in err and "8 excluded" in err


def test_manifest_on_bad_input_fail_stops_at_the_first(tmp_path):
    root = bad_csv_tree(tmp_path / "mine")
    with pytest.raises(DatasetError, match=r"gone\.mp4: video named on line"):
        build_manifest("mine", {"adapter": "csv", "root": str(root), "on_bad_input": "fail"})
    (root / "videos.csv").write_text("video,path,partition,labels\ncorrupt,vids/corrupt.mp4,train,\n")
    with pytest.raises(VideoError, match=r"corrupt\.mp4: cannot open video"):
        build_manifest("mine", {"adapter": "csv", "root": str(root), "on_bad_input": "fail"})
    with pytest.raises(DatasetError, match=r"no usable video: all 1 were excluded .*corrupt\.mp4"):
        build_manifest("mine", {"adapter": "csv", "root": str(root)})
    with pytest.raises(ConfigError, match="datasets.mine.on_bad_input"):
        build_manifest("mine", {"adapter": "csv", "root": str(root), "on_bad_input": "skip"})


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_manifest_and_labels_write_parquet(tmp_path, capsys):
    root = csv_tree(tmp_path / "mine")
    settings = json.dumps({"adapter": "csv", "root": str(root)})
    out = tmp_path / "results" / "mine" / "manifest.parquet"
    assert cli_main(["manifest", "--dataset", "mine", "--settings", settings, "--out", str(out)]) == 0
    manifest = pq.read_table(out)
    assert manifest.num_rows == 3 and manifest.schema.metadata[b"dataset"] == b"mine"
    lbl_out = tmp_path / "results" / "mine" / "labels" / "b.parquet"
    rc = cli_main(["labels", "--manifest", str(out), "--video", "b", "--settings", settings, "--out", str(lbl_out)])
    assert rc == 0
    err = capsys.readouterr().err
    warning_lines = [ln for ln in err.splitlines() if ln.startswith("affpipe labels: warning: ")]
    assert len(warning_lines) == 1 and str((root / "labels/b.csv").resolve()) in warning_lines[0]
    labels = pq.read_table(lbl_out)
    assert labels.column_names == ["frame", "time_s", "valence", "arousal"] and labels.num_rows == 6
    assert labels.schema.field("valence").type == "float" and labels.schema.field("frame").type == "int32"
    assert json.loads(labels.schema.metadata[b"warnings"]) == [w.split("warning: ", 1)[1] for w in warning_lines]
    assert not list(lbl_out.parent.glob("*.tmp-*"))
    rc = cli_main(["labels", "--manifest", str(out), "--video", "zz", "--settings", settings, "--out", str(lbl_out)])
    assert rc == 2 and "video 'zz' is not in the manifest" in capsys.readouterr().err


def test_cli_manifest_writes_every_videos_labels_as_the_labels_command_does(tmp_path, capsys):
    """`manifest --labels-dir` (the workflow's one job) writes, for every manifest video, the very
    table `labels --video` writes for that video alone, and replaces the folder as a whole."""
    root = csv_tree(tmp_path / "mine")
    settings = json.dumps({"adapter": "csv", "root": str(root)})
    out = tmp_path / "results" / "mine" / "manifest.parquet"
    labels_dir = out.parent / "labels"
    labels_dir.mkdir(parents=True)
    (labels_dir / "stale.parquet").write_text("from an earlier manifest")
    assert cli_main(["manifest", "--dataset", "mine", "--settings", settings, "--out", str(out),
                     "--labels-dir", str(labels_dir)]) == 0
    err = capsys.readouterr().err
    # the labels' warning (b.csv has an unlabelled sample) is printed, naming the video and the file
    assert any(ln.startswith("affpipe manifest: warning: labels of b: ") and "b.csv" in ln for ln in err.splitlines())
    videos = pq.read_table(out).column("video").to_pylist()
    assert sorted(p.name for p in labels_dir.iterdir()) == sorted(f"{v}.parquet" for v in videos)
    assert not list(labels_dir.parent.glob(".labels.*"))  # no temporary folder left
    for video in videos:
        one = tmp_path / "one" / f"{video}.parquet"
        assert cli_main(["labels", "--manifest", str(out), "--video", video, "--settings", settings, "--out", str(one)]) == 0
        a, b = pq.read_table(labels_dir / f"{video}.parquet"), pq.read_table(one)
        assert a.schema == b.schema and a.schema.metadata == b.schema.metadata, video
        assert a.to_pandas().equals(b.to_pandas()), video  # NaN where NaN


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path):
    out = tmp_path / "manifest.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "affpipe", "manifest", "--dataset", "semaine", "--settings", '{"adapter": "semaine"}', "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("affpipe manifest: error: config key `datasets.semaine.root` is not set")
    assert not out.exists()


def test_every_dataset_entry_of_the_workflow_config_validates():
    import yaml

    config = yaml.safe_load((REPO / "workflow_config.yaml").read_text())
    assert config["datasets"], "workflow_config.yaml defines no dataset"
    for name, entry in config["datasets"].items():
        s = dataset_settings(name, entry)
        assert s["adapter"] in {"semaine", "recola", "affwild2", "csv"}


def test_real_videos_container_counts_are_used_without_decoding(tmp_path):
    from affpipe.resources import pyfeat_media

    single = pyfeat_media("single_face.mp4")
    noface = pyfeat_media("no_face.mp4")  # reports 98 frames, decodes 95
    write(tmp_path / "videos.csv", f"video,path,partition,labels\nsingle,{single},train,\nnoface,{noface},test,\n")
    rows = rows_by_id(build_manifest("real", {"adapter": "csv", "root": str(tmp_path)}))
    assert (rows["single"]["n_frames"], rows["single"]["width"], rows["single"]["height"]) == (72, 640, 360)
    assert rows["single"]["fps"] == pytest.approx(30.0) and rows["single"]["duration_s"] == pytest.approx(2.4)
    assert rows["noface"]["n_frames"] == 98


def test_read_manifest_is_the_one_checked_reader(tmp_path):
    """read_manifest (every stage and the workflow read the manifest with it): rows sorted by video,
    metadata, and a clear error naming the file for each way a manifest can be wrong."""
    import pyarrow as pa

    from affpipe.datasets import read_manifest
    from affpipe.io.atomic import write_parquet

    def manifest(rows, name="m.parquet", **meta):
        path = tmp_path / name
        write_parquet(pa.Table.from_pylist(rows), path, metadata=meta or None)
        return path

    ok = manifest([{"video": "b", "partition": "test", "fps": 25.0}, {"video": "a", "partition": "train", "fps": 30.0}],
                  dataset="toy", adapter="csv")
    m = read_manifest(ok, columns=("fps",))
    assert [r["video"] for r in m] == ["a", "b"] and len(m) == 2
    assert (m.dataset, m.adapter, m.excluded()) == ("toy", "csv", [])
    assert m.row("b")["fps"] == 25.0 and set(m.by_video()) == {"a", "b"}
    with pytest.raises(DatasetError, match=r"m\.parquet: video 'c' is not in the manifest"):
        m.row("c")
    (tmp_path / "text.parquet").write_text("not parquet")
    cases = [
        (tmp_path / "none.parquet", (), r"none\.parquet: manifest does not exist"),
        (tmp_path / "text.parquet", (), r"text\.parquet: cannot read the manifest as Parquet"),
        (ok, ("fps", "n_frames"), r"m\.parquet: manifest lacks column\(s\) n_frames"),
        (manifest([{"video": "a", "partition": "train"}, {"video": "a", "partition": "test"}], "dup.parquet"), (),
         r"dup\.parquet: manifest lists video 'a' twice"),
        (manifest([{"video": "a", "partition": "dev"}], "part.parquet"), (),
         r"part\.parquet: video 'a' has unknown partition 'dev' \(expected train, devel, test\)"),
        (manifest([{"video": "", "partition": "train"}], "empty.parquet"), (),
         r"empty\.parquet: manifest has a row without a video id"),
    ]
    for path, columns, message in cases:
        with pytest.raises(DatasetError, match=message):
            read_manifest(path, columns=columns)


def test_read_labels_is_the_one_checked_reader(tmp_path):
    """read_labels (regression, CNN and summary read the labels files with it) names the file."""
    import pyarrow as pa

    from affpipe.datasets.labels import LABELS_SCHEMA, read_labels
    from affpipe.io.atomic import write_parquet

    def labels(frames, name):
        n = len(frames)
        table = pa.table({"frame": pa.array(frames, pa.int32()), "time_s": pa.array(np.arange(n) / 25.0),
                          "valence": pa.array(np.linspace(-1, 1, n), pa.float32()),
                          "arousal": pa.array(np.full(n, np.nan), pa.float32())}, schema=LABELS_SCHEMA)
        write_parquet(table, tmp_path / name)
        return tmp_path / name

    got = read_labels(labels([0, 1, 2], "ok.parquet"))
    assert got.n_frames == 3 and got.values.dtype == np.float32 and got.values.shape == (3, 2)
    assert np.isnan(got.values[:, 1]).all() and got.frame.dtype == np.int64
    with pytest.raises(DatasetError, match=r"gap\.parquet: labels `frame` column is not 0\.\.n-1 in order"):
        read_labels(labels([0, 2, 3], "gap.parquet"))
    with pytest.raises(DatasetError, match=r"none\.parquet: labels file does not exist"):
        read_labels(tmp_path / "none.parquet")
    write_parquet(pa.table({"frame": pa.array([0], pa.int32())}), tmp_path / "cols.parquet")
    with pytest.raises(DatasetError, match=r"cols\.parquet: labels file lacks column\(s\) time_s, valence, arousal"):
        read_labels(tmp_path / "cols.parquet")
