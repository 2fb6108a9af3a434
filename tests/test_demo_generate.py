"""End to end: ``affpipe demo`` writes a decodable, deterministic dataset in the csv adapter's layout."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from affpipe.config import section_settings
from affpipe.demo.generate import generate_demo
from affpipe.errors import ConfigError
from affpipe.io.video import iter_frames, probe
from affpipe.resources import REPO_ROOT, dlib_model_path

N_FRAMES = 16
SIZE = 224  # 0.45 * 224 = ~100 px faces: above dlib HOG's 80 px minimum without upsampling
TINY = {
    "identities": ["man_video", "astronaut"],
    "partitions": {"train": ["astronaut"], "test": ["man_video"]},
    "videos_per_identity": 1,
    "frames_per_video": N_FRAMES,
    "frame_width": SIZE,
    "frame_height": SIZE,
}


def _cli(out: Path, settings: dict, *, threads: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "affpipe", "demo", "--settings", json.dumps(settings), "--out", str(out), "--threads",
         str(threads)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("a") / "raw"
    generate_demo(section_settings("demo", TINY), out)
    return out


@pytest.fixture(scope="module")
def run_b(tmp_path_factory) -> Path:
    """The same settings through the CLI, in another process and folder, the videos rendered by 2 worker
    processes (run_a renders them one after the other in the test's process)."""
    out = tmp_path_factory.mktemp("b") / "raw"
    proc = _cli(out, TINY, threads=2)
    assert proc.returncode == 0, proc.stderr
    return out


def test_layout_is_the_csv_adapters(run_a):
    with open(run_a / "videos.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["video", "path", "partition", "labels", "subject"]
    table = {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert set(table) == {"man_video_01", "astronaut_01"}
    assert table["man_video_01"]["partition"] == "test" and table["astronaut_01"]["partition"] == "train"
    assert table["astronaut_01"]["subject"] == "astronaut"
    for r in table.values():
        assert not os.path.isabs(r["path"]) and not os.path.isabs(r["labels"])
        assert (run_a / r["path"]).is_file() and (run_a / r["labels"]).is_file()
        labels = pd.read_csv(run_a / r["labels"])
        assert list(labels.columns) == ["time_s", "valence", "arousal"]
        assert len(labels) == N_FRAMES
        np.testing.assert_allclose(labels.time_s, np.arange(N_FRAMES) / 25.0, atol=1e-6)
        assert labels[["valence", "arousal"]].abs().to_numpy().max() <= 1.0
        assert labels[["valence", "arousal"]].std().min() > 0  # traces move
        truth = pd.read_parquet(run_a / "truth" / f"{r['video']}.parquet")
        assert len(truth) == N_FRAMES and {"x0", "y67", "valence", "rotation_deg"} <= set(truth.columns)
        np.testing.assert_allclose(truth.valence, labels.valence, atol=1e-6)
    meta = json.loads((run_a / "truth.json").read_text())
    assert meta["seed"] == 0 and meta["settings"]["frames_per_video"] == N_FRAMES
    assert meta["identities"]["man_video"]["source"]["media"] == "pyfeat:single_face.mp4"
    assert len(meta["identities"]["astronaut"]["source"]["sha256"]) == 64
    assert str(run_a) not in (run_a / "truth.json").read_text()  # no absolute paths
    preview = cv2.imread(str(run_a / "preview.png"))
    assert preview is not None and preview.shape[0] > 2 * 100
    assert not [p for p in run_a.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_videos_decode_with_opencv_ffmpeg(run_a):
    for video in (run_a / "videos").iterdir():
        assert video.suffix == ".mp4"
        info = probe(video)
        assert (info.width, info.height, info.fps, info.n_frames_reported) == (SIZE, SIZE, 25.0, N_FRAMES)
        labels = pd.read_csv(run_a / "labels" / f"{video.stem}.csv")
        times = [t for _, t, _ in iter_frames(video)]
        assert len(times) == N_FRAMES
        np.testing.assert_allclose(times, labels.time_s, atol=1e-3)


def test_same_seed_gives_byte_identical_files(run_a, run_b):
    a, b = _tree(run_a), _tree(run_b)
    assert sorted(a) == sorted(b)
    different = [name for name in a if a[name] != b[name]]
    assert different == []


def test_videos_depend_only_on_seed_identity_and_number(run_a, tmp_path):
    # Dropping an identity leaves the other identity's files unchanged; another seed changes them.
    alone = {**TINY, "identities": ["man_video"]}
    generate_demo(section_settings("demo", alone), tmp_path / "same")
    generate_demo(section_settings("demo", {**alone, "seed": 1}), tmp_path / "other")
    for rel in ("videos/man_video_01.mp4", "labels/man_video_01.csv"):
        assert (tmp_path / "same" / rel).read_bytes() == (run_a / rel).read_bytes()
        assert (tmp_path / "other" / rel).read_bytes() != (run_a / rel).read_bytes()


def test_dlib_finds_the_face_and_the_rendered_landmarks(run_a):
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path()))
    for video in sorted((run_a / "videos").iterdir()):
        truth = pd.read_parquet(run_a / "truth" / f"{video.stem}.parquet")
        xs = truth[[f"x{i}" for i in range(68)]].to_numpy()
        ys = truth[[f"y{i}" for i in range(68)]].to_numpy()
        errors = []
        for i, _, frame in iter_frames(video):
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            rects = detector(gray, 0)
            assert len(rects) == 1, f"{video.name} frame {i}: {len(rects)} faces"
            shape = predictor(gray, rects[0])
            found = np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], float)
            true = np.stack([xs[i], ys[i]], axis=1)
            iod = np.hypot(*(true[36:42].mean(0) - true[42:48].mean(0)))
            errors.append(np.hypot(*(found - true).T).mean() / iod)
        # dlib's own fit on the rendered frames agrees with the rendered landmark positions
        assert np.mean(errors) < 0.05, f"{video.name}: mean landmark error {np.mean(errors):.3f} IOD"


def test_mjpg_codec_decodes_too(tmp_path):
    settings = {**TINY, "identities": ["man_video"], "frames_per_video": 5, "codec": "mjpg", "preview": False}
    generate_demo(section_settings("demo", settings), tmp_path / "raw")
    video = tmp_path / "raw" / "videos" / "man_video_01.avi"
    assert sum(1 for _ in iter_frames(video)) == 5
    assert not (tmp_path / "raw" / "preview.png").exists()


def test_existing_output_is_replaced_whole(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    generate_demo(section_settings("demo", {**TINY, "identities": ["man_video"], "frames_per_video": 3}), out)
    assert not (out / "stale.txt").exists() and (out / "videos.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"identities": ["man_video"], "partitions": {"train": []}}, "in no partition"),
        ({"identities": ["man_video"], "partitions": {"train": ["man_video"], "test": ["man_video"]}}, "several partitions"),
        ({"identities": ["nobody"], "partitions": {"train": ["nobody"]}}, "unknown demo identity"),
        ({"identities": ["pyfeat:x.jpg?frame=a"], "partitions": {"train": ["pyfeat:x.jpg?frame=a"]}}, "bad option"),
    ],
)
def test_configuration_errors_are_clear(tmp_path, settings, match):
    with pytest.raises(ConfigError, match=match):
        generate_demo(section_settings("demo", settings), tmp_path / "raw")
    assert not any(tmp_path.iterdir())


def test_photo_without_face_fails_naming_it_and_keeps_old_output(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    bad = "pyfeat:no_face.mp4"
    proc = _cli(out, {"identities": ["man_video", bad], "partitions": {"train": ["man_video", bad]}})
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "no_face.mp4" in lines[0] and "no face" in lines[0], proc.stderr
    assert (out / "keep.txt").read_text() == "previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
