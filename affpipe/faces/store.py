"""The faces table: ``results/{ds}/faces/{video}.parquet``, the contract later stages read.

One row per **decoded** frame, in decode order, never dropped:

============================  =========  ==========================================================
column                        type       meaning
============================  =========  ==========================================================
``frame``                     int32      0-based decode index (row ``i`` has ``frame == i``)
``time_s``                    float64    presentation time from the container, seconds
``status``                    string     ``detected`` / ``tracked`` / ``lost``
``bbox_x0`` .. ``bbox_y1``    float32    box the landmarks were fitted in (full-res px; ``x1, y1``
                                         one past the last pixel; dlib-HOG-like); NaN when lost
``score``                     float32    detected: detector score (hog: SVM margin, cnn: MMOD
                                         confidence, cascade: grouped windows); tracked:
                                         appearance similarity to the last detection (NCC, -1..1);
                                         NaN when lost
``n_faces``                   int16      faces found by a full-frame detection on this frame; -1
                                         where none ran (tracked frames, re-detections restricted
                                         to the region around the face)
``x0`` .. ``x67``             float32    landmark x (px, original frame, dlib 68-point order)
``y0`` .. ``y67``             float32    landmark y; NaN when lost
============================  =========  ==========================================================

Schema metadata (all values strings; structured ones JSON): ``format`` (``affpipe.faces``),
``format_version``, ``affpipe_version``, ``stage``, ``settings`` (validated stage settings),
``side``, ``paired`` (both sides of the video tracked jointly), ``side_conflict_frames`` (paired:
frames where the two tracks were on one face, marked lost ``side_conflict``; else null),
``n_faces_counted_frames`` (frames with an ``n_faces`` count), ``video`` (``{"path", "size", "mtime"}``),
``width``, ``height``, ``fps``, ``n_frames_reported``, ``n_frames_decoded``, ``status_counts``,
``lost_reasons``, ``detect_scale`` (scale of the full-frame detection pass at the end of the video,
1.0 = full resolution), ``detect_full_resolution_from`` (frame from which detection ran at full
resolution because the downscaled pass found no face, or null), ``warnings`` (list of strings),
``created``, ``command``. :func:`read_faces` decodes them.

Readers (all refuse a missing file, a file that is not Parquet and a table without the columns they
need, naming the file): :func:`read_faces` (everything, checked), :func:`read_metadata` (the footer),
:func:`stream_landmarks` (frame, status and landmarks row by row, bounded memory: the static stage),
:func:`read_columns`, :func:`count_frames` and :func:`has_face` (the summary and the evaluation).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from affpipe.errors import DatasetError
from affpipe.faces.landmarks import N_LANDMARKS

FORMAT_NAME = "affpipe.faces"
FORMAT_VERSION = 1
BBOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
X_COLUMNS = tuple(f"x{i}" for i in range(N_LANDMARKS))
Y_COLUMNS = tuple(f"y{i}" for i in range(N_LANDMARKS))
COLUMNS = ("frame", "time_s", "status", *BBOX_COLUMNS, "score", "n_faces", *X_COLUMNS, *Y_COLUMNS)
#: Metadata keys whose values are JSON.
JSON_KEYS = ("settings", "video", "status_counts", "lost_reasons", "warnings", "side", "paired",
             "side_conflict_frames", "n_faces_counted_frames", "detect_scale", "detect_full_resolution_from")


@dataclass
class FacesTrack:
    """A faces table in memory (what :func:`read_faces` returns).

    Attributes
    ----------
    frame : (N,) int32
    time_s : (N,) float64
    status : (N,) str (numpy unicode)
    bbox : (N, 4) float32
    score : (N,) float32
    n_faces : (N,) int16
    points : (N, 68, 2) float32
        NaN where lost.
    metadata : dict
        Decoded schema metadata (see the module docstring).
    """

    frame: np.ndarray
    time_s: np.ndarray
    status: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    n_faces: np.ndarray
    points: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def valid(self) -> np.ndarray:
        """(N,) bool: rows with a face (status not ``lost``)."""
        return self.status != "lost"


def faces_table(track: FacesTrack) -> pa.Table:
    """Build the Arrow table (columns :data:`COLUMNS`, without metadata) from arrays."""
    n = len(track.frame)
    pts = np.asarray(track.points, np.float32).reshape(n, N_LANDMARKS, 2)
    bbox = np.asarray(track.bbox, np.float32).reshape(n, 4)
    cols: dict[str, pa.Array] = {
        "frame": pa.array(np.asarray(track.frame, np.int32)),
        "time_s": pa.array(np.asarray(track.time_s, np.float64)),
        "status": pa.array([str(s) for s in track.status], pa.string()),
    }
    for k, name in enumerate(BBOX_COLUMNS):
        cols[name] = pa.array(bbox[:, k])
    cols["score"] = pa.array(np.asarray(track.score, np.float32))
    cols["n_faces"] = pa.array(np.asarray(track.n_faces, np.int16))
    for i in range(N_LANDMARKS):
        cols[X_COLUMNS[i]] = pa.array(np.ascontiguousarray(pts[:, i, 0]))
    for i in range(N_LANDMARKS):
        cols[Y_COLUMNS[i]] = pa.array(np.ascontiguousarray(pts[:, i, 1]))
    return pa.table(cols)


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Metadata values -> strings (JSON for :data:`JSON_KEYS`), plus the format keys."""
    out = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    for k, v in metadata.items():
        out[k] = json.dumps(v) if k in JSON_KEYS else str(v)
    return out


def write_faces(track: FacesTrack, path: str | os.PathLike) -> None:
    """Write a faces table atomically (``track.metadata`` becomes the schema metadata)."""
    from affpipe.io.atomic import write_parquet

    write_parquet(faces_table(track), path, metadata=encode_metadata(track.metadata))


def _open(path: str | os.PathLike):
    """The faces table as a ``pyarrow.parquet.ParquetFile`` (its footer read, no rows yet).

    Raises
    ------
    DatasetError
        The file is missing or not Parquet.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DatasetError("faces table does not exist", path=path, hint="run the faces stage first")
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for non-parquet input
        raise DatasetError(f"cannot read faces table as Parquet ({exc})", path=path) from None


def _require_columns(names: Sequence[str], needed: Sequence[str], path) -> None:
    missing = [c for c in needed if c not in set(names)]
    if missing:
        raise DatasetError(
            f"faces table lacks column(s) {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}", path=path
        )


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Decoded schema metadata of a faces table (cheap: reads the footer only)."""
    return _decode_metadata(_open(path).schema_arrow.metadata or {}, path)


def count_frames(path: str | os.PathLike) -> int:
    """Rows of a faces table, i.e. the frames its video decodes to (footer only)."""
    return int(_open(path).metadata.num_rows)


def read_columns(path: str | os.PathLike, columns: Sequence[str]) -> pa.Table:
    """Some columns of a faces table (an Arrow table), after checking they are there."""
    pf = _open(path)
    _require_columns(pf.schema_arrow.names, columns, path)
    return pf.read(columns=list(columns))


def has_face(path: str | os.PathLike) -> bool:
    """Whether any frame of the faces table has a face (status not ``lost``)."""
    import pyarrow.compute as pc

    status = read_columns(path, ["status"])["status"]
    return status.length() > 0 and bool(pc.any(pc.not_equal(status, "lost")).as_py())


def stream_landmarks(path: str | os.PathLike, *, batch_rows: int = 256) -> tuple[int, Iterator[tuple[int, str, np.ndarray]]]:
    """Stream ``(frame, status, landmarks)`` of each row, reading ``batch_rows`` rows at a time.

    Parameters
    ----------
    path : path
        ``results/{ds}/faces/{video}.parquet``.
    batch_rows : int, keyword-only
        Rows decoded per read (bounds memory).

    Returns
    -------
    n_rows : int
        Rows of the table.
    rows : iterator of (int, str, (68, 2) float64)
        Frame number, status and landmarks (NaN where lost) of each row, in order. Raises
        :class:`DatasetError` at a row whose ``frame`` is not its row index (one row per decoded
        frame, in order).

    Raises
    ------
    DatasetError
        Missing file, not Parquet, or missing ``frame``/``status``/landmark columns.
    """
    pf = _open(path)
    columns = ["frame", "status", *X_COLUMNS, *Y_COLUMNS]
    _require_columns(pf.schema_arrow.names, columns, path)

    def rows() -> Iterator[tuple[int, str, np.ndarray]]:
        index = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            frames = batch.column("frame").to_numpy(zero_copy_only=False)
            status = batch.column("status").to_pylist()
            xs = np.stack([batch.column(c).to_numpy(zero_copy_only=False) for c in X_COLUMNS], axis=1)
            ys = np.stack([batch.column(c).to_numpy(zero_copy_only=False) for c in Y_COLUMNS], axis=1)
            pts = np.stack([xs, ys], axis=2).astype(np.float64)
            for j in range(len(frames)):
                if int(frames[j]) != index:
                    raise DatasetError(f"faces table row {index} is for frame {int(frames[j])}, expected {index} "
                                       "(one row per decoded frame, in order)", path=path)
                yield index, status[j], pts[j]
                index += 1

    return int(pf.metadata.num_rows), rows()


def _decode_metadata(raw: dict[bytes, bytes], path) -> dict[str, Any]:
    meta = {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW")}
    if meta.get("format") != FORMAT_NAME:
        raise DatasetError(f"not an affpipe faces table (format={meta.get('format')!r})", path=path)
    for k in JSON_KEYS:
        if k in meta:
            meta[k] = json.loads(meta[k])
    return meta


def read_faces(path: str | os.PathLike) -> FacesTrack:
    """Read a faces table into arrays.

    Parameters
    ----------
    path : path
        ``results/{ds}/faces/{video}.parquet``.

    Returns
    -------
    FacesTrack
        ``frame (N,)``, ``status (N,)``, ``points (N, 68, 2)`` float32 (NaN where lost), etc.

    Raises
    ------
    DatasetError
        Missing file, not Parquet, not a faces table, missing columns, or rows not one per frame.
    """
    path = Path(path)
    pf = _open(path)
    meta = _decode_metadata(pf.schema_arrow.metadata or {}, path)
    _require_columns(pf.schema_arrow.names, COLUMNS, path)
    table = pf.read()

    def col(name: str, dtype) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype, copy=False)

    frame = col("frame", np.int32)
    if not np.array_equal(frame, np.arange(len(frame))):
        raise DatasetError("faces table rows are not one per decoded frame in order (frame != row index)", path=path)
    xs = np.stack([col(c, np.float32) for c in X_COLUMNS], axis=1)
    ys = np.stack([col(c, np.float32) for c in Y_COLUMNS], axis=1)
    return FacesTrack(
        frame=frame,
        time_s=col("time_s", np.float64),
        status=np.array(table.column("status").to_pylist(), dtype=str),
        bbox=np.stack([col(c, np.float32) for c in BBOX_COLUMNS], axis=1),
        score=col("score", np.float32),
        n_faces=col("n_faces", np.int16),
        points=np.stack([xs, ys], axis=2),
        metadata=meta,
    )
