"""Valence/arousal and head-motion traces of the demo generator (affpipe.demo.traces)."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe.demo.traces import affect_trace, ou_process, smooth_trace

FPS = 25.0
DT = 1.0 / FPS


def _trace(seed: int, n: int = 300, **kw) -> np.ndarray:
    opts = {"tau_s": 3.0, "smooth_s": 0.4, "gain": 1.0} | kw
    return affect_trace(n, dt=DT, rng=np.random.default_rng(seed), **opts)


def test_affect_trace_in_open_unit_interval_and_uses_the_range():
    y = np.concatenate([_trace(s) for s in range(20)])
    assert np.all(np.abs(y) < 1.0)
    assert y.min() < -0.9 and y.max() > 0.9  # both extremes occur over a few videos
    assert 0.45 < y.std() < 0.75


def test_affect_trace_is_deterministic_from_the_seed():
    np.testing.assert_array_equal(_trace(7), _trace(7))
    assert not np.allclose(_trace(7), _trace(8))


def test_affect_trace_is_smooth_frame_to_frame():
    y = np.stack([_trace(s) for s in range(10)])
    step = np.abs(np.diff(y, axis=1))
    # A 0.4 s Gaussian smoothing at 25 fps: consecutive frames differ by a few hundredths at most.
    assert step.max() < 0.1
    # Second differences are much smaller than first differences (no frame-to-frame jitter).
    assert np.abs(np.diff(y, 2, axis=1)).mean() < 0.2 * step.mean()  # white noise: ~1.4


def test_raw_ou_is_rough_where_the_smoothed_trace_is_not():
    # The smoothing is what makes traces smooth: the raw OU path of the same time constant is not.
    raw = ou_process(3000, dt=DT, tau_s=3.0, rng=np.random.default_rng(0))
    smooth = smooth_trace(3000, dt=DT, tau_s=3.0, smooth_s=0.4, rng=np.random.default_rng(0))
    assert np.abs(np.diff(raw)).mean() > 4 * np.abs(np.diff(smooth)).mean()


@pytest.mark.parametrize("smooth_s", [0.0, 0.4, 1.0])
def test_smooth_trace_has_unit_stationary_variance(smooth_s):
    x = smooth_trace(200_000, dt=DT, tau_s=2.0, smooth_s=smooth_s, rng=np.random.default_rng(1))
    assert abs(x.mean()) < 0.05
    assert x.std() == pytest.approx(1.0, abs=0.06)


def test_ou_autocorrelation_follows_the_time_constant():
    tau = 2.0
    x = ou_process(400_000, dt=DT, tau_s=tau, rng=np.random.default_rng(2))
    for lag_s in (0.5, 2.0):
        k = int(lag_s / DT)
        r = np.corrcoef(x[:-k], x[k:])[0, 1]
        assert r == pytest.approx(np.exp(-lag_s / tau), abs=0.03)


def test_longer_time_constant_varies_more_slowly():
    fast = np.stack([_trace(s, tau_s=1.0) for s in range(10)])
    slow = np.stack([_trace(s, tau_s=8.0) for s in range(10)])
    assert np.abs(np.diff(slow, axis=1)).mean() < 0.7 * np.abs(np.diff(fast, axis=1)).mean()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        ou_process(10, dt=DT, tau_s=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        ou_process(10, dt=0.0, tau_s=1.0, rng=np.random.default_rng(0))
