"""Ranking accuracy and the per-window RankSVM upper bound (affpipe.dr.ranking)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from affpipe.dr import ranking
from affpipe.dr import windows as win
from support.dr_support import moving_blob_frames


def _linear_svc(frames: np.ndarray, T: int, lam: float) -> np.ndarray:
    """The same RankSVM by scikit-learn on the explicit pairs (each given as (x, +1) and (-x, -1))."""
    near, far = win.same_side_pairs(T)
    x = frames.reshape(2 * T + 1, -1).astype(np.float64) / 255
    pairs = x[near] - x[far]
    c = 1.0 / (len(pairs) * lam)
    svc = LinearSVC(loss="hinge", fit_intercept=False, C=c / 2, tol=1e-10, max_iter=500_000, dual=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svc.fit(np.vstack([pairs, -pairs]), np.r_[np.ones(len(pairs)), -np.ones(len(pairs))])
    return svc.coef_.ravel(), pairs, c


def _objective(d, pairs, c, lam):
    return lam / 2 * d @ d + c * np.maximum(0.0, 1.0 - pairs @ d).sum()


@pytest.mark.parametrize("T,lam", [(2, 1.0), (3, 1.0), (3, 0.05)])
def test_ranksvm_upper_bound_is_the_exact_optimum(T, lam):
    rng = np.random.default_rng(T)
    for _ in range(3):
        frames = rng.integers(0, 256, size=(2 * T + 1, 5, 5, 3), dtype=np.uint8)
        deltas, kkt = ranking.ranksvm_deltas(frames[None], T=T, lam=lam)
        assert kkt[0] <= 1e-9
        ref, pairs, c = _linear_svc(frames, T, lam)
        ours = ranking.ranksvm_direction(frames, T=T, lam=lam).ravel()
        np.testing.assert_allclose(pairs @ ours, deltas[0], atol=1e-9)
        # ours is at least as good as scikit-learn's (which stops at its own tolerance), and close to it
        assert _objective(ours, pairs, c, lam) <= _objective(ref, pairs, c, lam) + 1e-10
        np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_centre_pair_matrix_rebuilds_the_pair_differences():
    rng = np.random.default_rng(0)
    T = 3
    x = rng.normal(size=(2 * T + 1, 7))
    e = np.delete(x, T, axis=0) - x[T]
    near, far = win.same_side_pairs(T)
    np.testing.assert_allclose(ranking.centre_pair_matrix(T) @ e, x[near] - x[far], atol=1e-12)
    gram = ranking.centre_gram(x[None], T=T, scale=1.0)[0]
    np.testing.assert_allclose(gram, e @ e.T, atol=1e-12)


def test_identical_frames_cannot_be_ranked():
    frames = np.full((1, 5, 4, 4, 3), 77, dtype=np.uint8)
    deltas, _ = ranking.ranksvm_deltas(frames, T=2, lam=1.0)
    summary = ranking.accuracy_summary(deltas, T=2)
    assert summary["accuracy"] == 0.0 and summary["ties"] == 6  # ties count as wrong, never as right


def test_moving_blob_rankers():
    T, stride = 2, 2
    frames = moving_blob_frames(40, travel=0.5)
    info_rows = np.arange(40)
    centres, rows = win.valid_centres(info_rows, np.ones(40, bool), T=T, stride=stride)
    windows = frames[rows]
    svm, kkt = ranking.ranksvm_deltas(windows, T=T, lam=1.0)
    assert ranking.accuracy_summary(svm, T=T)["accuracy"] == 1.0
    assert kkt.max() <= 1e-9
    sim = ranking.accuracy_summary(ranking.similarity_deltas(windows, T=T), T=T)
    assert sim["accuracy"] > 0.9
    # a DR that is the negated centre frame ranks everything backwards
    neg = -windows[:, T].astype(np.float64)
    neg -= neg.reshape(len(neg), -1).mean(axis=1)[:, None, None, None]
    back = ranking.accuracy_summary(ranking.deltas_from_directions(neg, windows, T=T), T=T)
    assert back["accuracy"] == pytest.approx(1.0 - sim["accuracy"])


def test_accuracy_summary_by_side_and_gap():
    T = 2  # pairs: past (1,0) (2,0) (2,1); future (2,3) (2,4) (3,4)
    near, far = win.same_side_pairs(T)
    assert list(zip(near.tolist(), far.tolist())) == [(1, 0), (2, 0), (2, 1), (2, 3), (2, 4), (3, 4)]
    deltas = np.array([[1.0, 1.0, -1.0, 1.0, 0.0, 1.0],
                       [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    s = ranking.accuracy_summary(deltas, T=T)
    assert s["accuracy"] == pytest.approx(10 / 12)
    assert s["accuracy_past"] == pytest.approx(5 / 6)
    assert s["accuracy_future"] == pytest.approx(5 / 6)
    # gap 1: pairs 0, 2, 3, 5 (7 of 8 right); gap 2: pairs 1, 4 (3 of 4 right: one tie)
    assert s["accuracy_by_gap"] == {"1": pytest.approx(7 / 8), "2": pytest.approx(3 / 4)}
    assert s["window_accuracy_mean"] == pytest.approx((4 / 6 + 1) / 2)
    assert s["ties"] == 1
