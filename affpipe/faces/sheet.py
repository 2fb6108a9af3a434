"""Contact sheet of a faces table: evenly spaced frames with box, landmarks and status drawn on.

Lets a user judge tracking quality at a glance (``python -m affpipe show-faces``). Detected frames
are drawn in green, tracked frames in yellow, lost frames get a red border, a red cross and "LOST".
"""

from __future__ import annotations

import cv2
import numpy as np

from affpipe.faces.store import FacesTrack

TILE_WIDTH = 320
COLUMNS = 4
HEADER_PX = 28
FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR colours
COLOURS = {"detected": (60, 220, 60), "tracked": (0, 220, 255), "lost": (40, 40, 235)}
TEXT_BG = (0, 0, 0)
SHIFT = 4  # fractional bits of the drawing coordinates (sub-pixel landmark positions)
SUBPIXEL = 1 << SHIFT
DOT_PER_FACE, DOT_MIN, DOT_MAX = 1 / 150, 0.4, 1.5  # dot radius: fraction of the face box side, px limits
# Landmark polylines (dlib 68-point order): (start, stop, closed)
CONTOURS = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
            (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]


def sample_frames(n_rows: int, n: int) -> np.ndarray:
    """``n`` evenly spaced row indices in ``[0, n_rows)`` (fewer if the video is shorter), int64."""
    if n_rows <= 0 or n <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.round(np.linspace(0, n_rows - 1, min(n, n_rows))).astype(np.int64))


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour, scale: float = 0.5) -> None:
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - h - 3), (x + w + 2, y + base), TEXT_BG, -1)
    cv2.putText(img, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)


def draw_tile(frame_bgr: np.ndarray, track: FacesTrack, row: int, *, width: int = TILE_WIDTH) -> np.ndarray:
    """One tile: the frame resized to ``width`` with the row's box, landmarks and status.

    Parameters
    ----------
    frame_bgr : (H, W, 3) uint8
    track : FacesTrack
    row : int
        Row of ``track`` (= frame index) this frame belongs to.

    Returns
    -------
    (h, width, 3) uint8
    """
    s = width / frame_bgr.shape[1]
    tile = cv2.resize(frame_bgr, (width, max(1, int(round(frame_bgr.shape[0] * s)))), interpolation=cv2.INTER_AREA)
    status = str(track.status[row])
    colour = COLOURS.get(status, (255, 255, 255))
    if status == "lost":
        h, w = tile.shape[:2]
        cv2.line(tile, (0, 0), (w - 1, h - 1), colour, 2, cv2.LINE_AA)
        cv2.line(tile, (w - 1, 0), (0, h - 1), colour, 2, cv2.LINE_AA)
        cv2.rectangle(tile, (0, 0), (w - 1, h - 1), colour, 4)
        _label(tile, "LOST", (w // 2 - 30, h // 2 + 10), colour, scale=1.0)
    else:
        b = track.bbox[row] * s
        cv2.rectangle(tile, (int(round(b[0])), int(round(b[1]))), (int(round(b[2])), int(round(b[3]))), colour, 1)
        pts = np.round(track.points[row] * s * SUBPIXEL).astype(np.int32)
        for start, stop, closed in CONTOURS:
            cv2.polylines(tile, [pts[start:stop]], closed, colour, 1, cv2.LINE_AA, shift=SHIFT)
        # landmark dots scale with the face so small faces stay readable
        radius = int(np.clip((b[2] - b[0]) * DOT_PER_FACE * SUBPIXEL, DOT_MIN * SUBPIXEL, DOT_MAX * SUBPIXEL))
        for p in pts:
            cv2.circle(tile, (int(p[0]), int(p[1])), radius, (255, 255, 255), -1, cv2.LINE_AA, shift=SHIFT)
    score = track.score[row]
    score_txt = "" if not np.isfinite(score) else f" {score:.2f}"
    _label(tile, f"#{int(track.frame[row])} {track.time_s[row]:.2f}s {status}{score_txt}", (4, 16), colour)
    return tile


def render_sheet(tiles: list[np.ndarray], *, title: str = "", columns: int = COLUMNS) -> np.ndarray:
    """Arrange tiles (same width) in a grid under a title strip.

    Returns
    -------
    (H, W, 3) uint8 BGR
    """
    if not tiles:
        raise ValueError("no tiles to render")
    th = max(t.shape[0] for t in tiles)
    tw = tiles[0].shape[1]
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((HEADER_PX + rows * th, cols * tw, 3), np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[HEADER_PX + r * th:HEADER_PX + r * th + t.shape[0], c * tw:c * tw + t.shape[1]] = t
    if title:
        cv2.putText(sheet, title, (6, HEADER_PX - 9), FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return sheet
