"""Face detectors behind one interface, with pluggable backends.

Every backend maps an RGB image to boxes and scores::

    boxes, scores = detector.detect(image_rgb)   # (n, 4) float64 x0, y0, x1, y1; (n,) float64

Box convention (everywhere in :mod:`affpipe.faces`): ``x0, y0`` is the top-left pixel, ``x1, y1`` is
one past the bottom-right pixel, so ``x1 - x0`` is the width. A dlib ``rectangle(l, t, r, b)`` (inclusive
corners) is ``(l, t, r + 1, b + 1)``.

Backends (config key ``faces.detector``):

``hog``
    dlib's HOG + linear SVM frontal face detector (``dlib.get_frontal_face_detector``). The default,
    and the detector the 68-point shape predictor was trained with. Finds faces of about 80 px and
    larger (40 px with ``upsample: 1``). Score: the SVM margin (detections have score > threshold).
``cnn``
    dlib's MMOD CNN (``mmod_human_face_detector.dat``): more robust to pose and lighting, but several
    seconds per VGA frame on a CPU. Score: the MMOD confidence.
``cascade``
    OpenCV's LBP frontal-face cascade (``lbpcascade_frontalface_opencv.xml``, trained by OpenCV and
    shipped by scikit-image), run by :class:`skimage.feature.Cascade`, with OpenCV-style grouping of
    the raw windows. The dependency-light fallback. OpenCV 5 wheels no longer ship
    ``CascadeClassifier`` nor the Haar cascade files (``cv2.data.haarcascades`` is empty), so the
    cascade comes from scikit-image. Score: the number of raw windows grouped into the detection.

:func:`detect_faces` runs a backend on a whole frame or a region of it, optionally rescaled, maps the
boxes back to full-resolution frame pixels and converts them to the box dlib's HOG detector would
have drawn around the same face (:func:`affpipe.faces.boxmodel.to_hog_box`), which is what the shape
predictor expects.
"""

from __future__ import annotations

import functools
from typing import Protocol

import cv2
import numpy as np

from affpipe.faces.boxmodel import to_hog_box

DETECTORS = ("hog", "cnn", "cascade")

#: Smallest face each backend finds in its input image at ``upsample: 0`` (px, box side), measured by
#: shrinking single_face.jpg until the detector misses it: HOG ~ 70-80, MMOD ~ 60-80, LBP cascade 24
#: (its window; reliable from ~40).
NATIVE_MIN_FACE = {"hog": 80, "cnn": 80, "cascade": 24}

# LBP cascade search: window growth per scale step and step between windows as a fraction of the
# window (OpenCV defaults are 1.1 / 1 px; these trade a little recall for ~3x speed).
CASCADE_SCALE_FACTOR = 1.2
CASCADE_STEP_RATIO = 1.0
# OpenCV groupRectangles: windows are "similar" when their corners differ by at most
# GROUP_EPS * mean side / 2, and a group needs this many raw windows to count as a face (OpenCV's
# default minNeighbors is 3).
CASCADE_GROUP_EPS = 0.2
CASCADE_MIN_NEIGHBOURS = 3


class FaceDetector(Protocol):
    """What :func:`detect_faces` needs from a backend."""

    name: str

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detect faces.

        Parameters
        ----------
        image_rgb : (H, W, 3) uint8
            RGB image, C-contiguous.

        Returns
        -------
        boxes : (n, 4) float64
            ``x0, y0, x1, y1`` in image pixels (see the module docstring).
        scores : (n,) float64
        """
        ...


def _rects_to_array(rects) -> np.ndarray:
    if len(rects) == 0:
        return np.zeros((0, 4), np.float64)
    return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float64)


@functools.lru_cache(maxsize=None)
def _load_model(kind: str):
    """Load (once per process) a detector model; they are read-only, so sharing is safe."""
    if kind == "hog":
        import dlib

        return dlib.get_frontal_face_detector()
    if kind == "cnn":
        import dlib

        from affpipe.resources import DLIB_MMOD_MODEL, dlib_model_path

        return dlib.cnn_face_detection_model_v1(str(dlib_model_path(DLIB_MMOD_MODEL)))
    if kind == "cascade":
        import skimage.data
        from skimage.feature import Cascade

        return Cascade(skimage.data.lbp_frontal_face_cascade_filename())
    raise ValueError(kind)


class HogDetector:
    """dlib's HOG frontal face detector.

    Parameters
    ----------
    upsample : int
        dlib's ``upsample_num_times`` (each doubles the image; finds faces half the size).
    threshold : float
        dlib's ``adjust_threshold``: detections need an SVM score above it (dlib's default is 0).
    """

    name = "hog"

    def __init__(self, *, upsample: int = 0, threshold: float = 0.0):
        self._det = _load_model("hog")
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rects, scores, _ = self._det.run(image_rgb, self.upsample, self.threshold)
        return _rects_to_array(rects), np.asarray(scores, np.float64).reshape(-1)


class CnnDetector:
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``).

    Parameters
    ----------
    upsample : int
        dlib's ``upsample_num_times``.
    threshold : float
        Minimum MMOD confidence kept (dlib reports detections with confidence > 0).
    """

    name = "cnn"

    def __init__(self, *, upsample: int = 0, threshold: float = 0.0):
        self._det = _load_model("cnn")
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dets = [d for d in self._det(image_rgb, self.upsample) if d.confidence >= self.threshold]
        return _rects_to_array([d.rect for d in dets]), np.array([d.confidence for d in dets], np.float64)


def group_windows(
    windows: np.ndarray, *, eps: float = CASCADE_GROUP_EPS, min_neighbours: int = CASCADE_MIN_NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray]:
    """Group raw cascade windows like OpenCV's ``groupRectangles``.

    Parameters
    ----------
    windows : (n, 4) float
        Raw windows ``x0, y0, x1, y1``.
    eps : float
        Similarity tolerance (fraction of the mean side).
    min_neighbours : int
        Minimum windows per group.

    Returns
    -------
    boxes : (m, 4) float64
        Mean window of each group with at least ``min_neighbours`` members, minus groups lying
        inside a larger, stronger one.
    counts : (m,) float64
        Windows per group (the detection score).
    """
    n = len(windows)
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0)
    w = np.asarray(windows, np.float64)
    side = np.minimum(w[:, 2] - w[:, 0], w[:, 3] - w[:, 1])
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    delta = eps * (side[:, None] + side[None, :]) * 0.5
    similar = np.all(np.abs(w[:, None, :] - w[None, :, :]) <= delta[:, :, None], axis=2)
    for i, j in zip(*np.nonzero(np.triu(similar, 1))):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[rj] = ri
    roots = np.array([find(i) for i in range(n)])
    labels, counts = np.unique(roots, return_counts=True)
    keep = counts >= min_neighbours
    boxes = np.array([w[roots == lab].mean(axis=0) for lab in labels[keep]]).reshape(-1, 4)
    counts = counts[keep].astype(np.float64)
    # Drop a group that lies inside a larger one that has at least as many windows (OpenCV does too).
    inside = np.zeros(len(boxes), bool)
    for i in range(len(boxes)):
        for j in range(len(boxes)):
            if i == j or counts[j] < counts[i]:
                continue
            d = eps * (boxes[j, 2] - boxes[j, 0])
            if (boxes[i, 0] >= boxes[j, 0] - d and boxes[i, 1] >= boxes[j, 1] - d and boxes[i, 2] <= boxes[j, 2] + d
                    and boxes[i, 3] <= boxes[j, 3] + d and (boxes[j, 2] - boxes[j, 0]) > (boxes[i, 2] - boxes[i, 0])):
                inside[i] = True
    return boxes[~inside], counts[~inside]


class CascadeDetector:
    """OpenCV's LBP frontal-face cascade (shipped by scikit-image), OpenCV-style grouping.

    Parameters
    ----------
    upsample : int
        The image is enlarged by ``2 ** upsample`` before the search (finds smaller faces).
    threshold : float
        Minimum number of grouped raw windows (OpenCV's ``minNeighbors``); values below
        :data:`CASCADE_MIN_NEIGHBOURS` are raised to it.
    """

    name = "cascade"

    def __init__(self, *, upsample: int = 0, threshold: float = 0.0):
        self._casc = _load_model("cascade")
        self.upsample = int(upsample)
        self.min_neighbours = max(CASCADE_MIN_NEIGHBOURS, int(np.ceil(threshold)))

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        f = 2 ** self.upsample
        if f != 1:
            gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
        h, w = gray.shape
        win = NATIVE_MIN_FACE["cascade"]
        if min(h, w) < win:
            return np.zeros((0, 4)), np.zeros(0)
        raw = self._casc.detect_multi_scale(
            img=gray, scale_factor=CASCADE_SCALE_FACTOR, step_ratio=CASCADE_STEP_RATIO, min_size=(win, win),
            max_size=(w, h), min_neighbor_number=0, intersection_score_threshold=1.01,  # >1: no merging
        )
        windows = np.array([[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in raw], np.float64)
        boxes, counts = group_windows(windows.reshape(-1, 4), min_neighbours=self.min_neighbours)
        return boxes / f, counts


def make_detector(name: str, *, upsample: int = 0, threshold: float = 0.0) -> FaceDetector:
    """Build a detector backend by config name (``hog``, ``cnn`` or ``cascade``)."""
    classes = {"hog": HogDetector, "cnn": CnnDetector, "cascade": CascadeDetector}
    if name not in classes:
        raise ValueError(f"unknown face detector {name!r}; expected one of {', '.join(DETECTORS)}")
    return classes[name](upsample=upsample, threshold=threshold)


def detect_faces(
    detector: FaceDetector,
    frame_rgb: np.ndarray,
    *,
    region: tuple[int, int, int, int] | None = None,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a detector on a frame or a region of it, at a given scale.

    Parameters
    ----------
    detector : FaceDetector
    frame_rgb : (H, W, 3) uint8
        Full-resolution RGB frame.
    region : (x0, y0, x1, y1) int, optional
        Part of the frame to search (clipped to the frame); default the whole frame.
    scale : float
        The (cropped) image is resized by this factor before detection (``< 1`` is faster and finds
        only larger faces, ``> 1`` finds smaller ones). 1.0 runs on the original pixels.

    Returns
    -------
    boxes : (n, 4) float64
        HOG-equivalent boxes (:func:`affpipe.faces.boxmodel.to_hog_box`) in full-resolution frame
        pixels, sorted by decreasing score.
    scores : (n,) float64
        The backend's scores.
    """
    h, w = frame_rgb.shape[:2]
    ox = oy = 0
    img = frame_rgb
    if region is not None:
        x0, y0, x1, y1 = (int(v) for v in region)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((0, 4)), np.zeros(0)
        img = frame_rgb[y0:y1, x0:x1]
        ox, oy = x0, y0
    if scale != 1.0:
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        size = (max(1, int(round(img.shape[1] * scale))), max(1, int(round(img.shape[0] * scale))))
        sx, sy = size[0] / img.shape[1], size[1] / img.shape[0]
        img = cv2.resize(img, size, interpolation=interp)
    else:
        sx = sy = 1.0
    img = np.ascontiguousarray(img)
    boxes, scores = detector.detect(img)
    if len(boxes):
        boxes = boxes / np.array([sx, sy, sx, sy]) + np.array([ox, oy, ox, oy], np.float64)
        boxes = to_hog_box(boxes, detector.name)
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
    return boxes, scores
