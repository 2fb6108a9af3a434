"""SFA frames of a set of static stores, and the centred windows used to train and evaluate DRs.

:func:`videos_from_manifest` / :func:`videos_from_paths` describe the videos (static store, frame
rate, which rows are valid); :func:`build_windows` lists every usable window of N = 2T+1 valid
frames; :class:`FrameStore` serves the uint8 SFA rows of those windows, either from memory (all
stores loaded once, when they fit in ``cache_mb``) or read lazily from the HDF5 files (one chunk
per frame; a handle per process, so it also works in DataLoader worker processes).

Invalid static rows (no face) are never served as part of a window: :func:`build_windows` only
keeps windows whose 2T+1 sampled frames are all valid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from affpipe.dr import windows as win
from affpipe.errors import AffpipeError, DatasetError

#: bytes per MiB (``cache_mb``)
MIB = 1 << 20
#: the frame rate read from ``time_s`` uses the median spacing of at most this many frames
FPS_SAMPLE_FRAMES = 10_000


@dataclass(frozen=True)
class VideoInfo:
    """One video's static store and what the DR stages need to know about it.

    Attributes
    ----------
    video : str
        Video id (manifest ``video``, or the store's file stem).
    path : Path
        Static store (``results/{ds}/static/{video}.h5``).
    partition : str
        ``train``/``devel``/``test`` (``""`` when unknown).
    fps : float
        Frame rate (manifest ``fps``, else from the store's ``time_s``).
    size : int
        Side S of the SFA images.
    frames : (n,) int64
        ``frame`` dataset.
    valid : (n,) bool
        ``valid`` dataset.
    """

    video: str
    path: Path
    partition: str
    fps: float
    size: int
    frames: np.ndarray
    valid: np.ndarray


def fps_from_times(frames: np.ndarray, times: np.ndarray) -> float:
    """Frame rate from presentation times: 1 / median(Δtime / Δframe); NaN when undetermined.

    Parameters
    ----------
    frames : (n,) int
    times : (n,) float
        Seconds.
    """
    f = np.asarray(frames, dtype=np.float64)[:FPS_SAMPLE_FRAMES]
    t = np.asarray(times, dtype=np.float64)[:FPS_SAMPLE_FRAMES]
    ok = np.isfinite(t)
    f, t = f[ok], t[ok]
    if f.size < 2:
        return float("nan")
    step = np.diff(t) / np.diff(f)
    step = step[np.isfinite(step) & (step > 0)]
    return float(1.0 / np.median(step)) if step.size else float("nan")


def read_video_info(path: str | os.PathLike, *, video: str | None = None, partition: str = "", fps: float | None = None) -> VideoInfo:
    """Open a static store (layout-checked) and describe it.

    Parameters
    ----------
    path : path
        Static store.
    video : str, optional
        Id; default the file stem.
    partition : str
    fps : float, optional
        Frame rate; when None or not finite it is read from the store's ``time_s``.

    Raises
    ------
    AffpipeError
        Naming the file when it is not a complete static store, or its frame rate is unknown.
    """
    from affpipe.io.h5store import open_static

    path = Path(path)
    with open_static(path) as r:
        size = int(r.h5.attrs["size"])
        frames = r.frames.astype(np.int64)
        valid = r.valid.copy()
        if fps is None or not np.isfinite(fps) or fps <= 0:
            fps = fps_from_times(frames, r["time_s"][: min(r.n_rows, FPS_SAMPLE_FRAMES)])
    if frames.size and np.any(np.diff(frames) <= 0):
        raise AffpipeError("static store's frame indices are not strictly increasing", path=path)
    if not (np.isfinite(fps) and fps > 0):
        raise AffpipeError("frame rate unknown (no manifest fps, and time_s does not give one)", path=path)
    return VideoInfo(video or path.stem, path, partition, float(fps), size, frames, valid)


def videos_from_manifest(manifest: str | os.PathLike, static_dir: str | os.PathLike, *, partitions: Sequence[str]) -> list[VideoInfo]:
    """The videos of the given partitions, with their static stores ``static_dir/{video}.h5``.

    Raises
    ------
    DatasetError
        Naming the static store that is missing (every listed video must have one).
    """
    from affpipe.datasets.manifest import read_manifest

    static_dir = Path(static_dir)
    out = []
    for row in read_manifest(manifest, columns=("fps",)):
        if row["partition"] not in partitions:
            continue
        path = static_dir / f"{row['video']}.h5"
        if not path.is_file():
            raise DatasetError(
                f"static store of video {row['video']!r} (partition {row['partition']}) does not exist",
                path=path, hint="run the static stage for this dataset first",
            )
        fps = row["fps"]
        out.append(read_video_info(path, video=row["video"], partition=row["partition"], fps=None if fps is None else float(fps)))
    return sorted(out, key=lambda v: v.video)


def videos_from_paths(paths: Sequence[str | os.PathLike]) -> list[VideoInfo]:
    """Videos given directly as static stores (id = file stem, frame rate from ``time_s``)."""
    return [read_video_info(p) for p in paths]


@dataclass(frozen=True)
class WindowSet:
    """Usable centred windows of a list of videos.

    Attributes
    ----------
    T : int
    video : (k,) int64
        Index into the video list.
    centre : (k,) int64
        Video frame of each window's centre.
    rows : (k, 2T+1) int64
        Store rows of each window's frames (oldest first).
    stride : (k,) int64
        Stride (video frames) used for each window's video.
    """

    T: int
    video: np.ndarray
    centre: np.ndarray
    rows: np.ndarray
    stride: np.ndarray

    def __len__(self) -> int:
        return int(self.video.size)

    def subset(self, index: np.ndarray) -> "WindowSet":
        index = np.asarray(index, dtype=np.int64)
        return WindowSet(self.T, self.video[index], self.centre[index], self.rows[index], self.stride[index])

    def per_video_counts(self, n_videos: int) -> np.ndarray:
        """(n_videos,) int64 windows per video."""
        return np.bincount(self.video, minlength=n_videos)


def build_windows(videos: Sequence[VideoInfo], *, T: int, stride: int, reference_fps: float) -> WindowSet:
    """Every window of 2T+1 valid frames, video by video (stride scaled by each video's frame rate)."""
    vids, centres, rows, strides = [], [], [], []
    for i, v in enumerate(videos):
        s = win.effective_stride(stride, v.fps, reference_fps=reference_fps)
        c, r = win.valid_centres(v.frames, v.valid, T=T, stride=s)
        vids.append(np.full(c.size, i, dtype=np.int64))
        centres.append(c)
        rows.append(r)
        strides.append(np.full(c.size, s, dtype=np.int64))
    n = 2 * T + 1
    cat = lambda parts, shape: np.concatenate(parts) if parts else np.zeros(shape, np.int64)  # noqa: E731
    return WindowSet(T, cat(vids, (0,)), cat(centres, (0,)), cat(rows, (0, n)), cat(strides, (0,)))


class FrameStore:
    """uint8 SFA rows of a list of static stores.

    Parameters
    ----------
    videos : sequence of VideoInfo
        All of the same image size.
    cache_mb : float, keyword-only
        Load every store's SFA into memory when their total size is at most this (MiB); otherwise
        read rows from the files on demand.
    """

    def __init__(self, videos: Sequence[VideoInfo], *, cache_mb: float):
        self.videos = list(videos)
        sizes = {v.size for v in self.videos}
        if len(sizes) > 1:
            listing = ", ".join(f"{v.path} ({v.size})" for v in self.videos[:6])
            raise AffpipeError(f"static stores have different image sizes {sorted(sizes)}: {listing}")
        self.size = sizes.pop() if sizes else 0
        total = sum(v.frames.size for v in self.videos) * self.size * self.size * 3
        self.in_memory = total <= cache_mb * MIB
        self.total_bytes = total
        self._arrays: list[np.ndarray | None] = [None] * len(self.videos)
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    def load(self, *, progress_desc: str | None = None) -> None:
        """Read every store into memory (only when :attr:`in_memory`)."""
        if not self.in_memory:
            return
        from affpipe.io.h5store import open_static
        from affpipe.progress import progress

        it = range(len(self.videos))
        bar = progress(it, desc=progress_desc, unit="video") if progress_desc else it
        for i in bar:
            if self._arrays[i] is None:
                with open_static(self.videos[i].path) as r:
                    self._arrays[i] = r["sfa"][:]

    def _handle(self, i: int):
        import h5py

        if os.getpid() != self._pid:  # forked worker: never share h5py handles across processes
            self._handles = {}
            self._pid = os.getpid()
        h = self._handles.get(i)
        if h is None:
            h = h5py.File(self.videos[i].path, "r")
            self._handles[i] = h
        return h

    def rows(self, i: int, rows: np.ndarray) -> np.ndarray:
        """SFA rows of video ``i``.

        Parameters
        ----------
        rows : (...) int
            Store rows (any shape).

        Returns
        -------
        (*rows.shape, S, S, 3) uint8
        """
        rows = np.asarray(rows, dtype=np.int64)
        arr = self._arrays[i]
        if arr is not None:
            return arr[rows]
        if self.in_memory:
            self.load()
            return self._arrays[i][rows]
        uniq, inverse = np.unique(rows.ravel(), return_inverse=True)
        data = self._handle(i)["sfa"][uniq]
        return data[inverse].reshape(rows.shape + data.shape[1:])

    def windows(self, ws: WindowSet, index: np.ndarray) -> np.ndarray:
        """Frames of some windows.

        Parameters
        ----------
        ws : WindowSet
        index : (B,) int
            Which windows of ``ws``.

        Returns
        -------
        (B, 2T+1, S, S, 3) uint8
        """
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((index.size, 2 * ws.T + 1, self.size, self.size, 3), dtype=np.uint8)
        vids = ws.video[index]
        for i in np.unique(vids):
            sel = np.flatnonzero(vids == i)
            out[sel] = self.rows(int(i), ws.rows[index[sel]])
        return out

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def __getstate__(self):  # picklable for spawned DataLoader workers: no open handles
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
