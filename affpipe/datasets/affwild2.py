"""Aff-Wild2 as packaged for the ABAW Valence-Arousal Estimation Challenge.

Layout below ``root``:

* videos (``.mp4``/``.avi``) in the folders of the ``video_dirs`` setting, searched recursively
  (default: those of ``batch1``, ``batch2``, ``new_vids`` and ``videos`` that exist). Any other
  non-hidden file there is an error; a video stem found twice is an error.
* annotations ``VA_Estimation_Challenge/{Train_Set,Validation_Set}/<name>.txt`` (``VA_Set`` and
  ``Training_Set`` of older releases are accepted), found at most two levels below ``root`` or given
  by ``annotations_dir``. Header ``valence,arousal``, then one line per frame; ``-5`` = unlabelled.
  ``Train_Set`` is partition ``train``, ``Validation_Set`` is ``devel``.
* optionally ABAW's test-set list (``test_list``), one name per line: partition ``test``, no labels.

An annotation (or test-list) name ``X_left``/``X_right`` without a video ``X_left.*`` refers to video
``X`` and one of its two people: the manifest row has id ``X_left``, the path of ``X`` and
``side`` ``left``. ``subject`` is the annotation name (one person).

The video folders hold the videos of every ABAW challenge (AU and expression too), many of which have
no VA annotation: those are skipped and counted in the manifest metadata, not an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from affpipe.datasets.labels import LabelTrack
from affpipe.datasets.layout import (
    Scan,
    VideoEntry,
    check_unique_ids,
    check_video_id,
    is_hidden,
    list_names,
    name_list,
    parse_label_source,
    unknown_files_error,
)
from affpipe.datasets.readers import read_text, read_valence_arousal_txt
from affpipe.datasets.settings import config_key
from affpipe.errors import DatasetError

NOMINAL_FPS = None  # Aff-Wild2 videos come at many frame rates
DEFAULT_VIDEO_DIRS = ("batch1", "batch2", "new_vids", "videos")
VIDEO_EXTENSIONS = {".mp4", ".avi"}
VA_DIR_NAMES = ("VA_Estimation_Challenge", "VA_Set")
SET_DIRS = {"Train_Set": "train", "Training_Set": "train", "Validation_Set": "devel"}
SIDES = ("left", "right")
ANNOTATION_SEARCH_DEPTH = 2


def _under(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def video_folders(root: Path, settings: dict[str, Any], name: str) -> list[Path]:
    """The folders to search for videos (explicit ones must exist)."""
    if settings["video_dirs"] is None:
        found = [root / d for d in DEFAULT_VIDEO_DIRS if (root / d).is_dir()]
        if not found:
            raise DatasetError(
                f"no video folder found: none of {', '.join(DEFAULT_VIDEO_DIRS)} exists in the dataset root",
                path=root,
                hint=f"set config key `{config_key(name, 'video_dirs')}` to the folder(s) holding the videos",
            )
        return found
    if not settings["video_dirs"]:
        raise DatasetError(f"config key `{config_key(name, 'video_dirs')}` is an empty list", path=root)
    folders = [_under(root, d) for d in settings["video_dirs"]]
    for f in folders:
        if not f.is_dir():
            raise DatasetError(
                f"video folder does not exist (config key `{config_key(name, 'video_dirs')}`)", path=f
            )
    return folders


def annotation_folder(root: Path, settings: dict[str, Any], name: str) -> Path:
    """The VA annotation folder (holding ``Train_Set``/``Validation_Set``)."""
    key = config_key(name, "annotations_dir")
    if settings["annotations_dir"] is not None:
        folder = _under(root, settings["annotations_dir"])
        if not folder.is_dir():
            raise DatasetError(f"annotation folder does not exist (config key `{key}`)", path=folder)
        return folder
    found: list[Path] = []
    level = [root]
    for _ in range(ANNOTATION_SEARCH_DEPTH):
        nxt = []
        for folder in level:
            try:
                children = [e for e in os.scandir(folder) if e.is_dir() and not is_hidden(e.name)]
            except OSError:
                continue
            for e in sorted(children, key=lambda e: e.name):
                (found if e.name in VA_DIR_NAMES else nxt).append(Path(e.path))
        level = nxt
    if len(found) != 1:
        what = "no folder" if not found else f"{len(found)} folders ({name_list([os.fspath(f) for f in found])})"
        raise DatasetError(
            f"{what} named {' or '.join(VA_DIR_NAMES)} within {ANNOTATION_SEARCH_DEPTH} levels of the dataset root",
            path=root,
            hint=f"set config key `{key}` to the folder holding Train_Set/ and Validation_Set/",
        )
    return found[0]


def _find_videos(folders: list[Path], result: Scan) -> dict[str, Path]:
    videos: dict[str, Path] = {}
    for folder in folders:
        unknown = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            for d in dirnames:
                if is_hidden(d):
                    result.skip("hidden folder", Path(dirpath) / d)
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            for f in sorted(filenames):
                p = Path(dirpath) / f
                if is_hidden(f):
                    result.skip("hidden file", p)
                elif p.suffix.lower() in VIDEO_EXTENSIONS:
                    if p.stem in videos:
                        raise DatasetError(f"video {p.stem!r} found twice: {videos[p.stem]} and {p}", path=folder)
                    videos[p.stem] = p
                else:
                    unknown.append(os.fspath(p.relative_to(folder)))
        if unknown:
            raise unknown_files_error(folder, unknown, "videos (.mp4, .avi)")
    return videos


def _resolve(label_name: str, videos: dict[str, Path], *, source: Path) -> tuple[Path, str]:
    """Video file and side for an annotation/test-list name (``X``, or ``X_left``/``X_right`` of video ``X``)."""
    if label_name in videos:
        return videos[label_name], ""
    for side in SIDES:
        suffix = f"_{side}"
        if label_name.endswith(suffix) and label_name[: -len(suffix)] in videos:
            return videos[label_name[: -len(suffix)]], side
    raise DatasetError(
        f"no video for {label_name!r} (looked for {label_name}.mp4/.avi"
        + (", or the video it is the left/right person of" if label_name.endswith(("_left", "_right")) else "")
        + " in the video folders)",
        path=source,
        hint="check `video_dirs` in the dataset config",
    )


def scan(root: Path, settings: dict[str, Any], name: str) -> Scan:
    """VA-annotated (and test-list) videos with their partition, side and annotation file."""
    result = Scan()
    videos = _find_videos(video_folders(root, settings, name), result)
    va_dir = annotation_folder(root, settings, name)
    names = list_names(va_dir, what="the VA annotation sets (Train_Set/, Validation_Set/)", scan=result)
    unknown = [n for n in names if n not in SET_DIRS]
    if unknown:
        raise unknown_files_error(va_dir, unknown, f"the folders {', '.join(SET_DIRS)}")
    if not names:
        raise DatasetError("no Train_Set/ or Validation_Set/ in the annotation folder", path=va_dir)
    used: set[str] = set()
    annotations: dict[str, Path] = {}
    for set_dir in names:
        folder = va_dir / set_dir
        bad = []
        for fname in list_names(folder, what="VA annotation .txt files", scan=result):
            p = folder / fname
            if p.suffix != ".txt" or not p.is_file():
                bad.append(fname)
                continue
            ann = p.stem
            check_video_id(ann, path=p)
            if ann in annotations:
                raise DatasetError(f"annotation {ann!r} is in two sets: {annotations[ann]} and {p}", path=va_dir)
            annotations[ann] = p
            vpath, side = _resolve(ann, videos, source=p)
            used.add(vpath.stem)
            result.entries.append(
                VideoEntry(video=ann, path=vpath, partition=SET_DIRS[set_dir], subject=ann, labels=(p, p), side=side)
            )
        if bad:
            raise unknown_files_error(folder, bad, "<video name>.txt annotation files")
    if settings["test_list"] is not None:
        lst = _under(root, settings["test_list"])
        if not lst.is_file():
            raise DatasetError(
                f"test-set list does not exist (config key `{config_key(name, 'test_list')}`)", path=lst
            )
        for k, raw in enumerate(read_text(lst, what="test-set list").splitlines()):
            item = raw.strip()
            if not item:
                continue
            item = Path(item).stem if Path(item).suffix.lower() in VIDEO_EXTENSIONS | {".txt"} else item
            check_video_id(item, path=lst)
            if item in annotations:
                raise DatasetError(
                    f"line {k + 1}: {item!r} is in the test list and has a VA annotation ({annotations[item]})",
                    path=lst,
                )
            vpath, side = _resolve(item, videos, source=lst)
            used.add(vpath.stem)
            result.entries.append(VideoEntry(video=item, path=vpath, partition="test", subject=item, side=side))
    for stem in sorted(set(videos) - used):
        result.skip("videos without VA annotation (other ABAW challenges)", videos[stem])
    check_unique_ids(result.entries, where=va_dir)
    return result


def read_tracks(row: dict[str, Any], settings: dict[str, Any]) -> tuple[list[LabelTrack], list[str]]:
    """The per-frame valence/arousal annotation of one manifest row."""
    files = parse_label_source(row["label_source"])
    assert files is not None
    return read_valence_arousal_txt(files[0]), []
