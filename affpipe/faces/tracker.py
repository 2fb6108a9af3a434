"""Single-subject face tracking with dlib's 68-point shape predictor: frame in, landmarks out.

State machine, one call of :meth:`FaceTracker.update` per decoded frame:

* **Not tracking** (first frame, or after a loss): full-frame detection (on a frame downscaled to
  ``detect_max_width``); the subject is chosen among the faces (:func:`choose_face`); the shape
  predictor runs on its box -> status ``detected``. No acceptable face -> ``lost``.
  When the downscaled pass finds no face, the detection is retried at full resolution (small faces
  in HD video fall below the detector's window when downscaled); once that finds a face the
  downscaled pass missed, every later full-frame detection of the video runs at full resolution
  (:attr:`FaceTracker.detect_scale`, recorded in the output metadata). During a long stretch with
  no face at all, the full-resolution retry runs on every :data:`FULL_RES_RETRY_FRAMES`-th frame only.
* **Tracking**: the box for this frame is the box the HOG detector *would* draw around the previous
  frame's landmarks (:func:`affpipe.faces.boxmodel.box_from_landmarks`); the predictor runs on it ->
  ``tracked``. Every ``redetect_every`` frames the detector runs again (on a region around the face,
  or on the whole frame) to re-anchor the track: a detection matching the track replaces the box ->
  ``detected``. When it finds no matching face, it is retried on every following frame, and after
  ``max_redetect_misses`` consecutive misses the track is declared lost.
* **Loss tests** on every tracked frame (any failing -> ``lost``, landmarks NaN, nothing invented):
  the face box is mostly outside the frame (``min_visible_fraction``), smaller than
  ``min_face_size``, the landmarks are not face-shaped (``max_shape_residual``), or the face no longer
  looks like it did at the last detection (``min_similarity``, :mod:`affpipe.faces.appearance`).

``redetect_every: 1`` with ``redetect_region: frame`` is the classic detect-every-frame mode; its
landmarks equal dlib's detector + predictor run directly on each frame.

**Counting faces** (``n_faces``): every full-frame detection counts the faces; in ``roi`` mode a
full-frame detection is added at every ``count_faces_every``-th periodic re-detection only for the
count (the track still re-anchors on the region search, so landmarks are unchanged).

**Side tracks** (``side`` = ``left`` / ``right``, Aff-Wild2 ``X_left`` / ``X_right``): the subject is
chosen among all full-frame faces by side (:func:`choose_side_face`): faces not much smaller than the
largest, never the face the other side's track holds, never one on the wrong side of it; the
left-most (right-most) of them, or with a lone face the frame half. After a loss, while fewer faces
are visible than when the track last held its face (its person is probably the one hidden), only a
face near the last position is taken. Every periodic re-detection of a side track is a full-frame
detection that re-checks the side: if the held face is found but is no longer the side's face
(e.g. after a cut), the track switches to the side's face, or is lost when there is none.
:class:`SidePair` runs the ``left`` and ``right`` tracks of one video jointly (each knows the other's
box, one shared full-frame detection per frame) and :func:`side_conflicts` finds the frames where the
two tracks still describe the same face (or swapped sides), which the caller marks lost for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from affpipe.faces.appearance import face_patch, patch_similarity
from affpipe.faces.boxmodel import box_from_landmarks, box_iou, shape_residual
from affpipe.faces.detectors import FaceDetector, detect_faces
from affpipe.faces.landmarks import N_LANDMARKS
from affpipe.faces.predictor import LandmarkPredictor

DETECTED, TRACKED, LOST = "detected", "tracked", "lost"
STATUSES = (DETECTED, TRACKED, LOST)
SIDES = ("left", "right")

# Re-detection around a tracked face: the searched region is this many face-box sides wide, centred
# on the tracked box, and is rescaled so the face is ROI_FACE_PX wide (the HOG window is 80 px, and
# the search covers faces from ~0.8x to ~2x the tracked size). The cost is therefore independent of
# the video resolution (a ~160 x 160 px search).
ROI_MARGIN = 1.6
ROI_FACE_PX = 100.0
# When the downscaled full-frame pass finds no face, it is retried at full resolution; after this many
# failed retries in a row, only on every this-many-th frame (bounds the cost of long face-free stretches).
FULL_RES_RETRY_FRAMES = 10
# A re-detection matches the track when its box overlaps the tracked box by at least this IoU.
MATCH_IOU = 0.3
# Choosing the subject at start: faces at least this fraction of the largest face's side are
# "equally large", and the most central of those wins.
SIZE_TIE_RATIO = 0.8
# With `side`, faces smaller than this fraction of the largest face are ignored (background faces).
SIDE_MIN_REL_SIZE = 0.5
# A side track re-acquiring after a loss while fewer faces are visible than it saw with its face (the
# most in the last REACQUIRE_MEMORY_FRAMES frames) only takes a face whose centre is within this many
# face sides (of its last box) of its last centre; older counts are forgotten (the layout changed).
REACQUIRE_RADIUS = 1.0
REACQUIRE_MEMORY_FRAMES = 250
# Two boxes describe the same face when they overlap by at least this IoU or one's centre lies in the other.
SAME_FACE_IOU = 0.3

# Why a frame is lost (counted in the output metadata).
LOST_NO_FACE = "no_face"
LOST_OUTSIDE = "outside_frame"
LOST_TOO_SMALL = "too_small"
LOST_SHAPE = "implausible_shape"
LOST_APPEARANCE = "appearance_changed"
LOST_REDETECT = "redetection_failed"
LOST_SIDE = "side_changed"  # a side track's face is no longer on its side and no face is
LOST_SIDE_CONFLICT = "side_conflict"  # set by the caller (side_conflicts): both side tracks on one face


@dataclass(frozen=True)
class TrackerSettings:
    """Tracker settings; build with :meth:`from_config` from ``section_settings("faces", ...)``."""

    detector: str
    upsample: int
    detect_threshold: float
    detect_max_width: int
    min_face_size: float
    redetect_every: int
    redetect_region: str
    max_redetect_misses: int
    min_similarity: float
    max_shape_residual: float
    min_visible_fraction: float
    count_faces_every: int

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> "TrackerSettings":
        """Take the tracker's keys from validated ``faces`` settings (other keys are ignored)."""
        return cls(**{k: settings[k] for k in cls.__dataclass_fields__})


@dataclass
class FrameResult:
    """What the tracker reports for one frame.

    Attributes
    ----------
    status : str
        ``detected``, ``tracked`` or ``lost``.
    box : (4,) float64
        Box the landmarks were predicted in (``x0, y0, x1, y1``, full-res px); NaN when lost.
    score : float
        Detector score (``detected``), appearance similarity in [-1, 1] (``tracked``), NaN (``lost``).
    n_faces : int
        Faces found by a full-frame detection run on this frame; -1 if none ran.
    points : (68, 2) float64
        Landmarks (full-res px); NaN when lost.
    reason : str
        For lost frames, why (``LOST_*``); empty otherwise.
    """

    status: str
    box: np.ndarray
    score: float
    n_faces: int
    points: np.ndarray
    reason: str = ""


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def _side(box: np.ndarray) -> float:
    return float(np.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)))


def downscale_factor(width: int, detect_max_width: int) -> float:
    """Scale of the first full-frame detection pass: ``detect_max_width / width``, at most 1 (0 = off)."""
    return detect_max_width / width if 0 < detect_max_width < width else 1.0


def visible_fraction(box: np.ndarray, width: int, height: int) -> float:
    """Fraction of a box's area inside a ``width x height`` frame."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    if not area > 0:
        return 0.0
    ix = max(0.0, min(box[2], width) - max(box[0], 0.0))
    iy = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return float(ix * iy / area)


def choose_face(
    boxes: np.ndarray,
    frame_size: tuple[int, int],
    *,
    side: str | None = None,
    last_box: np.ndarray | None = None,
) -> int | None:
    """Pick the subject among detected faces.

    Parameters
    ----------
    boxes : (n, 4) float
        Candidate boxes (full-res px).
    frame_size : (width, height)
    side : {"left", "right"}, optional
        Choose by side (:func:`choose_side_face` without a partner track or memory).
    last_box : (4,) float, optional
        Where the subject was last seen: without ``side``, the face nearest to it is chosen.

    Returns
    -------
    int or None
        Index into ``boxes``; None if no face qualifies.
    """
    if len(boxes) == 0:
        return None
    boxes = np.asarray(boxes, np.float64)
    sides = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    width, height = frame_size
    if side is not None:
        return choose_side_face(boxes, frame_size, side)
    if last_box is not None:
        c = _centre(np.asarray(last_box, np.float64))
        return int(np.argmin(np.hypot(cx - c[0], cy - c[1])))
    cand = np.nonzero(sides >= SIZE_TIE_RATIO * sides.max())[0]
    dist = np.hypot(cx[cand] - width / 2.0, cy[cand] - height / 2.0)
    return int(cand[np.argmin(dist)])


def same_face(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether each of ``boxes`` describes the same face as ``box``.

    Parameters
    ----------
    box : (4,) float
    boxes : (n, 4) float

    Returns
    -------
    (n,) bool
        IoU >= :data:`SAME_FACE_IOU`, or the centre of one box inside the other.
    """
    box = np.asarray(box, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, bool)
    c = _centre(box)
    cs = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)
    c_in_them = (boxes[:, 0] <= c[0]) & (c[0] < boxes[:, 2]) & (boxes[:, 1] <= c[1]) & (c[1] < boxes[:, 3])
    them_in_c = (box[0] <= cs[:, 0]) & (cs[:, 0] < box[2]) & (box[1] <= cs[:, 1]) & (cs[:, 1] < box[3])
    return (box_iou(box, boxes)[0] >= SAME_FACE_IOU) | c_in_them | them_in_c


def side_candidates(boxes: np.ndarray, subjects: list[np.ndarray] = ()) -> np.ndarray:
    """Faces large enough to be one of the video's people for side choice.

    Parameters
    ----------
    boxes : (n, 4) float
        All faces of a full-frame detection.
    subjects : list of (4,) float
        Boxes known to be subjects (the other side's track, this track's own face): faces as small as
        them are people, not background.

    Returns
    -------
    (n,) bool
        Side at least :data:`SIDE_MIN_REL_SIZE` times the largest face's side, or times the largest
        subject's side if that is smaller.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, bool)
    sides = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    ref = sides.max()
    known = [_side(np.asarray(b, np.float64)) for b in subjects if b is not None and np.all(np.isfinite(b))]
    if known:
        ref = min(ref, max(known))
    return sides >= SIDE_MIN_REL_SIZE * ref


def choose_side_face(
    boxes: np.ndarray,
    frame_size: tuple[int, int],
    side: str,
    *,
    other_box: np.ndarray | None = None,
    last_box: np.ndarray | None = None,
    n_expected: int = 0,
) -> int | None:
    """Pick the face of the person on one side (Aff-Wild2 ``_left`` / ``_right``).

    Candidates are the faces at least :data:`SIDE_MIN_REL_SIZE` times the largest face's side (or the
    largest of ``other_box`` and ``last_box``, if smaller: :func:`side_candidates`). With
    ``other_box`` (where the other side's track is), the face it holds and faces on its wrong side
    (for ``left``: centre not left of the other box's centre) are removed. A lone candidate without
    ``other_box`` counts only if its centre is on that half of the frame. When fewer candidates than
    ``n_expected`` are visible (someone is hidden, probably this side's person), only a candidate
    within :data:`REACQUIRE_RADIUS` face sides of ``last_box`` is taken (the nearest); otherwise the
    left-most (``left``) / right-most (``right``) candidate.

    Parameters
    ----------
    boxes : (n, 4) float
        All faces of a full-frame detection (full-res px).
    frame_size : (width, height)
    side : {"left", "right"}
    other_box : (4,) float, optional
        Current box of the other side's track.
    last_box : (4,) float, optional
        Where this side's person was last seen (or is now).
    n_expected : int
        Candidates that were visible when this track last held its face (0: no memory).

    Returns
    -------
    int or None
        Index into ``boxes``; None if no face qualifies.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if len(boxes) == 0:
        return None
    boxes = np.asarray(boxes, np.float64)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    big = side_candidates(boxes, [other_box, last_box])
    n_visible = int(big.sum())
    ok = big.copy()
    if other_box is not None and np.all(np.isfinite(other_box)):
        ocx = _centre(np.asarray(other_box, np.float64))[0]
        ok &= ~same_face(other_box, boxes)
        ok &= cx < ocx if side == "left" else cx > ocx
    elif n_visible == 1:
        ok &= cx < frame_size[0] / 2.0 if side == "left" else cx >= frame_size[0] / 2.0
    cand = np.nonzero(ok)[0]
    if len(cand) == 0:
        return None
    if last_box is not None and n_visible < n_expected:
        c = _centre(np.asarray(last_box, np.float64))
        dist = np.hypot(cx[cand] - c[0], (boxes[cand, 1] + boxes[cand, 3]) / 2.0 - c[1])
        k = int(np.argmin(dist))
        return int(cand[k]) if dist[k] <= REACQUIRE_RADIUS * _side(np.asarray(last_box, np.float64)) else None
    return int(cand[np.argmin(cx[cand])] if side == "left" else cand[np.argmax(cx[cand])])


def side_conflicts(left_boxes: np.ndarray, right_boxes: np.ndarray) -> np.ndarray:
    """Frames where a video's ``left`` and ``right`` tracks contradict each other.

    Parameters
    ----------
    left_boxes, right_boxes : (N, 4) float
        Per-frame boxes of the two tracks (NaN where lost).

    Returns
    -------
    (N,) bool
        Both tracks have a face and they describe the same face (:func:`same_face`), or the left
        track's box centre is not left of the right track's.
    """
    a = np.asarray(left_boxes, np.float64)
    b = np.asarray(right_boxes, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"left and right tracks differ in length: {a.shape} vs {b.shape}")
    both = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    out = np.zeros(len(a), bool)
    for k in np.nonzero(both)[0]:
        out[k] = bool(same_face(a[k], b[k : k + 1])[0]) or _centre(a[k])[0] >= _centre(b[k])[0]
    return out


class FaceTracker:
    """Track one subject's 68 landmarks through a sequence of frames.

    Parameters
    ----------
    settings : TrackerSettings
    detector : FaceDetector
        Backend from :func:`affpipe.faces.detectors.make_detector`.
    predictor : LandmarkPredictor
    side : {"left", "right"}, optional
        Follow the face on that side of the frame (Aff-Wild2 ``_left`` / ``_right`` annotations).
    """

    def __init__(self, settings: TrackerSettings, detector: FaceDetector, predictor: LandmarkPredictor, *,
                 side: str | None = None):
        if side is not None and side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        self.settings = settings
        self.detector = detector
        self.predictor = predictor
        self.side = side
        self._detect_scale: float | None = None
        self._escalated_at: int | None = None
        self._full_res_misses = 0
        self._periodic = 0  # periodic re-detections so far (face counting in roi mode)
        self._frame = -1  # frames seen
        self.reset()

    @property
    def detect_scale(self) -> float | None:
        """Scale of the full-frame detection pass (1.0 = full resolution); None before the first frame."""
        return self._detect_scale

    @property
    def escalated_at(self) -> int | None:
        """Frame (0-based call of :meth:`update`) at which detection moved to full resolution, if it did."""
        return self._escalated_at

    def reset(self) -> None:
        """Forget the current track (the next frame runs a full-frame detection)."""
        self._points: np.ndarray | None = None
        self._box: np.ndarray | None = None
        self._last_box: np.ndarray | None = None
        self._template: np.ndarray | None = None
        self._since_detect = 0
        self._misses = 0
        self._seen: list[tuple[int, int]] = []  # side tracks: (frame, faces visible) at detections of our face

    @property
    def box(self) -> np.ndarray | None:
        """Box of the face currently held (full-res px), None when not tracking."""
        return None if self._box is None else self._box.copy()

    # -- detection helpers ---------------------------------------------------------------------------

    def _full_frame_detect(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detect on the whole frame at :attr:`detect_scale`, retrying at full resolution.

        The first pass runs on the frame downscaled to ``detect_max_width`` (speed). If it finds no
        face of at least ``min_face_size`` and the frame was downscaled, the detection is retried at
        full resolution; if that finds a face, the video's detection scale becomes 1.0 for good, so
        that every later full-frame detection (re-acquisition, counting, side choice) sees the same
        small faces.
        """
        if self._detect_scale is None:
            self._detect_scale = downscale_factor(frame_rgb.shape[1], self.settings.detect_max_width)
        boxes, scores = self._size_filter(*detect_faces(self.detector, frame_rgb, scale=self._detect_scale))
        if len(boxes) == 0 and self._detect_scale < 1.0:
            # A long stretch without any face (credits, an empty room) would pay the full-resolution
            # pass on every frame: after FULL_RES_RETRY_FRAMES failed retries in a row, retry only on
            # every FULL_RES_RETRY_FRAMES-th frame.
            misses = self._full_res_misses
            if misses < FULL_RES_RETRY_FRAMES or misses % FULL_RES_RETRY_FRAMES == 0:
                boxes, scores = self._size_filter(*detect_faces(self.detector, frame_rgb, scale=1.0))
                if len(boxes):
                    self._detect_scale = 1.0
                    self._escalated_at = self._frame
            self._full_res_misses = 0 if len(boxes) else misses + 1
        elif len(boxes):
            self._full_res_misses = 0
        return boxes, scores

    def _roi_detect(self, frame_rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        side = _side(box)
        c = _centre(box)
        half = ROI_MARGIN * side / 2.0
        region = (int(np.floor(c[0] - half)), int(np.floor(c[1] - half)),
                  int(np.ceil(c[0] + half)), int(np.ceil(c[1] + half)))
        boxes, scores = detect_faces(self.detector, frame_rgb, region=region, scale=ROI_FACE_PX / side)
        return self._size_filter(boxes, scores)

    def _size_filter(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(boxes):
            keep = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) >= self.settings.min_face_size
            boxes, scores = boxes[keep], scores[keep]
        return boxes, scores

    # -- per-frame checks ----------------------------------------------------------------------------

    def _geometry_problem(self, points: np.ndarray, box: np.ndarray, width: int, height: int) -> str:
        s = self.settings
        if visible_fraction(box, width, height) < s.min_visible_fraction:
            return LOST_OUTSIDE
        if _side(box) < s.min_face_size:
            return LOST_TOO_SMALL
        if not shape_residual(points) <= s.max_shape_residual:
            return LOST_SHAPE
        return ""

    def _lost(self, reason: str, n_faces: int = -1) -> FrameResult:
        if self._box is not None:
            self._last_box = self._box
        self._points = self._box = self._template = None
        self._since_detect = self._misses = 0
        nan4 = np.full(4, np.nan)
        return FrameResult(LOST, nan4, float("nan"), n_faces, np.full((N_LANDMARKS, 2), np.nan), reason)

    def _accept_detection(
        self, frame_rgb: np.ndarray, box: np.ndarray, score: float, n_faces: int,
        all_boxes: np.ndarray | None = None, other_box: np.ndarray | None = None,
    ) -> FrameResult | str:
        """Predict landmarks in a detector box; the reason (``LOST_*``) if they fail the geometry checks."""
        h, w = frame_rgb.shape[:2]
        points = self.predictor.predict(frame_rgb, box)
        problem = self._geometry_problem(points, box, w, h)
        if problem:
            return problem
        self._points, self._box = points, box
        self._template = face_patch(frame_rgb, points)
        self._since_detect = self._misses = 0
        if all_boxes is not None:  # side tracks: how many faces are visible with ours
            self._seen = [(f, c) for f, c in self._seen if f > self._frame - REACQUIRE_MEMORY_FRAMES]
            self._seen.append((self._frame, int(side_candidates(all_boxes, [other_box, box]).sum())))
        return FrameResult(DETECTED, box.copy(), float(score), n_faces, points)

    # -- main entry ------------------------------------------------------------------------------------

    def update(
        self,
        frame_rgb: np.ndarray,
        *,
        other_box: np.ndarray | None = None,
        full_frame: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> FrameResult:
        """Process the next frame.

        Parameters
        ----------
        frame_rgb : (H, W, 3) uint8
            RGB frame, C-contiguous.
        other_box : (4,) float, optional
            Side tracks: the box the other side's track holds now (None: lost / no other track).
        full_frame : callable, optional
            Full-frame detection to use instead of this tracker's own (:class:`SidePair` shares one
            detection per frame between its two tracks); ``frame_rgb -> (boxes, scores)``.

        Returns
        -------
        FrameResult
        """
        s = self.settings
        h, w = frame_rgb.shape[:2]
        self._frame += 1
        detect_all = full_frame or self._full_frame_detect
        if self._points is None:
            boxes, scores = detect_all(frame_rgb)
            n_faces = len(boxes)
            if self.side is None:
                idx = choose_face(boxes, (w, h), last_box=self._last_box)
            else:
                self._seen = [(f, c) for f, c in self._seen if f >= self._frame - REACQUIRE_MEMORY_FRAMES]
                idx = choose_side_face(boxes, (w, h), self.side, other_box=other_box, last_box=self._last_box,
                                       n_expected=max((c for _, c in self._seen), default=0))
            if idx is None:
                return self._lost(LOST_NO_FACE, n_faces)
            res = self._accept_detection(frame_rgb, boxes[idx], scores[idx], n_faces,
                                         boxes if self.side is not None else None, other_box)
            return res if isinstance(res, FrameResult) else self._lost(res, n_faces)

        self._since_detect += 1
        n_faces = -1
        box = box_from_landmarks(self._points)  # where the detector would find the face now
        if self._since_detect >= s.redetect_every or self._misses > 0:
            periodic = self._misses == 0
            if periodic:
                self._periodic += 1
            if s.redetect_region == "frame" or self.side is not None:
                # side tracks always search the whole frame: the side is re-checked among all faces
                boxes, scores = detect_all(frame_rgb)
                n_faces = len(boxes)
            else:
                boxes, scores = self._roi_detect(frame_rgb, box)
                if periodic and s.count_faces_every > 0 and (self._periodic - 1) % s.count_faces_every == 0:
                    n_faces = len(detect_all(frame_rgb)[0])  # only counted; the track uses the region search
            if len(boxes):
                iou = box_iou(box, boxes)[0]
                j = int(np.argmax(iou))
                if iou[j] >= MATCH_IOU:
                    if self.side is not None:  # our face is found: is it still this side's face?
                        k = choose_side_face(boxes, (w, h), self.side, other_box=other_box, last_box=box)
                        if k is None:
                            return self._lost(LOST_SIDE, n_faces)
                        j = k
                    res = self._accept_detection(frame_rgb, boxes[j], scores[j], n_faces,
                                                 boxes if self.side is not None else None, other_box)
                    if isinstance(res, FrameResult):
                        return res
            self._misses += 1
            if self._misses >= s.max_redetect_misses:
                return self._lost(LOST_REDETECT, n_faces)

        points = self.predictor.predict(frame_rgb, box)
        problem = self._geometry_problem(points, box, w, h)
        if problem:
            return self._lost(problem, n_faces)
        similarity = patch_similarity(self._template, face_patch(frame_rgb, points))
        if similarity < s.min_similarity:
            return self._lost(LOST_APPEARANCE, n_faces)
        self._points, self._box = points, box
        return FrameResult(TRACKED, box, similarity, n_faces, points)


class SidePair:
    """The ``left`` and ``right`` tracks of one video, run jointly.

    Each track knows the other's current box (it never takes that face, nor one on the wrong side
    of it), and both share one full-frame detection per frame. The left track updates first, with
    the right track's box from the previous frame; the result is deterministic, so the jobs writing
    the left and the right output compute the same pair.
    """

    def __init__(self, settings: TrackerSettings, detector: FaceDetector, predictor: LandmarkPredictor):
        self.left = FaceTracker(settings, detector, predictor, side="left")
        self.right = FaceTracker(settings, detector, predictor, side="right")

    @property
    def detect_scale(self) -> float | None:
        """Scale of the shared full-frame detection (the left track runs it for both)."""
        return self.left.detect_scale

    @property
    def escalated_at(self) -> int | None:
        """Frame at which the shared full-frame detection moved to full resolution, if it did."""
        return self.left.escalated_at

    def update(self, frame_rgb: np.ndarray) -> tuple[FrameResult, FrameResult]:
        """Process the next frame with both tracks; ``(left result, right result)``."""
        cache: list = []

        def full_frame(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if not cache:
                cache.append(self.left._full_frame_detect(rgb))
            return cache[0]

        res_left = self.left.update(frame_rgb, other_box=self.right.box, full_frame=full_frame)
        res_right = self.right.update(frame_rgb, other_box=self.left.box, full_frame=full_frame)
        return res_left, res_right
