"""Run the face tracker over one video (streaming decode) and assemble the faces table.

This is the I/O edge of :mod:`affpipe.faces`: it decodes with :func:`affpipe.io.video.iter_frames`
(one frame in memory at a time, container timestamps), feeds :class:`~affpipe.faces.tracker.FaceTracker`
and collects one row per decoded frame. Decode anomalies are handled as documented degradations
recorded in the metadata, or as a :class:`~affpipe.errors.VideoError`:

* fewer frames decode than the container reports, by at most ``max_frame_shortfall``: recorded
  (``n_frames_reported`` vs ``n_frames_decoded``) and warned; by more: ``VideoError`` (truncated or
  corrupt file). More frames than reported: recorded and warned.
* timestamps that do not increase, or frames whose size differs from the container's: warned,
  counted in ``warnings``.
* a video without any face: every row ``lost``, a warning, exit status 0.

With ``paired`` (a ``side`` track whose video also has the other side's track in the manifest), both
sides are tracked jointly (:class:`~affpipe.faces.tracker.SidePair`) and checked against each other
afterwards (:func:`~affpipe.faces.tracker.side_conflicts`): frames where the two tracks describe the
same face, or swapped sides, are marked lost in both (reason ``side_conflict``), counted in the
metadata (``side_conflict_frames``) and warned. Only ``side``'s track is returned; the job writing the
other side computes the identical pair. This costs the joint tracking twice per two-person video.
* unreadable, empty, non-video or zero-frame files: ``VideoError`` from :mod:`affpipe.io.video`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import queue
import shlex
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from affpipe import __version__
from affpipe.errors import VideoError
from affpipe.faces.advice import no_face_hint
from affpipe.faces.detectors import make_detector
from affpipe.faces.landmarks import N_LANDMARKS
from affpipe.faces.predictor import LandmarkPredictor
from affpipe.faces.sides import OTHER_SIDE
from affpipe.faces.smoothing import smooth_landmarks
from affpipe.faces.store import FacesTrack
from affpipe.faces.tracker import (
    LOST,
    LOST_SIDE_CONFLICT,
    STATUSES,
    FaceTracker,
    SidePair,
    TrackerSettings,
    side_conflicts,
)

log = logging.getLogger(__name__)

PREFETCH_FRAMES = 8  # decoded frames buffered ahead by the decode thread (threads >= 2)


class _Rows:
    """Per-frame tracker results of one track, collected during decoding."""

    def __init__(self, capacity: int):
        self.status: list[str] = []
        self.scores: list[float] = []
        self.n_faces: list[int] = []
        self.reasons: list[str] = []
        self.bbox = np.full((capacity, 4), np.nan, np.float32)
        self.points = np.full((capacity, N_LANDMARKS, 2), np.nan, np.float32)

    def add(self, index: int, res) -> None:
        if index >= len(self.bbox):  # more frames than reported: grow
            self.bbox = np.concatenate([self.bbox, np.full_like(self.bbox, np.nan)])
            self.points = np.concatenate([self.points, np.full_like(self.points, np.nan)])
        self.status.append(res.status)
        self.scores.append(res.score)
        self.n_faces.append(res.n_faces)
        self.reasons.append(res.reason)
        if res.status != LOST:
            self.bbox[index] = res.box
            self.points[index] = res.points

    def trim(self, n: int) -> None:
        self.bbox, self.points = self.bbox[:n], self.points[:n]

    def mark_lost(self, mask: np.ndarray, reason: str) -> None:
        for k in np.nonzero(mask)[0]:
            self.status[k], self.scores[k], self.reasons[k] = LOST, float("nan"), reason
        self.bbox[mask] = np.nan
        self.points[mask] = np.nan


def file_info(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "mtime"}`` of an input file (mtime ISO-8601 UTC)."""
    st = os.stat(path)
    mtime = _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.timezone.utc).isoformat()
    return {"path": os.fspath(path), "size": int(st.st_size), "mtime": mtime}


def _prefetch(frames: Iterator, depth: int) -> Iterator:
    """Run a frame iterator in a background thread (OpenCV releases the GIL while decoding)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def worker():
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            q.put(done)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        finally:
            if hasattr(frames, "close"):
                frames.close()

    t = threading.Thread(target=worker, name="affpipe-decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


def resolve_side_conflicts(left: _Rows, right: _Rows) -> int:
    """Mark the frames where a video's left and right tracks conflict (:func:`side_conflicts`) lost in
    both, with reason ``side_conflict``; returns how many frames."""
    mask = side_conflicts(left.bbox, right.bbox)
    for acc in (left, right):
        acc.mark_lost(mask, LOST_SIDE_CONFLICT)
    return int(mask.sum())


def track_video(
    video: str | os.PathLike,
    settings: dict[str, Any],
    *,
    side: str | None = None,
    paired: bool = False,
    threads: int = 1,
    progress_desc: str | None = "faces",
) -> FacesTrack:
    """Track one subject's landmarks through a video.

    Parameters
    ----------
    video : path
        Any container FFmpeg reads.
    settings : dict
        Validated ``faces`` settings (``affpipe.config.section_settings("faces", ...)``).
    side : {"left", "right"}, optional
        Follow the face on that side (see :func:`affpipe.faces.tracker.choose_side_face`).
    paired : bool
        With ``side``: the video has both a left and a right track; track both jointly and resolve
        the frames where they conflict (see the module docstring). Returns ``side``'s track.
    threads : int
        Threads to use: FFmpeg decoder and OpenCV threads; with 2 or more, decoding also runs in a
        background thread alongside the tracker.
    progress_desc : str or None
        Label of the progress bar (None: no progress output).

    Returns
    -------
    FacesTrack
        One row per decoded frame, with the metadata described in :mod:`affpipe.faces.store`.

    Raises
    ------
    VideoError
        Unreadable / empty / non-video / zero-frame file, or more frames missing than
        ``max_frame_shortfall`` allows.
    """
    from affpipe.io.video import iter_frames, probe
    from affpipe.progress import progress

    if paired and side is None:
        raise ValueError("paired tracking needs a side (left or right)")
    threads = max(1, int(threads))
    cv2.setNumThreads(threads)
    info = probe(video)
    tracker_settings = TrackerSettings.from_config(settings)
    tracker = None  # built once the first frame has decoded (a file that decodes nothing fails fast)
    log.info("faces: %s (%dx%d, %.3f fps, %d frames reported), detector %s, redetect every %d (%s), side %s",
             video, info.width, info.height, info.fps, info.n_frames_reported, settings["detector"],
             settings["redetect_every"], settings["redetect_region"],
             f"{side} (tracked jointly with {OTHER_SIDE[side]})" if paired else side or "-")

    times: list[float] = []
    cap = max(info.n_frames_reported, 1)
    rows = {k: _Rows(cap) for k in (("left", "right") if paired else (side,))}
    warnings: list[str] = []
    bad_size = 0
    non_increasing = 0
    last_t = -np.inf

    frames = iter_frames(video, threads=threads)
    if threads >= 2:
        frames = _prefetch(frames, PREFETCH_FRAMES)
    bar = progress(frames, total=info.n_frames_reported or None, desc=progress_desc or "", unit="frame") \
        if progress_desc else frames
    for index, t, frame_bgr in bar:
        if frame_bgr.shape[0] != info.height or frame_bgr.shape[1] != info.width:
            bad_size += 1
        if not t > last_t:
            non_increasing += 1
        last_t = t
        if tracker is None:
            detector = make_detector(settings["detector"], upsample=settings["upsample"],
                                     threshold=settings["detect_threshold"])
            tracker = SidePair(tracker_settings, detector, LandmarkPredictor()) if paired else \
                FaceTracker(tracker_settings, detector, LandmarkPredictor(), side=side)
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        results = tracker.update(rgb) if paired else (tracker.update(rgb),)
        for acc, res in zip(rows.values(), results):
            acc.add(index, res)
        times.append(t)
    if progress_desc:
        bar.close()

    n = len(times)
    for acc in rows.values():
        acc.trim(n)
    conflicts = None
    if paired:
        conflicts = resolve_side_conflicts(rows["left"], rows["right"])
        if conflicts:
            warnings.append(f"{conflicts} frames where the left and right tracks were on the same face (or on "
                            f"swapped sides): marked lost ({LOST_SIDE_CONFLICT}) in both")
        else:
            log.info("faces: %s: 0 side-conflict frames (left and right tracks always on different faces)", video)
    own = rows[side]
    status, scores, n_faces, bbox, points = own.status, own.scores, own.n_faces, own.bbox, own.points
    reasons = Counter(r for st, r in zip(status, own.reasons) if st == LOST)
    reported = info.n_frames_reported
    if n < reported:
        shortfall = (reported - n) / reported
        msg = f"decoded {n} frames but the container reports {reported} ({reported - n} missing, {shortfall:.1%})"
        if shortfall > settings["max_frame_shortfall"]:
            raise VideoError(f"{msg}: truncated or corrupt file", path=video,
                             hint=f"faces.max_frame_shortfall is {settings['max_frame_shortfall']}")
        warnings.append(msg)
    elif n > reported:
        warnings.append(f"decoded {n} frames but the container reports {reported}")
    if bad_size:
        warnings.append(f"{bad_size} frames differ in size from the container's {info.width}x{info.height}")
    if non_increasing:
        warnings.append(f"{non_increasing} frames have timestamps that do not increase")
    status_arr = np.array(status, dtype=str)
    counts = {s: int(np.count_nonzero(status_arr == s)) for s in STATUSES}
    if counts[LOST] == n:
        warnings.append("no face found in any frame: every row is lost; "
                        + no_face_hint(settings, info.width, info.height))
    detect_scale = tracker.detect_scale if tracker is not None else None
    escalated_at = tracker.escalated_at if tracker is not None else None
    if escalated_at is not None:
        log.info("faces: %s: no face at the downscaled detection size (faces.detect_max_width %d of %d px); "
                 "detecting at full resolution from frame %d on", video, settings["detect_max_width"],
                 info.width, escalated_at)
    if settings["smoothing_sigma"] > 0:
        points = smooth_landmarks(points, status_arr != LOST, sigma=settings["smoothing_sigma"]).astype(np.float32)
    for w in warnings:
        log.warning("faces: %s: %s", video, w)
    log.info("faces: %s: %d frames: %s; lost because: %s", video, n,
             ", ".join(f"{k} {v}" for k, v in counts.items()), dict(reasons) or "-")

    metadata = {
        "affpipe_version": __version__,
        "stage": "faces",
        "settings": settings,
        "side": side,
        "paired": bool(paired),
        "side_conflict_frames": conflicts,
        "n_faces_counted_frames": int(np.count_nonzero(np.asarray(n_faces) >= 0)),
        "video": file_info(video),
        "width": info.width,
        "height": info.height,
        "fps": repr(info.fps),
        "n_frames_reported": reported,
        "n_frames_decoded": n,
        "status_counts": counts,
        "detect_scale": detect_scale,
        "detect_full_resolution_from": escalated_at,
        "lost_reasons": dict(sorted(reasons.items())),
        "warnings": warnings,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }
    return FacesTrack(
        frame=np.arange(n, dtype=np.int32),
        time_s=np.array(times, np.float64),
        status=status_arr,
        bbox=bbox,
        score=np.array(scores, np.float32),
        n_faces=np.array(n_faces, np.int16),
        points=points,
        metadata=metadata,
    )
