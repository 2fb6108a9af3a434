"""Parsers of the label file formats the adapters meet, into :class:`~affpipe.datasets.labels.LabelTrack`.

Every parser names the file and the line of anything it cannot read; none skips a line silently.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path

import numpy as np

from affpipe.datasets.labels import LabelTrack
from affpipe.errors import DatasetError

MISSING_TOKENS = {"", "?", "nan", "NaN", "NAN", "na", "NA"}  # read as NaN (counted as unlabelled)


def read_text(path: str | os.PathLike, *, what: str) -> str:
    """Read a label file, with an error naming it when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{what} does not exist", path=path)
    if not path.is_file():
        raise DatasetError(f"{what} is not a file", path=path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    except OSError as exc:
        raise DatasetError(f"cannot read {what} ({exc.strerror})", path=path) from None


def parse_number(token: str, *, path: str | os.PathLike, line: int, column: str) -> float:
    """A float from a label file cell; NaN for the missing tokens; error naming file/line otherwise."""
    token = token.strip()
    if token in MISSING_TOKENS:
        return math.nan
    try:
        return float(token)
    except ValueError:
        raise DatasetError(f"line {line}, {column}: {token!r} is not a number", path=path) from None


def _strip_trailing_blank(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_value_per_line(path: str | os.PathLike, *, dimension: str) -> LabelTrack:
    """SEMAINE / AVEC 2012 ``.dat``: one float per line, line ``k`` (0-based) is frame ``k``.

    Trailing blank lines are ignored; a blank line before the end is an error (it would shift every
    later frame).
    """
    text = read_text(path, what=f"{dimension} label file")
    lines = _strip_trailing_blank(text.splitlines())
    values = np.empty(len(lines), dtype=np.float64)
    for k, raw in enumerate(lines):
        tok = raw.strip()
        if not tok:
            raise DatasetError(f"line {k + 1} is blank; expected one value per frame", path=path)
        if len(tok.split()) != 1:
            raise DatasetError(f"line {k + 1}: expected one value per line, found {tok!r}", path=path)
        values[k] = parse_number(tok, path=path, line=k + 1, column=dimension)
    n = len(lines)
    return LabelTrack(
        dimension=dimension,
        source=os.fspath(path),
        kind="frame",
        index=np.arange(n, dtype=np.int64),
        values=values,
        lines=np.arange(1, n + 1, dtype=np.int64),
    )


def read_valence_arousal_txt(path: str | os.PathLike) -> list[LabelTrack]:
    """Aff-Wild2 / ABAW VA ``.txt``: header ``valence,arousal``, then one ``v,a`` line per frame."""
    text = read_text(path, what="VA annotation file")
    lines = _strip_trailing_blank(text.splitlines())
    if not lines:
        raise DatasetError("annotation file is empty", path=path)
    header = [h.strip().lower() for h in lines[0].split(",")]
    if header != ["valence", "arousal"]:
        raise DatasetError(f"line 1: expected the header 'valence,arousal', found {lines[0]!r}", path=path)
    n = len(lines) - 1
    val = np.empty(n, dtype=np.float64)
    aro = np.empty(n, dtype=np.float64)
    for k, raw in enumerate(lines[1:]):
        parts = raw.split(",")
        if len(parts) != 2:
            raise DatasetError(f"line {k + 2}: expected 'valence,arousal', found {raw!r}", path=path)
        val[k] = parse_number(parts[0], path=path, line=k + 2, column="valence")
        aro[k] = parse_number(parts[1], path=path, line=k + 2, column="arousal")
    idx = np.arange(n, dtype=np.int64)
    lines_no = np.arange(2, n + 2, dtype=np.int64)
    src = os.fspath(path)
    return [
        LabelTrack("valence", src, "frame", idx, val, lines_no),
        LabelTrack("arousal", src, "frame", idx, aro, lines_no),
    ]


_ARFF_ATTRIBUTE = re.compile(r"^@attribute\s+('(?:[^']*)'|\"(?:[^\"]*)\"|\S+)\s+(.+)$", re.IGNORECASE)


def read_arff_gold_standard(path: str | os.PathLike, *, dimension: str) -> tuple[LabelTrack, list[str]]:
    """RECOLA / AVEC 2016 gold-standard ``.arff``: ``Instance_name, frameTime, GoldStandard``.

    The header is parsed (``@attribute`` lines give the column order) and the data start after the
    ``@data`` line, wherever it is; ``%`` comments and blank lines are ignored.

    Returns
    -------
    track : LabelTrack
        kind "time" (``frameTime`` seconds).
    instance_names : list of str
        The distinct ``Instance_name`` values (the adapter checks them against the video id).
    """
    text = read_text(path, what=f"{dimension} gold-standard file")
    attributes: list[str] = []
    data_line = None
    lines = text.splitlines()
    for k, raw in enumerate(lines):
        s = raw.strip()
        if not s or s.startswith("%"):
            continue
        low = s.lower()
        if low.startswith("@attribute"):
            m = _ARFF_ATTRIBUTE.match(s)
            if not m:
                raise DatasetError(f"line {k + 1}: cannot read the @attribute line {s!r}", path=path)
            attributes.append(m.group(1).strip("'\"").lower())
        elif low.startswith("@data"):
            data_line = k
            break
        elif low.startswith("@relation"):
            continue
        else:
            raise DatasetError(f"line {k + 1}: unexpected line before @data: {s!r}", path=path)
    if data_line is None:
        raise DatasetError("no @data line: not an ARFF file", path=path)
    try:
        t_col, v_col = attributes.index("frametime"), attributes.index("goldstandard")
    except ValueError:
        raise DatasetError(
            f"expected attributes frameTime and GoldStandard, found {', '.join(attributes) or 'none'}", path=path
        ) from None
    name_col = attributes.index("instance_name") if "instance_name" in attributes else None
    times, values, line_no, names = [], [], [], set()
    body = "\n".join(lines[data_line + 1 :])
    reader = csv.reader(io.StringIO(body), quotechar="'", skipinitialspace=True)
    for i, row in enumerate(reader):
        k = data_line + 2 + i  # 1-based line number in the file
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("%"):
            continue
        if len(row) != len(attributes):
            raise DatasetError(
                f"line {k}: {len(row)} fields, but the header declares {len(attributes)} attributes", path=path
            )
        times.append(parse_number(row[t_col], path=path, line=k, column="frameTime"))
        values.append(parse_number(row[v_col], path=path, line=k, column="GoldStandard"))
        line_no.append(k)
        if name_col is not None:
            names.add(row[name_col].strip())
    track = LabelTrack(
        dimension=dimension,
        source=os.fspath(path),
        kind="time",
        index=np.asarray(times, dtype=np.float64),
        values=np.asarray(values, dtype=np.float64),
        lines=np.asarray(line_no, dtype=np.int64),
    )
    return track, sorted(names)


CSV_LABEL_COLUMNS = {"valence", "arousal"}
CSV_INDEX_COLUMNS = ("time_s", "frame")


def read_label_csv(path: str | os.PathLike) -> list[LabelTrack]:
    """User CSV label file: columns ``valence,arousal`` and exactly one of ``time_s`` or ``frame``."""
    text = read_text(path, what="label file")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError("label file is empty", path=path) from None
    unknown = [h for h in header if h not in CSV_LABEL_COLUMNS | set(CSV_INDEX_COLUMNS)]
    if unknown:
        raise DatasetError(
            f"unknown column(s) {', '.join(map(repr, unknown))}; expected valence, arousal and one of time_s or frame",
            path=path,
        )
    if len(set(header)) != len(header):
        raise DatasetError(f"duplicate column names in {header}", path=path)
    missing = CSV_LABEL_COLUMNS - set(header)
    if missing:
        raise DatasetError(f"missing column(s) {', '.join(sorted(missing))}", path=path)
    index_cols = [c for c in CSV_INDEX_COLUMNS if c in header]
    if len(index_cols) != 1:
        raise DatasetError(
            "expected exactly one of the columns time_s (seconds) or frame (0-based frame index), "
            f"found {index_cols or 'neither'}",
            path=path,
        )
    kind_col = index_cols[0]
    pos = {h: i for i, h in enumerate(header)}
    idx, val, aro, line_no = [], [], [], []
    for i, row in enumerate(reader):
        k = i + 2
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DatasetError(f"line {k}: {len(row)} fields, the header has {len(header)}", path=path)
        raw_index = row[pos[kind_col]].strip()
        if kind_col == "frame":
            try:
                idx.append(int(raw_index))
            except ValueError:
                raise DatasetError(f"line {k}, frame: {raw_index!r} is not an integer frame index", path=path) from None
        else:
            t = parse_number(raw_index, path=path, line=k, column="time_s")
            if math.isnan(t):
                raise DatasetError(f"line {k}, time_s: a time is required", path=path)
            idx.append(t)
        val.append(parse_number(row[pos["valence"]], path=path, line=k, column="valence"))
        aro.append(parse_number(row[pos["arousal"]], path=path, line=k, column="arousal"))
        line_no.append(k)
    kind = "frame" if kind_col == "frame" else "time"
    index = np.asarray(idx, dtype=np.int64 if kind == "frame" else np.float64)
    lines = np.asarray(line_no, dtype=np.int64)
    src = os.fspath(path)
    return [
        LabelTrack("valence", src, kind, index, np.asarray(val, dtype=np.float64), lines),
        LabelTrack("arousal", src, kind, index, np.asarray(aro, dtype=np.float64), lines),
    ]
