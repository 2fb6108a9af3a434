"""Optional temporal smoothing of tracked landmarks (config ``faces.smoothing_sigma``, off by default).

The pipeline is offline, so the filter is a symmetric (zero-lag) Gaussian along time. It runs
separately on each run of consecutive frames that have a face and never bridges a lost frame, so
nothing is interpolated into a gap.
"""

from __future__ import annotations

import numpy as np

# Gaussian support in standard deviations (scipy's default truncate).
TRUNCATE_SIGMAS = 4.0


def valid_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of consecutive True values.

    Parameters
    ----------
    valid : (N,) bool
    """
    v = np.concatenate([[False], np.asarray(valid, bool), [False]])
    edges = np.flatnonzero(np.diff(v.astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def smooth_landmarks(points: np.ndarray, valid: np.ndarray, *, sigma: float) -> np.ndarray:
    """Gaussian-smooth landmarks along time within runs of valid frames.

    Parameters
    ----------
    points : (N, K, 2) float
        Landmarks per frame (NaN where not valid).
    valid : (N,) bool
        Frames that have a face.
    sigma : float
        Standard deviation in frames; 0 returns a copy unchanged.

    Returns
    -------
    (N, K, 2) same dtype
        Smoothed landmarks; invalid frames are left as they were (NaN). Run edges use the
        nearest-value extension, so the first and last frames of a run are not pulled towards 0.
    """
    out = np.array(points, copy=True)
    if sigma <= 0:
        return out
    # imported here: scipy.ndimage takes ~0.3 s of CPU to import, in every faces job, and smoothing is off
    # by default
    from scipy.ndimage import gaussian_filter1d

    for start, stop in valid_runs(valid):
        if stop - start > 1:
            seg = np.asarray(points[start:stop], np.float64)
            out[start:stop] = gaussian_filter1d(seg, sigma, axis=0, mode="nearest", truncate=TRUNCATE_SIGMAS)
    return out
