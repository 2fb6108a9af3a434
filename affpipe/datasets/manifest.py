"""The manifest (one row per video) and the per-video labels table, for every adapter.

This is the adapters' common front: :func:`build_manifest` scans a distribution tree with the
dataset's adapter and probes each video's container (no full decode); :func:`build_labels` reads one
video's label files and resamples them to that video's frames. :func:`read_manifest` is the one
reader of the manifest file, for every stage and for the workflow (torch- and OpenCV-free).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa

from affpipe import __version__
from affpipe.datasets import affwild2, recola, semaine, usercsv
from affpipe.datasets.labels import assemble_labels
from affpipe.datasets.layout import PARTITIONS, label_source, parse_label_source
from affpipe.datasets.settings import check_root, dataset_settings
from affpipe.errors import AffpipeError, DatasetError, VideoError
from affpipe.progress import progress

ADAPTERS: dict[str, ModuleType] = {"semaine": semaine, "recola": recola, "affwild2": affwild2, "csv": usercsv}
FPS_TOLERANCE = 0.01  # relative difference from the expected frame rate that is worth a warning
SKIPPED_EXAMPLES = 5  # paths listed per skip reason in the manifest metadata
# per-dataset stage overrides, not adapter settings
STAGE_SECTIONS = ("faces", "static", "dynamic", "dr", "demo", "cnn", "regression", "evaluate", "experiments")

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("video", pa.string()),
        pa.field("path", pa.string()),
        pa.field("partition", pa.string()),
        pa.field("fps", pa.float64()),
        pa.field("n_frames", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duration_s", pa.float64()),
        pa.field("subject", pa.string()),
        pa.field("label_source", pa.string()),
        pa.field("side", pa.string()),
    ]
)


def _adapter_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in STAGE_SECTIONS}


def build_manifest(name: str, settings: dict[str, Any], *, max_frame_shortfall: float | None = None,
                   labels: dict[str, tuple[pa.Table, list[str]]] | None = None) -> pa.Table:
    """Scan dataset ``name``'s tree and return its manifest, one row per video, sorted by id.

    Parameters
    ----------
    name : str
        Dataset key (``datasets.<name>`` in the config); used in messages.
    settings : dict
        That config entry; defaults are filled in from ``affpipe/schemas/dataset.schema.yaml``.
    max_frame_shortfall : float, optional
        The faces stage's ``faces.max_frame_shortfall``: the frame at ``ceil(n_frames * (1 - this)) - 1``
        must decode (checked by seeking to it), else the video is truncated beyond what the faces stage
        accepts and is excluded here. None = only the first frame is checked.
    labels : dict, optional
        Filled, when given, with each manifest video's :func:`build_labels` result (table, warnings)
        by video id: the labels the pre-flight builds anyway, for the caller to write.

    Returns
    -------
    pyarrow.Table
        Columns ``video, path, partition, fps, n_frames, width, height, duration_s, subject,
        label_source, side`` (see :data:`MANIFEST_SCHEMA`). ``path`` is absolute and resolved,
        ``n_frames`` the container-reported count, ``duration_s = n_frames / fps``, ``label_source``
        ``valence_file;arousal_file`` (one path when one file holds both; empty without labels).
        The schema metadata records the dataset, adapter, root, settings, skipped files (counted by
        reason, with examples), warnings and the excluded videos (JSON; :func:`manifest_excluded`).

    Notes
    -----
    Pre-flight: each video is probed and its first frame decoded (a cheap check for corrupt and
    zero-frame files), with ``max_frame_shortfall`` also the last frame the faces stage needs (one
    seek), and its labels are built once with :func:`build_labels` (missing or unreadable label
    file, values out of range, length drift beyond ``label_drift_error_s``). A video
    failing one of these checks, or whose video/label file the adapter reports missing, is *excluded*
    with ``on_bad_input: exclude`` (the default): it gets no manifest row, hence no per-video job, and
    is recorded in the ``excluded`` metadata with the cause. With ``on_bad_input: fail`` the first
    such video raises.

    Raises
    ------
    DatasetError
        Unset or missing root (naming ``datasets.<name>.root``), a layout the adapter does not
        understand (naming the files); with ``on_bad_input: fail`` a missing or bad label file;
        every video excluded.
    VideoError
        With ``on_bad_input: fail``: a video that cannot be opened, reports no frames or decodes none.
    """
    s = dataset_settings(name, settings)
    root = check_root(name, s)
    adapter = ADAPTERS[s["adapter"]]
    result = adapter.scan(root, s, name)
    expected_fps = s["expected_fps"] if s["expected_fps"] is not None else adapter.NOMINAL_FPS
    warnings = list(result.warnings)
    excluded: list[dict[str, str]] = []

    def bad(video: str, path: str | os.PathLike, partition: str, err: AffpipeError) -> None:
        """A video that cannot be used: fatal with ``on_bad_input: fail``, else excluded and recorded."""
        if s["on_bad_input"] == "fail":
            raise err
        excluded.append({"video": video, "path": os.fspath(path), "partition": partition, "stage": "manifest",
                         "reason": err.cause, "file": err.path or os.fspath(path)})

    for video, path, partition, err in result.problems:
        bad(video, path, partition, err)
    columns: dict[str, list] = {f.name: [] for f in MANIFEST_SCHEMA}
    entries = sorted(result.entries, key=lambda e: e.video)
    from affpipe.io.video import check_decodes, probe  # OpenCV: imported only when videos are probed

    for e in progress(entries, total=len(entries), desc=f"manifest {name}", unit="video"):
        try:
            info = probe(e.path)
            if info.n_frames_reported <= 0:
                raise VideoError(
                    "container reports no frame count; re-mux it (e.g. `ffmpeg -i IN -c copy OUT.mp4`)", path=e.path
                )
            last_needed = None
            if max_frame_shortfall is not None:
                last_needed = math.ceil(info.n_frames_reported * (1 - max_frame_shortfall)) - 1
            check_decodes(e.path, last_needed=last_needed)
        except VideoError as err:
            bad(e.video, e.path, e.partition, err)
            continue
        row = {
            "video": e.video,
            "path": os.fspath(Path(e.path).resolve()),
            "partition": e.partition,
            "fps": float(info.fps),
            "n_frames": int(info.n_frames_reported),
            "width": int(info.width),
            "height": int(info.height),
            "duration_s": info.n_frames_reported / info.fps,
            "subject": e.subject,
            "label_source": label_source(tuple(Path(p).resolve() for p in e.labels)),
            "side": e.side,
        }
        try:  # the labels' own checks (missing file, values out of range, length drift), run now
            built = build_labels(row, s, dataset=name)
        except DatasetError as err:
            bad(e.video, e.path, e.partition, err)
            continue
        if expected_fps and abs(info.fps - expected_fps) > FPS_TOLERANCE * expected_fps:
            warnings.append(
                f"{e.path}: container frame rate {info.fps:g} fps differs from the {s['adapter']} rate "
                f"{expected_fps:g} fps; labels are placed on this video's own frame times"
            )
        for key, value in row.items():
            columns[key].append(value)
        if labels is not None:
            labels[e.video] = built
    if not columns["video"]:
        raise DatasetError(
            f"no usable video: all {len(excluded)} were excluded (first: {excluded[0]['file']}: "
            f"{excluded[0]['reason']})" if excluded else "no video found",
            path=root,
        )
    table = pa.table(columns, schema=MANIFEST_SCHEMA)
    metadata = {
        "affpipe_version": __version__,
        "dataset": name,
        "adapter": s["adapter"],
        "root": os.fspath(root),
        "settings": json.dumps(_adapter_settings(s), sort_keys=True),
        "n_videos": str(table.num_rows),
        "partitions": json.dumps(dict(sorted(Counter(columns["partition"]).items()))),
        "skipped": json.dumps({k: len(v) for k, v in sorted(result.skipped.items())}),
        "skipped_examples": json.dumps({k: v[:SKIPPED_EXAMPLES] for k, v in sorted(result.skipped.items())}),
        "warnings": json.dumps(warnings),
        "excluded": json.dumps(excluded),
    }
    return table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})


#: columns every reader of a manifest uses; :func:`read_manifest` checks these and the ones asked for
MANIFEST_KEY_COLUMNS = ("video", "partition")


@dataclass(frozen=True)
class Manifest:
    """A manifest as :func:`read_manifest` read and checked it: its rows (dicts of the columns, sorted
    by video id; iterating over a Manifest gives them) and its schema metadata."""

    path: Path
    rows: list[dict[str, Any]]
    metadata: dict[bytes, bytes]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dataset(self) -> str | None:
        """The dataset key the manifest was built for (None when it does not record one)."""
        return self.metadata.get(b"dataset", b"").decode() or None

    @property
    def adapter(self) -> str | None:
        """The adapter that built it (None when it does not record one)."""
        return self.metadata.get(b"adapter", b"").decode() or None

    def excluded(self) -> list[dict[str, str]]:
        """The videos it left out (:func:`manifest_excluded`)."""
        return manifest_excluded(self.metadata)

    def by_video(self) -> dict[str, dict[str, Any]]:
        """Rows by video id."""
        return {row["video"]: row for row in self.rows}

    def row(self, video: str) -> dict[str, Any]:
        """The row of ``video``; a DatasetError naming the manifest when it has none."""
        for row in self.rows:
            if row["video"] == video:
                return row
        raise DatasetError(f"video {video!r} is not in the manifest", path=self.path)


def read_manifest(path: str | os.PathLike, *, columns: Sequence[str] = ()) -> Manifest:
    """Read and check a ``manifest.parquet`` (the one reader of the file :func:`build_manifest` makes).

    Parameters
    ----------
    path : path
        ``results/{ds}/manifest.parquet``.
    columns : sequence of str
        Columns the caller reads besides ``video`` and ``partition`` (e.g. ``fps``, ``n_frames``):
        checked to be there.

    Raises
    ------
    DatasetError
        Naming the file: it does not exist or is not Parquet; a column is missing; a video id is
        empty or listed twice; a partition is not train, devel or test.
    """
    from affpipe.io.parquet import read_table

    path = Path(path)
    if not path.is_file():
        raise DatasetError("manifest does not exist", path=path,
                           hint="run the manifest stage first (`affpipe manifest`, or its Snakemake target)")
    try:
        table = read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for what is not Parquet
        raise DatasetError(f"cannot read the manifest as Parquet ({exc})", path=path) from None
    missing = [c for c in dict.fromkeys((*MANIFEST_KEY_COLUMNS, *columns)) if c not in table.column_names]
    if missing:
        raise DatasetError(f"manifest lacks column(s) {', '.join(missing)}", path=path)
    rows = table.to_pylist()
    seen: set[str] = set()
    for r in rows:
        video, partition = r["video"], r["partition"]
        if not video:
            raise DatasetError("manifest has a row without a video id", path=path)
        if video in seen:
            raise DatasetError(f"manifest lists video {video!r} twice", path=path)
        seen.add(video)
        if partition not in PARTITIONS:
            raise DatasetError(f"video {video!r} has unknown partition {partition!r} "
                               f"(expected {', '.join(PARTITIONS)})", path=path)
    rows.sort(key=lambda r: r["video"])
    return Manifest(path=path, rows=rows, metadata=dict(table.schema.metadata or {}))


def manifest_warnings(table: pa.Table) -> list[str]:
    """The warnings recorded in a manifest's metadata."""
    meta = table.schema.metadata or {}
    return json.loads(meta.get(b"warnings", b"[]"))


def manifest_excluded(metadata: dict[bytes, bytes] | None) -> list[dict[str, str]]:
    """The videos a manifest left out (``excluded`` metadata key; empty for older manifests).

    Each entry: ``video``, ``path`` (the video file), ``partition``, ``stage`` (``"manifest"``),
    ``reason`` (the cause, phrased for the user) and ``file`` (the file the cause is about: the
    video, or its label file).
    """
    return json.loads((metadata or {}).get(b"excluded", b"[]"))


def _file_provenance(path: str) -> dict[str, Any]:
    from affpipe.resources import sha256

    p = Path(path)
    return {"path": path, "bytes": p.stat().st_size, "sha256": sha256(p)}


def build_labels(row: dict[str, Any], settings: dict[str, Any], *, dataset: str = "<name>") -> tuple[pa.Table, list[str]]:
    """Labels of one manifest row on the video's frames ``0..n_frames-1``.

    Resampling (also stored in the ``resampling`` metadata key): per-frame label files (SEMAINE,
    Aff-Wild2, CSV with ``frame``) index frames directly; time-stamped labels (RECOLA, CSV with
    ``time_s``) are linearly interpolated between neighbouring samples at ``frame / fps``, NaN outside
    the labelled span, across gaps and next to unlabelled samples. See :mod:`affpipe.datasets.labels`.

    Parameters
    ----------
    row : dict
        One manifest row (``video, path, partition, fps, n_frames, label_source, ...``).
    settings : dict
        The dataset's config entry (defaults filled in here).
    dataset : str
        Dataset key, for messages naming config keys.

    Returns
    -------
    table : pyarrow.Table
        ``frame`` int32, ``time_s`` float64 (= frame / fps), ``valence``/``arousal`` float32 (NaN where
        unlabelled); schema metadata: adapter, video, source files (with size and sha256), per-dimension
        counts (samples, NaN/unlabelled in the source, samples beyond the video, NaN frames, drift),
        the resampling method, warnings, and a note for videos without labels.
    warnings : list of str
        One line each, naming the label file (small length drift, unlabelled samples, ...).

    Raises
    ------
    DatasetError
        Missing or unreadable label file, values outside [-1, 1], label length further from the
        video than ``label_drift_error_s`` (naming the file and both lengths).
    """
    s = dataset_settings(dataset, settings)
    adapter = ADAPTERS[s["adapter"]]
    n_frames, fps = int(row["n_frames"]), float(row["fps"])
    files = parse_label_source(row.get("label_source") or "")
    meta = {
        "affpipe_version": __version__,
        "adapter": s["adapter"],
        "video": row["video"],
        "video_path": row["path"],
        "partition": row["partition"],
        "side": row.get("side") or "",
        "label_source": row.get("label_source") or "",
    }
    if files is None:
        note = f"no label file for this video ({row['partition']} partition"
        note += ": labels are not distributed)" if row["partition"] == "test" else ")"
        note += "; valence and arousal are NaN for every frame"
        meta["source_files"] = "[]"
        return assemble_labels(None, n_frames=n_frames, fps=fps, settings=s, metadata=meta, note=note)
    for f in dict.fromkeys(files):
        if not Path(f).is_file():
            raise DatasetError(
                f"label file of video {row['video']!r} does not exist (named in the manifest's label_source)", path=f
            )
    tracks, read_warnings = adapter.read_tracks(row, s)
    meta["source_files"] = json.dumps([_file_provenance(f) for f in dict.fromkeys(files)])
    table, warnings = assemble_labels(tracks, n_frames=n_frames, fps=fps, settings=s, metadata=meta)
    warnings = read_warnings + warnings
    if read_warnings:
        merged = dict(table.schema.metadata)
        merged[b"warnings"] = json.dumps(warnings).encode()
        table = table.replace_schema_metadata(merged)
    return table, warnings
