"""affpipe.metrics against hand-computed values, a reference AVEC-script implementation and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from affpipe import metrics
from affpipe.metrics import MetricInputError, UndefinedMetricError

# x = [1, 2, 3, 4], y = [2, 4, 5, 4]: means 2.5 / 3.75, cov 0.875 (ddof 0), var x 1.25, var y 1.1875,
# (mean difference)^2 1.5625 -> CCC = 1.75 / 4 = 0.4375. ddof-1 variances 5/3 and 4.75/3 -> the
# AVEC-script CCC = 1.75 / 4.8125 = 4/11. PCC = 0.875 / sqrt(1.25 * 1.1875). MSE = (1+4+4+0)/4.
X = np.array([1.0, 2.0, 3.0, 4.0])
Y = np.array([2.0, 4.0, 5.0, 4.0])


def test_hand_computed_values():
    assert metrics.ccc(X, Y) == pytest.approx(0.4375, abs=1e-15)
    assert metrics.ccc(X, Y, variant="avec_script") == pytest.approx(4 / 11, abs=1e-15)
    assert metrics.pcc(X, Y) == pytest.approx(0.875 / np.sqrt(1.25 * 1.1875), abs=1e-15)
    assert metrics.mse(X, Y) == pytest.approx(2.25, abs=1e-15)


def _avec_calc_scores(x, y):
    """The AVEC 2016-2018 baseline scripts' calc_scores (CCC part), as distributed."""
    x_mean, y_mean = np.nanmean(x), np.nanmean(y)
    covariance = np.nanmean((x - x_mean) * (y - y_mean))
    x_var = 1.0 / (len(x) - 1) * np.nansum((x - x_mean) ** 2)
    y_var = 1.0 / (len(y) - 1) * np.nansum((y - y_mean) ** 2)
    return (2 * covariance) / (x_var + y_var + (x_mean - y_mean) ** 2)


def test_against_references_on_random_data():
    rng = np.random.default_rng(3)
    y = rng.uniform(-1, 1, 500)
    x = 0.6 * y + 0.1 + rng.normal(scale=0.3, size=500)
    assert metrics.pcc(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert metrics.ccc(x, y, variant="avec_script") == pytest.approx(_avec_calc_scores(x, y), abs=1e-12)
    # population CCC = 2 rho sx sy / (sx^2 + sy^2 + (mx-my)^2) of the DFM paper's Eq. 5 with ddof-0 stds
    sx, sy = x.std(), y.std()
    eq5 = 2 * np.corrcoef(x, y)[0, 1] * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)
    assert metrics.ccc(x, y) == pytest.approx(eq5, abs=1e-12)
    assert metrics.ccc(x, y, variant="avec_script") < metrics.ccc(x, y)


def test_perfect_inverse_and_biased_predictions():
    assert metrics.ccc(Y, Y) == pytest.approx(1.0)
    c = Y - Y.mean()
    assert metrics.ccc(-c, c) == pytest.approx(-1.0)
    # a shift keeps PCC at 1 but costs CCC: 2 var / (2 var + shift^2)
    var = Y.var()
    assert metrics.pcc(Y + 0.5, Y) == pytest.approx(1.0)
    assert metrics.ccc(Y + 0.5, Y) == pytest.approx(2 * var / (2 * var + 0.25))
    # a symmetric metric
    assert metrics.ccc(X, Y) == metrics.ccc(Y, X)


def test_constant_prediction_is_a_visible_collapse():
    # a model predicting the label mean everywhere: CCC exactly 0, PCC undefined (not silently 0)
    pred = np.full(4, Y.mean())
    assert metrics.ccc(pred, Y) == 0.0
    assert metrics.ccc(pred, Y, variant="avec_script") == 0.0
    with pytest.raises(UndefinedMetricError, match="predictions are constant"):
        metrics.pcc(pred, Y)
    s = metrics.scores(pred, Y)
    assert s["ccc"] == 0.0 and s["pcc"] is None
    assert "constant" in s["undefined"]["pcc"]
    assert s["mse"] == pytest.approx(Y.var())


def test_constant_labels_and_both_constant():
    with pytest.raises(UndefinedMetricError, match="labels are constant"):
        metrics.pcc(X, np.ones(4))
    assert metrics.ccc(X, np.ones(4)) == 0.0
    assert metrics.ccc(np.ones(3), np.full(3, 2.0)) == 0.0  # different constants: cov 0, bias > 0
    with pytest.raises(UndefinedMetricError, match="same constant"):
        metrics.ccc(np.ones(3), np.ones(3))


def test_constant_detection_is_exact_not_rounding_dependent():
    # 0.1 three times has a float mean != 0.1; still detected as constant
    with pytest.raises(UndefinedMetricError):
        metrics.pcc(np.full(3, 0.1), X[:3])


def test_nan_raise_and_omit():
    y = Y.copy()
    y[1] = np.nan
    with pytest.raises(MetricInputError, match=r"NaN values: 0 in the predictions, 1 in the labels"):
        metrics.ccc(X, y)
    keep = [0, 2, 3]
    assert metrics.ccc(X, y, nan_policy="omit") == pytest.approx(metrics.ccc(X[keep], Y[keep]))
    assert metrics.mse(X, y, nan_policy="omit") == pytest.approx(metrics.mse(X[keep], Y[keep]))
    with pytest.raises(MetricInputError, match="no values"):
        metrics.ccc(X, np.full(4, np.nan), nan_policy="omit")
    with pytest.raises(ValueError, match="nan_policy"):
        metrics.ccc(X, Y, nan_policy="ignore")


@pytest.mark.parametrize(
    "pred, true, message",
    [
        (X[:3], Y, r"length mismatch: 3 predictions, 4 labels"),
        (X.reshape(2, 2), Y.reshape(2, 2), "must be 1-D"),
        (np.array([]), np.array([]), "no values"),
        (np.array([1.0, np.inf]), np.array([1.0, 2.0]), "infinite values: 1 in the predictions"),
    ],
)
def test_malformed_inputs_raise_clear_errors(pred, true, message):
    for fn in (metrics.ccc, metrics.pcc, metrics.mse):
        with pytest.raises(MetricInputError, match=message):
            fn(pred, true)
    with pytest.raises(MetricInputError, match=message):
        metrics.scores(pred, true)


def test_avec_variant_needs_two_values():
    with pytest.raises(MetricInputError, match="at least 2"):
        metrics.ccc([1.0], [2.0], variant="avec_script")
    s = metrics.scores(np.array([1.0]), np.array([2.0]))
    assert s["ccc_avec_script"] is None and "at least 2" in s["undefined"]["ccc_avec_script"]
    assert s["ccc"] == 0.0 and s["mse"] == 1.0
    with pytest.raises(ValueError, match="variant"):
        metrics.ccc(X, Y, variant="sample")


def test_scores_has_every_metric():
    s = metrics.scores(X, Y)
    assert set(s) == set(metrics.METRIC_NAMES) | {"undefined"}
    assert s["undefined"] == {}
    assert s["ccc"] == pytest.approx(0.4375)


def test_aggregations_concatenated_vs_mean_over_videos():
    a_p, a_t = X, Y
    b_p, b_t = np.array([0.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0])
    conc, counts = metrics.aggregate([a_p, b_p], [a_t, b_t], "ccc", aggregation="concatenated")
    assert conc == pytest.approx(metrics.ccc(np.r_[a_p, b_p], np.r_[a_t, b_t]))
    assert counts == {"videos": 2, "videos_undefined": 0}
    mean, counts = metrics.aggregate([a_p, b_p], [a_t, b_t], "ccc", aggregation="per_video_mean")
    assert mean == pytest.approx((metrics.ccc(a_p, a_t) + metrics.ccc(b_p, b_t)) / 2)
    assert mean != pytest.approx(conc)


def test_per_video_mean_leaves_out_and_counts_undefined_videos():
    const_labels = np.ones(3)
    value, counts = metrics.aggregate([X, np.array([1.0, 2.0, 3.0])], [Y, const_labels], "pcc",
                                      aggregation="per_video_mean")
    assert value == pytest.approx(metrics.pcc(X, Y))
    assert counts == {"videos": 1, "videos_undefined": 1}
    value, counts = metrics.aggregate([np.ones(2)], [np.ones(2)], "pcc", aggregation="per_video_mean")
    assert value is None and counts["videos_undefined"] == 1


def test_aggregate_errors_name_the_video():
    with pytest.raises(MetricInputError, match="video 1"):
        metrics.aggregate([X, X], [Y, Y[:3]], "ccc", aggregation="per_video_mean")
    with pytest.raises(MetricInputError, match="video 1"):
        metrics.aggregate([X, X], [Y, Y[:3]], "ccc", aggregation="concatenated")
    with pytest.raises(MetricInputError, match="no videos"):
        metrics.aggregate([], [], "ccc", aggregation="concatenated")
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.aggregate([X], [Y], "rmse", aggregation="concatenated")
