"""Stable/dynamic pixels, the DFM masks and the fusion (affpipe.dynamic.masks) on hand-made windows."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe.dynamic import masks


def _window(t_len: int = 4, size: int = 5) -> np.ndarray:
    """A window whose frames are all equal (value 10) except where a test changes them."""
    return np.full((t_len, size, size, 3), 10, dtype=np.uint8)


def test_dynamic_pixels_known_window():
    w = _window()
    w[0, 0, 0, 0] = 11          # (0,0): differs in frame 0, one channel only -> dynamic
    w[3, 1, 1, :] = 200         # (1,1): only the last (reference) frame differs -> dynamic
    w[1, 2, 2, 2] = 9
    w[2, 2, 2, 2] = 11          # (2,2): +1 and -1 do not cancel (absolute values) -> dynamic
    w[:, 3, 3, :] = 77          # (3,3): constant over time at another value -> stable
    expected = np.zeros((5, 5), bool)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = True
    np.testing.assert_array_equal(masks.dynamic_pixels(w), expected)


def test_dynamic_pixels_tolerance():
    w = _window()
    w[0, 0, 0, 0] = 12          # channel-0 sum 2
    w[1, 4, 4, 1] = 11
    w[2, 4, 4, 2] = 11          # sums 1 and 1 in two channels (each <= 1)
    w[3, 2, 3, :] = 13          # last frame differs by 3 from the 3 others: sums 9
    assert masks.dynamic_pixels(w, tolerance=0)[[0, 4, 2], [0, 4, 3]].all()
    got = masks.dynamic_pixels(w, tolerance=1)
    exp = np.zeros((5, 5), bool)
    exp[0, 0] = exp[2, 3] = True  # (4,4) is stable at tolerance 1: no channel sum exceeds it
    np.testing.assert_array_equal(got, exp)
    exp[0, 0] = False
    np.testing.assert_array_equal(masks.dynamic_pixels(w, tolerance=2), exp)
    assert not masks.dynamic_pixels(w, tolerance=9).any()
    with pytest.raises(ValueError):
        masks.dynamic_pixels(w, tolerance=-1)


def test_run_length_path_equals_sum_path():
    """Tolerance 0 through per-frame run lengths gives the paper's sum test on every window."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 2, size=(40, 6, 7, 3), dtype=np.uint8)  # many equal neighbours
    frames[:, :2] = 5  # a block that never changes
    for t_len, stride in ((2, 1), (4, 1), (3, 2), (6, 3)):
        runs = {}
        for f in range(len(frames)):
            prev = f - stride
            runs[f] = masks.update_stable_run(runs.get(prev), frames[f], frames[prev] if prev >= 0 else None)
        for end in range((t_len - 1) * stride, len(frames)):
            window = frames[end - (t_len - 1) * stride : end + 1 : stride]
            np.testing.assert_array_equal(
                masks.dynamic_from_run(runs[end], t_len), masks.dynamic_pixels(window), err_msg=f"T={t_len} s={stride} end={end}"
            )
        assert not masks.dynamic_from_run(runs[len(frames) - 1], t_len)[:2].any()


def test_fusion_masks_remove_overlap_from_appearance():
    dyn_s = np.array([[1, 1, 0, 0]], bool)
    dyn_a = np.array([[1, 0, 1, 0]], bool)
    mask_s, mask_a = masks.fusion_masks(dyn_s, dyn_a)
    np.testing.assert_array_equal(mask_s, [[1, 1, 0, 0]])
    np.testing.assert_array_equal(mask_a, [[0, 0, 1, 0]])  # the overlap (first pixel) belongs to shape only
    assert not (mask_s & mask_a).any()


def test_fuse_dfm_takes_each_pixel_from_one_source():
    rng = np.random.default_rng(1)
    dfs = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    dfa = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    dyn_s = rng.random((2, 3, 4)) > 0.5
    dyn_a = rng.random((2, 3, 4)) > 0.3
    mask_s, mask_a = masks.fusion_masks(dyn_s, dyn_a)
    dfm = masks.fuse_dfm(dfs, dfa, mask_s, mask_a)
    assert dfm.dtype == np.float32
    np.testing.assert_array_equal(dfm, mask_s[..., None] * dfs + mask_a[..., None] * dfa)
    np.testing.assert_array_equal(dfm[mask_s], dfs[mask_s])
    np.testing.assert_array_equal(dfm[mask_a], dfa[mask_a])
    assert not dfm[~mask_s & ~mask_a].any()


def test_masks_on_moving_region():
    """A 4x6 coloured block moving right by one pixel per frame over 5 frames (columns 2-7, then
    3-8, ..., 6-11): the columns it covers in every frame (6, 7) and everything it never touches are
    stable; the swept columns 2-5 and 8-11 are dynamic."""
    t_len, size = 5, 14
    w = np.zeros((t_len, size, size, 3), np.uint8)
    for t in range(t_len):
        w[t, 4:8, 2 + t : 8 + t] = (200, 30, 30)
    expected = np.zeros((size, size), bool)
    expected[4:8, 2:6] = True
    expected[4:8, 8:12] = True
    np.testing.assert_array_equal(masks.dynamic_pixels(w), expected)
    # the appearance window: same motion plus texture noise inside rows 4-7 everywhere
    app = w.copy()
    app[:, 5, :, 1] = np.arange(t_len, dtype=np.uint8)[:, None]
    mask_s, mask_a = masks.fusion_masks(masks.dynamic_pixels(w), masks.dynamic_pixels(app))
    np.testing.assert_array_equal(mask_s, expected)
    exp_a = np.zeros((size, size), bool)
    exp_a[5] = True
    exp_a &= ~expected
    np.testing.assert_array_equal(mask_a, exp_a)
