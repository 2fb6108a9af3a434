"""What an adapter finds in a distribution tree, and the checks every adapter shares.

An adapter's ``scan(root, settings, name)`` returns a :class:`Scan`: one :class:`VideoEntry` per video
(id, file, partition, subject, label files, side), plus the files it deliberately skipped (counted,
by reason) and warnings. The manifest module turns the entries into the manifest table.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from affpipe.errors import DatasetError

PARTITIONS = ("train", "devel", "test")
VIDEO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAMES_IN_MESSAGE = 8  # unknown/missing file names listed in one error message
LABEL_SOURCE_SEP = ";"  # separator of the label files in the manifest's label_source column


@dataclass(frozen=True)
class VideoEntry:
    """One video of a dataset, as found in its distribution layout.

    ``labels`` holds the label files as ``(valence_file, arousal_file)``; both are the same file
    when one file holds both dimensions; empty when the video has no labels (e.g. a test set).
    """

    video: str
    path: Path
    partition: str
    subject: str = ""
    labels: tuple[Path, ...] = ()
    side: str = ""


@dataclass
class Scan:
    """Result of scanning a distribution tree."""

    entries: list[VideoEntry] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    warnings: list[str] = field(default_factory=list)
    #: videos the layout names but that cannot be used (missing video or label file): with
    #: ``on_bad_input: exclude`` they are left out of the manifest and recorded, otherwise an error
    problems: list[tuple[str, str, str, DatasetError]] = field(default_factory=list)

    def problem(self, video: str, path: str | os.PathLike, partition: str, error: DatasetError) -> None:
        """Record a video that cannot be used: ``(video, path, partition, error)``."""
        self.problems.append((video, os.fspath(path), partition, error))

    def skip(self, reason: str, path: str | os.PathLike) -> None:
        """Record a file the adapter deliberately ignores (counted in the manifest metadata)."""
        self.skipped[reason].append(os.fspath(path))


def is_hidden(name: str) -> bool:
    """Dot-files (``.DS_Store``, editor swap files, ``._*`` resource forks) are ignored by every adapter."""
    return name.startswith(".")


def list_names(folder: Path, *, what: str, scan: Scan | None = None) -> list[str]:
    """Sorted entries of ``folder`` except hidden ones (which are recorded as skipped on ``scan``).

    Raises
    ------
    DatasetError
        If ``folder`` does not exist or is not a folder; the message says what it should hold.
    """
    if not folder.exists():
        raise DatasetError(f"expected folder with {what} does not exist", path=folder)
    if not folder.is_dir():
        raise DatasetError(f"expected a folder with {what}, found a file", path=folder)
    names = []
    for name in sorted(os.listdir(folder)):
        if is_hidden(name):
            if scan is not None:
                scan.skip("hidden file", folder / name)
            continue
        names.append(name)
    return names


def name_list(names: list[str]) -> str:
    """``a, b, c (and 12 more)`` for error messages."""
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    more = len(names) - MAX_NAMES_IN_MESSAGE
    return shown + (f" (and {more} more)" if more > 0 else "")


def unknown_files_error(folder: Path, names: list[str], expected: str) -> DatasetError:
    """The error for file names an adapter does not understand."""
    return DatasetError(
        f"{len(names)} file name(s) not understood: {name_list(sorted(names))}; expected {expected}",
        path=folder,
        hint="remove or move them, or check that `adapter` and `root` point at the right distribution",
    )


def check_video_id(video: str, *, path: str | os.PathLike) -> str:
    """Check that a video id is usable as a file name (results/{ds}/.../{video}.parquet)."""
    if not VIDEO_ID_RE.match(video) or video in {".", ".."}:
        raise DatasetError(
            f"video id {video!r} is not safe as a file name: use letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit",
            path=path,
        )
    return video


def check_unique_ids(entries: list[VideoEntry], *, where: str | os.PathLike) -> None:
    """Every video id must be unique within a dataset."""
    seen: dict[str, VideoEntry] = {}
    for e in entries:
        if e.video in seen:
            raise DatasetError(
                f"video id {e.video!r} occurs twice: {seen[e.video].path} and {e.path}", path=where
            )
        seen[e.video] = e


def label_source(labels: tuple[Path, ...]) -> str:
    """The manifest's ``label_source`` string: ``valence_file;arousal_file`` (one file if shared)."""
    unique = list(dict.fromkeys(os.fspath(p) for p in labels))
    for p in unique:
        if LABEL_SOURCE_SEP in p:
            raise DatasetError(f"label file path contains {LABEL_SOURCE_SEP!r}, which the manifest uses as separator", path=p)
    return LABEL_SOURCE_SEP.join(unique)


def parse_label_source(text: str) -> tuple[str, str] | None:
    """Inverse of :func:`label_source`: ``(valence_file, arousal_file)``, or None when empty."""
    if not text:
        return None
    parts = text.split(LABEL_SOURCE_SEP)
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise DatasetError(f"label_source {text!r} in the manifest names more than two files")
