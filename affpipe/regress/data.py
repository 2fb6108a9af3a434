"""Reading what the regressors need: the manifest, per-video labels and features stores.

Inputs (the contracts of the earlier stages):

* ``results/{ds}/manifest.parquet``: ``video``, ``partition`` (train/devel/test), ``fps``, ...
* ``results/{ds}/labels/{video}.parquet``: ``frame`` (0..n-1), ``time_s``, ``valence``, ``arousal``
  (float32, NaN = unlabelled).
* ``results/{ds}/features/{input}/{video}.h5`` (an affpipe HDF5 store): ``features`` (n, D)
  float16/float32, ``frame`` (n,) int32, ``valid`` (n,) bool and, from the per-frame CNN,
  optionally ``pred`` (n, 2) = its own (valence, arousal) prediction.

Only valid rows are used. A valid row whose frame lies beyond the labels file (a label track
shorter than the video) cannot be scored and is left out; the number is counted and reported.

Memory: a video's valid feature rows are either read into RAM once (:meth:`FeatureSource.load`,
in the stored dtype) or read from the file on demand, window by window (:meth:`FeatureSource.rows`),
so a training set larger than ``regression.max_memory_gb`` still trains with bounded memory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from affpipe.errors import AffpipeError, DatasetError

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("valence", "arousal")
FEATURES_DATASET = "features"
PRED_DATASET = "pred"
#: HDF5 chunk cache per open features file when reading on demand (bytes)
CHUNK_CACHE_BYTES = 64 * 1024 * 1024
GIB = 1024 ** 3


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Manifest rows (dicts), sorted by video id; checks the columns this stage uses."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DatasetError("manifest does not exist (run `affpipe manifest` first)", path=path) from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the manifest ({exc})", path=path) from None
    missing = {"video", "partition", "fps"} - set(table.column_names)
    if missing:
        raise DatasetError(f"manifest lacks column(s) {', '.join(sorted(missing))}", path=path)
    rows = sorted(table.to_pylist(), key=lambda r: r["video"])
    for r in rows:
        if r["partition"] not in ("train", "devel", "test"):
            raise DatasetError(f"video {r['video']!r} has unknown partition {r['partition']!r}", path=path)
    return rows


@dataclass
class Labels:
    """One video's labels on its frames."""

    frame: np.ndarray  # (n,) int64, 0..n-1
    time_s: np.ndarray  # (n,) float64
    values: np.ndarray  # (n, 2) float32 (valence, arousal), NaN = unlabelled

    @property
    def n_frames(self) -> int:
        return int(self.frame.shape[0])


def read_labels(path: str | os.PathLike) -> Labels:
    """Read and check a labels file (``frame`` must be exactly 0..n-1)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DatasetError("labels file does not exist", path=path) from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the labels file ({exc})", path=path) from None
    missing = {"frame", "time_s", *LABEL_COLUMNS} - set(table.column_names)
    if missing:
        raise DatasetError(f"labels file lacks column(s) {', '.join(sorted(missing))}", path=path)
    frame = table["frame"].to_numpy().astype(np.int64)
    if not np.array_equal(frame, np.arange(frame.size)):
        raise DatasetError("labels `frame` column is not 0..n-1 in order", path=path)
    values = np.stack(
        [table[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in LABEL_COLUMNS], axis=1
    )
    if np.isinf(values).any():
        raise DatasetError("labels hold infinite values", path=path)
    time_s = table["time_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    return Labels(frame=frame, time_s=time_s, values=values)


class FeatureSource:
    """The valid rows of one features store, read into memory or on demand.

    Parameters
    ----------
    path : path
        ``results/{ds}/features/{input}/{video}.h5``.
    dataset : str
        ``"features"`` (sequence regressors) or ``"pred"`` (per-frame CNN predictions).
    max_frame : int, optional
        Rows whose frame is ``>= max_frame`` are left out (beyond the labels); counted in
        :attr:`beyond`.

    Attributes
    ----------
    frames : (k,) int64
        Frames of the used valid rows, strictly increasing.
    dim : int
        Row width (D).
    beyond : int
        Valid rows left out because their frame is beyond the labels.
    attrs : dict
        The store's file attributes (provenance; e.g. the backbone).
    """

    def __init__(self, path: str | os.PathLike, *, dataset: str = FEATURES_DATASET, max_frame: int | None = None):
        from affpipe.io.h5store import StoreReader

        self.path = Path(path)
        self.dataset = dataset
        with StoreReader(self.path) as reader:
            if dataset not in reader:
                if dataset == PRED_DATASET:
                    raise AffpipeError(
                        "features store has no `pred` dataset (the per-frame CNN's own predictions)",
                        path=self.path,
                        hint="the `cnn` regressor needs a features store written with predictions; "
                        "use a sequence regressor such as `bgru` for this input",
                    )
                raise AffpipeError(f"features store has no `{dataset}` dataset", path=self.path)
            ds = reader[dataset]
            if ds.ndim != 2 or ds.dtype.kind != "f":
                raise AffpipeError(
                    f"dataset `{dataset}` must be (n, D) float16/float32, got shape {ds.shape} {ds.dtype}",
                    path=self.path,
                )
            if dataset == PRED_DATASET and ds.shape[1] != len(LABEL_COLUMNS):
                raise AffpipeError(f"dataset `pred` must have 2 columns (valence, arousal), got {ds.shape[1]}",
                                   path=self.path)
            self.dim = int(ds.shape[1])
            self.dtype = np.dtype(ds.dtype)
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in reader.h5.attrs.items()}
            frames = reader.frames.astype(np.int64)
            valid = reader.valid
        if frames.size and np.any(np.diff(frames) <= 0):
            raise AffpipeError("features store's `frame` is not strictly increasing", path=self.path)
        rows = np.flatnonzero(valid)
        if np.any(frames[rows] < 0):
            raise AffpipeError("features store has negative frame indices", path=self.path)
        keep = np.ones(rows.size, dtype=bool)
        if max_frame is not None:
            keep = frames[rows] < max_frame
        self.beyond = int((~keep).sum())
        self.rows_in_file = rows[keep]
        self.frames = frames[self.rows_in_file]
        self._cache: np.ndarray | None = None
        self._h5 = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the used rows in the stored dtype."""
        return len(self) * self.dim * self.dtype.itemsize

    def load(self) -> None:
        """Read every used row into memory (stored dtype)."""
        if self._cache is None:
            self._cache = self._read_file_rows(0, len(self))
            self.close()

    def unload(self) -> None:
        self._cache = None

    def _read_file_rows(self, a: int, b: int) -> np.ndarray:
        import h5py

        if b <= a:
            return np.zeros((0, self.dim), dtype=self.dtype)
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
        idx = self.rows_in_file[a:b]
        block = self._h5[self.dataset][int(idx[0]) : int(idx[-1]) + 1]
        out = block[idx - idx[0]]
        if not np.all(np.isfinite(out)):
            bad = self.frames[a:b][~np.all(np.isfinite(out), axis=1)]
            raise AffpipeError(
                f"dataset `{self.dataset}` has non-finite values in valid rows (frames {', '.join(map(str, bad[:5]))}"
                f"{' ...' if bad.size > 5 else ''})",
                path=self.path,
            )
        return out

    def rows(self, a: int, b: int) -> np.ndarray:
        """Used rows ``a..b-1`` (indices into :attr:`frames`), (b-a, D) in the stored dtype."""
        if self._cache is not None:
            return self._cache[a:b]
        return self._read_file_rows(a, b)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


@dataclass
class VideoData:
    """One video as the regressors see it."""

    video: str
    partition: str
    fps: float
    labels: Labels
    source: FeatureSource

    @property
    def frames(self) -> np.ndarray:
        return self.source.frames

    @property
    def targets(self) -> np.ndarray:
        """(k, 2) float32 labels at the valid rows' frames (NaN = unlabelled)."""
        return self.labels.values[self.source.frames]


@dataclass
class Inputs:
    """Where one experiment's inputs live."""

    features_dir: Path
    labels_dir: Path
    dataset: str = FEATURES_DATASET
    files: list[Path] = field(default_factory=list)  # every file read (provenance)

    def features_path(self, video: str) -> Path:
        return self.features_dir / f"{video}.h5"

    def labels_path(self, video: str) -> Path:
        return self.labels_dir / f"{video}.parquet"


def load_videos(rows: Iterable[dict[str, Any]], inputs: Inputs, *, partitions: tuple[str, ...]) -> list[VideoData]:
    """Open the labels and features of every manifest row in ``partitions`` (features not read yet).

    Raises
    ------
    AffpipeError
        Naming the file, when a labels or features file is missing or malformed, or the feature
        width differs between videos.
    """
    out = []
    dim = None
    first = None
    for row in rows:
        if row["partition"] not in partitions:
            continue
        video = row["video"]
        lpath, fpath = inputs.labels_path(video), inputs.features_path(video)
        labels = read_labels(lpath)
        source = FeatureSource(fpath, dataset=inputs.dataset, max_frame=labels.n_frames)
        if dim is None:
            dim, first = source.dim, fpath
        elif source.dim != dim:
            raise AffpipeError(
                f"`{inputs.dataset}` has {source.dim} columns here but {dim} in {first}; all videos of an "
                "input must come from the same model",
                path=fpath,
            )
        if source.beyond:
            log.warning("%s: %d valid rows lie beyond the %d frames of %s and are not used",
                        fpath, source.beyond, labels.n_frames, lpath)
        inputs.files += [lpath, fpath]
        out.append(VideoData(video=video, partition=row["partition"], fps=float(row["fps"] or 0.0),
                             labels=labels, source=source))
    return out


def total_bytes(videos: Iterable[VideoData]) -> int:
    return sum(v.source.nbytes for v in videos)


def train_label_mean(videos: Iterable[VideoData]) -> np.ndarray:
    """(2,) float64 mean of the labelled frames (all frames, not only valid rows) of ``videos``."""
    sums = np.zeros(2)
    counts = np.zeros(2)
    for v in videos:
        vals = v.labels.values.astype(np.float64)
        ok = np.isfinite(vals)
        sums += np.where(ok, vals, 0.0).sum(axis=0)
        counts += ok.sum(axis=0)
    if np.any(counts == 0):
        raise DatasetError("the train partition has no labelled frame for "
                           + " and ".join(c for c, n in zip(LABEL_COLUMNS, counts) if n == 0))
    return sums / counts
