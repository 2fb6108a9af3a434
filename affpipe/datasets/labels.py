"""Valence/arousal labels resampled to a video's frame times.

Adapters read their label files into :class:`LabelTrack` objects (one per dimension, values as in
the file). This module checks them and puts them on the video's frames:

* **Per-frame labels** (SEMAINE ``.dat``, Aff-Wild2 ``.txt``, CSV with a ``frame`` column): sample
  ``k`` is frame ``index[k]``; nothing is interpolated. Frames without a sample are NaN.
* **Time-stamped labels** (RECOLA ``.arff`` ``frameTime``, CSV with a ``time_s`` column): linear
  interpolation between the two neighbouring samples at each frame time ``frame / fps``. A frame that
  coincides with a sample (within ``TIME_EPS_S``) takes that sample's value. Frames before the first
  or after the last sample, inside a gap (neighbours further apart than ``label_gap_factor`` times
  the median sample spacing), or next to an unlabelled (NaN) sample are NaN. Nothing is extrapolated.

NaN/empty values and the unlabelled sentinel (Aff-Wild2's ``-5``) become NaN and are counted; values
outside [-1, 1] are an error; a label length far from the video's frame count is an error, a small
difference a warning (thresholds in the dataset config).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from affpipe.errors import DatasetError

DIMENSIONS = ("valence", "arousal")
VALUE_RANGE = (-1.0, 1.0)
RANGE_TOL = 1e-6  # float rounding in the distributed files (e.g. 1.0000001) is not an error
TIME_EPS_S = 1e-6  # a frame this close to a label time takes that sample's value
MAX_OFFENDERS_IN_MESSAGE = 5

RESAMPLING_TEXT = {
    "frame": "per-frame labels: sample k is frame index[k], no interpolation; frames without a sample are NaN",
    "time": (
        "time-stamped labels: linear interpolation between the two neighbouring samples at each frame time "
        "frame/fps (a frame within 1e-6 s of a sample takes its value); NaN before the first and after the "
        "last sample, inside gaps longer than label_gap_factor x the median spacing, and next to unlabelled samples"
    ),
    "none": "no label file: valence and arousal are NaN for every frame",
}

LABELS_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32()),
        pa.field("time_s", pa.float64()),
        pa.field("valence", pa.float32()),
        pa.field("arousal", pa.float32()),
    ]
)


@dataclass(frozen=True)
class LabelTrack:
    """One dimension of one label file, as read (no cleaning yet).

    Attributes
    ----------
    dimension : {"valence", "arousal"}
    source : str
        The label file (for messages and provenance).
    kind : {"frame", "time"}
        Whether ``index`` holds frame indices or times in seconds.
    index : (K,) int64 or float64
        Frame index (kind "frame") or time in seconds (kind "time") of each sample.
    values : (K,) float64
        Values as in the file; NaN where the file has NaN, ``?`` or an empty cell.
    lines : (K,) int64
        1-based line number of each sample in ``source``.
    """

    dimension: str
    source: str
    kind: Literal["frame", "time"]
    index: np.ndarray
    values: np.ndarray
    lines: np.ndarray


@dataclass(frozen=True)
class TrackStats:
    """What happened to one track on its way to the frames (stored in the labels metadata)."""

    source: str
    kind: str
    samples: int
    source_nan: int
    source_unlabelled: int
    samples_outside_video: int
    nan_frames: int
    drift_s: float
    label_extent: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- pure array functions ------------------------------------------------------------------------
def mask_unlabelled(values: np.ndarray, *, sentinel: float | None) -> tuple[np.ndarray, int, int]:
    """Replace the unlabelled sentinel by NaN.

    Parameters
    ----------
    values : (K,) float64
    sentinel : float or None
        Value that means "not annotated" (exact match), or None.

    Returns
    -------
    cleaned : (K,) float64
        Copy with NaN where the input was NaN or the sentinel.
    n_nan : int
        Samples that were NaN in the input.
    n_sentinel : int
        Samples equal to the sentinel.
    """
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    sent = (values == sentinel) if sentinel is not None else np.zeros_like(nan)
    cleaned = values.copy()
    cleaned[sent] = np.nan
    return cleaned, int(nan.sum()), int(sent.sum())


def out_of_range(values: np.ndarray, *, lo: float = VALUE_RANGE[0], hi: float = VALUE_RANGE[1]) -> np.ndarray:
    """Indices of finite values outside ``[lo, hi]`` (with ``RANGE_TOL``), or of infinite values.

    Parameters
    ----------
    values : (K,) float64

    Returns
    -------
    (M,) int64
    """
    values = np.asarray(values, dtype=np.float64)
    bad = np.isinf(values) | (values < lo - RANGE_TOL) | (values > hi + RANGE_TOL)
    return np.flatnonzero(bad)


def frames_from_indexed(frames: np.ndarray, values: np.ndarray, *, n_frames: int) -> np.ndarray:
    """Place per-frame samples on frames ``0..n_frames-1``.

    Parameters
    ----------
    frames : (K,) int64
        Frame index of each sample; unique and >= 0 (checked by the caller).
    values : (K,) float64
    n_frames : int

    Returns
    -------
    (n_frames,) float64
        ``values[k]`` at ``frames[k]``; NaN for frames without a sample. Samples at frames >= n_frames
        are not placed (the caller counts them).
    """
    out = np.full(n_frames, np.nan, dtype=np.float64)
    frames = np.asarray(frames, dtype=np.int64)
    inside = frames < n_frames
    out[frames[inside]] = np.asarray(values, dtype=np.float64)[inside]
    return out


def interpolate_to_frames(
    times: np.ndarray, values: np.ndarray, frame_times: np.ndarray, *, gap_factor: float
) -> np.ndarray:
    """Linear interpolation of time-stamped samples at frame times, NaN outside the labelled span.

    Parameters
    ----------
    times : (K,) float64
        Sample times in seconds, strictly increasing (checked by the caller).
    values : (K,) float64
        NaN marks an unlabelled sample; it makes the frames on both adjacent intervals NaN.
    frame_times : (N,) float64
        Times at which to evaluate.
    gap_factor : float
        Neighbouring samples further apart than ``gap_factor * median(diff(times))`` bound a gap:
        frames strictly inside it are NaN.

    Returns
    -------
    (N,) float64
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    frame_times = np.asarray(frame_times, dtype=np.float64)
    out = np.full(frame_times.shape, np.nan, dtype=np.float64)
    if times.size == 0:
        return out
    # Frames that coincide with a sample take its value.
    near = np.clip(np.searchsorted(times, frame_times), 0, times.size - 1)
    prev = np.clip(near - 1, 0, times.size - 1)
    nearest = np.where(np.abs(times[prev] - frame_times) < np.abs(times[near] - frame_times), prev, near)
    exact = np.abs(times[nearest] - frame_times) <= TIME_EPS_S
    out[exact] = values[nearest[exact]]
    if times.size < 2:
        return out
    # Others: between samples left = j and right = j + 1.
    j = np.searchsorted(times, frame_times, side="right") - 1
    inside = ~exact & (j >= 0) & (j < times.size - 1)
    jl = j[inside]
    t0, t1 = times[jl], times[jl + 1]
    v0, v1 = values[jl], values[jl + 1]
    max_gap = gap_factor * float(np.median(np.diff(times)))
    w = (frame_times[inside] - t0) / (t1 - t0)
    interp = v0 + w * (v1 - v0)  # NaN if either neighbour is NaN
    interp[(t1 - t0) > max_gap] = np.nan
    out[inside] = interp
    return out


# --- checks with file-naming errors -------------------------------------------------------------
def _offenders(track: LabelTrack, idx: np.ndarray, what: str) -> str:
    """``line 12: 1.5, line 40: -3`` for the first offending samples (``what``: "value" or "index")."""
    column = track.values if what == "value" else track.index
    shown = ", ".join(f"line {int(track.lines[i])}: {column[i].item()!r}" for i in idx[:MAX_OFFENDERS_IN_MESSAGE])
    more = len(idx) - MAX_OFFENDERS_IN_MESSAGE
    return shown + (f" (and {more} more)" if more > 0 else "")


def _check_index(track: LabelTrack) -> None:
    idx = track.index
    if track.kind == "frame":
        bad = np.flatnonzero(idx < 0)
        if bad.size:
            raise DatasetError(f"negative frame index ({_offenders(track, bad, 'index')})", path=track.source)
        if idx.size > 1:
            order = np.argsort(idx, kind="stable")
            dup = order[1:][np.diff(idx[order]) == 0]
            if dup.size:
                raise DatasetError(f"frame index given twice ({_offenders(track, dup, 'index')})", path=track.source)
    else:
        bad = np.flatnonzero(~np.isfinite(idx))
        if bad.size:
            raise DatasetError(f"time is not a finite number ({_offenders(track, bad, 'index')})", path=track.source)
        if idx.size > 1:
            bad = np.flatnonzero(np.diff(idx) <= 0) + 1
            if bad.size:
                raise DatasetError(
                    f"times must strictly increase ({_offenders(track, bad, 'index')})", path=track.source
                )


def track_to_frames(
    track: LabelTrack, *, n_frames: int, fps: float, settings: dict[str, Any]
) -> tuple[np.ndarray, TrackStats, list[str]]:
    """Check one track and resample it to frames ``0..n_frames-1`` (times ``frame / fps``).

    Returns
    -------
    values : (n_frames,) float64
    stats : TrackStats
    warnings : list of str
        Each names the label file.

    Raises
    ------
    DatasetError
        Naming the file: values outside [-1, 1], a bad index, or a label length further from the video
        than ``label_drift_error_s``.
    """
    warnings: list[str] = []
    if track.values.size == 0:
        raise DatasetError(f"no {track.dimension} samples in the label file", path=track.source)
    _check_index(track)
    values, n_nan, n_sent = mask_unlabelled(track.values, sentinel=settings["unlabelled_value"])
    bad = out_of_range(values)
    if bad.size:
        raise DatasetError(
            f"{bad.size} {track.dimension} value(s) outside [-1, 1] ({_offenders(track, bad, 'value')})",
            path=track.source,
            hint="labels must be in [-1, 1]; unlabelled samples must be NaN, empty"
            + (f" or {settings['unlabelled_value']:g}" if settings["unlabelled_value"] is not None else ""),
        )
    if track.kind == "frame":
        frames = track.index.astype(np.int64)
        out = frames_from_indexed(frames, values, n_frames=n_frames)
        n_label = int(frames.max()) + 1
        outside = int((frames >= n_frames).sum())
        drift_s = abs(n_label - n_frames) / fps
        extent = f"{n_label} label frames (0..{n_label - 1}) vs {n_frames} video frames"
    else:
        times = track.index.astype(np.float64)
        frame_times = np.arange(n_frames, dtype=np.float64) / fps
        out = interpolate_to_frames(times, values, frame_times, gap_factor=settings["label_gap_factor"])
        last_frame_t = (n_frames - 1) / fps if n_frames else 0.0
        outside = int(((times < -TIME_EPS_S) | (times > last_frame_t + TIME_EPS_S)).sum())
        drift_s = max(abs(float(times[0])), abs(float(times[-1]) - last_frame_t))
        extent = (
            f"labels span {times[0]:.3f}-{times[-1]:.3f} s vs video frames 0-{last_frame_t:.3f} s "
            f"({n_frames} frames at {fps:g} fps)"
        )
    if drift_s > settings["label_drift_error_s"] + 1e-9:
        raise DatasetError(
            f"label length does not match the video: {extent}, a difference of {drift_s:.3f} s "
            f"(more than label_drift_error_s = {settings['label_drift_error_s']:g} s)",
            path=track.source,
            hint="check that the label file belongs to this video, or raise `label_drift_error_s` in the dataset config",
        )
    if drift_s > settings["label_drift_warn_s"] + 1e-9:
        warnings.append(
            f"{track.source}: label length differs from the video: {extent} ({drift_s:.3f} s); "
            "frames without a label are NaN, samples beyond the last frame are not used"
        )
    if n_nan or n_sent:
        parts = []
        if n_sent:
            parts.append(f"{n_sent} marked unlabelled ({settings['unlabelled_value']:g})")
        if n_nan:
            parts.append(f"{n_nan} NaN/empty")
        warnings.append(
            f"{track.source}: {' and '.join(parts)} of {values.size} {track.dimension} samples; they are NaN in the labels"
        )
    stats = TrackStats(
        source=track.source,
        kind=track.kind,
        samples=int(values.size),
        source_nan=n_nan,
        source_unlabelled=n_sent,
        samples_outside_video=outside,
        nan_frames=int(np.isnan(out).sum()),
        drift_s=round(float(drift_s), 6),
        label_extent=extent,
    )
    return out, stats, warnings


def assemble_labels(
    tracks: list[LabelTrack] | None,
    *,
    n_frames: int,
    fps: float,
    settings: dict[str, Any],
    metadata: dict[str, str] | None = None,
    note: str = "",
) -> tuple[pa.Table, list[str]]:
    """Build the labels table (``frame, time_s, valence, arousal``) with its provenance metadata.

    Parameters
    ----------
    tracks : list of LabelTrack or None
        One per dimension (``valence`` and ``arousal`` both required), or None for a video without
        labels (all NaN, with ``note`` in the metadata).
    n_frames : int
        Container-reported frame count of the video.
    fps : float
    settings : dict
        The validated dataset settings (``label_*`` and ``unlabelled_value`` keys).
    metadata : dict, optional
        Extra provenance (adapter, video, ...) merged into the schema metadata.

    Returns
    -------
    table : pyarrow.Table
        ``frame`` int32, ``time_s`` float64 (= frame / fps), ``valence``/``arousal`` float32 (NaN where
        unlabelled); schema metadata holds the provenance (JSON-encoded where structured).
    warnings : list of str
        One line each, naming the label file.
    """
    frames = np.arange(n_frames, dtype=np.int32)
    columns = {d: np.full(n_frames, np.nan, dtype=np.float64) for d in DIMENSIONS}
    stats: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    kinds = []
    if tracks is not None:
        by_dim = {t.dimension: t for t in tracks}
        missing = [d for d in DIMENSIONS if d not in by_dim]
        if missing:
            raise DatasetError(f"no {' or '.join(missing)} labels", path=tracks[0].source if tracks else None)
        for dim in DIMENSIONS:
            columns[dim], st, w = track_to_frames(by_dim[dim], n_frames=n_frames, fps=fps, settings=settings)
            stats[dim] = st.as_dict()
            kinds.append(st.kind)
            warnings.extend(x for x in w if x not in warnings)
    table = pa.table(
        {
            "frame": pa.array(frames, pa.int32()),
            "time_s": pa.array(frames.astype(np.float64) / fps, pa.float64()),
            "valence": pa.array(columns["valence"].astype(np.float32), pa.float32()),
            "arousal": pa.array(columns["arousal"].astype(np.float32), pa.float32()),
        },
        schema=LABELS_SCHEMA,
    )
    kind = kinds[0] if kinds and len(set(kinds)) == 1 else ("none" if not kinds else "mixed")
    meta = dict(metadata or {})
    meta.update(
        {
            "resampling": RESAMPLING_TEXT.get(kind, "; ".join(RESAMPLING_TEXT[k] for k in dict.fromkeys(kinds))),
            "n_frames": str(n_frames),
            "fps": repr(float(fps)),
            "nan_frames_valence": str(int(np.isnan(columns["valence"]).sum())),
            "nan_frames_arousal": str(int(np.isnan(columns["arousal"]).sum())),
            "tracks": json.dumps(stats, sort_keys=True),
            "warnings": json.dumps(warnings),
            "label_settings": json.dumps(
                {k: settings[k] for k in sorted(settings) if k.startswith("label_") or k == "unlabelled_value"},
                sort_keys=True,
            ),
            "note": note,
        }
    )
    table = table.replace_schema_metadata({k.encode(): str(v).encode() for k, v in meta.items()})
    return table, warnings


# --- the per-video labels file (results/{ds}/labels/{video}.parquet, written from assemble_labels) ---
@dataclass
class Labels:
    """One video's labels on its frames, as :func:`read_labels` read them."""

    frame: np.ndarray  # (n,) int64, 0..n-1
    time_s: np.ndarray  # (n,) float64
    values: np.ndarray  # (n, 2) float32 (valence, arousal), NaN = unlabelled

    @property
    def n_frames(self) -> int:
        return int(self.frame.shape[0])


def read_labels(path: str | os.PathLike) -> Labels:
    """Read and check one video's labels file (:data:`LABELS_SCHEMA`; the one reader of that file).

    Raises
    ------
    DatasetError
        Naming the file: it does not exist or is not Parquet, a column is missing, ``frame`` is not
        exactly ``0..n-1`` in order, or a label is infinite.
    """
    from affpipe.io.parquet import read_table

    path = Path(path)
    if not path.is_file():
        raise DatasetError("labels file does not exist", path=path,
                           hint="the manifest stage writes every video's labels (`affpipe manifest --labels-dir`)")
    try:
        table = read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for what is not Parquet
        raise DatasetError(f"cannot read the labels file as Parquet ({exc})", path=path) from None
    missing = [c for c in LABELS_SCHEMA.names if c not in table.column_names]
    if missing:
        raise DatasetError(f"labels file lacks column(s) {', '.join(missing)}", path=path)
    frame = table["frame"].to_numpy().astype(np.int64)
    if not np.array_equal(frame, np.arange(frame.size)):
        raise DatasetError("labels `frame` column is not 0..n-1 in order", path=path)
    values = np.stack(
        [table[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in DIMENSIONS], axis=1
    )
    if np.isinf(values).any():
        raise DatasetError("labels hold infinite values", path=path)
    time_s = table["time_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    return Labels(frame=frame, time_s=time_s, values=values)
