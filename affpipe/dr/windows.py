"""Centred windows of N = 2T+1 frames and the same-side frame pairs of the rank loss (DR paper §3).

A DR belongs to frame t and is judged on the window of ``2T+1`` frames centred on t, sampled
``stride`` video frames apart: frames ``t + k*stride`` for ``k = -T..T`` (window index ``k + T``;
the centre has index T). The paper uses stride S = 2 at 25 fps and doubles it for the ~50 fps
SEMAINE videos; :func:`effective_stride` generalises that to ``stride * round(fps / reference)``.

Pairs (Eq. 2-3): ``(a, b)`` with a and b on the same side of t (or a = t) and a nearer to t than
b; the DR should score ``S_a > S_b``. The paper's sums include a = t, so each side contributes
the ``T(T+1)/2`` pairs of its T+1 frames (centre included): ``T(T+1)`` pairs in all (12 for T = 3,
30 for T = 5).

A window is usable only when all of its 2T+1 sampled frames have a row in the static store and
that row is valid (a face was found): invalid frames are all-zero images and would be scored as
black frames. Nothing is interpolated.
"""

from __future__ import annotations

import functools

import numpy as np

#: the frame-rate factor of the stride never drops below this: videos at or below the reference
#: rate keep the configured stride (``round(fps / reference)``: 49.979 fps -> 2, 30 or 24 fps -> 1)
MIN_STRIDE_FACTOR = 1


def effective_stride(stride: int, fps: float, *, reference_fps: float) -> int:
    """Stride in video frames for a video at ``fps``: ``stride * max(1, round(fps / reference_fps))``.

    Parameters
    ----------
    stride : int
        Stride at the reference frame rate (>= 1).
    fps : float
        The video's frame rate (finite, > 0).
    reference_fps : float, keyword-only
        Frame rate at which ``stride`` applies (25 for the paper's RECOLA setting).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For a non-positive stride or a non-finite/non-positive frame rate.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not (np.isfinite(fps) and fps > 0) or not (np.isfinite(reference_fps) and reference_fps > 0):
        raise ValueError(f"frame rates must be finite and > 0, got fps={fps}, reference_fps={reference_fps}")
    return int(stride) * max(MIN_STRIDE_FACTOR, int(round(float(fps) / float(reference_fps))))


def window_offsets(T: int, stride: int) -> np.ndarray:
    """Offsets of the sampled frames from the centre, oldest first.

    Returns
    -------
    (2T+1,) int64
        ``-T*stride, ..., 0, ..., T*stride``.
    """
    if T < 1 or stride < 1:
        raise ValueError(f"T and stride must be >= 1, got T={T}, stride={stride}")
    return np.arange(-T, T + 1, dtype=np.int64) * int(stride)


def n_pairs(T: int) -> int:
    """Number of same-side pairs of a window: T(T+1)."""
    return T * (T + 1)


@functools.lru_cache(maxsize=32)
def same_side_pairs(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Window indices of the pairs of Eq. 3: ``near[k]`` should outscore ``far[k]``.

    Past side first (far from oldest to newest, then near), then the future side, i.e. the order of
    the two double sums of Eq. 3.

    Returns
    -------
    near, far : (T(T+1),) int64
        Indices into the window (0 = oldest, T = centre, 2T = newest), read-only.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    near, far = [], []
    for b in range(0, T):  # past: b = t-T..t-1, a = b+1..t
        for a in range(b + 1, T + 1):
            near.append(a)
            far.append(b)
    for a in range(T, 2 * T):  # future: a = t..t+T-1, b = a+1..t+T
        for b in range(a + 1, 2 * T + 1):
            near.append(a)
            far.append(b)
    out = np.array(near, dtype=np.int64), np.array(far, dtype=np.int64)
    for arr in out:
        arr.setflags(write=False)
    return out


@functools.lru_cache(maxsize=32)
def pair_sides(T: int) -> np.ndarray:
    """(T(T+1),) int8: -1 for past-side pairs, +1 for future-side pairs (order of :func:`same_side_pairs`)."""
    near, far = same_side_pairs(T)
    side = np.where(far < T, -1, 1).astype(np.int8)
    side.setflags(write=False)
    return side


def valid_centres(frames: np.ndarray, valid: np.ndarray, *, T: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres whose whole window of 2T+1 sampled frames is present and valid.

    Parameters
    ----------
    frames : (n,) int
        The store's ``frame`` dataset (video frame of each row), strictly increasing.
    valid : (n,) bool
        The store's ``valid`` dataset.
    T : int, keyword-only
        Half window (N = 2T+1).
    stride : int, keyword-only
        Spacing of the sampled frames in video frames (already scaled for the frame rate).

    Returns
    -------
    centres : (k,) int64
        Video frame of each usable centre, increasing.
    rows : (k, 2T+1) int64
        Store rows of each window's frames, oldest first (``rows[:, T]`` is the centre's row).
    """
    frames = np.asarray(frames, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    if frames.shape != valid.shape or frames.ndim != 1:
        raise ValueError(f"frames and valid must be equal-length 1-D arrays, got {frames.shape}, {valid.shape}")
    offsets = window_offsets(T, stride)
    if frames.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, offsets.size), np.int64)
    if np.any(np.diff(frames) <= 0):
        raise ValueError("frame indices must be strictly increasing")
    first = int(frames[0])
    row_of = np.full(int(frames[-1]) - first + 1, -1, dtype=np.int64)
    row_of[frames - first] = np.arange(frames.size)
    centre_rows = np.flatnonzero(valid)
    idx = frames[centre_rows, None] - first + offsets[None, :]
    inside = (idx >= 0) & (idx < row_of.size)
    rows = np.where(inside, row_of[np.clip(idx, 0, row_of.size - 1)], -1)
    usable = (rows >= 0).all(axis=1)
    usable[usable] = valid[rows[usable]].all(axis=1)
    return frames[centre_rows[usable]], rows[usable]


def evenly_spaced(n: int, k: int | None) -> np.ndarray:
    """Indices of at most ``k`` items spread evenly over ``range(n)`` (all when ``k`` is None or >= n).

    Returns
    -------
    (min(n, k),) int64, increasing and unique.
    """
    if k is None or k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))
