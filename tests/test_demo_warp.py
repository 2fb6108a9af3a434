"""Piecewise-affine warping (affpipe.demo.warp) and the demo face rig (affpipe.demo.render)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from affpipe.config import section_settings
from affpipe.demo.expression import INNER_MOUTH, ExpressionStrengths, displace_landmarks
from affpipe.demo.render import build_rig, output_points, render_frame
from affpipe.demo.sources import load_source_face
from affpipe.demo.warp import (
    apply_affine,
    invert_affine,
    piecewise_affine_maps,
    signed_areas,
    similarity_matrix,
    triangulate,
    warp_piecewise_affine,
)

DEFAULTS = section_settings("demo")
STRENGTHS = ExpressionStrengths.from_settings(DEFAULTS["expression"])
SIZE = (DEFAULTS["frame_width"], DEFAULTS["frame_height"])
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _blob(shape, center, sigma=1.5) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    return np.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _peak(img: np.ndarray) -> np.ndarray:
    """Sub-pixel position (x, y) of an image's maximum (parabola through the 3 samples per axis).

    The peak, unlike the centroid, maps exactly under a piecewise-affine warp even where the
    triangles around it are stretched differently."""
    y, x = np.unravel_index(np.argmax(img), img.shape)

    def vertex(a, b, c):
        den = a - 2 * b + c
        return 0.0 if den == 0 else 0.5 * (a - c) / den

    return np.array([x + vertex(*img[y, x - 1 : x + 2]), y + vertex(*img[y - 1 : y + 2, x])])


@pytest.fixture(scope="module")
def rig():
    face = load_source_face("man_video")
    return build_rig(face.image, face.landmarks, out_size=SIZE, face_width_fraction=DEFAULTS["face_width_fraction"], strengths=STRENGTHS)


def test_triangulate_orients_every_triangle_positively():
    pts = np.random.default_rng(0).uniform(0, 100, (40, 2))
    tri = triangulate(pts)
    assert np.all(signed_areas(pts, tri) > 0)


def test_identity_warp_reproduces_the_image():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    pts = np.concatenate([rng.uniform(5, 55, (15, 2)), [[0, 0], [79, 0], [79, 59], [0, 59]]])
    out = warp_piecewise_affine(img, pts, pts, triangulate(pts), out_shape=(60, 80))
    np.testing.assert_array_equal(out, img)


def test_global_affine_mesh_matches_warpaffine():
    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (0, 0), 2)
    src = np.concatenate([rng.uniform(0, 120, (20, 2)) * [1, 0.75], [[-20, -20], [140, -20], [140, 110], [-20, 110]]])
    m = similarity_matrix(center=np.array([60.0, 45.0]), angle_rad=0.2, scale=1.1, shift=np.array([3.0, -2.0]))
    dst = apply_affine(m, src)
    ours = warp_piecewise_affine(img, src, dst, triangulate(src), out_shape=(90, 120), border_mode=cv2.BORDER_REPLICATE)
    ref = cv2.warpAffine(img, m, (120, 90), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_pixels_outside_the_mesh_use_the_fallback():
    src = np.array([[20.0, 20], [40, 20], [30, 40]])
    fallback = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -3.0]])
    mx, my = piecewise_affine_maps(src, src, np.array([[0, 1, 2]]), out_shape=(50, 60), fallback=fallback)
    assert (mx[2, 55], my[2, 55]) == (55 + 7, 2 - 3)
    assert (mx[25, 30], my[25, 30]) == pytest.approx((30, 25))


@pytest.mark.parametrize("va", [(1.0, 1.0), (-1.0, -1.0), (0.6, -0.4)])
def test_warp_moves_source_landmarks_onto_target_landmarks(rig, va):
    """Render one bright dot at a source landmark; it must land on the target landmark."""
    target = displace_landmarks(rig.landmarks, *va, strengths=STRENGTHS)
    motion = similarity_matrix(center=rig.head_center, angle_rad=np.deg2rad(4), scale=1.05, shift=np.array([3.0, -2.0]))
    dst = output_points(rig, target, motion)
    w, h = rig.out_size
    mx, my = piecewise_affine_maps(rig.mesh_points, dst, rig.triangles, out_shape=(h, w))
    moved = np.hypot(*(dst[:68] - (rig.landmarks - rig.offset)).T)
    # landmarks that really move with the expression, spread over the face
    for k in (8, 19, 24, 37, 44, 48, 54, 57):
        assert moved[k] > 0.9
        canvas = _blob(rig.canvas.shape[:2], rig.landmarks[k], sigma=1.5)
        out = cv2.remap(canvas, mx, my, interpolation=cv2.INTER_LINEAR)
        err = np.hypot(*(_peak(out) - dst[k]))
        assert err < 0.75, f"landmark {k}: rendered dot {err:.2f} px from its target (moved {moved[k]:.1f} px)"
    # The inverse map itself sends every target landmark back to its source landmark.
    at = cv2.remap(np.dstack([mx, my]), *(dst[:68].astype(np.float32).T[:, None, :]), interpolation=cv2.INTER_LINEAR)[0]
    inside = np.all((dst[:68] >= 1) & (dst[:68] <= [w - 2, h - 2]), axis=1)
    assert np.hypot(*(at - rig.landmarks).T)[inside].max() < 0.6


def test_render_frame_returns_the_rendered_landmarks(rig):
    target = displace_landmarks(rig.landmarks, 0.3, 0.8, strengths=STRENGTHS)
    motion = similarity_matrix(center=rig.head_center, angle_rad=-0.05, scale=0.97, shift=np.array([-4.0, 2.0]))
    frame, lm = render_frame(rig, target, motion)
    assert frame.shape == (SIZE[1], SIZE[0], 3) and frame.dtype == np.uint8
    np.testing.assert_allclose(lm, apply_affine(motion, target) - rig.offset)


def test_open_mouth_is_dark_inside(rig):
    closed, _ = render_frame(rig, displace_landmarks(rig.landmarks, 0.0, -1.0, strengths=STRENGTHS), IDENTITY)
    opened, lm = render_frame(rig, displace_landmarks(rig.landmarks, 0.0, 1.0, strengths=STRENGTHS), IDENTITY)
    mask = np.zeros(closed.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[INNER_MOUTH]).astype(np.int32)], 1)
    cv2.erode(mask, np.ones((3, 3), np.uint8), dst=mask)
    assert mask.sum() > 100
    inside = mask.astype(bool)
    assert opened[inside].mean() < 0.6 * closed[inside].mean()


def test_no_fold_for_any_default_identity_and_expression():
    """Across the expression space and head motion, the mesh never folds, except for slivers at the
    inner lips of a closed mouth (which the warp skips: their neighbours cover them)."""
    grid = np.linspace(-1, 1, 5)
    v, a = (x.ravel() for x in np.meshgrid(grid, grid))
    motions = [IDENTITY, None]
    inner = set(int(i) for i in INNER_MOUTH)
    for name in DEFAULTS["identities"]:
        face = load_source_face(name)
        r = build_rig(face.image, face.landmarks, out_size=SIZE, face_width_fraction=DEFAULTS["face_width_fraction"], strengths=STRENGTHS)
        touches_mouth = np.array([bool(set(map(int, t)) & inner) for t in r.triangles])
        inside_mouth = np.array([set(map(int, t)) <= inner for t in r.triangles])
        motions[1] = similarity_matrix(center=r.head_center, angle_rad=0.1, scale=1.08, shift=np.array([8.0, -8.0]))
        for target in displace_landmarks(r.landmarks, v, a, strengths=STRENGTHS):
            for m in motions:
                area = signed_areas(output_points(r, target, m), r.triangles)
                assert area[~touches_mouth].min() > 0, name
                assert area[touches_mouth & ~inside_mouth].min() > -3.0, name


def test_invert_affine_roundtrip():
    m = similarity_matrix(center=np.array([10.0, 5.0]), angle_rad=0.3, scale=0.8, shift=np.array([1.0, 2.0]))
    p = np.array([[3.0, 4.0], [-7.0, 11.0]])
    np.testing.assert_allclose(apply_affine(invert_affine(m), apply_affine(m, p)), p, atol=1e-9)
