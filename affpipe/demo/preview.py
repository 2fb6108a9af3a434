"""Contact sheet of the demo identities at their extreme expressions (so a user sees what the demo is).

One row per identity, one column per (valence, arousal) pose: neutral, the identity's lowest and
highest valence, lowest and highest arousal, and the two diagonal extremes. Frames are rendered
without head motion or noise. The PNG bytes are deterministic.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from affpipe.demo.expression import ExpressionStrengths, displace_landmarks
from affpipe.demo.identity import Identity
from affpipe.demo.render import render_frame

#: Width of one tile (pixels); tiles keep the frame's aspect ratio.
TILE_WIDTH = 128
HEADER_HEIGHT = 22
LABEL_WIDTH = 120
BACKGROUND = (32, 32, 32)
TEXT_COLOR = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
NO_MOTION = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def preview_poses(valence_min: float) -> list[tuple[str, float, float]]:
    """(caption, valence, arousal) of the preview columns for an identity with this valence floor."""
    return [
        ("neutral", 0.0, 0.0),
        ("valence low", valence_min, 0.0),
        ("valence +1", 1.0, 0.0),
        ("arousal -1", 0.0, -1.0),
        ("arousal +1", 0.0, 1.0),
        ("v low, a -1", valence_min, -1.0),
        ("v +1, a +1", 1.0, 1.0),
    ]


def preview_image(identities: Sequence[Identity], strengths: ExpressionStrengths) -> np.ndarray:
    """Render the contact sheet.

    Returns
    -------
    sheet : (H, W, 3) uint8, BGR
    """
    rows = []
    n_cols = len(preview_poses(0.0))
    header = None
    for ident in identities:
        rig = ident.rig
        w, h = rig.out_size
        tile_h = int(round(TILE_WIDTH * h / w))
        poses = preview_poses(ident.valence_min)
        tiles = []
        for caption, v, a in poses:
            target = displace_landmarks(rig.landmarks, v, a, strengths=strengths)
            frame, _ = render_frame(rig, target, NO_MOTION)
            tile = cv2.resize(frame, (TILE_WIDTH, tile_h), interpolation=cv2.INTER_AREA)
            cv2.putText(tile, f"v{v:+.2f} a{a:+.2f}", (3, tile_h - 5), FONT, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
            tiles.append(tile)
        label = np.full((tile_h, LABEL_WIDTH, 3), BACKGROUND, np.uint8)
        for i, text in enumerate([ident.name, f"({ident.partition})"]):
            cv2.putText(label, text, (4, 18 + 16 * i), FONT, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
        rows.append(np.hstack([label] + tiles))
        if header is None:
            header = np.full((HEADER_HEIGHT, LABEL_WIDTH + n_cols * TILE_WIDTH, 3), BACKGROUND, np.uint8)
            for j, (caption, _, _) in enumerate(poses):
                x = LABEL_WIDTH + j * TILE_WIDTH + 4
                cv2.putText(header, caption, (x, 15), FONT, FONT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
    return np.vstack([header] + rows)


def preview_sheet(identities: Sequence[Identity], strengths: ExpressionStrengths) -> bytes:
    """The contact sheet encoded as PNG bytes."""
    ok, buf = cv2.imencode(".png", preview_image(identities, strengths), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:  # pragma: no cover - OpenCV always encodes PNG
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
