"""Exact RankSVM dynamic images and approximate rank pooling (affpipe.dynamic.rankpool).

The exact solver is checked against scikit-learn's LinearSVC on the explicit pair differences (random
and real-video windows), and against closed forms: the all-at-bound regime C <= C*, where the exact
solution is (γ/λ) times Bilen's approximate rank pooling, and the one-pair window T = 2.
"""

from __future__ import annotations

import functools
import warnings

import cv2
import numpy as np
import pytest
from sklearn.svm import LinearSVC

from affpipe.dynamic import rankpool as rp
from affpipe.io.video import iter_frames
from affpipe.resources import dlib_model_path, pyfeat_media  # noqa: F401  (dlib models ship with affpipe)

REAL_SIZE = 24  # side of the real face crops (D = 24*24*3 keeps LinearSVC fast)
REAL_FRAMES = 90


@functools.lru_cache(maxsize=None)
def real_frames() -> np.ndarray:
    """(REAL_FRAMES, S, S, 3) uint8 face crops of a real video (fixed box from dlib on frame 0)."""
    import dlib

    frames = []
    for i, _, frame in iter_frames(pyfeat_media("WolfgangLanger_Pexels.mp4")):
        frames.append(frame)
        if i + 1 == REAL_FRAMES:
            break
    det = dlib.get_frontal_face_detector()
    box = det(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB), 0)[0]
    cx, cy = (box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2
    side = 1.5 * (box.right() - box.left())
    m = np.array([[REAL_SIZE / side, 0, REAL_SIZE / 2 - cx * REAL_SIZE / side],
                  [0, REAL_SIZE / side, REAL_SIZE / 2 - cy * REAL_SIZE / side]])
    return np.stack([cv2.warpAffine(f, m, (REAL_SIZE, REAL_SIZE), flags=cv2.INTER_AREA) for f in frames])


def linear_svc_solution(frames: np.ndarray, lam: float) -> np.ndarray:
    """Eq. 3 solved by scikit-learn on the explicit pairs.

    LinearSVC minimises ½||w||² + C' Σ_i hinge(y_i <w, x_i>); with every pair x_k given twice,
    (x_k, +1) and (-x_k, -1), the hinge sum counts each pair twice, so C' = (γ/λ) / 2.
    """
    x = rp.pair_vectors(frames)
    c = rp.rank_gamma(len(frames)) / lam
    svc = LinearSVC(loss="hinge", fit_intercept=False, C=c / 2, tol=1e-8, max_iter=200_000, dual=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the comparison below is the judge
        svc.fit(np.vstack([x, -x]), np.r_[np.ones(len(x)), -np.ones(len(x))])
    return svc.coef_.ravel()


def _windows():
    rng = np.random.default_rng(7)
    real = real_frames().astype(np.float64) / 255.0
    out = [
        ("random T=5", rng.random((5, 300)), 1.0),
        ("random T=12 trend", np.linspace(0, 1, 12)[:, None] * rng.random(400) + 0.3 * rng.random((12, 400)), 1.0),
        ("random T=20 lambda 0.1", rng.random((20, 250)), 0.1),
        ("real T=10 stride 2", real[0:19:2], 1.0),
        ("real T=20 stride 2", real[30:69:2], 1.0),
        ("real T=20 stride 1 lambda 1e-3", real[60:80], 1e-3),
    ]
    return out


@pytest.mark.parametrize("name,frames,lam", _windows(), ids=[w[0] for w in _windows()])
def test_exact_matches_linear_svc(name, frames, lam):
    d, sol = rp.exact_rank_pool(frames, lam=lam)
    ref = linear_svc_solution(frames, lam).reshape(d.shape)
    obj, obj_ref = rp.ranksvm_objective(d, frames, lam=lam), rp.ranksvm_objective(ref, frames, lam=lam)
    # the exact optimum is never worse than the iterative reference, and they agree
    assert obj <= obj_ref * (1 + 1e-9)
    assert abs(obj - obj_ref) <= 1e-4 * obj_ref
    assert np.linalg.norm(d - ref) <= 1e-3 * np.linalg.norm(ref)
    assert sol.kkt_residual[0] <= rp.KKT_TOLERANCE
    assert abs(sol.duality_gap[0]) <= 1e-8
    assert sol.objective[0] == pytest.approx(obj, rel=1e-9)
    # margins reported = margins recomputed on the explicit pairs
    np.testing.assert_allclose(sol.margins[0], rp.pair_vectors(frames) @ d.ravel(), rtol=1e-8, atol=1e-10)
    share = float(sol.ranked_share[0])
    print(f"{name}: ranked pairs {share:.4f}, at bound {float(sol.at_bound_share[0]):.3f}, "
          f"free {int(sol.n_free[0])}, KKT {float(sol.kkt_residual[0]):.1e}")
    assert share > 0.9


def test_batch_equals_single_windows():
    real = real_frames().astype(np.float64) / 255.0
    wins = [real[i : i + 19 : 2] for i in range(0, 40, 5)]
    grams = np.stack([rp.frame_differences(w) @ rp.frame_differences(w).T for w in wins])
    batch = rp.solve_ranksvm(grams, lam=1.0)
    for i, g in enumerate(grams):
        one = rp.solve_ranksvm(g, lam=1.0)
        np.testing.assert_allclose(batch.delta_coef[i], one.delta_coef[0], rtol=1e-9, atol=1e-12)


def test_approx_coefficients_closed_form():
    for t_len in (2, 3, 6, 15, 20):
        harmonic = [sum(1.0 / i for i in range(1, k + 1)) for k in range(t_len + 1)]
        expected = [2 * (t_len - t + 1) - (t_len + 1) * (harmonic[t_len] - harmonic[t - 1]) for t in range(1, t_len + 1)]
        a = rp.approx_coefficients(t_len)
        np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-12)
        assert abs(a.sum()) < 1e-10
        # later frames weigh more: the last weight is 1 - 1/T, the first the most negative
        assert a[-1] == pytest.approx(1 - 1 / t_len) and a.argmin() == 0


def test_approx_equals_sum_of_pair_differences():
    """Σ_{t<q} (V_q - V_t) written as a weighted sum of the frames has exactly Bilen's weights."""
    frames = np.random.default_rng(3).random((11, 7, 5, 3))
    np.testing.assert_allclose(rp.pair_vectors(frames).sum(axis=0), rp.approx_rank_pool(frames).ravel(), rtol=1e-12)


def test_all_at_bound_regime_is_scaled_approx():
    """C = γ/λ <= C* = 1/max_k (K 1)_k: every α = C and d* = C Σ_k x_k = (γ/λ) · approx."""
    frames = real_frames()[10:29:2].astype(np.float64) / 255.0
    x = rp.pair_vectors(frames)
    k_mat = x @ x.T
    c_star = 1.0 / (k_mat @ np.ones(len(x))).max()
    gamma = rp.rank_gamma(len(frames))
    for factor in (0.25, 0.999, 1.0):
        lam = gamma / (factor * c_star)  # C = factor * C*
        d, sol = rp.exact_rank_pool(frames, lam=lam)
        np.testing.assert_allclose(sol.alpha, sol.C, rtol=1e-9)  # (at C = C* one pair is exactly on the margin)
        if factor < 1:
            assert sol.n_upper[0] == len(x)
        tol = 1e-9 * np.abs(d).max()
        np.testing.assert_allclose(d.ravel(), sol.C * x.sum(axis=0), rtol=1e-9, atol=tol)
        np.testing.assert_allclose(d, (gamma / lam) * rp.approx_rank_pool(frames), rtol=1e-9, atol=tol)
    # just above C*, the pair with the largest (K 1)_k leaves the bound
    _, sol = rp.exact_rank_pool(frames, lam=gamma / (1.01 * c_star))
    assert sol.n_upper[0] < len(x)


def test_two_frame_window_closed_form():
    """T = 2: one pair x = V_2 - V_1 = (I_2 - I_1)/2, α = min(C, 1/||x||²), d = α x."""
    rng = np.random.default_rng(5)
    for scale in (0.1, 1.0, 30.0):
        frames = scale * rng.random((2, 40))
        x = (frames[1] - frames[0]) / 2
        for lam in (0.01, 1.0, 100.0):
            c = rp.rank_gamma(2) / lam
            d, sol = rp.exact_rank_pool(frames, lam=lam)
            np.testing.assert_allclose(d, min(c, 1 / (x @ x)) * x, rtol=1e-10)
            assert sol.kkt_residual[0] <= rp.KKT_TOLERANCE


def test_degenerate_windows():
    rng = np.random.default_rng(11)
    # identical frames: every pair difference is 0, α = C, d = 0
    d, sol = rp.exact_rank_pool(np.ones((8, 10)), lam=1.0)
    assert not d.any() and sol.n_upper[0] == rp.n_pairs(8)
    # repeated frames and fewer pixels than frames (rank-deficient Gram matrices)
    for frames in (np.repeat(rng.random((5, 30)), 2, axis=0), 50 * rng.random((15, 4))):
        d, sol = rp.exact_rank_pool(frames, lam=1.0)
        ref = linear_svc_solution(frames, 1.0)
        obj, obj_ref = rp.ranksvm_objective(d, frames, lam=1.0), rp.ranksvm_objective(ref, frames, lam=1.0)
        assert obj <= obj_ref * (1 + 1e-9) and abs(obj - obj_ref) <= 1e-4 * obj_ref
        assert sol.kkt_residual[0] <= rp.KKT_TOLERANCE


def test_pixel_scale_is_a_change_of_lambda():
    """Frames scaled by s with λ give d/s of the unscaled frames with λ/s² (why pixel_scale matters)."""
    frames = real_frames()[0:19:2].astype(np.float64)
    s = 255.0
    d_byte, _ = rp.exact_rank_pool(frames, lam=1.0)
    d_unit, _ = rp.exact_rank_pool(frames / s, lam=1.0 / s**2)
    np.testing.assert_allclose(d_byte, d_unit / s, rtol=1e-7, atol=1e-12 * np.abs(d_byte).max())
    # at byte scale the problem is hard-margin (no pair inside the margin), at unit scale it is not
    _, sol_byte = rp.exact_rank_pool(frames, lam=1.0)
    _, sol_unit = rp.exact_rank_pool(frames / s, lam=1.0)
    assert sol_byte.n_upper[0] == 0 and sol_unit.n_upper[0] > 0


def test_structure_matrices():
    rng = np.random.default_rng(2)
    frames = rng.random((9, 13))
    delta = rp.frame_differences(frames)
    np.testing.assert_allclose(rp.delta_pair_matrix(9) @ delta, rp.pair_vectors(frames), rtol=1e-12, atol=1e-13)
    k_from_g = rp.pair_difference_matrix(9) @ rp.running_mean_matrix(9) @ (frames @ frames.T) @ rp.running_mean_matrix(9).T @ rp.pair_difference_matrix(9).T
    x = rp.pair_vectors(frames)
    np.testing.assert_allclose(k_from_g, x @ x.T, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(rp.delta_gram_from_frame_gram(frames @ frames.T), delta @ delta.T, atol=1e-10)
    w = rng.random(9)
    w -= w.mean()
    c = rp.frame_to_delta_coefficients(w)
    np.testing.assert_allclose(rp.delta_to_frame_weights(c), w, atol=1e-12)
    np.testing.assert_allclose(c @ delta, w @ frames, atol=1e-12)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        rp.solve_ranksvm(np.eye(3), lam=0.0)
    with pytest.raises(ValueError):
        rp.solve_ranksvm(np.zeros((2, 3)), lam=1.0)
    with pytest.raises(ValueError):
        rp.approx_coefficients(1)
