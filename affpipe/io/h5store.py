"""HDF5 stores for per-frame image stacks (static and dynamic facial images, DR, features).

One file per video and stage, e.g. ``results/{ds}/static/{video}.h5``. The layout follows the
team design's HDF5 conventions and is self-describing, so ``h5ls -r`` and plain h5py are
enough to understand a file:

* **Rows.** Every dataset has the same first axis ``n`` (one row per video frame, or per window for
  dynamic images). The 1-D ``frame`` dataset (int32) maps each row to the video frame it belongs
  to; ``valid`` (bool) says whether the row holds real data. Nothing is ever fabricated: an
  invalid row's images are all zeros and its float data NaN.
* **Image stacks** are ``(n, H, W, C)``, chunked one row per chunk (reading one frame touches one
  chunk) and compressed losslessly (:data:`DEFAULT_COMPRESSION`). Channel order is stored in the
  dataset attribute ``channel_order`` (affpipe writes ``"RGB"``).
* **Per-dataset attributes**: ``description`` (what the values mean, units), ``kind``
  (``"image"`` or ``"array"``) and any extras the stage gives (e.g. ``value_range``).
  A real-valued image stored as uint8 names its decoding datasets in the attributes
  ``scale_dataset`` and ``offset_dataset`` (both ``(n,)`` float32): ``value = uint8 * scale +
  offset`` per row; :func:`affpipe.io.encoding.quantize_uint8` produces them and
  :meth:`StoreReader.read_image` applies them (:func:`affpipe.io.encoding.dequantize_uint8`).
  float16/float32 images need no decoding.
* **File attributes (provenance)**: ``format`` (:data:`FORMAT_NAME`), ``format_version``,
  ``affpipe_version``, ``stage``, ``settings`` (JSON of the validated stage settings),
  ``inputs`` (JSON list of ``{"path", "size", "mtime"}`` of each input file), ``created``
  (ISO-8601 UTC), ``command`` (the command line), ``n_rows`` and ``complete`` (True only once the
  writer finished; a crashed writer never leaves a final file anyway).
* **Atomic writes**: the file is written as ``<name>.tmp-<pid>`` in the target folder and renamed
  with ``os.replace`` on success (:func:`affpipe.io.atomic.atomic_path`); an exception removes the
  temporary file and leaves no final file.

Writing (streaming, bounded memory: each :meth:`StoreWriter.append` writes its batch to disk)::

    specs = [
        DatasetSpec("frame", (), "int32", "video frame index (0-based decode order)"),
        DatasetSpec("valid", (), "bool", "row holds a face"),
        DatasetSpec("sfa", (S, S, 3), "uint8", "aligned face, RGB", image=True),
    ]
    with StoreWriter(out, specs, stage="static", settings=settings, inputs=[video, faces]) as w:
        for batch in batches:
            w.append(frame=..., valid=..., sfa=...)      # every dataset, same leading length

Reading (validates format, stage, datasets, shapes and dtypes; errors name the file)::

    with StoreReader(path, stage="static", expect=specs) as r:
        row = r.row_of_frame(120)        # None if that frame has no row
        img = r.read_image("sfa", row)   # (S, S, 3) uint8
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from affpipe import __version__
from affpipe.errors import AffpipeError
from affpipe.io.atomic import atomic_path
from affpipe.io.encoding import dequantize_uint8

FORMAT_NAME = "affpipe-h5store"
FORMAT_VERSION = 1

#: Compression filter used for every dataset. Measured with ``bench/bench_static_store.py`` on 96 real
#: aligned 224x224 frames (WolfgangLanger_Pexels.mp4; loaded 2-core machine): gzip level 4 stores
#: SFA at 47 KB/frame (ratio 3.2) and SFS at 2.4 KB/frame (ratio 62) for 5.5 ms/frame of writing;
#: lzf: 58 KB + 4.9 KB at 3.0 ms; gzip 9: 46 KB + 1.4 KB at 13.8 ms; gzip 1: 48 KB + 3.4 KB at
#: 5.3 ms. One-frame reads take ~2 ms with any filter. lzf stays available (``compression="lzf"``).
DEFAULT_COMPRESSION = "gzip"
DEFAULT_COMPRESSION_LEVEL = 4

#: Rows per chunk for non-image datasets (1-D ``frame``/``valid``, ``(n, 68, 2)`` landmarks...).
ARRAY_CHUNK_ROWS = 1024

ROW_DATASETS = ("frame", "valid")  # every store has these two


def _attr_value(value: Any) -> Any:
    """Make ``value`` storable as an HDF5 attribute (dicts/lists become JSON text)."""
    if isinstance(value, (dict, list, tuple)) and not (
        isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value)
    ):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, Path):
        return os.fspath(value)
    return value


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a store: its per-row shape, dtype and meaning.

    Parameters
    ----------
    name : str
        Dataset name in the file (e.g. ``"sfa"``).
    shape : tuple of int
        Shape of one row, without the leading ``n`` (``()`` for 1-D datasets, ``(H, W, C)`` for
        images, ``(68, 2)`` for landmarks).
    dtype : str or numpy dtype
        Stored dtype. :meth:`StoreWriter.append` refuses data that would not cast safely
        (same-kind casting, e.g. float64 -> float32 is fine, float -> uint8 is not).
    description : str
        What the values mean (units, coordinate frame, channel order); stored as the
        ``description`` attribute.
    image : bool
        True for ``(H, W, C)`` image stacks: chunked one row per chunk and tagged
        ``kind="image"`` so ``affpipe show`` renders them.
    attrs : mapping
        Extra attributes (e.g. ``{"channel_order": "RGB"}`` or ``{"scale_dataset": "dfa_scale",
        "offset_dataset": "dfa_offset"}``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: Any
    description: str
    image: bool = False
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def fillvalue(self) -> Any:
        """Value of rows never written: NaN for floats, 0/False otherwise."""
        kind = self.np_dtype.kind
        return np.nan if kind == "f" else (False if kind == "b" else 0)


def file_info(path: str | os.PathLike) -> dict[str, Any]:
    """Provenance record of an input file: path, size in bytes and modification time (ISO UTC)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise AffpipeError(f"input file cannot be read for provenance ({exc.strerror})", path=path) from None
    mtime = _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.timezone.utc).isoformat()
    return {"path": os.fspath(path), "size": int(st.st_size), "mtime": mtime}


def _command_line() -> str:
    """The command line of this process, ``python -m affpipe ...`` spelled as ``affpipe ...``."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "affpipe":
        argv[0] = "affpipe"
    return shlex.join(argv)


class StoreWriter:
    """Stream rows into a new HDF5 store, atomically.

    Use as a context manager. Datasets are created empty and resizable; each :meth:`append`
    extends all of them by the same number of rows and writes the batch to disk, so memory stays
    bounded by one batch. On a clean exit the file is finalised (``n_rows``, ``complete=True``)
    and renamed to ``path``; on an exception the temporary file is deleted and ``path`` is not
    created (an existing ``path`` is left untouched).

    Parameters
    ----------
    path : path
        Final file name (``.h5``).
    specs : sequence of DatasetSpec
        Every dataset of the file. Must include ``frame`` (int) and ``valid`` (bool).
    stage : str
        Producing stage (``"static"``, ``"dynamic"``, ...); stored as the ``stage`` attribute and
        checked by :class:`StoreReader`.
    settings : mapping
        The validated stage settings; stored as JSON in the ``settings`` attribute.
    inputs : iterable of path
        Input files; their size and mtime are recorded in the ``inputs`` attribute.
    attrs : mapping, optional
        Extra file attributes (e.g. ``{"video_fps": 25.0}``).
    compression : {"gzip", "lzf", None}
        Lossless filter for every dataset.
    compression_level : int
        gzip level (ignored for lzf).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        specs: Sequence[DatasetSpec],
        *,
        stage: str,
        settings: Mapping[str, Any],
        inputs: Iterable[str | os.PathLike] = (),
        attrs: Mapping[str, Any] | None = None,
        compression: str | None = DEFAULT_COMPRESSION,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    ):
        import h5py

        self.path = Path(path)
        self.specs = {s.name: s for s in specs}
        if len(self.specs) != len(specs):
            raise ValueError("duplicate dataset names in specs")
        for name in ROW_DATASETS:
            if name not in self.specs:
                raise ValueError(f"a store needs a {name!r} dataset")
        if compression not in ("gzip", "lzf", None):
            raise ValueError(f"unsupported compression {compression!r}")
        self.n_rows = 0
        input_info = [file_info(p) for p in inputs]
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            self._h5 = h5py.File(self._tmp, "w", track_order=True)  # datasets listed in creation order
            f = self._h5
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["affpipe_version"] = __version__
            f.attrs["stage"] = stage
            f.attrs["settings"] = json.dumps(dict(settings), sort_keys=True, default=str)
            f.attrs["inputs"] = json.dumps(input_info)
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["command"] = _command_line()
            f.attrs["complete"] = False
            f.attrs["n_rows"] = 0
            for key, value in (attrs or {}).items():
                f.attrs[key] = _attr_value(value)
            copts: dict[str, Any] = {}
            if compression == "gzip":
                copts = {"compression": "gzip", "compression_opts": int(compression_level), "shuffle": False}
            elif compression == "lzf":
                copts = {"compression": "lzf"}
            for spec in specs:
                if spec.image:
                    chunks = (1, *spec.shape)
                else:
                    chunks = (ARRAY_CHUNK_ROWS, *spec.shape)
                ds = f.create_dataset(
                    spec.name,
                    shape=(0, *spec.shape),
                    maxshape=(None, *spec.shape),
                    dtype=spec.np_dtype,
                    chunks=chunks,
                    fillvalue=spec.fillvalue(),
                    **copts,
                )
                ds.attrs["description"] = spec.description
                ds.attrs["kind"] = "image" if spec.image else "array"
                for key, value in spec.attrs.items():
                    ds.attrs[key] = _attr_value(value)
        except BaseException:
            self._abort(*sys.exc_info())
            raise

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc_type, exc, tb)
        return False

    def _abort(self, exc_type, exc, tb) -> None:
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            with contextlib.suppress(Exception):
                h5.close()
            self._h5 = None
        # atomic_path removes the temporary file; it re-raises ``exc``, which we swallow here
        # because the caller is already propagating it.
        with contextlib.suppress(BaseException):
            self._stack.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)

    def append(self, **batch: np.ndarray) -> None:
        """Append one batch of rows.

        Parameters
        ----------
        **batch : arrays
            One array per dataset (all names of ``specs``, no others), each ``(k, *spec.shape)``
            with the same ``k``. Values are cast to the stored dtype (same-kind casting only).

        Raises
        ------
        ValueError
            Missing/unknown datasets, inconsistent batch lengths, wrong row shape or unsafe dtype.
        """
        if self._h5 is None:
            raise ValueError("store writer is closed")
        missing = set(self.specs) - set(batch)
        extra = set(batch) - set(self.specs)
        if missing or extra:
            raise ValueError(f"append(): missing datasets {sorted(missing)}, unknown {sorted(extra)}")
        arrays = {}
        k = None
        for name, spec in self.specs.items():
            a = np.asarray(batch[name])
            if a.shape[1:] != spec.shape or a.ndim != len(spec.shape) + 1:
                raise ValueError(f"append(): {name} has shape {a.shape}, expected (k, {', '.join(map(str, spec.shape))})")
            if not np.can_cast(a.dtype, spec.np_dtype, casting="same_kind") and not (
                spec.np_dtype.kind == "b" and a.dtype.kind == "b"
            ):
                raise ValueError(f"append(): {name} dtype {a.dtype} cannot be stored as {spec.np_dtype}")
            if k is None:
                k = a.shape[0]
            elif a.shape[0] != k:
                raise ValueError(f"append(): {name} has {a.shape[0]} rows, others {k}")
            arrays[name] = a.astype(spec.np_dtype, copy=False)
        if not k:
            return
        start, stop = self.n_rows, self.n_rows + k
        for name, a in arrays.items():
            ds = self._h5[name]
            ds.resize(stop, axis=0)
            ds[start:stop] = a
        self.n_rows = stop

    def append_from(self, other: "StoreReader", *, rows_per_batch: int = ARRAY_CHUNK_ROWS) -> None:
        """Append all rows of another store with the same datasets (e.g. parts written by workers).

        Image datasets (one row per chunk) are copied chunk by chunk as stored, without
        decompressing and recompressing (``read_direct_chunk``/``write_direct_chunk``); other
        datasets are copied by value. Memory stays bounded by ``rows_per_batch`` rows.
        (Added by the dynamic stage, which merges the part files of its parallel workers.)

        Raises
        ------
        ValueError
            When ``other`` lacks a dataset or stores one with another shape, dtype or filter.
        """
        if self._h5 is None:
            raise ValueError("store writer is closed")
        n = other.n_rows
        for name, spec in self.specs.items():
            if name not in other:
                raise ValueError(f"append_from(): {other.path} lacks dataset {name!r}")
            src, dst = other[name], self._h5[name]
            if src.shape[1:] != dst.shape[1:] or src.dtype != dst.dtype:
                raise ValueError(f"append_from(): {other.path}: {name!r} is {src.shape[1:]} {src.dtype}, expected {dst.shape[1:]} {dst.dtype}")
            if spec.image and (src.chunks != dst.chunks or src.compression != dst.compression
                               or src.compression_opts != dst.compression_opts or src.shuffle != dst.shuffle):
                raise ValueError(f"append_from(): {other.path}: {name!r} has other chunks/filters than the target")
        if n == 0:
            return
        start = self.n_rows
        for name, spec in self.specs.items():
            src, dst = other[name], self._h5[name]
            dst.resize(start + n, axis=0)
            if spec.image:
                zeros = (0,) * len(spec.shape)
                for i in range(n):
                    mask, chunk = src.id.read_direct_chunk((i, *zeros))
                    dst.id.write_direct_chunk((start + i, *zeros), chunk, mask)
            else:
                for a in range(0, n, rows_per_batch):
                    b = min(a + rows_per_batch, n)
                    dst[start + a : start + b] = src[a:b]
        self.n_rows = start + n

    def close(self) -> Path:
        """Finalise the file and move it to its final name; returns the final path."""
        if self._h5 is None:
            return self.path
        try:
            self._h5.attrs["n_rows"] = self.n_rows
            self._h5.attrs["complete"] = True
            self._h5.close()
            self._h5 = None
        except BaseException:
            self._abort(*sys.exc_info())
            raise
        self._stack.__exit__(None, None, None)  # os.replace(tmp, path)
        return self.path


class StoreReader:
    """Open an affpipe HDF5 store read-only and check it is what the caller expects.

    Parameters
    ----------
    path : path
        The ``.h5`` file.
    stage : str, optional
        Required value of the ``stage`` attribute.
    expect : sequence of DatasetSpec, optional
        Datasets that must be present with exactly this per-row shape and dtype. Checked in
        addition to the generic checks (``format`` attribute, ``complete``, ``frame``/``valid``
        present, all datasets with ``n_rows`` rows).

    Raises
    ------
    AffpipeError
        Naming the file, when it is missing, not HDF5 or truncated, not an affpipe store (foreign
        file), from another stage, unfinished, or lacks/changes an expected dataset.
    """

    def __init__(self, path: str | os.PathLike, *, stage: str | None = None, expect: Sequence[DatasetSpec] = ()):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise AffpipeError("HDF5 store does not exist", path=self.path)
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise AffpipeError(
                f"cannot open as HDF5 (not an HDF5 file, or truncated/corrupt: {exc})",
                path=self.path,
                hint="delete it and re-run the stage that produces it",
            ) from None
        try:
            self._check(stage, expect)
        except BaseException:
            self.h5.close()
            raise

    def _fail(self, cause: str) -> None:
        raise AffpipeError(cause, path=self.path, hint="delete it and re-run the stage that produces it")

    def _check(self, stage: str | None, expect: Sequence[DatasetSpec]) -> None:
        attrs = self.h5.attrs
        if attrs.get("format") != FORMAT_NAME:
            self._fail(f"not an affpipe store (file attribute format={attrs.get('format')!r}, expected {FORMAT_NAME!r})")
        version = int(attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            self._fail(f"store format version {version} is newer than this affpipe understands ({FORMAT_VERSION})")
        if stage is not None and attrs.get("stage") != stage:
            self._fail(f"store was written by stage {attrs.get('stage')!r}, expected {stage!r}")
        if not bool(attrs.get("complete", False)):
            self._fail("store is incomplete (its writer did not finish)")
        n = int(attrs.get("n_rows", -1))
        self.n_rows = n
        for name in ROW_DATASETS:
            if name not in self.h5:
                self._fail(f"dataset {name!r} is missing")
        if self.h5["frame"].ndim != 1 or self.h5["frame"].dtype.kind not in "iu":
            self._fail(f"dataset 'frame' must be 1-D integer, got shape {self.h5['frame'].shape} "
                       f"dtype {self.h5['frame'].dtype}")
        if self.h5["valid"].ndim != 1 or self.h5["valid"].dtype.kind != "b":
            self._fail(f"dataset 'valid' must be 1-D bool, got shape {self.h5['valid'].shape} "
                       f"dtype {self.h5['valid'].dtype}")
        for name, obj in self.h5.items():
            if hasattr(obj, "shape") and obj.shape[:1] != (n,):
                self._fail(f"dataset {name!r} has {obj.shape[0] if obj.shape else 0} rows, file says n_rows={n} (truncated?)")
        for spec in expect:
            if spec.name not in self.h5:
                self._fail(f"dataset {spec.name!r} is missing")
            ds = self.h5[spec.name]
            if ds.shape[1:] != tuple(spec.shape):
                self._fail(f"dataset {spec.name!r} has row shape {ds.shape[1:]}, expected {tuple(spec.shape)}")
            if ds.dtype != spec.np_dtype:
                self._fail(f"dataset {spec.name!r} has dtype {ds.dtype}, expected {spec.np_dtype}")
        self.frames = self.h5["frame"][:]
        self.valid = self.h5["valid"][:].astype(bool)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        self.h5.close()

    # -- metadata --------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        return str(self.h5.attrs.get("stage", ""))

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.h5.attrs.get("settings", "{}"))

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return json.loads(self.h5.attrs.get("inputs", "[]"))

    def image_names(self) -> list[str]:
        """Names of the image datasets, in creation order (e.g. ``["sfa", "sfs"]``)."""
        return [name for name, ds in self.h5.items() if ds.attrs.get("kind") == "image"]

    def __getitem__(self, name: str):
        return self.h5[name]

    def __contains__(self, name: str) -> bool:
        return name in self.h5

    # -- rows ------------------------------------------------------------------------------
    def row_of_frame(self, frame: int) -> int | None:
        """Row whose ``frame`` equals ``frame``, or None when that video frame has no row."""
        hits = np.flatnonzero(self.frames == frame)
        return int(hits[0]) if hits.size else None

    def read_image(self, name: str, row: int) -> np.ndarray:
        """One row of an image dataset, decoded.

        Returns
        -------
        (H, W, C) array
            The stored dtype, except for uint8 images with ``scale_dataset``/``offset_dataset``
            attributes, which are decoded to float32 ``q * scale + offset``.
        """
        ds, scale, offset = self._decoder(name)
        img = ds[row]
        if scale is not None or offset is not None:
            img = dequantize_uint8(img, None if scale is None else scale[row], None if offset is None else offset[row])
        return img

    def _decoder(self, name: str):
        """``(dataset, scale (n,) or None, offset (n,) or None)`` of an image dataset, read once per
        reader: the per-row scale/offset columns are small, and re-opening their datasets on every
        ``read_image`` call halved the decoded random-access rate."""
        cache = self.__dict__.setdefault("_decoders", {})
        if name not in cache:
            ds = self.h5[name]
            scale_name = ds.attrs.get("scale_dataset")
            offset_name = ds.attrs.get("offset_dataset")
            scale = self.h5[scale_name][()].astype(np.float32) if scale_name is not None else None
            offset = self.h5[offset_name][()].astype(np.float32) if offset_name is not None else None
            cache[name] = (ds, scale, offset)
        return cache[name]


# -- layouts of the stores affpipe writes -----------------------------------------------------
STATIC_STAGE = "static"


def static_specs(size: int) -> list[DatasetSpec]:
    """Datasets of a static store (``results/{ds}/static/{video}.h5``), one row per decoded frame.

    Parameters
    ----------
    size : int
        Side S of the aligned crops (``static.size``; also the file attribute ``size``).
    """
    return [
        DatasetSpec("frame", (), "int32", "video frame index of the row (0-based decode order)"),
        DatasetSpec("time_s", (), "float64", "presentation time of the frame in seconds (from the video container)"),
        DatasetSpec(
            "valid", (), "bool",
            "True where the faces stage had a face (status detected/tracked and 68 finite landmarks); "
            "False rows have all-zero images and NaN landmarks/transform",
        ),
        DatasetSpec(
            "sfa", (size, size, 3), "uint8",
            "static facial appearance: the face aligned to the canonical template (bilinear warp), "
            "pixels outside the convex hull of the 68 aligned landmarks set to 0",
            image=True, attrs={"channel_order": "RGB", "value_range": [0, 255]},
        ),
        DatasetSpec(
            "sfs", (size, size, 3), "uint8",
            "static facial shape: 15 semantic regions in fixed colours (affpipe.static.sfs.REGIONS, file attribute "
            "sfs_regions), black outside the landmarks' convex hull",
            image=True, attrs={"channel_order": "RGB", "value_range": [0, 255]},
        ),
        DatasetSpec(
            "landmarks", (68, 2), "float32",
            "68 landmarks (iBUG 300-W order) in aligned crop pixels, (x, y), pixel centres at integers; NaN where invalid",
        ),
        DatasetSpec(
            "transform", (2, 3), "float64",
            "similarity transform M mapping an original-frame pixel p to the crop: M[:, :2] @ p + M[:, 2] "
            "(cv2.warpAffine form); NaN where invalid",
        ),
    ]


def open_static(path: str | os.PathLike) -> StoreReader:
    """Open a static store and check its full layout (:func:`static_specs` at the file's ``size``).

    Returns a :class:`StoreReader` (use it as a context manager); raises :class:`AffpipeError`
    naming the file when it is not a complete static store.
    """
    reader = StoreReader(path, stage=STATIC_STAGE)
    size = reader.h5.attrs.get("size")
    reader.close()
    if size is None:
        raise AffpipeError("static store lacks the file attribute 'size'", path=path)
    return StoreReader(path, stage=STATIC_STAGE, expect=static_specs(int(size)))
