"""Frame index over a dataset's HDF5 stores and labels, and the bounded-memory torch Dataset.

:func:`build_index` opens every store an input needs for each video (static / dynamic / dr, see
:mod:`affpipe.cnn.inputs`), checks the datasets, and lines the stores up by video frame:

* the rows of the *primary* store (the first store the input reads: ``dynamic`` for ``dfm`` and
  ``dfa+dfs``, ``static`` for ``sfa`` and ``mdr``) are the index rows, one per stored row, in order;
* a row is ``valid`` when every store has a row for that frame and all of them are valid there (so a
  two-branch pair has a valid row only where both branches have an image); invalid rows are kept so
  the feature files keep one row per source row, but they are never read or fed to a network;
* ``targets`` are the (valence, arousal) labels of the row's frame (NaN where unlabelled or when the
  video has no labels file).

:class:`FrameDataset` returns, per sample, one ``(C, H, W)`` float32 array per branch and the
``(2,)`` target. It reads one row (one HDF5 chunk) per image through :class:`StoreReader`, keeping a
small LRU of open files per process, so memory is bounded on datasets of any size. When the encoded
images of the samples fit a byte budget, :func:`preload` reads them once into memory instead
(:class:`EncodedCache`, the stored encoding: uint8 + per-row scale/offset, float16 or uint8).

Training reads every sample once per epoch. When the network inputs themselves (float32, resized to
``input_size``) fit the budget too, :func:`network_inputs` computes them once from the encoded cache
and :func:`tensor_batches` serves every epoch's batches from them: decoding, scaling and the
antialiased resize then run once per sample instead of once per sample and epoch. The batches hold
the same values as :func:`make_loader`'s, resized by the same function (``tests/test_cnn_data.py``).
"""

from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from affpipe.cnn.inputs import STORE_STAGES, Component, InputSpec, branch_tensor, channel_stats
from affpipe.datasets.labels import read_labels
from affpipe.errors import AffpipeError
from affpipe.io.h5store import StoreReader

log = logging.getLogger(__name__)

#: Open store files kept per process by a streaming :class:`FrameDataset`.
MAX_OPEN_FILES = 32
#: Rows read per h5py call when preloading.
PRELOAD_ROWS = 256
#: Samples converted (and resized) per step by :func:`network_inputs`.
NETWORK_BLOCK_ROWS = 64
#: Bytes per value of :func:`network_inputs` (float32).
NETWORK_ITEMSIZE = 4


@dataclass
class VideoStores:
    """The files of one video.

    Attributes
    ----------
    video : str
        Video id (manifest ``video``).
    paths : dict
        Store kind (``static`` / ``dynamic`` / ``dr``) -> ``.h5`` path, for every store the input needs.
    labels : Path or None
        ``results/{ds}/labels/{video}.parquet``; None = no labels (targets NaN).
    partition : str
    """

    video: str
    paths: dict[str, Path]
    labels: Path | None = None
    partition: str = ""


@dataclass
class FrameIndex:
    """Rows of an input over many videos (arrays of length ``n``; see the module docstring)."""

    videos: list[VideoStores]
    video: np.ndarray                    # (n,) int32 index into ``videos``
    frame: np.ndarray                    # (n,) int32 video frame
    rows: dict[str, np.ndarray]          # store kind -> (n,) int64 row in that store (-1: no row)
    valid: np.ndarray                    # (n,) bool
    targets: np.ndarray                  # (n, 2) float32, NaN = unlabelled
    size: int                            # image side H = W
    dtypes: dict[str, str] = field(default_factory=dict)  # "store/dataset" -> stored dtype

    def __len__(self) -> int:
        return int(self.frame.size)

    def positions(self, *, partition: str | None = None, labelled: bool = False) -> np.ndarray:
        """Valid rows (optionally of one partition, optionally with at least one finite label)."""
        keep = self.valid.copy()
        if partition is not None:
            parts = np.array([v.partition == partition for v in self.videos], dtype=bool)
            keep &= parts[self.video] if parts.size else np.zeros_like(keep)
        if labelled:
            keep &= np.isfinite(self.targets).any(axis=1)
        return np.flatnonzero(keep)


def _open(path: Path, store: str) -> StoreReader:
    return StoreReader(path, stage=STORE_STAGES[store])


def _align(frames_primary: np.ndarray, frames_other: np.ndarray) -> np.ndarray:
    """Row of each primary frame in the other store (-1 where it has no row)."""
    order = np.argsort(frames_other, kind="stable")
    sorted_frames = frames_other[order]
    pos = np.searchsorted(sorted_frames, frames_primary)
    pos_c = np.minimum(pos, max(sorted_frames.size - 1, 0))
    hit = (pos < sorted_frames.size) & (sorted_frames[pos_c] == frames_primary) if sorted_frames.size else np.zeros(frames_primary.shape, bool)
    return np.where(hit, order[pos_c] if sorted_frames.size else -1, -1).astype(np.int64)


def video_rows(stores: VideoStores, spec: InputSpec) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, int, dict[str, str]]:
    """Line up one video's stores for ``spec``.

    Returns
    -------
    frame : (n,) int32
    rows : dict store -> (n,) int64
    valid : (n,) bool
    size : int
    dtypes : dict "store/dataset" -> dtype name

    Raises
    ------
    AffpipeError
        Naming the file: a store is missing or not what is expected, a dataset is missing or not an
        (n, S, S, 3) image, the stores' image sizes differ, or frame indices repeat.
    """
    size = None
    frames: dict[str, np.ndarray] = {}
    valids: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for store in spec.stores:
        path = stores.paths.get(store)
        if path is None:
            raise AffpipeError(f"input {spec.name!r} needs the {store} store of video {stores.video!r}, none was given")
        with _open(Path(path), store) as r:
            for comp in (c for c in spec.components if c.store == store):
                if comp.dataset not in r:
                    hint = "set cnn.mdr_levels to the DR levels the dr stage writes" if store == "dr" else \
                        "re-run the stage with this dataset kept (e.g. dynamic.keep)"
                    raise AffpipeError(f"dataset {comp.dataset!r} (needed by input {spec.name!r}) is missing", path=path, hint=hint)
                ds = r[comp.dataset]
                if ds.ndim != 4 or ds.shape[3] != comp.channels or ds.shape[1] != ds.shape[2]:
                    raise AffpipeError(f"dataset {comp.dataset!r} has shape {ds.shape}, expected (n, S, S, {comp.channels})", path=path)
                if size is None:
                    size = int(ds.shape[1])
                elif int(ds.shape[1]) != size:
                    raise AffpipeError(f"dataset {comp.dataset!r} is {ds.shape[1]}x{ds.shape[2]}, other images of input "
                                       f"{spec.name!r} are {size}x{size}", path=path)
                dtypes[f"{store}/{comp.dataset}"] = str(ds.dtype)
            f = np.asarray(r.frames, dtype=np.int64)
            if f.size and np.unique(f).size != f.size:
                raise AffpipeError("frame indices repeat", path=path, hint="delete it and re-run the stage that produces it")
            frames[store] = f
            valids[store] = np.asarray(r.valid, dtype=bool)
    primary = spec.stores[0]
    frame = frames[primary]
    rows = {primary: np.arange(frame.size, dtype=np.int64)}
    valid = valids[primary].copy()
    for store in spec.stores[1:]:
        rr = _align(frame, frames[store])
        rows[store] = rr
        valid &= rr >= 0
        valid[rr >= 0] &= valids[store][rr[rr >= 0]]
    return frame.astype(np.int32), rows, valid, int(size or 0), dtypes


def build_index(videos: Sequence[VideoStores], spec: InputSpec) -> FrameIndex:
    """Index the rows of ``spec`` over ``videos`` (module docstring). All videos must share one image size."""
    parts_video, parts_frame, parts_valid, parts_targets = [], [], [], []
    parts_rows: dict[str, list[np.ndarray]] = {s: [] for s in spec.stores}
    size = None
    dtypes: dict[str, str] = {}
    for vi, v in enumerate(videos):
        frame, rows, valid, s, dt = video_rows(v, spec)
        if size is None:
            size = s
        elif s != size and frame.size:
            raise AffpipeError(f"images are {s}x{s}, other videos' are {size}x{size}", path=next(iter(v.paths.values())))
        for k, d in dt.items():
            if dtypes.setdefault(k, d) != d:
                raise AffpipeError(f"{k} is stored as {d}, other videos' as {dtypes[k]}", path=next(iter(v.paths.values())))
        targets = np.full((frame.size, 2), np.nan, dtype=np.float32)
        if v.labels is not None:
            labels = read_labels(v.labels)
            idx = _align(frame.astype(np.int64), labels.frame)
            targets[idx >= 0] = labels.values[idx[idx >= 0]]
        parts_video.append(np.full(frame.size, vi, dtype=np.int32))
        parts_frame.append(frame)
        parts_valid.append(valid)
        parts_targets.append(targets)
        for st in spec.stores:
            parts_rows[st].append(rows[st])

    def cat(xs, dtype, shape=(0,)):
        return np.concatenate(xs).astype(dtype) if xs else np.zeros(shape, dtype=dtype)

    return FrameIndex(
        videos=list(videos),
        video=cat(parts_video, np.int32),
        frame=cat(parts_frame, np.int32),
        rows={s: cat(parts_rows[s], np.int64) for s in spec.stores},
        valid=cat(parts_valid, bool),
        targets=cat(parts_targets, np.float32, (0, 2)),
        size=int(size or 0),
        dtypes=dtypes,
    )


# ------------------------------------------------------------------------------------------------
# reading images
# ------------------------------------------------------------------------------------------------
def _decode_params(reader: StoreReader, name: str) -> tuple[str | None, str | None]:
    ds = reader[name]
    return ds.attrs.get("scale_dataset"), ds.attrs.get("offset_dataset")


def decode(raw: np.ndarray, scale: float | None, offset: float | None) -> np.ndarray:
    """Decode one stored row exactly as :meth:`StoreReader.read_image` does."""
    if scale is None and offset is None:
        return raw
    s = 1.0 if scale is None else scale
    o = 0.0 if offset is None else offset
    return raw.astype(np.float32) * np.float32(s) + np.float32(o)


@dataclass
class EncodedCache:
    """Encoded images of a list of samples, per component, in sample order."""

    raw: dict[Component, np.ndarray]
    scale: dict[Component, np.ndarray | None]
    offset: dict[Component, np.ndarray | None]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.raw.values())


def encoded_bytes(index: FrameIndex, n_samples: int, spec: InputSpec) -> int:
    """Bytes the encoded images of ``n_samples`` samples take in an :class:`EncodedCache`."""
    per = 0
    for c in spec.components:
        itemsize = np.dtype(index.dtypes.get(f"{c.store}/{c.dataset}", "float32")).itemsize
        per += index.size * index.size * c.channels * itemsize
    return int(per) * int(n_samples)


def preload(index: FrameIndex, positions: np.ndarray, spec: InputSpec, *, desc: str = "preload") -> EncodedCache:
    """Read the encoded images of ``positions`` into memory (sequential reads, one video at a time)."""
    from affpipe.progress import progress

    positions = np.asarray(positions, dtype=np.int64)
    raw: dict[Component, np.ndarray] = {}
    scale: dict[Component, np.ndarray | None] = {}
    offset: dict[Component, np.ndarray | None] = {}
    for c in spec.components:
        dt = np.dtype(index.dtypes[f"{c.store}/{c.dataset}"])
        raw[c] = np.empty((positions.size, index.size, index.size, c.channels), dtype=dt)
        scale[c] = offset[c] = None
    vids = index.video[positions]
    with progress(total=int(positions.size), desc=desc, unit="frame") as bar:
        for vi in np.unique(vids):
            sel = np.flatnonzero(vids == vi)
            for store in spec.stores:
                path = index.videos[vi].paths[store]
                rows = index.rows[store][positions[sel]]
                order = np.argsort(rows, kind="stable")
                with _open(Path(path), store) as r:
                    for c in (c for c in spec.components if c.store == store):
                        sname, oname = _decode_params(r, c.dataset)
                        if sname is not None and scale[c] is None:
                            scale[c] = np.full(positions.size, np.nan, dtype=np.float32)
                        if oname is not None and offset[c] is None:
                            offset[c] = np.full(positions.size, np.nan, dtype=np.float32)
                        ds = r[c.dataset]
                        for a in range(0, order.size, PRELOAD_ROWS):
                            take = order[a:a + PRELOAD_ROWS]
                            rr = rows[take]
                            lo, hi = int(rr.min()), int(rr.max()) + 1
                            if hi - lo <= 2 * take.size:  # dense: one slab read
                                block = ds[lo:hi]
                                raw[c][sel[take]] = block[rr - lo]
                            else:
                                raw[c][sel[take]] = ds[rr]  # rr is increasing (rows sorted)
                            if sname is not None:
                                scale[c][sel[take]] = r[sname][lo:hi][rr - lo]
                            if oname is not None:
                                offset[c][sel[take]] = r[oname][lo:hi][rr - lo]
            bar.update(sel.size)
    return EncodedCache(raw, scale, offset)


class FrameDataset:
    """``torch.utils.data.Dataset`` of network inputs for chosen index rows.

    Parameters
    ----------
    index : FrameIndex
    positions : (m,) int
        Index rows (all valid) of the samples.
    spec : InputSpec
    scaling : str
        ``dynamic_scaling``.
    input_mean, input_std : sequence of float
        Per-channel normalisation (:func:`affpipe.cnn.inputs.channel_stats`).
    cache : EncodedCache, optional
        From :func:`preload` with the same ``positions``; None = stream from the files.

    Item ``i`` is ``(branches, target)``: a tuple of ``(C_b, S, S)`` float32 arrays and a ``(2,)``
    float32 array.
    """

    def __init__(self, index: FrameIndex, positions: np.ndarray, spec: InputSpec, *, scaling: str,
                 input_mean: Sequence[float], input_std: Sequence[float], cache: EncodedCache | None = None):
        self.index = index
        self.positions = np.asarray(positions, dtype=np.int64)
        if self.positions.size and not index.valid[self.positions].all():
            raise ValueError("FrameDataset positions must be valid rows")
        self.spec = spec
        self.scaling = scaling
        self.norm = [(channel_stats(input_mean, b.channels, what="input_mean"),
                      channel_stats(input_std, b.channels, what="input_std")) for b in spec.branches]
        self.cache = cache
        self._readers: collections.OrderedDict = collections.OrderedDict()
        self._pid = None

    def __len__(self) -> int:
        return int(self.positions.size)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_readers"] = collections.OrderedDict()
        state.pop("_inherited", None)
        state["_pid"] = None
        return state

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    def _reader(self, vi: int, store: str) -> StoreReader:
        if self._pid != os.getpid():  # inherited by a forked worker: never use (or close) the parent's handles
            self._inherited = self._readers
            self._readers = collections.OrderedDict()
            self._pid = os.getpid()
        key = (vi, store)
        r = self._readers.get(key)
        if r is None:
            r = _open(Path(self.index.videos[vi].paths[store]), store)
            self._readers[key] = r
            while len(self._readers) > MAX_OPEN_FILES:
                _, old = self._readers.popitem(last=False)
                old.close()
        else:
            self._readers.move_to_end(key)
        return r

    def image(self, i: int, c: Component) -> np.ndarray:
        """Decoded stored image of sample ``i`` and component ``c``, ``(S, S, 3)``."""
        if self.cache is not None:
            sc, of = self.cache.scale[c], self.cache.offset[c]
            img = decode(self.cache.raw[c][i], None if sc is None else float(sc[i]), None if of is None else float(of[i]))
            path = None
        else:
            pos = self.positions[i]
            vi = int(self.index.video[pos])
            r = self._reader(vi, c.store)
            img = r.read_image(c.dataset, int(self.index.rows[c.store][pos]))
            path = r.path
        if c.real and not np.isfinite(img).all():
            pos = self.positions[i]
            vs = self.index.videos[int(self.index.video[pos])]
            raise AffpipeError(f"valid row of frame {int(self.index.frame[pos])} has non-finite {c.dataset} values",
                               path=path or vs.paths[c.store], hint="delete it and re-run the stage that produces it")
        return img

    def __getitem__(self, i: int):
        branches = []
        for b, (mean, std) in zip(self.spec.branches, self.norm):
            imgs = [self.image(i, c) for c in b.components]
            branches.append(branch_tensor(imgs, b.components, scaling=self.scaling, mean=mean, std=std))
        target = self.index.targets[self.positions[i]]
        return tuple(branches), target


def make_loader(dataset: FrameDataset, order: Sequence[int], *, batch_size: int, workers: int, pin_memory: bool = False):
    """DataLoader over ``dataset`` in the given sample order (a list of sample indices)."""
    import multiprocessing

    import torch

    kwargs = {}
    if workers > 0:
        kwargs["multiprocessing_context"] = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
        kwargs["prefetch_factor"] = 2
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=list(map(int, order)), num_workers=workers,
        pin_memory=pin_memory, drop_last=False, **kwargs,
    )


def network_input_bytes(spec: InputSpec, n_samples: int, size: int) -> int:
    """Bytes :func:`network_inputs` takes for ``n_samples`` samples at ``size x size``."""
    return int(sum(spec.branch_channels)) * int(size) * int(size) * NETWORK_ITEMSIZE * int(n_samples)


def network_inputs(dataset: FrameDataset, *, input_size: int | None, desc: str = "prepare") -> list:
    """Every sample's network input, computed once.

    Parameters
    ----------
    dataset : FrameDataset
        Preferably with an :class:`EncodedCache` (a streaming one reads one row per image).
    input_size : int or None
        Side the inputs are resized to (:func:`affpipe.cnn.inputs.resize_batch`); None = stored size.

    Returns
    -------
    list of (m, C_b, s, s) float32 torch.Tensor
        One per branch, in sample order: item ``i`` of branch ``b`` equals ``resize_batch`` of
        ``dataset[i][0][b]``, as :func:`make_loader` followed by the resize gives it.
    """
    import torch

    from affpipe.cnn.inputs import resize_batch
    from affpipe.progress import progress

    n = len(dataset)
    side = int(input_size or dataset.index.size)
    out = [torch.empty((n, c, side, side), dtype=torch.float32) for c in dataset.spec.branch_channels]
    with progress(total=n, desc=desc, unit="frame") as bar:
        for a in range(0, n, NETWORK_BLOCK_ROWS):
            items = [dataset[i][0] for i in range(a, min(a + NETWORK_BLOCK_ROWS, n))]
            for b, o in enumerate(out):
                x = torch.from_numpy(np.stack([it[b] for it in items]))
                o[a:a + len(items)] = resize_batch(x, input_size)
            bar.update(len(items))
    return out


def tensor_batches(inputs: Sequence, targets: np.ndarray, order: Sequence[int], *, batch_size: int):
    """Batches ``(branches, target)`` of precomputed inputs, in ``order``, as :func:`make_loader` yields them.

    Parameters
    ----------
    inputs : list of (m, C_b, s, s) torch.Tensor
        From :func:`network_inputs`.
    targets : (m, 2) float32
        Sample targets.
    order : sequence of int
        Sample indices; consecutive runs of ``batch_size`` form the batches (the last may be shorter).
    """
    import torch

    # the draw a DataLoader iterator makes from the global generator (its workers' base seed): the
    # generator then continues as after make_loader, so dropout, and so the trained model, does not
    # depend on whether the inputs were prepared (tests/test_cnn_train.py)
    torch.empty((), dtype=torch.int64).random_()
    order = np.asarray(order, dtype=np.int64)
    t = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    for a in range(0, order.size, batch_size):
        idx = torch.from_numpy(order[a:a + batch_size])
        yield [x.index_select(0, idx) for x in inputs], t.index_select(0, idx)

