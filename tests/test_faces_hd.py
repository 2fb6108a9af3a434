"""HD video with small faces (real media composed into 1920x1080, see tests/support/hd_clip.py).

Downscaled to ``detect_max_width`` (640 px), every face of the clip falls below the HOG detector's
80-px window, so the downscaled pass finds nothing; dlib at full resolution finds every face. The
faces stage must retry at full resolution and then keep detecting there.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from support.faces_support import DlibDirect
from support.hd_clip import HD_SIZE, N_FRAMES, compose_hd_clip
from affpipe.config import section_settings
from affpipe.faces.advice import GENERIC_HINT, faces_table_hint, no_face_hint, smallest_findable_face
from affpipe.faces.landmarks import inter_ocular_distance, mean_point_error
from affpipe.faces.run import track_video
from affpipe.faces.store import read_faces, write_faces
from affpipe.faces.tracker import FULL_RES_RETRY_FRAMES, downscale_factor
from affpipe.io.video import iter_frames


@pytest.fixture(scope="module")
def hd_clip(tmp_path_factory):
    return compose_hd_clip(tmp_path_factory.mktemp("hd") / "hd_small_faces.mp4")


@pytest.fixture(scope="module")
def hd_track(hd_clip):
    return track_video(hd_clip, section_settings("faces"), progress_desc=None)


def test_the_clip_is_the_hard_case(hd_clip):
    """dlib directly: no face on the frame downscaled to 640 px, several at full resolution."""
    direct = DlibDirect()
    for _, _, bgr in iter_frames(hd_clip):
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        assert rgb.shape[1::-1] == HD_SIZE
        small = cv2.resize(rgb, (640, 360), interpolation=cv2.INTER_AREA)
        assert len(direct.detect(small)) == 0
        faces = direct.detect(rgb)
        assert len(faces) >= 3 and max(d.width() for d in faces) <= 200
        break


def test_defaults_find_the_small_faces_by_retrying_at_full_resolution(hd_track):
    t = hd_track
    assert len(t) == N_FRAMES
    share = float(np.mean(t.status != "lost"))
    assert share >= 0.9, t.metadata["status_counts"]
    assert t.metadata["detect_scale"] == 1.0 and t.metadata["detect_full_resolution_from"] == 0
    assert not any("no face" in w for w in t.metadata["warnings"])


def test_hd_landmarks_match_dlib_at_full_resolution(hd_clip, hd_track):
    """The followed face's landmarks agree with dlib run directly at full resolution (< 3 % IOD)."""
    direct = DlibDirect()
    errors = []
    for i, _, bgr in iter_frames(hd_clip):
        if i % 15:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        ours = hd_track.points[i].astype(np.float64)
        centre = np.nanmean(ours, axis=0)
        dets = direct.detect(rgb)
        d = min(dets, key=lambda r: np.hypot((r.left() + r.right()) / 2 - centre[0], (r.top() + r.bottom()) / 2 - centre[1]))
        ref = direct.landmarks(rgb, d)
        errors.append(mean_point_error(ours, ref) / inter_ocular_distance(ref))
    assert np.mean(errors) < 0.03, errors


def test_downscale_factor():
    assert downscale_factor(1920, 640) == pytest.approx(1 / 3)
    assert downscale_factor(640, 640) == 1.0 and downscale_factor(320, 640) == 1.0
    assert downscale_factor(1920, 0) == 1.0  # 0 = never downscale
    assert FULL_RES_RETRY_FRAMES >= 1


def test_no_face_hint_names_the_settings_to_try():
    s = section_settings("faces")
    hint = no_face_hint(s, 1920, 1080)
    assert "full resolution 1920x1080" in hint and "~80 px" in hint
    assert "faces={upsample: 1}" in hint and "~40 px" in hint
    assert "faces.detector: cnn" in hint and "faces.detect_threshold" in hint
    assert smallest_findable_face(s) == 80
    up = section_settings("faces", {"upsample": 1, "min_face_size": 60})
    assert smallest_findable_face(up) == 60
    h = no_face_hint(up)
    assert "faces={upsample: 2}" in h and "faces.min_face_size (now 60 px)" in h
    top = no_face_hint(section_settings("faces", {"upsample": 3, "detector": "cnn"}))
    assert "upsample: 4" not in top and "detector: cnn" not in top and "detect_threshold" in top


def test_faces_table_hint_reads_the_settings_it_ran_with(tmp_path, hd_track):
    path = tmp_path / "hd.parquet"
    write_faces(hd_track, path)
    assert faces_table_hint(path) == no_face_hint(section_settings("faces"), *HD_SIZE)
    assert read_faces(path).metadata["detect_scale"] == 1.0
    assert faces_table_hint(tmp_path / "missing.parquet") == GENERIC_HINT
