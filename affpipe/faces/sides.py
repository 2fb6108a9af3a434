"""Side rows of the manifest (``side`` = left/right half of a two-person video): the ``affpipe faces``
arguments of one row. Light (no OpenCV): the Snakemake DAG build calls :func:`side_args` for every video."""

from __future__ import annotations

from typing import Any

OTHER_SIDE = {"left": "right", "right": "left"}


def side_args(row: dict[str, Any], rows: Any) -> list[str]:
    """``affpipe faces`` arguments for a manifest row's side: ``[]``, ``["--side", s]`` or, when the
    manifest also has the other side of the same video, ``["--side", s, "--paired"]``.

    Parameters
    ----------
    row : dict
        Manifest row (keys ``path``, ``side``).
    rows : iterable of dict
        All manifest rows of the dataset.
    """
    side = row.get("side") or ""
    if not side:
        return []
    other = OTHER_SIDE[side]
    paired = any(r.get("side") == other and r["path"] == row["path"] for r in rows)
    return ["--side", side, "--paired"] if paired else ["--side", side]
