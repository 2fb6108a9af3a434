"""Cutting a video's feature rows into the sequences a recurrent regressor sees.

A video's features exist only for *valid* rows (frames with a face, from the first full dynamic
window on); nothing is invented for the others. The sequence model therefore runs over the valid
rows in frame order, and this module decides where those rows are cut:

1. **Segments** (:func:`segments`): consecutive valid rows are one segment while the frame step
   between them is at most ``step + max_gap``, where ``step`` is the store's regular row spacing
   (:func:`regular_step`: 1 for one row per frame, k for a dynamic-image hop of k) and ``max_gap``
   is ``regression.max_gap_frames``. A longer run of frames without a feature (the face was lost
   for a while) cuts the segment: the recurrent state never bridges it. Shorter gaps are bridged:
   the model sees the rows on both sides as neighbours (a small irregularity of the time step).
2. **Training windows** (:func:`windows`): each segment is cut into fixed-length windows of
   ``seq_len`` rows, starting every ``hop`` rows, plus one window aligned to the segment's end so
   its tail is covered. A segment shorter than ``seq_len`` is one shorter window (batched with
   padding and a mask, never dropped).
3. **Inference** (:func:`overlap_average`): the same windows (with the prediction hop) are run
   through the model and the per-row outputs of overlapping windows are averaged with triangular
   weights (a row near a window's centre, which has context on both sides, counts more than one
   at its edge). Every valid row gets exactly one prediction.
"""

from __future__ import annotations

import numpy as np

#: weight of a window's first/last row relative to its centre is at least this (never 0)
MIN_EDGE_WEIGHT = 1.0


def regular_step(frames: np.ndarray) -> int:
    """The regular spacing of a store's rows: the most common frame difference (1 if undefined).

    Parameters
    ----------
    frames : (n,) int
        Strictly increasing frame indices.
    """
    frames = np.asarray(frames)
    if frames.size < 2:
        return 1
    diffs = np.diff(frames.astype(np.int64))
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])  # ties -> the smallest step


def segments(frames: np.ndarray, *, max_gap: int, step: int | None = None) -> np.ndarray:
    """Split valid rows into segments at long runs of frames without a feature.

    Parameters
    ----------
    frames : (n,) int
        Frame indices of the valid rows, strictly increasing.
    max_gap : int
        Largest number of missing frames (beyond the regular ``step``) bridged inside a segment.
    step : int, optional
        Regular row spacing; default :func:`regular_step` of ``frames``.

    Returns
    -------
    (k, 2) int64
        ``[start, stop)`` row ranges (indices into ``frames``), in order, covering every row once.
    """
    frames = np.asarray(frames, dtype=np.int64)
    if frames.ndim != 1:
        raise ValueError(f"frames must be 1-D, got shape {frames.shape}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    n = frames.size
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    diffs = np.diff(frames)
    if np.any(diffs <= 0):
        raise ValueError("frames must be strictly increasing")
    if step is None:
        step = regular_step(frames)
    cuts = np.flatnonzero(diffs > step + max_gap) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [n]])
    return np.stack([starts, stops], axis=1)


def windows(length: int, *, seq_len: int, hop: int) -> np.ndarray:
    """Fixed-length windows over a segment of ``length`` rows.

    Parameters
    ----------
    length : int
        Rows in the segment.
    seq_len : int
        Window length in rows.
    hop : int
        Start of one window to the next.

    Returns
    -------
    (w, 2) int64
        ``[start, stop)`` relative to the segment: starts ``0, hop, 2 hop, ...`` while a full window
        fits, plus a last window ending at ``length`` if the tail is not covered yet. One window
        ``[0, length)`` when ``length <= seq_len``; none when ``length == 0``.
    """
    if seq_len < 1 or hop < 1:
        raise ValueError(f"seq_len and hop must be >= 1, got {seq_len} and {hop}")
    if length <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    if length <= seq_len:
        return np.array([[0, length]], dtype=np.int64)
    starts = list(range(0, length - seq_len + 1, hop))
    if starts[-1] + seq_len < length:
        starts.append(length - seq_len)
    starts_a = np.asarray(starts, dtype=np.int64)
    return np.stack([starts_a, starts_a + seq_len], axis=1)


def window_weights(length: int) -> np.ndarray:
    """Triangular weights of the rows of one window, ``min(i, length-1-i) + MIN_EDGE_WEIGHT``.

    Returns
    -------
    (length,) float64, all > 0.
    """
    i = np.arange(length, dtype=np.float64)
    return np.minimum(i, length - 1 - i) + MIN_EDGE_WEIGHT


def overlap_average(length: int, spans: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
    """Combine the outputs of overlapping windows into one value per row.

    Parameters
    ----------
    length : int
        Rows in the segment.
    spans : (w, 2) int
        ``[start, stop)`` of each window (as from :func:`windows`); together they must cover every row.
    outputs : list of (stop - start, d) float arrays
        The model's output for each window.

    Returns
    -------
    (length, d) float64
        Triangular-weighted mean of the windows covering each row.
    """
    spans = np.asarray(spans, dtype=np.int64)
    if len(outputs) != spans.shape[0]:
        raise ValueError(f"{spans.shape[0]} windows but {len(outputs)} outputs")
    if not outputs:
        if length:
            raise ValueError("no window covers the segment")
        return np.zeros((0, 0))
    d = outputs[0].shape[1]
    acc = np.zeros((length, d))
    wsum = np.zeros(length)
    for (a, b), out in zip(spans, outputs):
        if out.shape != (b - a, d):
            raise ValueError(f"window [{a}, {b}) has output shape {out.shape}, expected {(b - a, d)}")
        w = window_weights(b - a)
        acc[a:b] += w[:, None] * out
        wsum[a:b] += w
    if np.any(wsum == 0):
        raise ValueError(f"{int(np.sum(wsum == 0))} rows are covered by no window")
    return acc / wsum[:, None]
