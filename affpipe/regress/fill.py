"""A prediction for every frame: filling the frames that have no feature.

The regressor predicts only where a feature exists (a valid row: a face, and a full dynamic window
ending at that frame). Scoring needs a prediction for every labelled frame, so the frames in
between, before the first valid row (the first ``(T-1)*stride`` frames of a dynamic input) and
after the last one are filled by a fixed, documented rule, and every filled frame is flagged
(``filled`` column of ``predictions.parquet``; its share is reported in ``ccc.json``). The rules
(``regression.fill``):

* ``nearest`` (default): the prediction of the nearest frame in time that has one (ties: the
  earlier frame). Before the first / after the last predicted frame this holds the first / last
  prediction.
* ``previous``: the last prediction at or before the frame (causal hold); frames before the first
  prediction take the first one.
* ``linear``: linear interpolation in frame index between the two neighbouring predictions;
  ``nearest`` outside the first..last range.
* ``mean``: the training partition's mean label for every frame without a feature.

A video with no valid row at all gets the training partition's mean label on every frame (with
any rule): there is nothing else to go by, and every frame of it is flagged as filled.
"""

from __future__ import annotations

import numpy as np

FILL_RULES = ("nearest", "previous", "linear", "mean")

FILL_DESCRIPTIONS = {
    "nearest": "prediction of the nearest frame that has a feature (ties: the earlier frame); first/last "
    "prediction before/after the predicted range",
    "previous": "last prediction at or before the frame (causal hold); the first prediction before it",
    "linear": "linear interpolation between the neighbouring predictions; nearest outside their range",
    "mean": "the training partition's mean label",
}
NO_FEATURE_RULE = "a video without any feature row gets the training partition's mean label on every frame"


def fill_predictions(
    n_frames: int,
    frames: np.ndarray,
    values: np.ndarray,
    *,
    rule: str,
    fallback: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions on every frame ``0..n_frames-1`` from predictions on some frames.

    Parameters
    ----------
    n_frames : int
        Frames of the video (rows of its labels file).
    frames : (k,) int
        Frames that have a prediction, strictly increasing, each in ``[0, n_frames)``.
    values : (k, d) float
        Predictions on those frames (finite).
    rule : {"nearest", "previous", "linear", "mean"}
        See the module docstring.
    fallback : (d,) float
        Value for ``rule="mean"`` and for a video with ``k == 0`` (the training mean label).

    Returns
    -------
    out : (n_frames, d) float32
        Predictions on every frame.
    filled : (n_frames,) bool
        True where the value came from the rule, False where it is the model's prediction.
    """
    if rule not in FILL_RULES:
        raise ValueError(f"fill rule must be one of {FILL_RULES}, got {rule!r}")
    frames = np.asarray(frames, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    fallback = np.asarray(fallback, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != frames.shape[0]:
        raise ValueError(f"values must be (k, d) with k = {frames.shape[0]} frames, got {values.shape}")
    d = values.shape[1] if values.size else fallback.shape[0]
    if fallback.shape != (d,):
        raise ValueError(f"fallback must have shape ({d},), got {fallback.shape}")
    if frames.size:
        if np.any(np.diff(frames) <= 0):
            raise ValueError("frames must be strictly increasing")
        if frames[0] < 0 or frames[-1] >= n_frames:
            raise ValueError(f"frames must lie in [0, {n_frames}), got {frames[0]}..{frames[-1]}")
        if not np.all(np.isfinite(values)):
            raise ValueError("predictions to fill from must be finite")
    filled = np.ones(n_frames, dtype=bool)
    filled[frames] = False
    out = np.empty((n_frames, d), dtype=np.float64)
    if frames.size == 0 or rule == "mean":
        out[:] = fallback
        out[frames] = values
        return out.astype(np.float32), filled
    t = np.arange(n_frames)
    # index of the first predicted frame >= t, and of the last one <= t
    right = np.searchsorted(frames, t, side="left")
    left = np.searchsorted(frames, t, side="right") - 1
    right_c = np.minimum(right, frames.size - 1)
    left_c = np.maximum(left, 0)
    if rule == "previous":
        out[:] = values[left_c]
    elif rule == "nearest":
        dl = np.where(left >= 0, t - frames[left_c], np.iinfo(np.int64).max)
        dr = np.where(right < frames.size, frames[right_c] - t, np.iinfo(np.int64).max)
        pick = np.where(dl <= dr, left_c, right_c)
        out[:] = values[pick]
    else:  # linear
        inside = (left >= 0) & (right < frames.size)
        span = np.where(inside, frames[right_c] - frames[left_c], 1)
        w = np.where(inside & (span > 0), (t - frames[left_c]) / np.maximum(span, 1), 0.0)
        out[:] = (1 - w)[:, None] * values[left_c] + w[:, None] * values[right_c]
        before = right == 0
        after = left == frames.size - 1
        out[before] = values[0]
        out[after & ~before] = values[-1]
    out[frames] = values
    return out.astype(np.float32), filled
