"""The predictions artifact, ``results/{ds}/experiments/{name}/predictions.parquet``: its format,
its writer (:func:`video_predictions`, :func:`write_predictions`, used by
:mod:`affpipe.regress.experiment`) and its one reader (:func:`read_predictions`, used by the
``evaluate`` and ``regression-report`` commands), with the in-memory form the scores are computed on
(:class:`ExperimentPredictions`).

Columns: ``video`` (string), ``partition`` (string), ``frame`` (int32), ``time_s`` (float64),
``valence_pred``, ``arousal_pred`` (float32, finite on every row), ``valence_true``,
``arousal_true`` (float32, NaN = unlabelled), ``filled`` (bool: no feature at this frame, the
prediction comes from the fill rule) and, after a median filter, ``valence_pred_raw``,
``arousal_pred_raw`` (float32: the unfiltered predictions). One row per frame of every video, in
manifest order. Schema metadata: ``format`` / ``format_version`` (:data:`PREDICTIONS_FORMAT`), then
what the experiment records (experiment, input, regressor, settings and their hash, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from affpipe.datasets.layout import PARTITIONS
from affpipe.errors import AffpipeError
from affpipe.regress.registry import OUTPUT_DIMENSIONS

PREDICTIONS_FORMAT = "affpipe-predictions"
PREDICTIONS_FORMAT_VERSION = 1

PREDICTION_COLUMNS = ("video", "partition", "frame", "filled") + tuple(
    f"{d}_{k}" for d in OUTPUT_DIMENSIONS for k in ("pred", "true")
)


@dataclass
class ExperimentPredictions:
    """One experiment's predictions as arrays (rows sorted by video, then frame)."""

    name: str
    video: np.ndarray  # (n,) object (str)
    partition: np.ndarray  # (n,) object (str)
    frame: np.ndarray  # (n,) int64
    pred: np.ndarray  # (n, 2) float64
    true: np.ndarray  # (n, 2) float64, NaN = unlabelled
    filled: np.ndarray  # (n,) bool
    meta: dict[str, str] = field(default_factory=dict)
    source: str = ""
    time_s: np.ndarray | None = None
    pred_raw: np.ndarray | None = None  # (n, 2) float64: predictions before a median filter, if one was applied

    def videos(self) -> list[str]:
        return list(dict.fromkeys(self.video.tolist()))


class PredictionsError(ValueError):
    """Malformed predictions (the caller adds the file name)."""


def check_predictions(p: ExperimentPredictions) -> None:
    """Structural checks: shapes, known partitions, finite predictions, unique (video, frame).

    Raises
    ------
    PredictionsError
    """
    n = p.video.shape[0]
    for name in ("partition", "frame", "filled"):
        if getattr(p, name).shape[0] != n:
            raise PredictionsError(f"column {name} has {getattr(p, name).shape[0]} rows, video has {n}")
    if p.pred.shape != (n, 2) or p.true.shape != (n, 2):
        raise PredictionsError(f"predictions/labels must be ({n}, 2), got {p.pred.shape} and {p.true.shape}")
    bad = sorted(set(p.partition.tolist()) - set(PARTITIONS))
    if bad:
        raise PredictionsError(f"unknown partition(s) {', '.join(map(str, bad))}")
    if p.pred_raw is not None:
        if p.pred_raw.shape != (n, 2):
            raise PredictionsError(f"unfiltered predictions must be ({n}, 2), got {p.pred_raw.shape}")
        if not np.all(np.isfinite(p.pred_raw)):
            raise PredictionsError("unfiltered predictions (<dim>_pred_raw) are not all finite")
    if not np.all(np.isfinite(p.pred)):
        rows = np.flatnonzero(~np.all(np.isfinite(p.pred), axis=1))
        ex = ", ".join(f"{p.video[i]}:{p.frame[i]}" for i in rows[:5])
        raise PredictionsError(f"{rows.size} frames have no finite prediction (e.g. {ex}); every frame needs one")
    if np.isinf(p.true).any():
        raise PredictionsError("labels hold infinite values")
    key = np.rec.fromarrays([p.video.astype(str), p.frame])
    if np.unique(key).shape[0] != n:
        raise PredictionsError("duplicate (video, frame) rows")
    for vid in p.videos():
        parts = set(p.partition[p.video == vid].tolist())
        if len(parts) != 1:
            raise PredictionsError(f"video {vid} is in several partitions ({', '.join(sorted(parts))})")


def predictions_schema(*, raw: bool = False):
    """Columns of ``predictions.parquet`` (``raw``: with the unfiltered predictions of a median filter)."""
    import pyarrow as pa

    raw_fields = [pa.field(f"{d}_pred_raw", pa.float32()) for d in OUTPUT_DIMENSIONS] if raw else []
    return pa.schema([
        pa.field("video", pa.string()),
        pa.field("partition", pa.string()),
        pa.field("frame", pa.int32()),
        pa.field("time_s", pa.float64()),
        pa.field("valence_pred", pa.float32()),
        pa.field("arousal_pred", pa.float32()),
        pa.field("valence_true", pa.float32()),
        pa.field("arousal_true", pa.float32()),
        pa.field("filled", pa.bool_()),
        *raw_fields,
    ])


def video_predictions(video: str, partition: str, *, frame: np.ndarray, time_s: np.ndarray, pred: np.ndarray,
                      true: np.ndarray, filled: np.ndarray, raw: np.ndarray | None = None):
    """One video's rows of ``predictions.parquet`` (a pyarrow Table).

    Parameters
    ----------
    frame, time_s : (n,)
        The labels' frames (0..n-1) and their times.
    pred, true : (n, 2)
        Predictions (finite) and labels (NaN = unlabelled), columns in ``OUTPUT_DIMENSIONS`` order.
    filled : (n,) bool
    raw : (n, 2), optional
        The predictions before a median filter (columns ``<dim>_pred_raw``); None without a filter.
    """
    import pyarrow as pa

    n = int(frame.shape[0])
    return pa.table({
        "video": pa.array([video] * n, pa.string()),
        "partition": pa.array([partition] * n, pa.string()),
        "frame": pa.array(frame.astype(np.int32)),
        "time_s": pa.array(time_s),
        "valence_pred": pa.array(pred[:, 0]),
        "arousal_pred": pa.array(pred[:, 1]),
        "valence_true": pa.array(true[:, 0]),
        "arousal_true": pa.array(true[:, 1]),
        "filled": pa.array(filled),
        **({f"{d}_pred_raw": pa.array(raw[:, j].astype(np.float32)) for j, d in enumerate(OUTPUT_DIMENSIONS)}
           if raw is not None else {}),
    }, schema=predictions_schema(raw=raw is not None))


def write_predictions(tables: Sequence[Any], out: str | os.PathLike, *, raw: bool, metadata: Mapping[str, str]) -> None:
    """Write the videos' tables (:func:`video_predictions`, in order) as one ``predictions.parquet``,
    atomically; the metadata after ``format`` and ``format_version``."""
    import pyarrow as pa

    from affpipe.io.atomic import write_parquet

    table = pa.concat_tables(tables) if tables else predictions_schema(raw=raw).empty_table()
    meta = {"format": PREDICTIONS_FORMAT, "format_version": str(PREDICTIONS_FORMAT_VERSION), **metadata}
    write_parquet(table, out, metadata=meta)


def read_predictions(path: str | os.PathLike, name: str) -> ExperimentPredictions:
    """Read one ``predictions.parquet`` into :class:`ExperimentPredictions` (checked, rows sorted by
    video, then frame).

    Raises
    ------
    AffpipeError
        Naming the file: it does not exist or is not Parquet, a column is missing, or
        :func:`check_predictions` fails.
    """
    from affpipe.io.parquet import read_table

    path = Path(path)
    try:
        table = read_table(path)
    except FileNotFoundError:
        raise AffpipeError("predictions file does not exist (run `affpipe regress` first)", path=path) from None
    except (OSError, ValueError) as exc:
        raise AffpipeError(f"cannot read the predictions ({exc})", path=path) from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table.column_names]
    if missing:
        raise AffpipeError(f"predictions lack column(s) {', '.join(missing)}", path=path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k != b"ARROW:schema"}
    table = table.sort_by([("video", "ascending"), ("frame", "ascending")])
    col = lambda c: table[c].to_numpy(zero_copy_only=False)  # noqa: E731
    p = ExperimentPredictions(
        name=name,
        video=col("video").astype(object),
        partition=col("partition").astype(object),
        frame=col("frame").astype(np.int64),
        pred=np.stack([col(f"{d}_pred").astype(np.float64) for d in OUTPUT_DIMENSIONS], axis=1),
        true=np.stack([col(f"{d}_true").astype(np.float64) for d in OUTPUT_DIMENSIONS], axis=1),
        filled=col("filled").astype(bool),
        meta=meta,
        source=str(path),
        time_s=col("time_s").astype(np.float64) if "time_s" in table.column_names else None,
        pred_raw=np.stack([col(f"{d}_pred_raw").astype(np.float64) for d in OUTPUT_DIMENSIONS], axis=1)
        if all(f"{d}_pred_raw" in table.column_names for d in OUTPUT_DIMENSIONS) else None,
    )
    try:
        check_predictions(p)
    except PredictionsError as exc:
        raise AffpipeError(str(exc), path=path) from None
    return p
