"""Stable/dynamic pixels of a window and the fusion of DFS and DFA into the DFM (DFM paper §3.3).

For a window of T static images (SFS or SFA) the paper sums, per pixel and channel, the absolute
differences between "the given frame" and each of the other T-1 frames. A pixel whose sum is 0 in
every channel is **stable**: it has the same value in all T frames, so it adds the same constant to
every frame's ranking score ``<d, V_t>`` and carries no temporal information. All other pixels are
**dynamic**. affpipe takes the window's last frame (the frame the dynamic image belongs to) as the
given frame and uses ``sum <= tolerance`` (default 0, the paper's exact test) on the uint8 images.

Masks (steps 2-4 of §3.3):

* ``mask_s`` = the dynamic pixels of the SFS window: where the coloured semantic regions move
  (region boundaries sweeping over pixels). All temporal shape information of the DFS.
* ``mask_a`` = the dynamic pixels of the SFA window **minus** those of ``mask_s`` (the paper sets
  the overlap to 0 in the appearance mask "to avoid distortion"), i.e. texture changes inside the
  face that are not explained by moving region boundaries.
* ``DFM = mask_s * DFS + mask_a * DFA``. The masks are disjoint, so every DFM pixel comes from
  exactly one of DFS, DFA, or is 0 (stable in both, e.g. the background outside the face hull).

The masks are per pixel, (H, W), and apply to all channels.

For the default tolerance 0 the streaming code uses :func:`update_stable_run`: a pixel is stable
over a window exactly when it was equal in consecutive sampled frames T-1 times in a row, so a
per-pixel run length updated once per frame replaces the T-1 comparisons per window. Both paths are
tested to agree.
"""

from __future__ import annotations

import numpy as np

#: Largest possible per-channel sum of absolute uint8 differences is (T-1)*255; int32 holds it.
_SUM_DTYPE = np.int32


def dynamic_pixels(window: np.ndarray, *, tolerance: int = 0) -> np.ndarray:
    """Dynamic pixels of one window, by the paper's sum-of-differences test.

    Parameters
    ----------
    window : (T, H, W, C) uint8
        The window's static images, oldest first; the last one is the reference frame.
    tolerance : int, keyword-only
        A pixel is stable when ``Σ_i |I_last - I_i| <= tolerance`` in every channel (0 = exact).

    Returns
    -------
    (H, W) bool
        True where the pixel is dynamic.
    """
    w = np.asarray(window)
    if w.ndim != 4:
        raise ValueError(f"window must be (T, H, W, C), got shape {w.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    ref = w[-1].astype(_SUM_DTYPE)
    total = np.zeros(ref.shape, dtype=_SUM_DTYPE)
    for frame in w[:-1]:
        total += np.abs(frame.astype(_SUM_DTYPE) - ref)
    return (total > tolerance).any(axis=-1)


def equal_pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels equal in every channel.

    Parameters
    ----------
    a, b : (H, W, C) uint8

    Returns
    -------
    (H, W) bool
    """
    a = np.asarray(a)
    b = np.asarray(b)
    same = a[..., 0] == b[..., 0]
    for ch in range(1, a.shape[-1]):  # faster than .all(axis=-1) over a length-3 axis
        same &= a[..., ch] == b[..., ch]
    return same


def update_stable_run(previous: np.ndarray | None, current: np.ndarray, before: np.ndarray | None) -> np.ndarray:
    """Per-pixel count of consecutive sampled frames equal to their predecessor, ending now.

    With ``run`` the value for frame f (compared with frame f - stride), a window of T sampled
    frames ending at f has a pixel stable (tolerance 0) exactly when ``run >= T - 1`` there.

    Parameters
    ----------
    previous : (H, W) uint16 or None
        Run map of frame f - stride; None when that frame is missing or invalid (run restarts).
    current : (H, W, C) uint8
        Frame f.
    before : (H, W, C) uint8 or None
        Frame f - stride (None when missing or invalid).

    Returns
    -------
    (H, W) uint16
        Saturates at 65535 (windows are far shorter).
    """
    shape = np.asarray(current).shape[:2]
    if previous is None or before is None:
        return np.zeros(shape, dtype=np.uint16)
    same = equal_pixels(current, before)
    run = np.where(same, np.minimum(previous, np.uint16(65534)) + np.uint16(1), np.uint16(0))
    return run.astype(np.uint16, copy=False)


def dynamic_from_run(run: np.ndarray, window: int) -> np.ndarray:
    """Dynamic pixels (tolerance 0) of the window of ``window`` frames ending at the run's frame.

    Parameters
    ----------
    run : (..., H, W) uint16
        From :func:`update_stable_run`.
    window : int
        T.

    Returns
    -------
    (..., H, W) bool
    """
    return np.asarray(run) < window - 1


def fusion_masks(dynamic_shape: np.ndarray, dynamic_appearance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The DFM's binary masks from the dynamic pixels of the SFS and SFA windows.

    Parameters
    ----------
    dynamic_shape, dynamic_appearance : (..., H, W) bool

    Returns
    -------
    mask_s : (..., H, W) bool
        Dynamic shape pixels.
    mask_a : (..., H, W) bool
        Dynamic appearance pixels that are not dynamic shape pixels (overlap removed).
    """
    mask_s = np.asarray(dynamic_shape, dtype=bool)
    mask_a = np.asarray(dynamic_appearance, dtype=bool) & ~mask_s
    return mask_s, mask_a


def fuse_dfm(dfs: np.ndarray, dfa: np.ndarray, mask_s: np.ndarray, mask_a: np.ndarray) -> np.ndarray:
    """``DFM = mask_s * DFS + mask_a * DFA``.

    Parameters
    ----------
    dfs, dfa : (..., H, W, C) float
        Dynamic facial shape and appearance images.
    mask_s, mask_a : (..., H, W) bool
        From :func:`fusion_masks` (disjoint).

    Returns
    -------
    (..., H, W, C), the dtype of ``dfs``/``dfa``
    """
    dfs = np.asarray(dfs)
    dfa = np.asarray(dfa)
    channels = dfs.shape[-1]
    # masks repeated over the channels: much faster than broadcasting a length-1 axis
    ms = np.repeat(np.asarray(mask_s, dtype=bool)[..., None], channels, axis=-1)
    ma = np.repeat(np.asarray(mask_a, dtype=bool)[..., None], channels, axis=-1)
    out = np.where(ms, dfs, np.zeros((), dtype=np.result_type(dfs, dfa)))
    np.copyto(out, dfa, where=ma)
    return out
