"""Reading what the regressors need: the manifest, per-video labels and features stores.

Inputs (the contracts of the earlier stages):

* ``results/{ds}/manifest.parquet``: ``video``, ``partition`` (train/devel/test), ``fps``, ...
* ``results/{ds}/labels/{video}.parquet``: ``frame`` (0..n-1), ``time_s``, ``valence``, ``arousal``
  (float32, NaN = unlabelled).
* ``results/{ds}/features/{input}/{video}.h5`` (an affpipe HDF5 store): ``features`` (n, D)
  float16/float32, ``frame`` (n,) int32, ``valid`` (n,) bool and, from the per-frame CNN,
  optionally ``pred`` (n, 2) = its own (valence, arousal) prediction and the multi-level taps
  ``tap_low`` (n, D_low) and ``tap_high`` (n, D_high) (:mod:`affpipe.cnn.extract`).
* optionally ``results/{ds}/static/{video}.h5``: ``landmarks`` (n, 68, 2), the 68 aligned landmarks
  per frame (a regressor that asks for the pseudo-dataset ``landmarks`` gets them flattened to 136
  columns, (x, y) per point, at each feature row's frame).

A regressor reads one or more datasets of the features store (:attr:`FeatureSource.groups`); their
columns are concatenated per row in the order asked for, so the generic trainer sees one (k, D)
matrix per video and the regressor splits it again by :attr:`FeatureSource.groups`.

Only valid rows are used. A valid row whose frame lies beyond the labels file (a label track
shorter than the video) cannot be scored and is left out; the number is counted and reported. With
landmarks, a valid row whose frame has no valid landmarks in the static store is left out too
(counted in :attr:`FeatureSource.no_landmarks`): nothing is invented.

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

from affpipe.datasets.labels import Labels, read_labels
from affpipe.datasets.manifest import Manifest
from affpipe.datasets.manifest import read_manifest as _read_manifest
from affpipe.errors import AffpipeError, ConfigError, DatasetError

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("valence", "arousal")
FEATURES_DATASET = "features"
PRED_DATASET = "pred"
#: multi-level taps of the per-frame CNN (``cnn.store_taps``)
TAP_DATASETS = ("tap_low", "tap_high")
#: pseudo-dataset: the aligned landmarks of the static store, flattened
LANDMARKS_INPUT = "landmarks"
#: landmarks per frame and coordinates per landmark in the static store
N_LANDMARKS, LANDMARK_COORDS = 68, 2
#: HDF5 chunk cache per open features file when reading on demand (bytes)
CHUNK_CACHE_BYTES = 64 * 1024 * 1024
GIB = 1024 ** 3


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest (:func:`affpipe.datasets.manifest.read_manifest`: rows sorted by video id, checked),
    with the columns this stage reads (``fps`` besides ``video`` and ``partition``)."""
    return _read_manifest(path, columns=("fps",))


class FeatureSource:
    """The valid rows of one features store, read into memory or on demand.

    Parameters
    ----------
    path : path
        ``results/{ds}/features/{input}/{video}.h5``.
    dataset : str or sequence of str
        ``"features"`` (sequence regressors), ``"pred"`` (per-frame CNN predictions), or several
        datasets of the store (e.g. ``("features", "tap_high", "tap_low")``) whose columns are
        concatenated per row in this order.
    max_frame : int, optional
        Rows whose frame is ``>= max_frame`` are left out (beyond the labels); counted in
        :attr:`beyond`.
    landmarks : path, optional
        A static store (``results/{ds}/static/{video}.h5``): its aligned landmarks at each row's
        frame are appended as 136 more columns (group ``landmarks``); rows without valid landmarks
        are left out (:attr:`no_landmarks`).

    Attributes
    ----------
    frames : (k,) int64
        Frames of the used valid rows, strictly increasing.
    dim : int
        Row width (D).
    groups : list of (str, int)
        ``(dataset, width)`` of the column groups of a row, in order (widths sum to ``dim``).
    beyond : int
        Valid rows left out because their frame is beyond the labels.
    no_landmarks : int
        Valid rows left out because their frame has no valid landmarks (only with ``landmarks``).
    attrs : dict
        The store's file attributes (provenance; e.g. the backbone).
    """

    def __init__(self, path: str | os.PathLike, *, dataset: str | tuple[str, ...] = FEATURES_DATASET,
                 max_frame: int | None = None, landmarks: str | os.PathLike | None = None):
        from affpipe.io.h5store import StoreReader

        self.path = Path(path)
        self.datasets = (dataset,) if isinstance(dataset, str) else tuple(dataset)
        if not self.datasets or LANDMARKS_INPUT in self.datasets:
            raise ValueError(f"dataset must name one or more datasets of the features store, got {dataset!r}")
        self.dataset = "+".join(self.datasets)
        self.groups: list[tuple[str, int]] = []
        dtypes = []
        with StoreReader(self.path, stage="features") as reader:  # written by affpipe.cnn.extract
            for name in self.datasets:
                if name not in reader:
                    if name == PRED_DATASET:
                        raise AffpipeError(
                            "features store has no `pred` dataset (the per-frame CNN's own predictions)",
                            path=self.path,
                            hint="the `cnn` regressor needs a features store written with predictions (a model "
                            "extracted with cnn.mode: pretrained has none); use a sequence regressor such as `bgru` "
                            "for this input",
                        )
                    if name in TAP_DATASETS:
                        raise AffpipeError(
                            f"features store has no `{name}` dataset (a multi-level tap of the per-frame CNN)",
                            path=self.path,
                            hint="re-extract the features with cnn.store_taps: true (the default) for this regressor",
                        )
                    raise AffpipeError(f"features store has no `{name}` dataset", path=self.path)
                ds = reader[name]
                if ds.ndim != 2 or ds.dtype.kind != "f":
                    raise AffpipeError(
                        f"dataset `{name}` must be (n, D) float16/float32, got shape {ds.shape} {ds.dtype}",
                        path=self.path,
                    )
                if name == PRED_DATASET and ds.shape[1] != len(LABEL_COLUMNS):
                    raise AffpipeError(f"dataset `pred` must have 2 columns (valence, arousal), got {ds.shape[1]}",
                                       path=self.path)
                self.groups.append((name, int(ds.shape[1])))
                dtypes.append(np.dtype(ds.dtype))
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
        rows = rows[keep]
        self.no_landmarks = 0
        self.landmarks_path: Path | None = None
        self._landmarks: np.ndarray | None = None
        if landmarks is not None:
            self.landmarks_path = Path(landmarks)
            lm = read_landmarks(self.landmarks_path, frames[rows])
            ok = np.all(np.isfinite(lm), axis=1)
            self.no_landmarks = int((~ok).sum())
            rows, self._landmarks = rows[ok], lm[ok]
            self.groups.append((LANDMARKS_INPUT, N_LANDMARKS * LANDMARK_COORDS))
            dtypes.append(np.dtype(np.float32))
        self.dim = int(sum(w for _, w in self.groups))
        self.dtype = np.result_type(*dtypes)
        self.rows_in_file = rows
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
        parts = []
        for name in self.datasets:
            block = self._h5[name][int(idx[0]) : int(idx[-1]) + 1]
            parts.append(block[idx - idx[0]])
        if self._landmarks is not None:
            parts.append(self._landmarks[a:b])
        out = parts[0] if len(parts) == 1 else np.concatenate([p.astype(self.dtype, copy=False) for p in parts], axis=1)
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


def read_landmarks(path: str | os.PathLike, frames: np.ndarray) -> np.ndarray:
    """Aligned landmarks of a static store at the given frames, flattened.

    Parameters
    ----------
    path : path
        ``results/{ds}/static/{video}.h5`` (dataset ``landmarks`` (n, 68, 2), aligned crop pixels).
    frames : (k,) int
        Video frames.

    Returns
    -------
    (k, 136) float32
        ``x0, y0, x1, y1, ...`` per frame; NaN rows where the frame has no row or no valid face.
    """
    from affpipe.io.h5store import STATIC_STAGE, StoreReader

    path = Path(path)
    frames = np.asarray(frames, dtype=np.int64)
    out = np.full((frames.size, N_LANDMARKS * LANDMARK_COORDS), np.nan, dtype=np.float32)
    try:
        reader = StoreReader(path, stage=STATIC_STAGE)
    except AffpipeError as exc:
        raise AffpipeError(f"cannot read the aligned landmarks: {exc}", path=path,
                           hint="regression.multilevel.landmarks needs the static stores (affpipe regress --static)") from None
    with reader:
        if LANDMARKS_INPUT not in reader:
            raise AffpipeError("static store has no `landmarks` dataset", path=path)
        ds = reader[LANDMARKS_INPUT]
        if ds.shape[1:] != (N_LANDMARKS, LANDMARK_COORDS):
            raise AffpipeError(f"`landmarks` must be (n, {N_LANDMARKS}, {LANDMARK_COORDS}), got {ds.shape}", path=path)
        sframes = reader.frames.astype(np.int64)
        svalid = reader.valid.astype(bool)
        if sframes.size == 0:
            return out
        if np.any(np.diff(sframes) <= 0):
            raise AffpipeError("static store's `frame` is not strictly increasing", path=path)
        pos = np.minimum(np.searchsorted(sframes, frames), sframes.size - 1)
        hit = (sframes[pos] == frames) & svalid[pos]
        if hit.any():
            values = ds[...].reshape(sframes.size, -1).astype(np.float32)
            out[hit] = values[pos[hit]]
    return out


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
    dataset: str | tuple[str, ...] = FEATURES_DATASET  # may include LANDMARKS_INPUT (read from static_dir)
    files: list[Path] = field(default_factory=list)  # every file read (provenance)
    static_dir: Path | None = None  # results/{ds}/static, for LANDMARKS_INPUT

    def features_path(self, video: str) -> Path:
        return self.features_dir / f"{video}.h5"

    def static_path(self, video: str) -> Path:
        if self.static_dir is None:
            raise ConfigError("this regressor reads the aligned landmarks (regression.multilevel.landmarks: true) "
                              "but no static-store folder was given",
                              hint="pass --static results/DS/static to `affpipe regress`, or set the landmarks key to false")
        return Path(self.static_dir) / f"{video}.h5"

    def split(self) -> tuple[tuple[str, ...], bool]:
        """(datasets of the features store, whether the landmarks are appended)."""
        names = (self.dataset,) if isinstance(self.dataset, str) else tuple(self.dataset)
        with_lm = LANDMARKS_INPUT in names
        if with_lm and names[-1] != LANDMARKS_INPUT:
            raise ValueError(f"`{LANDMARKS_INPUT}` must come last in the inputs, got {names}")
        return tuple(n for n in names if n != LANDMARKS_INPUT), with_lm

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
        names, with_lm = inputs.split()
        spath = inputs.static_path(video) if with_lm else None
        source = FeatureSource(fpath, dataset=names if len(names) > 1 else names[0], max_frame=labels.n_frames,
                               landmarks=spath)
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
        if source.no_landmarks:
            log.warning("%s: %d valid rows have no valid aligned landmarks in %s and are not used",
                        fpath, source.no_landmarks, spath)
        inputs.files += [lpath, fpath] + ([spath] if spath is not None else [])
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
