"""Window geometry and the streaming dynamic-image engine (affpipe.dynamic.windows) against per-window references."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe.dynamic import masks, rankpool
from affpipe.dynamic.windows import SlidingDynamicImages, WindowSpec, dense_validity, window_validity

SHAPE = (6, 5, 3)


def _frames(n: int, seed: int = 0, levels: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.integers(0, levels, size=(n, *SHAPE), dtype=np.uint8)
    f[:, :2, :2] = 9  # a patch that never changes (stable pixels)
    return f


def _run(engine: SlidingDynamicImages, frames: np.ndarray, ok: np.ndarray, *, start: int = 0, stop: int | None = None,
         skip: tuple[int, ...] = ()):
    """Push frames [start, stop) (frames in ``skip`` are left out: a gap), collect every block."""
    stop = len(frames) if stop is None else stop
    blocks = []
    for f in range(start, stop):
        if f in skip:
            continue
        blocks += list(engine.push(f, bool(ok[f]), {"a": frames[f], "b": 255 - frames[f]}))
    blocks += list(engine.finish())
    cat = lambda get: np.concatenate([get(b) for b in blocks]) if blocks else np.zeros(0)  # noqa: E731
    return {
        "ends": cat(lambda b: b.ends),
        "valid": cat(lambda b: b.valid),
        "a": cat(lambda b: b.images["a"]),
        "b": cat(lambda b: b.images["b"]),
        "stats": blocks,
    }


def test_window_geometry():
    spec = WindowSpec(length=20, stride=2, hop=1)
    assert spec.span == 39
    np.testing.assert_array_equal(spec.offsets, np.arange(-38, 1, 2))
    np.testing.assert_array_equal(spec.ends(0, 40), [38, 39, 40])
    assert spec.ends(0, 37).size == 0
    spec = WindowSpec(length=3, stride=2, hop=3)
    np.testing.assert_array_equal(spec.ends(5, 20), [9, 12, 15, 18])
    np.testing.assert_array_equal(spec.frames(12), [8, 10, 12])
    with pytest.raises(ValueError):
        WindowSpec(length=1)
    with pytest.raises(ValueError):
        WindowSpec(length=3, stride=0)


def test_window_validity_sampled_and_span():
    frames = np.array([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12])  # frame 7 has no row
    valid = np.ones(frames.size, bool)
    valid[frames == 3] = False
    first, ok = dense_validity(frames, valid)
    assert first == 0 and ok.size == 13 and not ok[3] and not ok[7]
    spec = WindowSpec(length=3, stride=2, hop=1)  # span 5
    ends = spec.ends(0, 12)
    np.testing.assert_array_equal(ends, np.arange(4, 13))
    sampled = window_validity(ok, first, ends, spec, require="sampled")
    span = window_validity(ok, first, ends, spec, require="span")
    # sampled frames of end e: e-4, e-2, e; invalid frames 3 and 7
    exp_sampled = [not ({e - 4, e - 2, e} & {3, 7}) for e in ends]
    exp_span = [not (set(range(e - 4, e + 1)) & {3, 7}) for e in ends]
    np.testing.assert_array_equal(sampled, exp_sampled)
    np.testing.assert_array_equal(span, exp_span)
    assert sampled.sum() > span.sum()


@pytest.mark.parametrize("solver", ["exact", "approx"])
def test_engine_matches_per_window_reference(solver):
    frames = _frames(34)
    ok = np.ones(len(frames), bool)
    spec = WindowSpec(length=5, stride=2, hop=1)
    eng = SlidingDynamicImages(spec, {"a": SHAPE, "b": SHAPE}, solver=solver, lam=1.0, pixel_scale=1 / 255, block=4)
    out = _run(eng, frames, ok)
    np.testing.assert_array_equal(out["ends"], spec.ends(0, len(frames) - 1))
    assert out["valid"].all()
    for i, end in enumerate(out["ends"]):
        for name, stream in (("a", frames), ("b", 255 - frames)):
            win = stream[spec.frames(end)].astype(np.float64) / 255
            ref = rankpool.exact_rank_pool(win, lam=1.0)[0] if solver == "exact" else rankpool.approx_rank_pool(win)
            np.testing.assert_allclose(out[name][i], ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    if solver == "exact":
        for block in out["stats"]:
            st = block.stats["a"]
            assert np.all(st["kkt_residual"] <= rankpool.KKT_TOLERANCE)
            assert np.all((st["ranked_share"] >= 0) & (st["ranked_share"] <= 1))


def test_engine_invalid_frames_gaps_hop_and_ranges():
    frames = _frames(45, seed=1)
    ok = np.ones(len(frames), bool)
    ok[[12, 30]] = False
    gap = (21,)  # pushed as a gap: treated as invalid
    spec = WindowSpec(length=4, stride=2, hop=2)
    full = _run(SlidingDynamicImages(spec, {"a": SHAPE, "b": SHAPE}, block=3), frames, ok, skip=gap)
    dense = ok.copy()
    dense[list(gap)] = False
    ends = spec.ends(0, len(frames) - 1)
    np.testing.assert_array_equal(full["ends"], ends)
    np.testing.assert_array_equal(full["valid"], window_validity(dense, 0, ends, spec, require="sampled"))
    assert (~full["valid"]).any() and full["valid"].any()
    assert not full["a"][~full["valid"]].any()  # invalid windows stay empty
    for i in np.flatnonzero(full["valid"]):
        win = frames[spec.frames(ends[i])].astype(np.float64) / 255
        ref = rankpool.exact_rank_pool(win, lam=1.0)[0]
        np.testing.assert_allclose(full["a"][i], ref, atol=2e-5 * np.abs(ref).max())
    # two contiguous ranges of windows computed independently give the same rows
    split = int(ends[len(ends) // 2])
    parts = []
    for lo, hi in ((int(ends[0]), split), (split + spec.hop, int(ends[-1]))):
        eng = SlidingDynamicImages(spec, {"a": SHAPE, "b": SHAPE}, first_end=lo, last_end=hi, block=2)
        parts.append(_run(eng, frames, ok, start=eng.range_start_frame(lo), stop=hi + 1, skip=gap))
    np.testing.assert_array_equal(np.concatenate([p["ends"] for p in parts]), ends)
    np.testing.assert_array_equal(np.concatenate([p["valid"] for p in parts]), full["valid"])
    np.testing.assert_allclose(np.concatenate([p["a"] for p in parts]), full["a"], rtol=1e-6, atol=1e-9)
    # span policy: more windows skipped
    span = _run(SlidingDynamicImages(spec, {"a": SHAPE, "b": SHAPE}, require="span"), frames, ok, skip=gap)
    np.testing.assert_array_equal(span["valid"], window_validity(dense, 0, ends, spec, require="span"))


@pytest.mark.parametrize("tolerance", [0, 2])
def test_engine_dynamic_pixels(tolerance):
    frames = _frames(30, seed=2, levels=3)  # few levels: many pixels repeat over a window
    ok = np.ones(len(frames), bool)
    ok[17] = False
    spec = WindowSpec(length=3, stride=2, hop=1)
    eng = SlidingDynamicImages(spec, {"a": SHAPE, "b": SHAPE}, want_dynamic=True, mask_tolerance=tolerance, block=5)
    blocks = []
    for f in range(len(frames)):
        blocks += list(eng.push(f, bool(ok[f]), {"a": frames[f], "b": 255 - frames[f]}))
    blocks += list(eng.finish())
    ends = np.concatenate([b.ends for b in blocks])
    valid = np.concatenate([b.valid for b in blocks])
    dyn = np.concatenate([b.dynamic["a"] for b in blocks])
    for i, end in enumerate(ends):
        if valid[i]:
            np.testing.assert_array_equal(dyn[i], masks.dynamic_pixels(frames[spec.frames(end)], tolerance=tolerance))
        else:
            assert not dyn[i].any()
    assert not dyn[valid][:, :2, :2].any()  # the constant patch is stable everywhere


def test_engine_rejects_bad_frames():
    eng = SlidingDynamicImages(WindowSpec(3), {"a": SHAPE})
    with pytest.raises(ValueError):
        list(eng.push(0, True, {"a": np.zeros((2, 2, 3), np.uint8)}))
    list(eng.push(0, False, None))
    with pytest.raises(ValueError):
        list(eng.push(0, False, None))  # out of order
