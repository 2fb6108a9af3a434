"""Landmark displacement from (valence, arousal): the demo's expression model.

All displacements are defined in a *face frame* attached to the source landmarks: origin between
the eye centres, x towards the subject's left eye (image right for a frontal face), y towards the
chin, unit = inter-ocular distance (IOD). So the same (valence, arousal) produces the same
expression whatever the photo's resolution or head roll.

The displacement is a sum of fixed basis fields (one ``(68, 2)`` field per facial action), each
multiplied by a scalar coefficient that depends on valence, arousal and the source's own mouth
shape:

* valence > 0 raises and spreads the mouth corners (smile) and slightly raises the lower lids;
* valence < 0 lowers and narrows the mouth corners (frown) and lowers and draws together the
  inner brows;
* arousal opens the eyes, raises the brows and opens the mouth (jaw drop); low arousal narrows the
  eyes and lowers the brows, with the mouth closed.

The source photos are not neutral (many smile, some with the teeth showing). With
``neutralize = 1`` the source's own smile and lip gap are first brought to a neutral reference, so
that a given (valence, arousal) means the same mouth geometry on every identity; this keeps the
per-identity bias of the ground truth small, which matters for held-out identities.

Landmarks use dlib's 68-point iBUG 300-W order (0-based).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

N_LANDMARKS = 68

# --- iBUG 300-W 68-point indices (0-based) -------------------------------------------------------
JAW = np.arange(0, 17)
CHIN = 8
BROW_R = np.arange(17, 22)  # subject's right brow (image left), outer -> inner
BROW_L = np.arange(22, 27)  # subject's left brow (image right), inner -> outer
BROWS = np.arange(17, 27)
EYE_R = np.arange(36, 42)  # 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid
EYE_L = np.arange(42, 48)  # 42 inner corner, 43-44 upper lid, 45 outer corner, 46-47 lower lid
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS = np.array([41, 40, 47, 46])  # paired with UPPER_LIDS (same column)
MOUTH_CORNER_L_OUT, MOUTH_CORNER_R_OUT = 48, 54  # image-left / image-right outer corners
MOUTH_CORNER_L_IN, MOUTH_CORNER_R_IN = 60, 64
MOUTH_CORNERS = np.array([48, 54, 60, 64])
INNER_LIP_TOP, INNER_LIP_BOTTOM = 62, 66
INNER_MOUTH = np.arange(60, 68)  # polygon order: 60 corner, 61-63 upper, 64 corner, 65-67 lower

# --- Neutral reference (face-frame units, measured on neutral faces; see NEUTRAL_* use below) ---
#: Mouth-corner height above the inner-lip seam centre, in IOD, on a relaxed neutral mouth.
NEUTRAL_SMILE = 0.0
#: Inner-lip gap (IOD) of a neutral mouth: closed.
NEUTRAL_GAP = 0.0
#: Never close an eye by more than this fraction of its source opening (keeps lids from crossing).
MAX_EYE_CLOSE_FRACTION = 0.4


def _field(entries: dict[int | tuple[int, ...], tuple[float, float]]) -> np.ndarray:
    """Build a (68, 2) basis field from {index or indices: (dx, dy)}."""
    f = np.zeros((N_LANDMARKS, 2))
    for idx, d in entries.items():
        f[np.atleast_1d(np.asarray(idx))] = d
    return f


# Basis fields, face frame (x to image right, y down), per unit coefficient (IOD).
# Corner lift: corners up (-y); lip points in between follow with decreasing weight. Upper and lower
# lip points at the same column get the same weight, so the lift never changes the lip gap.
LIFT = _field(
    {
        (48, 54, 60, 64): (0.0, -1.0),
        (49, 53, 59, 55): (0.0, -0.55),
        (61, 63, 67, 65): (0.0, -0.5),
        (50, 52, 58, 56): (0.0, -0.2),
        (51, 57, 62, 66): (0.0, -0.1),
    }
)
# Corner spread: corners outwards (image-left corner to -x, image-right to +x).
SPREAD = _field(
    {
        (48, 60): (-1.0, 0.0),
        (54, 64): (1.0, 0.0),
        (49, 59, 61, 67): (-0.5, 0.0),
        (53, 55, 63, 65): (0.5, 0.0),
        (50, 58): (-0.15, 0.0),
        (52, 56): (0.15, 0.0),
    }
)
# Lower-lid raise that comes with a felt smile (cheek raiser).
CHEEK = _field({(40, 41, 46, 47): (0.0, -1.0)})
# Frown: inner brows down and towards each other (corrugator).
FROWN = _field(
    {
        21: (0.35, 1.0),
        22: (-0.35, 1.0),
        20: (0.15, 0.6),
        23: (-0.15, 0.6),
        (19, 24): (0.0, 0.25),
    }
)
# Eye opening: upper lids up, lower lids slightly down.
EYES = _field({(37, 38, 43, 44): (0.0, -1.0), (40, 41, 46, 47): (0.0, 0.3)})
# Brow raise: whole brows up, inner parts a little more.
BROW_RAISE = _field({(17, 26): (0.0, -0.75), (18, 25): (0.0, -0.9), (19, 20, 21, 22, 23, 24): (0.0, -1.0)})
# Jaw drop: lower lip and chin down, upper inner lip slightly up, corners down and in (an "O").
JAW_DROP = _field(
    {
        66: (0.0, 1.0),
        (65, 67): (0.0, 0.9),
        57: (0.0, 0.95),
        (56, 58): (0.0, 0.9),
        (55, 59): (0.0, 0.7),
        (61, 62, 63): (0.0, -0.1),
        (50, 51, 52): (0.0, -0.05),
        (48, 60): (0.15, 0.4),
        (54, 64): (-0.15, 0.4),
        CHIN: (0.0, 0.8),
        (7, 9): (0.0, 0.7),
        (6, 10): (0.0, 0.5),
        (5, 11): (0.0, 0.3),
        (4, 12): (0.0, 0.12),
        (3, 13): (0.0, 0.03),
    }
)
# Lip closing (used to neutralise an open source mouth): the inner lips meet half-way, each column
# (61/67, 62/66, 63/65) in proportion to its own gap so that no column crosses before the centre
# closes (see lip_close_field); the outer lips follow; the jaw does not move (a teeth-showing smile
# opens the lips, not the jaw). This is the field for a uniform gap; the real one is per source.
LIP_CLOSE = _field(
    {
        (61, 62, 63): (0.0, 0.5),
        (65, 66, 67): (0.0, -0.5),
        (49, 50, 51, 52, 53): (0.0, 0.2),
        (55, 56, 57, 58, 59): (0.0, -0.2),
    }
)
#: Inner-lip columns: (upper, lower) landmark pairs facing each other across the mouth opening.
INNER_LIP_COLUMNS = ((61, 67), (62, 66), (63, 65))


def lip_close_field(face_points: np.ndarray) -> np.ndarray:
    """The LIP_CLOSE field of one source shape: one unit closes the centre gap by 1 IOD.

    Parameters
    ----------
    face_points : (68, 2) float
        Source landmarks in face-frame coordinates (IOD units).

    Returns
    -------
    field : (68, 2) float64
        Each inner-lip column closes in proportion to its own gap (relative to the centre gap), so
        the whole opening closes at once, without any column crossing over.
    """
    f = LIP_CLOSE.copy()
    centre = face_points[INNER_LIP_BOTTOM, 1] - face_points[INNER_LIP_TOP, 1]
    if centre <= 0:
        return f
    for up, low in INNER_LIP_COLUMNS:
        ratio = max(face_points[low, 1] - face_points[up, 1], 0.0) / centre
        f[up, 1], f[low, 1] = 0.5 * ratio, -0.5 * ratio
    return f


#: How much one unit of LIFT raises the corners relative to the lip-seam centre (corner weight 1.0
#: minus seam weight 0.1), used to convert a wanted smile change into a LIFT coefficient.
LIFT_SMILE_GAIN = 0.9
#: How much one unit of JAW_DROP opens the inner-lip gap (lower inner lip +1.0, upper -0.1).
JAW_GAP_GAIN = 1.1

BASIS_NAMES = ("lift", "spread", "cheek", "frown", "eyes", "brows", "jaw", "lip_close")
BASIS = np.stack([LIFT, SPREAD, CHEEK, FROWN, EYES, BROW_RAISE, JAW_DROP, LIP_CLOSE])  # (K, 68, 2)


@dataclass(frozen=True)
class ExpressionStrengths:
    """Gains of the expression model, in IOD units at |valence| or |arousal| = 1.

    The values come from the ``expression`` section of the demo settings, whose defaults live in
    ``affpipe/schemas/demo.schema.yaml`` (build with :meth:`from_settings`).

    Attributes
    ----------
    smile_lift : mouth-corner raise at valence +1.
    frown_lift : mouth-corner lowering at valence -1.
    smile_spread : mouth-corner outward move at valence +1 (inward at -1).
    cheek_raise : lower-lid raise at valence +1 (positive valence only).
    frown : inner-brow lowering at valence -1 (negative valence only).
    eye_open : upper-lid raise at arousal +1 (lowered at -1, capped so the eye never closes).
    brow_raise : brow raise at arousal +1 (lowered at -1).
    mouth_open : inner-lip gap at arousal +1; the gap is ``mouth_open * ((a + 1) / 2) ** 2``, so
        the mouth is closed at -1, slightly parted at 0 and wide open at +1. Opening beyond the
        photo's own gap drops the jaw; closing below it brings the lips together.
    max_corner_drop : the largest mouth-corner lowering (IOD) relative to the photo; a photo with
        a broad smile cannot show strongly negative valence without looking grotesque, so its
        valence range is limited from below (see :func:`valence_floor`).
    neutralize : 0..1, how much of the source photo's own smile and lip gap is replaced by the
        model's absolute targets (1: a given valence/arousal gives the same mouth geometry on every
        identity; 0: displacements are relative to the photo).
    """

    smile_lift: float
    frown_lift: float
    smile_spread: float
    cheek_raise: float
    frown: float
    eye_open: float
    brow_raise: float
    mouth_open: float
    max_corner_drop: float
    neutralize: float

    @classmethod
    def from_settings(cls, settings: dict) -> "ExpressionStrengths":
        """Build from the ``expression`` section of validated demo settings."""
        names = {f.name for f in fields(cls)}
        if set(settings) != names:
            raise ValueError(f"expression settings must have exactly the keys {sorted(names)}, got {sorted(settings)}")
        return cls(**{k: float(v) for k, v in settings.items()})


@dataclass(frozen=True)
class FaceFrame:
    """A 2-D similarity frame attached to a face.

    Attributes
    ----------
    origin : (2,) float64, midpoint of the eye centres (pixels).
    x_axis : (2,) float64, unit vector from the image-left eye to the image-right eye.
    y_axis : (2,) float64, unit vector perpendicular to it, pointing towards the chin.
    iod : float, inter-ocular distance (pixels).
    """

    origin: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    iod: float

    def to_face(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates ``(..., 2)`` -> face-frame coordinates (IOD units)."""
        d = (np.asarray(points, float) - self.origin) / self.iod
        return np.stack([d @ self.x_axis, d @ self.y_axis], axis=-1)

    def vectors_to_image(self, vectors: np.ndarray) -> np.ndarray:
        """Face-frame displacement vectors ``(..., 2)`` (IOD units) -> pixel displacements."""
        v = np.asarray(vectors, float)
        return self.iod * (v[..., :1] * self.x_axis + v[..., 1:2] * self.y_axis)


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    """The face frame of a 68-point shape.

    Parameters
    ----------
    landmarks : (68, 2) float
        Pixel coordinates (x, y).
    """
    pts = np.asarray(landmarks, float)
    if pts.shape != (N_LANDMARKS, 2):
        raise ValueError(f"landmarks must be (68, 2), got {pts.shape}")
    eye_a = pts[EYE_R].mean(axis=0)  # image left
    eye_b = pts[EYE_L].mean(axis=0)  # image right
    d = eye_b - eye_a
    iod = float(np.hypot(*d))
    if iod <= 0:
        raise ValueError("degenerate landmarks: the two eye centres coincide")
    x_axis = d / iod
    y_axis = np.array([-x_axis[1], x_axis[0]])  # x rotated +90 degrees in image coordinates (y down)
    return FaceFrame(origin=(eye_a + eye_b) / 2, x_axis=x_axis, y_axis=y_axis, iod=iod)


@dataclass(frozen=True)
class MouthEyeMeasures:
    """Expression measures of one shape, in IOD units (face frame).

    Attributes
    ----------
    smile : mouth-corner height above the inner-lip seam centre (> 0 for a smile).
    gap : inner-lip gap at the centre (>= 0 open, ~0 closed).
    eye_open : mean upper-to-lower lid distance over the four lid columns.
    brow_height : mean brow height above the eye line.
    mouth_width : outer-corner distance.
    """

    smile: float
    gap: float
    eye_open: float
    brow_height: float
    mouth_width: float


def measure(landmarks: np.ndarray, frame: FaceFrame | None = None) -> MouthEyeMeasures:
    """Measure a 68-point shape (pixels) in its face frame (or in ``frame`` if given).

    Parameters
    ----------
    landmarks : (68, 2) float
    frame : FaceFrame, optional
        Measure in this frame instead of the shape's own (e.g. the source frame, so that a
        displaced shape is measured on the same scale).
    """
    f = frame if frame is not None else face_frame(landmarks)
    p = f.to_face(landmarks)
    seam = (p[INNER_LIP_TOP, 1] + p[INNER_LIP_BOTTOM, 1]) / 2
    corners = p[[MOUTH_CORNER_L_OUT, MOUTH_CORNER_R_OUT], 1].mean()
    return MouthEyeMeasures(
        smile=float(seam - corners),
        gap=float(p[INNER_LIP_BOTTOM, 1] - p[INNER_LIP_TOP, 1]),
        eye_open=float(np.mean(p[LOWER_LIDS, 1] - p[UPPER_LIDS, 1])),
        brow_height=float(-p[BROWS, 1].mean()),
        mouth_width=float(p[MOUTH_CORNER_R_OUT, 0] - p[MOUTH_CORNER_L_OUT, 0]),
    )


def expression_coefficients(
    valence: np.ndarray,
    arousal: np.ndarray,
    *,
    source: MouthEyeMeasures,
    strengths: ExpressionStrengths,
) -> np.ndarray:
    """Coefficients of the basis fields (:data:`BASIS`, order :data:`BASIS_NAMES`).

    Parameters
    ----------
    valence, arousal : (T,) float
        Values in [-1, 1].
    source : MouthEyeMeasures
        Measures of the source shape (for neutralisation and the eye-closing cap).
    strengths : ExpressionStrengths

    Returns
    -------
    coef : (T, K) float64
    """
    v = np.clip(np.asarray(valence, float), -1, 1)
    a = np.clip(np.asarray(arousal, float), -1, 1)
    s = strengths
    n = s.neutralize
    smile = np.where(v >= 0, s.smile_lift, s.frown_lift) * v
    lift = (smile + n * (NEUTRAL_SMILE - source.smile)) / LIFT_SMILE_GAIN
    spread = s.smile_spread * v
    cheek = s.cheek_raise * np.maximum(v, 0.0)
    frown = s.frown * np.maximum(-v, 0.0)
    # EYES moves the upper lid by -1 and the lower lid by +0.3 per unit: the opening changes by 1.3.
    # The cheek raise also narrows the eye; together they close it by at most MAX_EYE_CLOSE_FRACTION.
    max_close = MAX_EYE_CLOSE_FRACTION * max(source.eye_open, 0.0)
    eyes = np.maximum(s.eye_open * a, -np.maximum(max_close - cheek, 0.0) / 1.3)
    cheek = np.minimum(cheek, max_close)
    brows = s.brow_raise * a
    # Wanted change of the inner-lip gap: JAW_DROP opens it by 1.1 per unit (lower lip +1, upper
    # -0.1), LIP_CLOSE closes it by 1 per unit; never below a closed mouth.
    gap_target = NEUTRAL_GAP + s.mouth_open * ((a + 1.0) / 2.0) ** 2
    source_gap = max(source.gap, 0.0)
    change = gap_target - n * source_gap
    jaw = np.maximum(change, 0.0) / JAW_GAP_GAIN
    lip_close = np.minimum(np.maximum(-change, 0.0), source_gap)
    return np.stack([lift, spread, cheek, frown, eyes, brows, jaw, lip_close], axis=-1)


def valence_floor(source: MouthEyeMeasures, strengths: ExpressionStrengths) -> float:
    """Lowest valence an identity can show without its mouth corners dropping more than allowed.

    The corner drop at valence ``v`` is ``(neutralize * source.smile - smile(v)) / LIFT_SMILE_GAIN``
    (see :func:`expression_coefficients`); this returns the smallest ``v`` in [-1, 1] with a drop
    of at most ``strengths.max_corner_drop``. A neutral photo gets -1; a broad smile gets > 0.

    Returns
    -------
    v_min : float in [-1, 1]
    """
    s = strengths
    needed = s.neutralize * source.smile - LIFT_SMILE_GAIN * s.max_corner_drop  # smile(v) >= needed
    if needed >= 0:
        v = needed / s.smile_lift if s.smile_lift > 0 else 1.0
    else:
        v = needed / s.frown_lift if s.frown_lift > 0 else -1.0
    return float(np.clip(v, -1.0, 1.0))


def displace_landmarks(
    landmarks: np.ndarray,
    valence: np.ndarray | float,
    arousal: np.ndarray | float,
    *,
    strengths: ExpressionStrengths,
) -> np.ndarray:
    """Target landmarks of a source shape showing the given valence and arousal.

    Parameters
    ----------
    landmarks : (68, 2) float
        Source shape (pixels).
    valence, arousal : float or (T,) float
        In [-1, 1] (clipped).
    strengths : ExpressionStrengths, keyword-only

    Returns
    -------
    target : (68, 2) float64 for scalar inputs, else (T, 68, 2) float64
        Pixel coordinates.
    """
    scalar = np.ndim(valence) == 0 and np.ndim(arousal) == 0
    v, a = np.broadcast_arrays(np.atleast_1d(np.asarray(valence, float)), np.atleast_1d(np.asarray(arousal, float)))
    src = np.asarray(landmarks, float)
    frame = face_frame(src)
    coef = expression_coefficients(v, a, source=measure(src, frame), strengths=strengths)
    basis = BASIS.copy()
    basis[BASIS_NAMES.index("lip_close")] = lip_close_field(frame.to_face(src))
    disp_face = np.einsum("tk,kpd->tpd", coef, basis)
    target = src[None] + frame.vectors_to_image(disp_face)
    return target[0] if scalar else target
