"""68/66-point conventions, the box model's geometry helpers, temporal smoothing."""

import numpy as np
import pytest

from affpipe.faces import INDICES_66, landmarks_66
from affpipe.faces.boxmodel import (
    MEAN_SHAPE_IN_HOG_BOX,
    box_from_landmarks,
    box_iou,
    fit_similarity,
    shape_residual,
    to_hog_box,
)
from affpipe.faces.landmarks import MIRROR_68, inter_ocular_distance, mean_point_error
from affpipe.faces.smoothing import smooth_landmarks, valid_runs


def _transform(points, z, t):
    c = (points[..., 0] + 1j * points[..., 1]) * z + t
    return np.stack([c.real, c.imag], axis=-1)


def test_landmarks_66_drops_inner_mouth_corners():
    pts = np.arange(68 * 2, dtype=np.float32).reshape(68, 2)
    out = landmarks_66(pts)
    assert out.shape == (66, 2) and out.dtype == np.float32
    kept = out[:, 0] / 2
    assert 60 not in kept and 64 not in kept
    np.testing.assert_array_equal(kept, [i for i in range(68) if i not in (60, 64)])
    # batched, and the index table agrees
    batch = np.stack([pts, pts + 1000])
    assert landmarks_66(batch).shape == (2, 66, 2)
    np.testing.assert_array_equal(landmarks_66(batch)[1], pts[INDICES_66] + 1000)
    with pytest.raises(ValueError):
        landmarks_66(np.zeros((66, 2)))


def test_mirror_permutation_is_an_involution_and_the_mean_shape_is_symmetric():
    assert sorted(MIRROR_68.tolist()) == list(range(68))
    np.testing.assert_array_equal(MIRROR_68[MIRROR_68], np.arange(68))
    mirrored = MEAN_SHAPE_IN_HOG_BOX[MIRROR_68].copy()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    np.testing.assert_allclose(mirrored, MEAN_SHAPE_IN_HOG_BOX, atol=1e-3)


def test_inter_ocular_distance_and_errors():
    pts = np.zeros((68, 2))
    pts[36] = [10, 20]
    pts[45] = [40, 60]
    assert inter_ocular_distance(pts) == pytest.approx(50.0)
    assert mean_point_error(pts + [3, 4], pts, normalise_by=50.0) == pytest.approx(0.1)


def test_similarity_fit_recovers_a_known_transform_and_the_box_follows_it():
    z, t = 180.0 * np.exp(0.2j), 300 + 140j
    pts = _transform(MEAN_SHAPE_IN_HOG_BOX, z, t)
    z_hat, t_hat = fit_similarity(MEAN_SHAPE_IN_HOG_BOX, pts)
    assert z_hat == pytest.approx(z) and t_hat == pytest.approx(t)
    assert shape_residual(pts) < 1e-9
    box = box_from_landmarks(pts)
    centre = z * (0.5 + 0.5j) + t  # the unit box's centre, rotated with the face
    np.testing.assert_allclose(box, [centre.real - 90, centre.imag - 90, centre.real + 90, centre.imag + 90])
    # batched form, NaN propagation
    both = np.stack([pts, np.full_like(pts, np.nan)])
    out = box_from_landmarks(both)
    np.testing.assert_allclose(out[0], box)
    assert np.isnan(out[1]).all()


def test_shape_residual_grows_with_distortion():
    rng = np.random.default_rng(0)
    pts = _transform(MEAN_SHAPE_IN_HOG_BOX, 200.0, 100 + 100j)
    iod = inter_ocular_distance(pts)
    noisy = pts + rng.normal(scale=0.05 * iod, size=pts.shape)
    assert 0.03 < shape_residual(noisy) < 0.07  # RMS of 2-D noise with sigma 5 % IOD is ~7 %
    assert shape_residual(rng.uniform(0, 200, size=(68, 2))) > 0.5


def test_box_iou_and_hog_calibration_identity():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 0.0]])
    np.testing.assert_array_equal(to_hog_box(b, "hog"), b)
    moved = to_hog_box(b, "cascade")
    assert moved.shape == b.shape and not np.allclose(moved, b)


def test_valid_runs():
    assert valid_runs(np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], bool)) == [(0, 2), (3, 4), (6, 9)]
    assert valid_runs(np.zeros(3, bool)) == []


def test_smoothing_stays_inside_runs_and_reduces_jitter():
    rng = np.random.default_rng(1)
    n = 60
    truth = np.linspace(0, 30, n)[:, None, None] + np.zeros((n, 68, 2))
    pts = truth + rng.normal(scale=1.0, size=truth.shape)
    valid = np.ones(n, bool)
    valid[30] = False
    pts[30] = np.nan
    out = smooth_landmarks(pts, valid, sigma=2.0)
    assert np.isnan(out[30]).all() and np.isfinite(out[valid]).all()  # the gap is not bridged
    err_before = np.abs(pts[valid] - truth[valid]).mean()
    err_after = np.abs(out[valid] - truth[valid]).mean()
    assert err_after < 0.6 * err_before
    np.testing.assert_array_equal(smooth_landmarks(pts, valid, sigma=0), pts)


def test_faces_stage_loads_scipy_only_to_smooth():
    """scipy.ndimage takes ~0.3 s of CPU to import; the faces stage loads it only when smoothing is on
    (faces.smoothing_sigma > 0; off by default), not in every faces job."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; import affpipe.faces.run; from affpipe.faces.smoothing import smooth_landmarks; "
            "p = np.zeros((3, 68, 2)); v = np.ones(3, bool); smooth_landmarks(p, v, sigma=0); "
            "a = 'scipy.ndimage' in sys.modules; smooth_landmarks(p, v, sigma=1.0); print(a, 'scipy.ndimage' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["False", "True"], res.stdout + res.stderr
