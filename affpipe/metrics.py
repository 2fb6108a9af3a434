"""Agreement between predicted and true valence/arousal: CCC, PCC and MSE, and their aggregations.

All functions take two 1-D arrays of the same length (predictions first, labels second, although
every metric here is symmetric) and compute in float64.

Definitions (``x`` = predictions, ``y`` = labels, ``n`` values):

* **CCC, population** (``variant="population"``, the one affpipe reports as ``ccc``; ABAW's
  definition and Lin's original)::

      2 cov(x, y) / (var x + var y + (mean x - mean y)^2)

  with ``cov`` and ``var`` both normalised by ``n`` (ddof 0). Identical to ``2 rho sx sy / (...)``
  of the DFM paper's Eq. 5 with population standard deviations.
* **CCC, AVEC-script** (``variant="avec_script"``, reported as ``ccc_avec_script``): the AVEC 2016-2018
  baseline scripts' ``calc_scores`` mix a ddof-0 covariance with ddof-1 variances (Matlab's
  ``nanvar``); the result is slightly *lower* than the population CCC, by a factor close to
  ``(n - 1) / n`` for long sequences. Needs ``n >= 2``.
* **PCC**: Pearson's correlation (ddof cancels).
* **MSE**: ``mean((x - y)^2)``.

Edge cases are explicit, never a silent number:

* Inputs that are not 1-D, of different lengths, empty, or hold +-inf raise :class:`MetricInputError`.
* NaN: ``nan_policy="raise"`` (default) raises :class:`MetricInputError`; ``"omit"`` drops every
  pair in which either value is NaN (as the AVEC scripts' ``nan*`` functions do) and raises when
  no pair is left.
* Constant input: a constant prediction against varying labels has CCC exactly 0 (this is how a
  collapsed model shows up), but its PCC is undefined (0/0) and raises
  :class:`UndefinedMetricError`; CCC is undefined only when both sides are the same constant.
  :func:`scores` turns undefined metrics into ``None`` with the reason, for reports.

Aggregation over videos (:func:`aggregate`), both named in every affpipe report:

* ``concatenated``: the metric of all frames of all videos of a partition, concatenated (AVEC 2016,
  ABAW);
* ``per_video_mean``: the metric of each video, averaged over videos (AVEC 2012 papers, e.g. the
  DFM paper's SEMAINE table); videos where the metric is undefined are left out of the mean and
  counted.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np

CCC_VARIANTS = ("population", "avec_script")
NAN_POLICIES = ("raise", "omit")
#: names of the metrics :func:`scores` returns, in report order
METRIC_NAMES = ("ccc", "ccc_avec_script", "pcc", "mse")
AGGREGATIONS = ("concatenated", "per_video_mean")

METRIC_DEFINITIONS = {
    "ccc": "concordance correlation coefficient, 2 cov(x,y) / (var x + var y + (mean x - mean y)^2), "
    "population statistics (ddof 0) throughout (ABAW; Lin 1989)",
    "ccc_avec_script": "CCC as computed by the AVEC 2016-2018 baseline scripts: ddof-0 covariance, ddof-1 "
    "variances (slightly lower than ccc)",
    "pcc": "Pearson correlation coefficient",
    "mse": "mean squared error, mean((prediction - label)^2)",
}
AGGREGATION_DEFINITIONS = {
    "concatenated": "metric over the frames of all videos of the partition, concatenated (AVEC 2016, ABAW)",
    "per_video_mean": "metric per video, then the mean over videos (AVEC 2012 papers); videos where the "
    "metric is undefined (e.g. constant labels for PCC) are left out and counted",
}


class MetricInputError(ValueError):
    """The inputs of a metric are malformed (shape, length, NaN/inf, empty)."""


class UndefinedMetricError(ValueError):
    """The metric is mathematically undefined for these inputs (e.g. PCC of a constant)."""


def _pair(pred, true, *, nan_policy: str, min_n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to float64; apply the NaN policy."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(true, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise MetricInputError(f"predictions and labels must be 1-D, got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise MetricInputError(f"length mismatch: {x.shape[0]} predictions, {y.shape[0]} labels")
    if np.isinf(x).any() or np.isinf(y).any():
        raise MetricInputError(
            f"infinite values: {int(np.isinf(x).sum())} in the predictions, {int(np.isinf(y).sum())} in the labels"
        )
    nx, ny = np.isnan(x), np.isnan(y)
    if nx.any() or ny.any():
        if nan_policy == "raise":
            raise MetricInputError(
                f"NaN values: {int(nx.sum())} in the predictions, {int(ny.sum())} in the labels "
                "(pass nan_policy='omit' to score only the pairs where both are finite)"
            )
        keep = ~(nx | ny)
        x, y = x[keep], y[keep]
    if x.shape[0] < min_n:
        what = "no values" if x.shape[0] == 0 else f"{x.shape[0]} value(s)"
        raise MetricInputError(f"{what} to score (need at least {min_n})")
    return x, y


def _is_constant(v: np.ndarray) -> bool:
    # exact test on the values (a variance computed in floating point can be 1e-34 for a constant)
    return bool(v.max() == v.min())


def ccc(
    pred: np.ndarray,
    true: np.ndarray,
    *,
    variant: Literal["population", "avec_script"] = "population",
    nan_policy: Literal["raise", "omit"] = "raise",
) -> float:
    """Concordance correlation coefficient of two sequences.

    Parameters
    ----------
    pred, true : (n,) array_like of float
        Predictions and labels.
    variant : {"population", "avec_script"}
        ``population``: ddof 0 for covariance and variances. ``avec_script``: ddof-0 covariance with
        ddof-1 variances, as the AVEC 2016-2018 scripts compute it (needs n >= 2).
    nan_policy : {"raise", "omit"}
        What to do with NaN pairs.

    Returns
    -------
    float
        In [-1, 1]; 0 for a constant prediction against varying labels.

    Raises
    ------
    MetricInputError
        Malformed input (see module docstring).
    UndefinedMetricError
        Both sequences are the same constant (0/0).
    """
    if variant not in CCC_VARIANTS:
        raise ValueError(f"variant must be one of {CCC_VARIANTS}, got {variant!r}")
    x, y = _pair(pred, true, nan_policy=nan_policy, min_n=2 if variant == "avec_script" else 1)
    n = x.shape[0]
    mx, my = x.mean(), y.mean()
    dx, dy = x - mx, y - my
    cov = float(np.dot(dx, dy) / n)
    ddof = 0 if variant == "population" else 1
    vx = float(np.dot(dx, dx) / (n - ddof))
    vy = float(np.dot(dy, dy) / (n - ddof))
    if _is_constant(x) and _is_constant(y) and x[0] == y[0]:
        raise UndefinedMetricError("CCC is undefined: predictions and labels are the same constant")
    if _is_constant(x) or _is_constant(y):
        return 0.0  # exactly: the covariance with a constant is 0
    return float(2.0 * cov / (vx + vy + float(mx - my) ** 2))


def pcc(pred: np.ndarray, true: np.ndarray, *, nan_policy: Literal["raise", "omit"] = "raise") -> float:
    """Pearson correlation coefficient of two sequences.

    Parameters
    ----------
    pred, true : (n,) array_like of float
    nan_policy : {"raise", "omit"}

    Returns
    -------
    float
        In [-1, 1].

    Raises
    ------
    MetricInputError
        Malformed input.
    UndefinedMetricError
        Either sequence is constant (the correlation is 0/0).
    """
    x, y = _pair(pred, true, nan_policy=nan_policy)
    cx, cy = _is_constant(x), _is_constant(y)
    if cx or cy:
        which = "predictions and labels are" if cx and cy else ("predictions are" if cx else "labels are")
        raise UndefinedMetricError(f"PCC is undefined: {which} constant")
    dx, dy = x - x.mean(), y - y.mean()
    r = float(np.dot(dx, dy) / np.sqrt(np.dot(dx, dx) * np.dot(dy, dy)))
    return float(np.clip(r, -1.0, 1.0))


def mse(pred: np.ndarray, true: np.ndarray, *, nan_policy: Literal["raise", "omit"] = "raise") -> float:
    """Mean squared error ``mean((pred - true)^2)``.

    Parameters
    ----------
    pred, true : (n,) array_like of float
    nan_policy : {"raise", "omit"}

    Returns
    -------
    float
        >= 0.
    """
    x, y = _pair(pred, true, nan_policy=nan_policy)
    return float(np.mean((x - y) ** 2))


METRICS: dict[str, Callable[..., float]] = {
    "ccc": lambda p, t, **kw: ccc(p, t, variant="population", **kw),
    "ccc_avec_script": lambda p, t, **kw: ccc(p, t, variant="avec_script", **kw),
    "pcc": pcc,
    "mse": mse,
}


def scores(
    pred: np.ndarray, true: np.ndarray, *, nan_policy: Literal["raise", "omit"] = "raise"
) -> dict[str, float | None | dict[str, str]]:
    """Every metric of :data:`METRIC_NAMES` for one pair of sequences.

    Returns
    -------
    dict
        ``{"ccc": float|None, "ccc_avec_script": ..., "pcc": ..., "mse": ..., "undefined": {name: reason}}``;
        a metric is ``None`` exactly when it is listed in ``undefined`` with the reason.

    Raises
    ------
    MetricInputError
        Malformed input (never turned into ``None``).
    """
    x, y = _pair(pred, true, nan_policy=nan_policy)  # validates once; NaN pairs dropped if "omit"
    out: dict[str, float | None | dict[str, str]] = {}
    undefined: dict[str, str] = {}
    for name in METRIC_NAMES:
        if name == "ccc_avec_script" and x.shape[0] < 2:
            out[name] = None
            undefined[name] = "the AVEC-script CCC needs at least 2 values (ddof-1 variances)"
            continue
        try:
            out[name] = METRICS[name](x, y)
        except UndefinedMetricError as exc:
            out[name] = None
            undefined[name] = str(exc)
    out["undefined"] = undefined
    return out


def aggregate(
    preds: Sequence[np.ndarray],
    trues: Sequence[np.ndarray],
    metric: str,
    *,
    aggregation: Literal["concatenated", "per_video_mean"],
    nan_policy: Literal["raise", "omit"] = "raise",
) -> tuple[float | None, dict[str, int]]:
    """One metric over several videos, with the aggregation named.

    Parameters
    ----------
    preds, trues : sequence of (n_i,) arrays
        Predictions and labels per video (same number of videos, same length per video).
    metric : {"ccc", "ccc_avec_script", "pcc", "mse"}
    aggregation : {"concatenated", "per_video_mean"}
    nan_policy : {"raise", "omit"}
        Applied per video.

    Returns
    -------
    value : float or None
        None when the metric is undefined (concatenated) or undefined for every video (mean).
    counts : dict
        ``{"videos": used, "videos_undefined": left out}``.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if len(preds) != len(trues):
        raise MetricInputError(f"{len(preds)} prediction sequences but {len(trues)} label sequences")
    if not preds:
        raise MetricInputError("no videos to score")
    fn = METRICS[metric]
    if aggregation == "concatenated":
        for i, (p, t) in enumerate(zip(preds, trues)):
            if np.shape(p) != np.shape(t):
                raise MetricInputError(f"video {i}: {np.shape(p)} predictions, {np.shape(t)} labels")
        x = np.concatenate([np.asarray(p, dtype=np.float64) for p in preds])
        y = np.concatenate([np.asarray(t, dtype=np.float64) for t in trues])
        try:
            return fn(x, y, nan_policy=nan_policy), {"videos": len(preds), "videos_undefined": 0}
        except UndefinedMetricError:
            return None, {"videos": 0, "videos_undefined": len(preds)}
    values = []
    undefined = 0
    for i, (p, t) in enumerate(zip(preds, trues)):
        try:
            values.append(fn(p, t, nan_policy=nan_policy))
        except UndefinedMetricError:
            undefined += 1
        except MetricInputError as exc:
            raise MetricInputError(f"video {i}: {exc}") from None
    value = float(np.mean(values)) if values else None
    return value, {"videos": len(values), "videos_undefined": undefined}
