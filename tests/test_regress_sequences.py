"""Pure sequence cutting (affpipe.regress.sequences) and gap filling (affpipe.regress.fill)."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe.regress import fill, sequences


# -- segments -------------------------------------------------------------------------------
def test_regular_step_is_the_most_common_difference():
    assert sequences.regular_step(np.arange(18, 300)) == 1
    assert sequences.regular_step(np.r_[np.arange(0, 40, 2), np.arange(60, 100, 2)]) == 2
    assert sequences.regular_step(np.array([5])) == 1


def test_segments_split_only_at_long_gaps():
    frames = np.r_[np.arange(18, 100), np.arange(103, 150), np.arange(200, 260)]  # gaps of 2 and 49 frames
    segs = sequences.segments(frames, max_gap=10)
    assert segs.tolist() == [[0, 82 + 47], [129, 189]]
    assert sequences.segments(frames, max_gap=1).tolist() == [[0, 82], [82, 129], [129, 189]]
    # with a hop of 2 between rows, a 2-frame step is regular, not a gap
    hop2 = np.arange(0, 100, 2)
    assert sequences.segments(hop2, max_gap=0).tolist() == [[0, 50]]
    assert sequences.segments(np.array([], dtype=int), max_gap=3).shape == (0, 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        sequences.segments(np.array([3, 3, 4]), max_gap=1)


def test_windows_cover_the_tail_and_keep_short_segments():
    w = sequences.windows(230, seq_len=100, hop=50)
    assert w.tolist() == [[0, 100], [50, 150], [100, 200], [130, 230]]
    assert sequences.windows(200, seq_len=100, hop=50).tolist() == [[0, 100], [50, 150], [100, 200]]
    assert sequences.windows(37, seq_len=100, hop=50).tolist() == [[0, 37]]
    assert sequences.windows(0, seq_len=100, hop=50).shape == (0, 2)


def test_overlap_average_recovers_consistent_outputs_and_weights_centres():
    length = 230
    spans = sequences.windows(length, seq_len=100, hop=50)
    truth = np.stack([np.arange(length), -np.arange(length)], axis=1).astype(float)
    outs = [truth[a:b] for a, b in spans]
    np.testing.assert_allclose(sequences.overlap_average(length, spans, outs), truth)
    # windows disagreeing: row 60 is row 60 of window [0, 100) (weight min(60, 39) + 1 = 40) and row 10
    # of window [50, 150) (weight 11), so the nearer-the-centre window dominates
    outs = [np.zeros((100, 1)), np.ones((100, 1)), np.ones((100, 1)) * 2, np.ones((100, 1)) * 3]
    avg = sequences.overlap_average(length, spans, outs)
    w1, w2 = sequences.window_weights(100)[60], sequences.window_weights(100)[10]
    assert avg[60, 0] == pytest.approx(w2 / (w1 + w2))
    assert avg[0, 0] == 0.0 and avg[-1, 0] == 3.0
    with pytest.raises(ValueError, match="covered by no window"):
        sequences.overlap_average(10, np.array([[0, 5]]), [np.zeros((5, 1))])


# -- fill -----------------------------------------------------------------------------------
FRAMES = np.array([2, 3, 7])
VALUES = np.array([[0.2, -0.2], [0.3, -0.3], [0.7, -0.7]])
FALLBACK = np.array([0.05, 0.1])


def test_fill_nearest_hand_computed():
    out, filled = fill.fill_predictions(10, FRAMES, VALUES, rule="nearest", fallback=FALLBACK)
    # frames 0,1 -> 2; 4,5 -> 3 (5 is a tie between 3 and 7: the earlier); 6 -> 7; 8,9 -> 7
    expect = np.array([0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.7, 0.7, 0.7, 0.7])
    np.testing.assert_allclose(out[:, 0], expect, atol=1e-7)
    np.testing.assert_allclose(out[:, 1], -expect, atol=1e-7)
    assert filled.tolist() == [True, True, False, False, True, True, True, False, True, True]
    assert out.dtype == np.float32


def test_fill_previous_linear_mean():
    prev, _ = fill.fill_predictions(10, FRAMES, VALUES, rule="previous", fallback=FALLBACK)
    np.testing.assert_allclose(prev[:, 0], [0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.7, 0.7, 0.7], atol=1e-7)
    lin, _ = fill.fill_predictions(10, FRAMES, VALUES, rule="linear", fallback=FALLBACK)
    np.testing.assert_allclose(lin[:, 0], [0.2, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.7, 0.7], atol=1e-6)
    mean, filled = fill.fill_predictions(10, FRAMES, VALUES, rule="mean", fallback=FALLBACK)
    np.testing.assert_allclose(mean[[0, 4, 9], 1], [0.1, 0.1, 0.1], atol=1e-7)
    np.testing.assert_allclose(mean[FRAMES], VALUES, atol=1e-7)
    assert filled.sum() == 7


@pytest.mark.parametrize("rule", fill.FILL_RULES)
def test_fill_keeps_model_predictions_and_handles_a_video_without_features(rule):
    out, filled = fill.fill_predictions(10, FRAMES, VALUES, rule=rule, fallback=FALLBACK)
    np.testing.assert_allclose(out[FRAMES], VALUES, atol=1e-7)
    assert not filled[FRAMES].any()
    empty, filled = fill.fill_predictions(4, np.zeros(0, int), np.zeros((0, 2)), rule=rule, fallback=FALLBACK)
    np.testing.assert_allclose(empty, np.tile(FALLBACK, (4, 1)), atol=1e-7)
    assert filled.all()


def test_fill_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        fill.fill_predictions(5, np.array([2, 7]), VALUES[:2], rule="nearest", fallback=FALLBACK)
    with pytest.raises(ValueError, match="finite"):
        fill.fill_predictions(10, FRAMES, VALUES * np.nan, rule="nearest", fallback=FALLBACK)
    with pytest.raises(ValueError, match="fill rule"):
        fill.fill_predictions(10, FRAMES, VALUES, rule="spline", fallback=FALLBACK)
