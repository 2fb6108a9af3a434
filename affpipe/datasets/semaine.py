"""SEMAINE as packaged for AVEC 2012 (Fully Continuous Sub-Challenge).

Layout (files may sit in any sub-folders of ``root``: the distribution and local copies arrange them
differently, e.g. everything in one ``data/`` folder, or ``emotion labels/train/FC_train_labels/``):

* videos ``{train,devel,test}_videoNNN.avi`` at 49.979 fps (``tests_videoNNN.avi`` is accepted too:
  parts of the AVEC 2012 test set are named ``tests_...``); partition from the prefix;
* labels ``labels_continuous_{set}NNN_{arousal,valence,expectancy,power}.dat``, one value per line
  and one line per video frame. Test labels are not distributed; test videos without them get
  all-NaN labels (they are used when present).

Matching is by set and session number (``NNN`` compared as an integer). Any ``.avi`` file or
``labels_continuous_*`` file whose name does not follow these patterns is an error. All other files
(the distribution also ships audio, features, transcripts and word-level labels) are skipped and
counted in the manifest metadata. The AVEC 2012 packaging does not name the subject, so ``subject``
is empty.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from affpipe.datasets.labels import LabelTrack
from affpipe.datasets.layout import (
    Scan,
    VideoEntry,
    check_unique_ids,
    is_hidden,
    name_list,
    parse_label_source,
    unknown_files_error,
)
from affpipe.datasets.readers import read_value_per_line
from affpipe.errors import DatasetError

NOMINAL_FPS = 49.979
VIDEO_RE = re.compile(r"^(train|devel|test|tests)_video(\d+)\.avi$", re.IGNORECASE)
LABEL_RE = re.compile(
    r"^labels_continuous_(train|devel|test|tests)(\d+)_(arousal|valence|expectancy|power)\.dat$", re.IGNORECASE
)
LABEL_PREFIX = "labels_continuous_"
PARTITION = {"train": "train", "devel": "devel", "test": "test", "tests": "test"}
USED_DIMENSIONS = ("valence", "arousal")


def _walk(root: Path, scan: Scan) -> list[Path]:
    """Every non-hidden file below ``root`` (symlinked folders followed once each)."""
    files = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        visited.add(real)
        for d in dirnames:
            if is_hidden(d):
                scan.skip("hidden folder", Path(dirpath) / d)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for f in sorted(filenames):
            if is_hidden(f):
                scan.skip("hidden file", Path(dirpath) / f)
            else:
                files.append(Path(dirpath) / f)
    return files


def scan(root: Path, settings: dict[str, Any], name: str) -> Scan:
    """Find the videos and their continuous labels anywhere below ``root``."""
    result = Scan()
    videos: dict[tuple[str, int], Path] = {}
    labels: dict[tuple[str, int], dict[str, Path]] = {}
    unknown: list[str] = []
    for path in _walk(root, result):
        fname = path.name
        if m := VIDEO_RE.match(fname):
            key = (PARTITION[m.group(1).lower()], int(m.group(2)))
            if key in videos:
                raise DatasetError(f"two videos for {key[0]} session {key[1]}: {videos[key]} and {path}", path=root)
            videos[key] = path
        elif m := LABEL_RE.match(fname):
            key = (PARTITION[m.group(1).lower()], int(m.group(2)))
            dim = m.group(3).lower()
            if dim not in USED_DIMENSIONS:
                result.skip(f"{dim} labels (not used)", path)
                continue
            prev = labels.setdefault(key, {}).get(dim)
            if prev is not None:
                raise DatasetError(f"two {dim} label files for {key[0]} session {key[1]}: {prev} and {path}", path=root)
            labels[key][dim] = path
        elif fname.lower().endswith(".avi") or fname.lower().startswith(LABEL_PREFIX):
            unknown.append(os.fspath(path.relative_to(root)))
        else:
            result.skip(f"other files (*{path.suffix.lower() or 'no extension'})", path)
    if unknown:
        raise unknown_files_error(
            root,
            unknown,
            "{train,devel,test}_videoNNN.avi and labels_continuous_{set}NNN_{arousal,valence,expectancy,power}.dat",
        )
    orphans = sorted(set(labels) - set(videos))
    if orphans:
        files = [os.fspath(p) for k in orphans for p in labels[k].values()]
        raise DatasetError(f"label files without a video: {name_list(files)}", path=root)
    if not videos:
        raise DatasetError(
            "no AVEC 2012 videos ({train,devel,test}_videoNNN.avi) found below the dataset root", path=root
        )
    for key in sorted(videos):
        part, num = key
        path = videos[key]
        found = labels.get(key, {})
        missing = [d for d in USED_DIMENSIONS if d not in found]
        if missing and (part != "test" or found):
            prefix = path.name.split("_video")[0]
            expect = [f"{LABEL_PREFIX}{prefix}{num:03d}_{d}.dat" for d in missing]
            raise DatasetError(
                f"missing label file(s) {', '.join(expect)} for video {path.name}", path=path.parent
            )
        label_files = (found["valence"], found["arousal"]) if not missing else ()
        result.entries.append(
            VideoEntry(video=path.stem, path=path, partition=part, subject="", labels=label_files)
        )
    check_unique_ids(result.entries, where=root)
    return result


def read_tracks(row: dict[str, Any], settings: dict[str, Any]) -> tuple[list[LabelTrack], list[str]]:
    """The valence and arousal ``.dat`` files of one manifest row (per-frame tracks)."""
    files = parse_label_source(row["label_source"])
    assert files is not None
    val, aro = files
    return [read_value_per_line(val, dimension="valence"), read_value_per_line(aro, dimension="arousal")], []
