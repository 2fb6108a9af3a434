"""RECOLA as packaged for AVEC 2016 (Emotion Sub-Challenge).

Layout below ``root`` (other top-level entries such as ``recordings_audio``, ``recordings_physio``,
``features_*`` and ``ratings_individual`` are not read; they are counted in the manifest metadata):

* ``recordings_video/{train,dev,test}_N.mp4`` at 25 fps; ``dev`` is partition ``devel``. Every other
  (non-hidden) name in this folder is an error.
* ``ratings_gold_standard/{arousal,valence}/<video>.arff`` with attributes
  ``Instance_name, frameTime, GoldStandard`` (40 ms steps). The ``@data`` line is located by parsing
  the header, not by counting lines. Train and dev videos need both files; test ratings are not
  distributed (used when present). A rating file without a video, or any other name in these
  folders, is an error.

Labels are time-stamped (``frameTime``) and are interpolated to the video's frame times (see
:mod:`affpipe.datasets.labels`). Each RECOLA recording is one participant: ``subject`` is the
recording id.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from affpipe.datasets.labels import LabelTrack
from affpipe.datasets.layout import (
    Scan,
    VideoEntry,
    check_unique_ids,
    list_names,
    name_list,
    parse_label_source,
    unknown_files_error,
)
from affpipe.datasets.readers import read_arff_gold_standard
from affpipe.errors import DatasetError

NOMINAL_FPS = 25.0
VIDEO_DIR = "recordings_video"
RATINGS_DIR = "ratings_gold_standard"
DIMENSION_DIRS = ("valence", "arousal")
VIDEO_RE = re.compile(r"^(train|dev|test)_(\d+)\.mp4$", re.IGNORECASE)
RATING_RE = re.compile(r"^(train|dev|test)_(\d+)\.arff$", re.IGNORECASE)
PARTITION = {"train": "train", "dev": "devel", "test": "test"}


def scan(root: Path, settings: dict[str, Any], name: str) -> Scan:
    """Videos of ``recordings_video/`` and their gold-standard ratings."""
    result = Scan()
    for entry in list_names(root, what="the AVEC 2016 distribution", scan=result):
        if entry not in (VIDEO_DIR, RATINGS_DIR):
            result.skip("top-level entries not read (audio, physiology, features, individual ratings)", root / entry)
    vdir = root / VIDEO_DIR
    videos: dict[str, Path] = {}
    unknown = []
    for fname in list_names(vdir, what="the RECOLA videos ({train,dev,test}_N.mp4)", scan=result):
        m = VIDEO_RE.match(fname)
        if m and (vdir / fname).is_file():
            videos[Path(fname).stem] = vdir / fname
        else:
            unknown.append(fname)
    if unknown:
        raise unknown_files_error(vdir, unknown, "{train,dev,test}_N.mp4")
    if not videos:
        raise DatasetError("no RECOLA videos ({train,dev,test}_N.mp4) in the folder", path=vdir)

    ratings: dict[str, dict[str, Path]] = {d: {} for d in DIMENSION_DIRS}
    rdir = root / RATINGS_DIR
    needs_ratings = any(not v.lower().startswith("test") for v in videos)
    if rdir.exists() or needs_ratings:
        extra = [n for n in list_names(rdir, what="the gold-standard ratings (arousal/, valence/)", scan=result)
                 if n not in DIMENSION_DIRS]
        if extra:
            raise unknown_files_error(rdir, extra, "the folders arousal/ and valence/")
        for dim in DIMENSION_DIRS:
            ddir = rdir / dim
            unknown = []
            for fname in list_names(ddir, what=f"the {dim} gold-standard .arff files", scan=result):
                if RATING_RE.match(fname) and (ddir / fname).is_file():
                    ratings[dim][Path(fname).stem] = ddir / fname
                else:
                    unknown.append(fname)
            if unknown:
                raise unknown_files_error(ddir, unknown, "{train,dev,test}_N.arff")
            orphans = sorted(set(ratings[dim]) - set(videos))
            if orphans:
                raise DatasetError(
                    f"rating file(s) without a video in {VIDEO_DIR}/: {name_list([o + '.arff' for o in orphans])}",
                    path=ddir,
                )

    for vid in sorted(videos):
        part = PARTITION[VIDEO_RE.match(videos[vid].name).group(1).lower()]
        found = {d: ratings[d].get(vid) for d in DIMENSION_DIRS}
        missing = [d for d in DIMENSION_DIRS if found[d] is None]
        if missing and (part != "test" or len(missing) < len(DIMENSION_DIRS)):
            raise DatasetError(
                f"missing gold-standard rating file(s) for video {videos[vid].name}: "
                + ", ".join(str(rdir / d / f"{vid}.arff") for d in missing),
                path=rdir,
            )
        labels = (found["valence"], found["arousal"]) if not missing else ()
        result.entries.append(VideoEntry(video=vid, path=videos[vid], partition=part, subject=vid, labels=labels))
    check_unique_ids(result.entries, where=vdir)
    return result


def read_tracks(row: dict[str, Any], settings: dict[str, Any]) -> tuple[list[LabelTrack], list[str]]:
    """The valence and arousal gold standards of one manifest row (time-stamped tracks)."""
    files = parse_label_source(row["label_source"])
    assert files is not None
    tracks, warnings = [], []
    for dim, path in zip(("valence", "arousal"), files):
        track, names = read_arff_gold_standard(path, dimension=dim)
        others = [n for n in names if Path(n.strip("'\"")).stem != row["video"]]
        if others:
            warnings.append(
                f"{path}: Instance_name {', '.join(others)} differs from the video id {row['video']!r}; "
                "check that the rating file belongs to this video"
            )
        tracks.append(track)
    return tracks, warnings
