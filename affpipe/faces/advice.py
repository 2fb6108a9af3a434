"""What to try when the face detector finds nothing: one hint, named by config key.

Every "no face" message (the faces job's warning, ``excluded`` entries in ``ccc.json`` and
``report/summary.json``) carries :func:`no_face_hint`, built from the settings the faces stage ran
with, so the user sees which setting would find smaller or harder faces instead of a bare "no face".
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from affpipe.faces.detectors import NATIVE_MIN_FACE

#: The hint when the settings a faces table was made with are unknown.
GENERIC_HINT = ("to find smaller or harder faces try faces.upsample: 1 (faces down to ~40 px), faces.detector: cnn, "
                "or a lower faces.detect_threshold (docs/faces.md)")

#: Largest ``faces.upsample`` the schema allows.
MAX_UPSAMPLE = 3


def smallest_findable_face(settings: Mapping[str, Any]) -> float:
    """Smallest face side (full-resolution px) the detector finds with these settings.

    Full-frame detection falls back to full resolution when the downscaled pass finds nothing
    (:class:`affpipe.faces.tracker.FaceTracker`), so the limit is the backend's native window
    divided by the upsampling, or ``min_face_size`` when that is larger.
    """
    native = NATIVE_MIN_FACE[settings["detector"]] / 2 ** int(settings["upsample"])
    return max(float(native), float(settings["min_face_size"]))


def no_face_hint(settings: Mapping[str, Any], width: int | None = None, height: int | None = None) -> str:
    """One sentence naming the ``faces`` settings that would find smaller or harder faces.

    Parameters
    ----------
    settings : mapping
        The validated ``faces`` settings the stage ran with (faces metadata ``settings``).
    width, height : int, optional
        Frame size, for the message.
    """
    det, up = settings["detector"], int(settings["upsample"])
    size = f" {width}x{height}" if width and height else ""
    smallest = smallest_findable_face(settings)
    tries = []
    if up < MAX_UPSAMPLE:
        finer = NATIVE_MIN_FACE[det] / 2 ** (up + 1)
        tries.append(f"--config 'faces={{upsample: {up + 1}}}' (faces down to ~{finer:.0f} px; detection ~4x slower)")
    if float(settings["min_face_size"]) > NATIVE_MIN_FACE[det] / 2 ** (up + 1):
        tries.append(f"a lower faces.min_face_size (now {settings['min_face_size']:g} px)")
    if det != "cnn":
        tries.append("faces.detector: cnn (turned or badly lit faces; seconds per frame on a CPU)")
    tries.append(f"a lower faces.detect_threshold (now {float(settings['detect_threshold']):g}; more faces, and more false ones)")
    return (f"searched at full resolution{size} with detector {det}, upsample {up}: faces smaller than "
            f"~{smallest:.0f} px are not found; try {'; or '.join(tries)}")


def faces_table_hint(path: str | os.PathLike) -> str:
    """:func:`no_face_hint` for the settings and frame size recorded in a faces table's metadata."""
    from affpipe.errors import AffpipeError
    from affpipe.faces.store import read_metadata

    try:
        meta = read_metadata(path)
        return no_face_hint(meta["settings"], int(meta["width"]), int(meta["height"]))
    except (AffpipeError, KeyError, TypeError, ValueError):  # a table without (complete) metadata
        return GENERIC_HINT
