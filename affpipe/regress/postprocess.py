"""Post-processing of per-frame predictions: median filtering over each video's frames.

Kollias & Zafeiriou (§6.3, §7.1) median-filter the per-frame predictions within a sequence, with a
window of 81 frames for valence and 3 for arousal (chosen on the validation set). Here the filter
runs over each video's complete frame sequence (every frame has a prediction after the fill rule,
:mod:`affpipe.regress.fill`), per dimension, with its own window (``regression.median_filter``).

**Edges.** The window is centred on the frame and *shrinks* at the ends of the video: frame ``t``
of an ``n``-frame video gets the median of frames ``max(0, t - h) .. min(n - 1, t + h)`` with
``h = (window - 1) / 2``, i.e. only real predictions, never padding (zero padding, as
``scipy.signal.medfilt``, pulls the ends towards 0; repeating the edge value, as
``scipy.ndimage.median_filter(mode="nearest")``, gives the first frame up to ``h + 1`` votes). An
even number of values has the mean of the two middle ones as its median (``numpy.median``). Away
from the edges (``h <= t < n - h``) the result equals ``scipy.signal.medfilt`` and
``scipy.ndimage.median_filter`` (tested). A video shorter than the window is filtered with the
shrinking windows throughout.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: A window of this many frames is no filtering.
NO_FILTER = 1
#: Rows of the (rows, window) sliding view whose median is taken at once (bounds memory).
MEDIAN_BLOCK_ROWS = 16384


def check_window(window: int, *, key: str = "window") -> int:
    """``window`` as an int; :class:`ValueError` naming ``key`` unless it is a positive odd number."""
    w = int(window)
    if w < 1 or w % 2 == 0:
        raise ValueError(f"{key} must be a positive odd number of frames (1 = no filtering), got {window}")
    return w


def median_filter(x: np.ndarray, *, window: int) -> np.ndarray:
    """Centred running median with windows shrinking at the ends (module docstring).

    Parameters
    ----------
    x : (n,) float
        One dimension of one video's per-frame predictions, in frame order (finite).
    window : int
        Odd window length in frames; 1 = a copy of ``x``.

    Returns
    -------
    (n,) float64
    """
    w = check_window(window)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    n = x.size
    out = x.copy()
    if w == NO_FILTER or n == 0:
        return out
    h = w // 2
    if n >= w:
        view = np.lib.stride_tricks.sliding_window_view(x, w)  # (n - w + 1, w): window of frame i + h
        for a in range(0, view.shape[0], MEDIAN_BLOCK_ROWS):
            out[h + a : h + min(a + MEDIAN_BLOCK_ROWS, view.shape[0])] = np.median(view[a : a + MEDIAN_BLOCK_ROWS], axis=1)
        edges = [t for t in range(min(h, n))] + [t for t in range(max(n - h, h), n)]
    else:
        edges = list(range(n))
    for t in edges:
        out[t] = np.median(x[max(0, t - h) : min(n, t + h + 1)])
    return out


def median_filter_predictions(pred: np.ndarray, *, windows: Sequence[int]) -> np.ndarray:
    """Median-filter each column of one video's per-frame predictions with its own window.

    Parameters
    ----------
    pred : (n, d) float
        Predictions of every frame of one video, in frame order (d = 2: valence, arousal).
    windows : sequence of d int
        Odd window per column (1 = unchanged).

    Returns
    -------
    (n, d) float64
    """
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[1] != len(windows):
        raise ValueError(f"pred must be (n, {len(windows)}), got shape {pred.shape}")
    return np.stack([median_filter(pred[:, j], window=int(w)) for j, w in enumerate(windows)], axis=1) \
        if pred.shape[0] else pred.copy()


def is_active(windows: Sequence[int]) -> bool:
    """True when any window filters (is longer than one frame)."""
    return any(int(w) != NO_FILTER for w in windows)
