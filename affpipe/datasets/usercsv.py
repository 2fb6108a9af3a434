"""A user's own dataset described by a CSV table (also the layout of the generated demo).

``<root>/<table>`` (setting ``table``, default ``videos.csv``) has the columns
``video,path,partition,labels`` and optionally ``subject``:

* ``video``: id, unique, letters/digits/``._-`` (it names the per-video result files);
* ``path``: the video file, relative to the table's folder (it may not leave that folder through
  ``..``) or absolute;
* ``partition``: ``train``, ``devel`` or ``test`` (``dev``/``val``/``validation`` are read as
  ``devel``);
* ``labels``: the label file (same path rules), or empty for an unlabelled video.

A label file is a CSV with the columns ``valence,arousal`` and either ``time_s`` (seconds; interpolated
to the frame times) or ``frame`` (0-based frame index; used as is). Any other column is an error.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from affpipe.datasets.labels import LabelTrack
from affpipe.datasets.layout import PARTITIONS, Scan, VideoEntry, check_unique_ids, check_video_id, parse_label_source
from affpipe.datasets.readers import read_label_csv, read_text
from affpipe.datasets.settings import config_key
from affpipe.errors import DatasetError

NOMINAL_FPS = None
REQUIRED_COLUMNS = ("video", "path", "partition", "labels")
OPTIONAL_COLUMNS = ("subject",)
PARTITION_ALIASES = {
    "train": "train",
    "training": "train",
    "devel": "devel",
    "dev": "devel",
    "val": "devel",
    "valid": "devel",
    "validation": "devel",
    "test": "test",
    "testing": "test",
}


class MissingFileError(DatasetError):
    """A video or label file named in the table that does not exist (a per-video problem)."""


def table_path(root: Path, settings: dict[str, Any]) -> Path:
    """``<root>/<table>``."""
    return root / settings["table"]


def _file_in_table(base: Path, value: str, *, table: Path, line: int, column: str) -> Path:
    """Resolve a path cell: relative to ``base`` (not escaping it) or absolute; must be a file."""
    raw = Path(value).expanduser()
    if raw.is_absolute():
        path = raw
    else:
        norm = os.path.normpath(raw)
        if norm == ".." or norm.startswith(".." + os.sep):
            raise DatasetError(
                f"line {line}, {column}: {value!r} leaves the table's folder; use a path inside it or an absolute path",
                path=table,
            )
        path = base / norm
    if not path.exists():
        what = "video" if column == "path" else "label file"
        raise MissingFileError(f"{what} named on line {line} of {table.name} ({column} column) does not exist",
                               path=path)
    if not path.is_file():
        raise MissingFileError(f"line {line}, {column}: not a file", path=path)
    return path


def scan(root: Path, settings: dict[str, Any], name: str) -> Scan:
    """Rows of the video table, with paths checked."""
    result = Scan()
    table = table_path(root, settings)
    if not table.is_file():
        raise DatasetError(
            "video table does not exist",
            path=table,
            hint=f"create it (columns {','.join(REQUIRED_COLUMNS)}) or set config key `{config_key(name, 'table')}`",
        )
    reader = csv.reader(io.StringIO(read_text(table, what="video table")))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError("video table is empty", path=table) from None
    unknown = [h for h in header if h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise DatasetError(
            f"bad header {','.join(header)!r}: columns must be {','.join(REQUIRED_COLUMNS)} and optionally subject"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            + (f" (missing: {', '.join(missing)})" if missing else ""),
            path=table,
        )
    pos = {h: i for i, h in enumerate(header)}
    base = table.parent
    for i, row in enumerate(reader):
        line = i + 2
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DatasetError(f"line {line}: {len(row)} fields, the header has {len(header)}", path=table)
        cell = {h: row[pos[h]].strip() for h in header}
        video = check_video_id(cell["video"], path=table)
        part = PARTITION_ALIASES.get(cell["partition"].lower())
        if part is None:
            raise DatasetError(
                f"line {line}: partition {cell['partition']!r} is not one of {', '.join(PARTITIONS)}", path=table
            )
        if not cell["path"]:
            raise DatasetError(f"line {line}: empty path for video {video!r}", path=table)
        # a missing video or label file is a per-video problem (excluded or fatal by `on_bad_input`);
        # a path leaving the table's folder stays a structural error of the table
        try:
            vpath = _file_in_table(base, cell["path"], table=table, line=line, column="path")
        except MissingFileError as err:
            result.problem(video, err.path or "", part, err)
            continue
        labels: tuple[Path, ...] = ()
        if cell["labels"]:
            try:
                lpath = _file_in_table(base, cell["labels"], table=table, line=line, column="labels")
            except MissingFileError as err:
                result.problem(video, vpath, part, err)
                continue
            labels = (lpath, lpath)
        result.entries.append(
            VideoEntry(video=video, path=vpath, partition=part, subject=cell.get("subject", ""), labels=labels)
        )
    if not result.entries and not result.problems:
        raise DatasetError("video table has no rows", path=table)
    check_unique_ids(result.entries, where=table)
    return result


def read_tracks(row: dict[str, Any], settings: dict[str, Any]) -> tuple[list[LabelTrack], list[str]]:
    """The label CSV of one manifest row (per-frame or time-stamped, by its columns)."""
    files = parse_label_source(row["label_source"])
    assert files is not None
    return read_label_csv(files[0]), []
