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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

# Why a frame is lost (counted in the output metadata).
LOST_NO_FACE = "no_face"
LOST_OUTSIDE = "outside_frame"
LOST_TOO_SMALL = "too_small"
LOST_SHAPE = "implausible_shape"
LOST_APPEARANCE = "appearance_changed"
LOST_REDETECT = "redetection_failed"


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
        Choose the leftmost / rightmost face (by box centre) among faces at least
        :data:`SIDE_MIN_REL_SIZE` times the largest. A lone face counts only if its centre is on
        that half of the frame (so the other person of a two-person video is not taken instead).
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
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        cand = np.nonzero(sides >= SIDE_MIN_REL_SIZE * sides.max())[0]
        if len(cand) == 1:
            on_side = cx[cand[0]] < width / 2.0 if side == "left" else cx[cand[0]] >= width / 2.0
            return int(cand[0]) if on_side else None
        return int(cand[np.argmin(cx[cand])] if side == "left" else cand[np.argmax(cx[cand])])
    if last_box is not None:
        c = _centre(np.asarray(last_box, np.float64))
        return int(np.argmin(np.hypot(cx - c[0], cy - c[1])))
    cand = np.nonzero(sides >= SIZE_TIE_RATIO * sides.max())[0]
    dist = np.hypot(cx[cand] - width / 2.0, cy[cand] - height / 2.0)
    return int(cand[np.argmin(dist)])


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
        self._frame_index = -1
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
                    self._escalated_at = self._frame_index
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
        self, frame_rgb: np.ndarray, box: np.ndarray, score: float, n_faces: int
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
        return FrameResult(DETECTED, box.copy(), float(score), n_faces, points)

    # -- main entry ------------------------------------------------------------------------------------

    def update(self, frame_rgb: np.ndarray) -> FrameResult:
        """Process the next frame.

        Parameters
        ----------
        frame_rgb : (H, W, 3) uint8
            RGB frame, C-contiguous.

        Returns
        -------
        FrameResult
        """
        s = self.settings
        h, w = frame_rgb.shape[:2]
        self._frame_index += 1
        if self._points is None:
            boxes, scores = self._full_frame_detect(frame_rgb)
            n_faces = len(boxes)
            idx = choose_face(boxes, (w, h), side=self.side, last_box=self._last_box)
            if idx is None:
                return self._lost(LOST_NO_FACE, n_faces)
            res = self._accept_detection(frame_rgb, boxes[idx], scores[idx], n_faces)
            return res if isinstance(res, FrameResult) else self._lost(res, n_faces)

        self._since_detect += 1
        n_faces = -1
        box = box_from_landmarks(self._points)  # where the detector would find the face now
        if self._since_detect >= s.redetect_every or self._misses > 0:
            if s.redetect_region == "frame":
                boxes, scores = self._full_frame_detect(frame_rgb)
                n_faces = len(boxes)
            else:
                boxes, scores = self._roi_detect(frame_rgb, box)
            if len(boxes):
                iou = box_iou(box, boxes)[0]
                j = int(np.argmax(iou))
                if iou[j] >= MATCH_IOU:
                    res = self._accept_detection(frame_rgb, boxes[j], scores[j], n_faces)
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
