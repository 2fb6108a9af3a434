"""Streaming video decoding with container timestamps (OpenCV / FFmpeg backend).

Frames are decoded one at a time; a whole video is never held in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from affpipe.errors import VideoError


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (no full decode).

    ``n_frames_reported`` is the container's frame count, which can differ from the number of
    frames that actually decode (truncated files, variable frame rate); the faces stage counts the
    decoded frames and records both.
    """

    path: str
    fps: float
    n_frames_reported: int
    width: int
    height: int


def _open(path: str | os.PathLike, *, threads: int | None = None) -> cv2.VideoCapture:
    path = Path(path)
    if not path.exists():
        raise VideoError("video file does not exist", path=path)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise VideoError("video path is not a readable file", path=path)
    if path.stat().st_size == 0:
        raise VideoError("video file is empty (0 bytes)", path=path)
    params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, int(threads)]
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        raise VideoError("cannot open video: not a video container FFmpeg understands, or corrupt", path=path)
    return cap


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read fps, reported frame count and size from the container.

    Raises
    ------
    VideoError
        If the file is missing, empty, cannot be opened, or reports no usable frame rate/size.
    """
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        n = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if not np.isfinite(fps) or fps <= 0:
        raise VideoError(f"container reports no usable frame rate (fps={fps})", path=path)
    if w <= 0 or h <= 0:
        raise VideoError(f"container reports no frame size ({w}x{h})", path=path)
    return VideoInfo(path=os.fspath(path), fps=fps, n_frames_reported=max(n, 0), width=w, height=h)


def check_decodes(path: str | os.PathLike, *, last_needed: int | None = None) -> None:
    """Cheap decode check: the first frame, and (optionally) frame ``last_needed`` by seeking to it.

    Catches zero-frame and undecodable files, and files truncated well before the frame count their
    container reports (decoding would stop early). A failed seek is confirmed by grabbing frames in
    order up to ``last_needed`` (only then is the video read sequentially), so a container that
    seeks badly is not mistaken for a truncated one.

    Parameters
    ----------
    path : path
    last_needed : int, optional
        0-based index of the last frame that must decode (e.g. the last one the faces stage's
        ``max_frame_shortfall`` tolerates missing after).

    Raises
    ------
    VideoError
        If the file cannot be opened, its first frame does not decode, or frame ``last_needed`` does
        not exist.
    """
    cap = _open(path, threads=1)
    try:
        ok, frame = cap.read()
        if not ok or frame is None or frame.size == 0:
            raise VideoError("video decodes no frame (zero-frame or corrupt file)", path=path)
        if last_needed is None or last_needed <= 0:
            return
        if cap.set(cv2.CAP_PROP_POS_FRAMES, int(last_needed)):
            ok, frame = cap.read()
            if ok and frame is not None:
                return
        cap.release()
        cap = _open(path, threads=1)
        n = 0
        while n <= last_needed and cap.grab():
            n += 1
        if n <= last_needed:
            reported = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
            raise VideoError(f"truncated: the container reports {reported} frames but only {n} decode", path=path)
    finally:
        cap.release()


def iter_frames(path: str | os.PathLike, *, threads: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """Decode a video frame by frame.

    Parameters
    ----------
    path : path
    threads : int, optional
        FFmpeg decoder threads (``CAP_PROP_N_THREADS``); default: FFmpeg's choice (all cores).

    Yields
    ------
    index : int
        0-based decode order.
    time_s : float
        Presentation time from the container (seconds). Falls back to ``index / fps`` when the
        container gives no timestamp.
    frame : (H, W, 3) uint8
        The frame, BGR channel order (OpenCV's).

    Raises
    ------
    VideoError
        If the video cannot be opened, or decodes no frame at all.
    """
    cap = _open(path, threads=threads)
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
    i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if (t_ms is None or t_ms < 0 or (i > 0 and t_ms == 0)) and fps > 0:
                t_ms = 1000.0 * i / fps
            yield i, float(t_ms) / 1000.0, frame
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise VideoError("video decodes no frame (zero-frame, truncated or corrupt file)", path=path)
