"""Render demo frames: one source face, animated by target landmarks and head motion.

A :class:`Rig` is built once per identity. Its *canvas* is the source photo cropped around the
face (upright, face at a fixed size), with a margin around the output frame so that head motion
never reveals an edge. The warp mesh is the 68 landmarks, a ring of anchors around the face (which
keeps the deformation on the face) and anchors on the canvas border, triangulated once.

A frame is then one piecewise-affine warp (``affpipe.demo.warp``) from the canvas to the output
frame: mesh points go to ``J(target)`` where ``target`` holds the expression landmarks and ``J``
is the frame's head-motion similarity; plus a darkened mouth cavity between the inner lips, and
sensor noise.

Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from affpipe.demo.expression import (
    INNER_MOUTH,
    ExpressionStrengths,
    FaceFrame,
    displace_landmarks,
    face_frame,
)
from affpipe.demo.warp import apply_affine, invert_affine, piecewise_affine_maps, triangulate

#: Canvas margin around the output frame, as a fraction of the frame's longest side.
CANVAS_MARGIN = 0.25
#: Vertical position of the landmark bounding-box centre in the output frame (fraction of height);
#: a little below the middle, leaving room for the forehead and hair.
FACE_CENTER_Y = 0.55
#: Ring of fixed anchors around the face: number of points, and its semi-axes relative to the
#: landmark bounding box's half width / half height; its centre is raised by RING_LIFT * height.
RING_POINTS = 20
RING_SCALE_X = 1.45
RING_SCALE_Y = 1.6
RING_LIFT = 0.12
#: Landmarks (at any expression) must stay inside the ring ellipse by this normalised margin.
RING_CLEARANCE = 0.85
#: Anchors per canvas side (corners included once).
BORDER_POINTS_PER_SIDE = 4
#: Mouth cavity: the inner-lip polygon is darkened on every frame (for a closed mouth it is a thin
#: lip seam), so whether the photo shows teeth or not, an open mouth looks the same on every
#: identity. It keeps CAVITY_TEXTURE of the warped texture, plus a dark red-brown tint.
CAVITY_OPACITY = 0.8
CAVITY_TEXTURE = 0.3
CAVITY_TINT_BGR = (14.0, 16.0, 32.0)
CAVITY_BLUR_SIGMA = 0.7


@dataclass
class Rig:
    """Everything needed to render one identity.

    Attributes
    ----------
    canvas : (Hc, Wc, 3) uint8, BGR; the cropped, upright photo with margin.
    landmarks : (68, 2) float64; source landmarks in canvas pixels.
    helpers : (H, 68) float64; helper mesh points are ``helpers @ landmarks``.
    anchors : (A, 2) float64; fixed mesh points (ring around the face, canvas border).
    triangles : (M, 3) int64; triangulation of ``concat(landmarks, helpers @ landmarks, anchors)``.
    offset : (2,) float64; canvas coordinates of the output frame's top-left pixel.
    out_size : (W, H) of the output frame.
    head_center : (2,) float64; head-motion pivot (landmark centroid), canvas pixels.
    frame : FaceFrame of the source landmarks.
    strengths : ExpressionStrengths used to build the rig (and to animate it).
    """

    canvas: np.ndarray
    landmarks: np.ndarray
    helpers: np.ndarray
    anchors: np.ndarray
    triangles: np.ndarray
    offset: np.ndarray
    out_size: tuple[int, int]
    head_center: np.ndarray
    frame: FaceFrame
    strengths: ExpressionStrengths

    def mesh(self, landmarks: np.ndarray) -> np.ndarray:
        """(68 + H + A, 2) float64: mesh vertices for a landmark configuration (canvas pixels)."""
        lm = np.asarray(landmarks, float)
        return np.concatenate([lm, self.helpers @ lm, self.anchors])

    @property
    def mesh_points(self) -> np.ndarray:
        """(68 + H + A, 2) float64: source mesh vertices in canvas pixels."""
        return self.mesh(self.landmarks)


def crop_matrix(
    landmarks: np.ndarray, *, out_size: tuple[int, int], face_width_fraction: float, margin: int
) -> np.ndarray:
    """Similarity from photo pixels to canvas pixels: eyes level, face width fixed.

    Parameters
    ----------
    landmarks : (68, 2) float
        Landmarks in the photo.
    out_size : (W, H), keyword-only
        Output frame size; the canvas is ``(W + 2 margin, H + 2 margin)``.
    face_width_fraction : float, keyword-only
        Jaw width (landmark 0 to 16) as a fraction of the output width.
    margin : int, keyword-only

    Returns
    -------
    m : (2, 3) float64
    """
    f = face_frame(landmarks)
    pts = np.asarray(landmarks, float)
    jaw = float(np.hypot(*(pts[16] - pts[0])))
    scale = face_width_fraction * out_size[0] / jaw
    # Rotate so the face frame's x axis becomes horizontal.
    c, s = f.x_axis
    r = scale * np.array([[c, s], [-s, c]])
    rotated = pts @ r.T
    box_center = (rotated.min(axis=0) + rotated.max(axis=0)) / 2
    target = np.array([margin + out_size[0] / 2, margin + FACE_CENTER_Y * out_size[1]])
    return np.concatenate([r, (target - box_center)[:, None]], axis=1)


def crop_canvas(image: np.ndarray, m: np.ndarray, *, canvas_size: tuple[int, int]) -> np.ndarray:
    """Resample the photo onto the canvas, low-pass filtering first when shrinking.

    Parameters
    ----------
    image : (H0, W0, 3) uint8
    m : (2, 3) float
        Photo -> canvas similarity (see :func:`crop_matrix`).
    canvas_size : (Wc, Hc), keyword-only

    Returns
    -------
    canvas : (Hc, Wc, 3) uint8
    """
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    src = image
    if scale < 1.0:
        sigma = 0.5 * (1.0 / scale - 1.0) + 1e-6
        src = cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.warpAffine(src, m, canvas_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def face_ring(landmarks_extremes: np.ndarray, *, n: int = RING_POINTS) -> np.ndarray:
    """Anchor points on an ellipse around the face that contains every given landmark.

    Parameters
    ----------
    landmarks_extremes : (..., 68, 2) float
        Landmarks at the extreme expressions (and the source), canvas pixels, eyes level.
    n : int, keyword-only

    Returns
    -------
    ring : (n, 2) float64
    """
    pts = np.asarray(landmarks_extremes, float).reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    half = (hi - lo) / 2
    center = (lo + hi) / 2 - np.array([0.0, RING_LIFT * 2 * half[1]])
    axes = half * np.array([RING_SCALE_X, RING_SCALE_Y])
    # Grow the ellipse until every landmark is well inside.
    r = np.sqrt((((pts - center) / axes) ** 2).sum(axis=1)).max()
    axes = axes * max(1.0, r / RING_CLEARANCE)
    t = 2 * np.pi * (np.arange(n) + 0.5) / n
    return center + axes * np.stack([np.cos(t), np.sin(t)], axis=1)


def border_points(canvas_size: tuple[int, int], *, per_side: int = BORDER_POINTS_PER_SIDE) -> np.ndarray:
    """Anchors evenly spaced along the canvas border (corners included once).

    Returns
    -------
    points : (4 * per_side, 2) float64
    """
    w, h = canvas_size[0] - 1.0, canvas_size[1] - 1.0
    u = np.arange(per_side) / per_side
    top = np.stack([u * w, np.zeros_like(u)], 1)
    right = np.stack([np.full_like(u, w), u * h], 1)
    bottom = np.stack([w - u * w, np.full_like(u, h)], 1)
    left = np.stack([np.zeros_like(u), h - u * h], 1)
    return np.concatenate([top, right, bottom, left])


#: Helper mesh points: fixed convex combinations of landmarks (recomputed from the displaced
#: landmarks on every frame), so that the cheeks and chin follow the mouth smoothly instead of
#: long thin triangles between the mouth and the jaw folding over when the corners move.
HELPER_POINTS: tuple[tuple[tuple[int, float], ...], ...] = (
    ((48, 0.5), (3, 0.5)),
    ((48, 0.5), (31, 0.5)),
    ((48, 0.5), (5, 0.5)),
    ((54, 0.5), (13, 0.5)),
    ((54, 0.5), (35, 0.5)),
    ((54, 0.5), (11, 0.5)),
    ((57, 0.5), (8, 0.5)),
)
def helper_weights() -> np.ndarray:
    """(H, 68) float64 weights: ``helpers = weights @ landmarks``."""
    w = np.zeros((len(HELPER_POINTS), 68))
    for i, terms in enumerate(HELPER_POINTS):
        for idx, weight in terms:
            w[i, idx] = weight
    return w


#: Valence/arousal combinations spanning the expression space (for the ring and fold checks).
EXTREME_EXPRESSIONS = np.array([[v, a] for v in (-1.0, 0.0, 1.0) for a in (-1.0, 0.0, 1.0)])


def build_rig(
    image: np.ndarray,
    landmarks: np.ndarray,
    *,
    out_size: tuple[int, int],
    face_width_fraction: float,
    strengths: ExpressionStrengths,
) -> Rig:
    """Crop a photo around its face and build the warp mesh.

    Parameters
    ----------
    image : (H0, W0, 3) uint8, BGR
    landmarks : (68, 2) float
        Landmarks in ``image``.
    out_size : (W, H), keyword-only
        Output frame size.
    face_width_fraction : float, keyword-only
        Jaw width as a fraction of the frame width.
    strengths : ExpressionStrengths, keyword-only

    Returns
    -------
    Rig
    """
    margin = int(round(CANVAS_MARGIN * max(out_size)))
    canvas_size = (out_size[0] + 2 * margin, out_size[1] + 2 * margin)
    m = crop_matrix(landmarks, out_size=out_size, face_width_fraction=face_width_fraction, margin=margin)
    canvas = crop_canvas(image, m, canvas_size=canvas_size)
    lm = apply_affine(m, landmarks)
    extremes = displace_landmarks(lm, EXTREME_EXPRESSIONS[:, 0], EXTREME_EXPRESSIONS[:, 1], strengths=strengths)
    anchors = np.concatenate([face_ring(np.concatenate([lm[None], extremes])), border_points(canvas_size)])
    # Mesh topology from the most open configuration (neutral valence, arousal +1), where the
    # inner-lip points are well apart: the mouth triangles then mostly just flatten as it closes.
    # Triangles between the inner lips can still fold when a closed mouth curves (smile/frown);
    # the warp skips folded triangles, whose area their neighbours cover.
    helpers = helper_weights()
    topo = displace_landmarks(lm, 0.0, 1.0, strengths=strengths)
    triangles = triangulate(np.concatenate([topo, helpers @ topo, anchors]))
    frame = face_frame(lm)
    return Rig(
        canvas=canvas,
        landmarks=lm,
        helpers=helpers,
        anchors=anchors,
        triangles=triangles,
        offset=np.array([margin, margin], dtype=float),
        out_size=(int(out_size[0]), int(out_size[1])),
        head_center=lm.mean(axis=0),
        frame=frame,
        strengths=strengths,
    )


def output_points(rig: Rig, target_landmarks: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Mesh vertices in output-frame pixels for one frame.

    Parameters
    ----------
    rig : Rig
    target_landmarks : (68, 2) float
        Expression landmarks in canvas pixels (before head motion).
    motion : (2, 3) float
        Head-motion similarity in canvas pixels.

    Returns
    -------
    points : (68 + H + A, 2) float64
        The first 68 rows are where the landmarks appear in the output frame.
    """
    return apply_affine(motion, rig.mesh(target_landmarks)) - rig.offset


def paint_cavity(frame: np.ndarray, inner_mouth: np.ndarray, opacity: float) -> np.ndarray:
    """Darken the inner-mouth polygon (in place) to show an open mouth cavity.

    Parameters
    ----------
    frame : (H, W, 3) uint8
    inner_mouth : (8, 2) float
        Inner-lip landmarks 60..67 in output pixels.
    opacity : float
        0..1.

    Returns
    -------
    frame : (H, W, 3) uint8 (the same array)
    """
    if opacity <= 0:
        return frame
    h, w = frame.shape[:2]
    pad = 4
    x0, y0 = np.floor(inner_mouth.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(inner_mouth.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return frame
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    poly = np.round((inner_mouth - [x0, y0]) * 16).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    k = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), CAVITY_BLUR_SIGMA)[..., None] * opacity
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    dark = CAVITY_TEXTURE * roi + np.asarray(CAVITY_TINT_BGR, np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - k) + dark * k + 0.5, 0, 255).astype(np.uint8)
    return frame


def render_frame(rig: Rig, target_landmarks: np.ndarray, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame (no noise).

    Parameters
    ----------
    rig : Rig
    target_landmarks : (68, 2) float
        Expression landmarks in canvas pixels (e.g. from :func:`displace_landmarks`).
    motion : (2, 3) float
        Head-motion similarity in canvas pixels (identity for none).

    Returns
    -------
    frame : (H, W, 3) uint8, BGR
    landmarks : (68, 2) float64
        Where the landmarks are in the frame (ground truth for a tracker).
    """
    dst = output_points(rig, target_landmarks, motion)
    inv = invert_affine(motion)
    fallback = inv.copy()
    fallback[:, 2] += inv[:, :2] @ rig.offset
    w, h = rig.out_size
    map_x, map_y = piecewise_affine_maps(rig.mesh_points, dst, rig.triangles, out_shape=(h, w), fallback=fallback)
    frame = cv2.remap(rig.canvas, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    paint_cavity(frame, dst[INNER_MOUTH], CAVITY_OPACITY)
    return frame, dst[:68]


def add_sensor_noise(frame: np.ndarray, *, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add zero-mean Gaussian noise (grey levels), rounding and clipping to uint8.

    Parameters
    ----------
    frame : (H, W, 3) uint8
    sigma : float, keyword-only
    rng : numpy.random.Generator, keyword-only

    Returns
    -------
    noisy : (H, W, 3) uint8 (new array)
    """
    if sigma <= 0:
        return frame.copy()
    noise = rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(frame.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
