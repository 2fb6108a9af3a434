"""Pure label functions: cleaning, range check, per-frame placement and time interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe.datasets.labels import (
    LabelTrack,
    assemble_labels,
    frames_from_indexed,
    interpolate_to_frames,
    mask_unlabelled,
    out_of_range,
    track_to_frames,
)
from affpipe.datasets.settings import dataset_settings
from affpipe.errors import DatasetError

SETTINGS = dataset_settings("t", {})


def test_mask_unlabelled_counts_nan_and_sentinel_separately():
    v = np.array([0.1, -5.0, np.nan, 0.3, -5.0])
    out, n_nan, n_sent = mask_unlabelled(v, sentinel=-5)
    assert (n_nan, n_sent) == (1, 2)
    np.testing.assert_array_equal(np.isnan(out), [False, True, True, False, True])
    assert v[1] == -5.0  # input untouched
    out, n_nan, n_sent = mask_unlabelled(v, sentinel=None)
    assert n_sent == 0 and out[1] == -5.0


def test_out_of_range_tolerates_rounding_only():
    v = np.array([-1.0, 1.0, 1.0 + 1e-9, 1.01, -1.2, np.nan, np.inf])
    np.testing.assert_array_equal(out_of_range(v), [3, 4, 6])


def test_frames_from_indexed_places_and_leaves_gaps_nan():
    out = frames_from_indexed(np.array([0, 2, 7]), np.array([0.1, 0.2, 0.7]), n_frames=5)
    np.testing.assert_array_equal(np.isnan(out), [False, True, False, True, True])
    assert out[2] == pytest.approx(0.2)


def test_interpolate_matches_numpy_inside_span():
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.03, 0.05, 50))
    v = rng.uniform(-1, 1, 50)
    ft = np.linspace(t[0], t[-1], 200)
    out = interpolate_to_frames(t, v, ft, gap_factor=10.0)
    np.testing.assert_allclose(out, np.interp(ft, t, v), atol=1e-12)


def test_interpolate_nan_outside_span_across_gaps_and_next_to_unlabelled():
    t = np.array([0.10, 0.20, 0.30, 0.70, 0.80, 0.90, 1.00])
    v = np.array([0.0, 0.1, 0.2, 0.3, np.nan, 0.5, 0.6])
    ft = np.array([0.0, 0.10, 0.15, 0.30, 0.50, 0.70, 0.75, 0.85, 0.90, 0.95, 1.00, 1.05])
    out = interpolate_to_frames(t, v, ft, gap_factor=1.5)
    expected = [np.nan, 0.0, 0.05, 0.2, np.nan, 0.3, np.nan, np.nan, 0.5, 0.55, 0.6, np.nan]
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_interpolate_exact_frame_time_keeps_sample_next_to_gap():
    t = np.array([0.0, 0.04, 1.0])  # gap after 0.04
    out = interpolate_to_frames(t, np.array([0.1, 0.2, 0.3]), np.array([0.04, 0.04 + 1e-9, 0.5, 1.0]), gap_factor=1.5)
    np.testing.assert_allclose(out, [0.2, 0.2, np.nan, 0.3])


def _track(kind, index, values, source="labels.csv"):
    n = len(values)
    return LabelTrack("valence", source, kind, np.asarray(index), np.asarray(values, dtype=float), np.arange(2, n + 2))


def test_track_errors_name_file_and_line():
    with pytest.raises(DatasetError, match=r"labels\.csv: 1 valence value\(s\) outside \[-1, 1\] \(line 3: 1\.5\)"):
        track_to_frames(_track("frame", [0, 1, 2], [0.0, 1.5, 0.0]), n_frames=3, fps=10, settings=SETTINGS)
    with pytest.raises(DatasetError, match="times must strictly increase.*line 3"):
        track_to_frames(_track("time", [0.0, 0.0, 0.1], [0.0, 0.1, 0.0]), n_frames=2, fps=10, settings=SETTINGS)
    with pytest.raises(DatasetError, match="frame index given twice.*line 3"):
        track_to_frames(_track("frame", [0, 0, 1], [0.0, 0.1, 0.0]), n_frames=2, fps=10, settings=SETTINGS)


def test_drift_thresholds_warn_then_error():
    s = dict(SETTINGS, label_drift_warn_s=0.1, label_drift_error_s=1.0)
    ok = _track("frame", np.arange(101), np.zeros(101))
    _, st, w = track_to_frames(ok, n_frames=100, fps=25, settings=s)  # 1 frame = 0.04 s: silent, recorded
    assert w == [] and st.drift_s == pytest.approx(0.04) and st.samples_outside_video == 1
    small = _track("frame", np.arange(110), np.zeros(110))
    _, st, w = track_to_frames(small, n_frames=100, fps=25, settings=s)  # 0.4 s
    assert len(w) == 1 and "110 label frames" in w[0] and "100 video frames" in w[0] and w[0].startswith("labels.csv:")
    far = _track("frame", np.arange(150), np.zeros(150))
    with pytest.raises(DatasetError, match=r"labels\.csv: .*150 label frames .* vs 100 video frames.*2\.000 s"):
        track_to_frames(far, n_frames=100, fps=25, settings=s)


def test_assemble_without_labels_is_all_nan_with_note():
    table, warnings = assemble_labels(None, n_frames=4, fps=2.0, settings=SETTINGS, note="no labels here")
    assert warnings == []
    assert table.column("frame").to_pylist() == [0, 1, 2, 3]
    assert table.column("time_s").to_pylist() == [0.0, 0.5, 1.0, 1.5]
    assert all(np.isnan(table.column("valence").to_numpy()))
    meta = table.schema.metadata
    assert meta[b"note"] == b"no labels here" and meta[b"nan_frames_arousal"] == b"4"
