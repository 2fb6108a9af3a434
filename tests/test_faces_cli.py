"""`affpipe faces` / `affpipe show-faces` end to end, the faces-table contract, and bad input."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from support.faces_support import media
from affpipe.config import section_settings
from affpipe.errors import DatasetError, VideoError
from affpipe.faces import landmarks_66, read_faces, read_metadata, write_faces
from affpipe.faces.run import track_video
from affpipe.faces.store import COLUMNS, FacesTrack


def run_cli(*args, check_rc=None):
    proc = subprocess.run([sys.executable, "-m", "affpipe", *map(str, args)], capture_output=True, text=True)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.fixture(scope="module")
def single_face_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("faces") / "faces" / "single_face.parquet"
    proc = run_cli("faces", "--video", media("single_face.mp4"), "--out", out,
                   "--settings", json.dumps({"redetect_every": 12}), "--threads", 2, check_rc=0)
    return out, proc


def test_cli_writes_the_contract(single_face_table):
    out, proc = single_face_table
    assert "faces: single_face.mp4" not in proc.stdout  # logs and progress go to stderr
    assert "72 frames: detected" in proc.stderr
    schema = pq.read_schema(out)
    assert tuple(schema.names) == COLUMNS
    types = {n: str(schema.field(n).type) for n in schema.names}
    assert types["frame"] == "int32" and types["time_s"] == "double" and types["status"] == "string"
    assert types["n_faces"] == "int16" and types["score"] == "float"
    assert all(types[c] == "float" for c in COLUMNS if c.startswith(("x", "y", "bbox")))
    meta = read_metadata(out)
    assert meta["stage"] == "faces" and meta["format_version"] == "1"
    assert meta["settings"] == section_settings("faces", {"redetect_every": 12})
    assert meta["video"]["size"] == media("single_face.mp4").stat().st_size
    assert meta["n_frames_reported"] == "72" and meta["n_frames_decoded"] == "72"
    assert meta["status_counts"] == {"detected": 6, "tracked": 66, "lost": 0}
    assert meta["side"] is None and meta["warnings"] == []
    assert float(meta["fps"]) == pytest.approx(30.0)
    assert not list(out.parent.glob("*.tmp-*"))  # atomic write left nothing behind


def test_read_faces_arrays_and_66_point_view(single_face_table):
    t = read_faces(single_face_table[0])
    assert len(t) == 72 and t.points.shape == (72, 68, 2) and t.points.dtype == np.float32
    assert t.valid.all() and np.isfinite(t.points).all()
    assert landmarks_66(t.points).shape == (72, 66, 2)
    # the landmarks lie inside their boxes' neighbourhood and the frame
    assert (t.points[..., 0] > 0).all() and (t.points[..., 0] < 640).all()
    np.testing.assert_allclose(t.time_s, np.arange(72) / 30.0, atol=1e-6)


def test_show_faces_sheet(single_face_table, tmp_path):
    out = tmp_path / "sheet.png"
    run_cli("show-faces", "--video", media("single_face.mp4"), "--faces", single_face_table[0], "-o", out,
            "--n", 6, "--columns", 3, check_rc=0)
    img = cv2.imread(str(out))
    assert img.shape == (28 + 2 * 180, 3 * 320, 3)  # title strip + 2 rows of 320x180 tiles


def test_no_face_video_exits_cleanly_all_lost_and_the_sheet_marks_them(tmp_path):
    out = tmp_path / "no_face.parquet"
    proc = run_cli("faces", "--video", media("no_face.mp4"), "--out", out, check_rc=0)
    assert "no face found in any frame" in proc.stderr
    # the warning names what to try, and the search really ran at full resolution (960x540 > 640)
    assert "searched at full resolution 960x540" in proc.stderr and "faces={upsample: 1}" in proc.stderr
    t = read_faces(out)
    # the container reports 98 frames, 95 decode: recorded and warned, not fatal
    assert len(t) == 95 and (t.status == "lost").all() and np.isnan(t.points).all()
    assert t.metadata["n_frames_reported"] == "98" and t.metadata["n_frames_decoded"] == "95"
    assert any("decoded 95 frames but the container reports 98" in w for w in t.metadata["warnings"])
    assert (t.n_faces == 0).all()
    sheet = tmp_path / "no_face.png"
    run_cli("show-faces", "--video", media("no_face.mp4"), "--faces", out, "-o", sheet, "--n", 4, check_rc=0)
    img = cv2.imread(str(sheet))[28:]
    red = (img[..., 2] > 200) & (img[..., 1] < 80) & (img[..., 0] < 80)
    assert red.mean() > 0.02  # red crosses and borders on every tile


@pytest.mark.parametrize("case", ["missing", "empty", "not_video", "moov_cut", "zero_frames"])
def test_bad_input_is_a_one_line_error_naming_the_file(case, tmp_path):
    path = tmp_path / f"{case}.mp4"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "not_video":
        path.write_text("this is a text file, not a video\n" * 50)
    elif case == "moov_cut":  # single_face.mp4 keeps its index (moov) at the end: cutting it loses it
        data = media("single_face.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "zero_frames":
        path = tmp_path / "zero.avi"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
        vw.release()
    out = tmp_path / "out.parquet"
    proc = run_cli("faces", "--video", path, "--out", out, check_rc=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("affpipe faces: error:")]
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_truncated_video_is_an_error_not_a_silent_partial_output(tmp_path):
    """WolfgangLanger has its index first: cut to 25 % of its bytes it opens and decodes ~110 of 472
    frames. That shortfall is far beyond max_frame_shortfall: VideoError, nothing written."""
    data = media("WolfgangLanger_Pexels.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 4])
    with pytest.raises(VideoError, match=r"decoded \d+ frames but the container reports 472.*truncated") as exc:
        track_video(path, section_settings("faces"), progress_desc=None)
    assert str(path) in str(exc.value)
    # ... unless the user explicitly accepts partial output: then it is recorded and warned
    t = track_video(path, section_settings("faces", {"max_frame_shortfall": 1.0}), progress_desc=None)
    assert 0 < len(t) < 472 and int(t.metadata["n_frames_reported"]) == 472
    assert any("missing" in w for w in t.metadata["warnings"])


def test_bad_settings_and_side_are_rejected(tmp_path):
    proc = run_cli("faces", "--video", media("single_face.mp4"), "--out", tmp_path / "x.parquet",
                   "--settings", '{"detector": "haar"}', check_rc=2)
    assert "faces.detector" in proc.stderr
    proc = run_cli("faces", "--video", media("single_face.mp4"), "--out", tmp_path / "x.parquet",
                   "--side", "middle")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = run_cli("faces", "--video", media("single_face.mp4"), "--out", tmp_path / "x.parquet", "--paired",
                   check_rc=2)
    assert "--paired needs --side" in proc.stderr


def test_side_args_pair_the_two_sides_of_one_video():
    from affpipe.faces.sides import side_args

    rows = [{"video": "X_left", "path": "b/X.avi", "side": "left"},
            {"video": "X_right", "path": "b/X.avi", "side": "right"},
            {"video": "Y_left", "path": "b/Y.avi", "side": "left"},
            {"video": "Z", "path": "b/Z.avi", "side": ""}]
    assert side_args(rows[0], rows) == ["--side", "left", "--paired"]
    assert side_args(rows[1], rows) == ["--side", "right", "--paired"]
    assert side_args(rows[2], rows) == ["--side", "left"]
    assert side_args(rows[3], rows) == []


def test_store_round_trip_and_errors(tmp_path):
    n = 5
    pts = np.random.default_rng(0).uniform(0, 100, (n, 68, 2)).astype(np.float32)
    pts[2] = np.nan
    track = FacesTrack(
        frame=np.arange(n, dtype=np.int32), time_s=np.arange(n) / 25.0,
        status=np.array(["detected", "tracked", "lost", "tracked", "tracked"]),
        bbox=np.ones((n, 4), np.float32), score=np.array([1.5, 0.9, np.nan, 0.8, 0.7], np.float32),
        n_faces=np.array([1, -1, 0, -1, -1], np.int16), points=pts,
        metadata={"stage": "faces", "settings": {"a": 1}, "warnings": ["w"], "side": "left"},
    )
    path = tmp_path / "t.parquet"
    write_faces(track, path)
    back = read_faces(path)
    np.testing.assert_array_equal(back.points, pts)
    np.testing.assert_array_equal(back.status, track.status)
    np.testing.assert_array_equal(back.n_faces, track.n_faces)
    assert back.metadata["settings"] == {"a": 1} and back.metadata["side"] == "left"
    with pytest.raises(DatasetError, match="does not exist"):
        read_faces(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="cannot read faces table"):
        read_faces(tmp_path / "bad.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"frame": [0]}), tmp_path / "other.parquet")
    with pytest.raises(DatasetError, match="not an affpipe faces table"):
        read_faces(tmp_path / "other.parquet")
