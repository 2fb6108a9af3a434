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
        why = _mp4_diagnosis(path)
        raise VideoError(f"cannot open video: {why or 'not a video container FFmpeg understands, or corrupt'}",
                         path=path)
    return cap


MP4_SUFFIXES = (".mp4", ".m4v", ".mov", ".3gp")


def _mp4_diagnosis(path: str | os.PathLike) -> str | None:
    """Why an MP4/MOV file FFmpeg could not open is broken, from its top-level boxes; None if unknown.

    Reads only the 8-16 byte box headers: a box running past the end of the file (truncated), no
    ``moov`` index (truncated, or the writer never finished), or an empty ``mdat`` (no frame written).
    """
    import struct

    path = Path(path)
    if path.suffix.lower() not in MP4_SUFFIXES:
        return None
    size_total = path.stat().st_size
    boxes: list[tuple[bytes, int]] = []
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= size_total and len(boxes) < 64:
            f.seek(pos)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:
                size = size_total - pos
            if size < 8:
                return None
            boxes.append((kind, size))
            if pos + size > size_total:
                if not boxes or boxes[0][0] != b"ftyp":
                    return None
                return (f"truncated MP4: box {kind.decode('latin-1')!r} needs {size} bytes, the file ends "
                        f"{size_total - pos} bytes into it" + ("" if any(k == b"moov" for k, _ in boxes)
                                                              else "; the index (moov box) is missing"))
            pos += size
    if not boxes or boxes[0][0] != b"ftyp":
        return None
    kinds = [k for k, _ in boxes]
    if b"moov" not in kinds:
        return "MP4 without its index (moov box): truncated, or its writer never finished"
    if all(size <= 16 for k, size in boxes if k == b"mdat"):
        return "MP4 with no media data (empty mdat box): a zero-frame video"
    return None


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
