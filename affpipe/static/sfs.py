"""Static facial shape image (SFS): 15 semantic face regions, each a fixed colour, on black.

Pure functions on aligned landmarks (``(68, 2)`` crop coordinates, iBUG 300-W order; see
:mod:`affpipe.static.align`). "left"/"right" are the *image* sides (``eye_left`` is points 36-41, on the
left of the image, i.e. the subject's right eye).

:data:`REGIONS` is the single definition of the regions: a polygon over landmark indices (filled),
a polygon with a hole (lips: outer lip contour minus the inner one), or a 5-point eyebrow polyline
drawn with a thickness of ``eyebrow_thickness * inter-ocular distance``. The polygons of
neighbouring regions share edges (e.g. cheek/jaw share 4-48), so they tile the lower face without
overlapping; pixels exactly on a shared edge get the region painted later.

Rendering order is the table order: the regions are painted one after the other into one label
image (later overwrites earlier), so every pixel carries exactly one region colour or black; then
everything outside the convex hull of the 68 points is set to black (the thick eyebrow lines
would otherwise stick out above it). Inside the hull, areas no region covers (upper eyelids, the
temples and the space between the brows) stay black: about 12-16 % of the hull on real faces
(docs/dynamic.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from affpipe.static.align import _SHIFT, fixed_point, hull_mask, inter_ocular


@dataclass(frozen=True)
class Region:
    """One SFS region.

    Attributes
    ----------
    name : str
    kind : {"polygon", "ring", "polyline"}
        ``polygon``: fill ``indices``; ``ring``: fill ``indices`` minus the polygon ``hole``;
        ``polyline``: a thick open line through ``indices``.
    indices : tuple of int
        Landmark indices (0-based, iBUG 68), in boundary order.
    colour : (int, int, int)
        RGB.
    hole : tuple of int
        Only for ``ring``.
    """

    name: str
    kind: str
    indices: tuple[int, ...]
    colour: tuple[int, int, int]
    hole: tuple[int, ...] = ()


# Colours: 15 of Sasha Trubetskoy's "20 simple, distinct colours" (RGB), none black.
# Table order = painting order (large lower-face regions first, small central ones last).
REGIONS: tuple[Region, ...] = (
    Region("jaw_left", "polygon", (4, 5, 6, 7, 8, 57, 58, 59, 48), (128, 0, 0)),
    Region("jaw_right", "polygon", (12, 11, 10, 9, 8, 57, 56, 55, 54), (255, 250, 200)),
    Region("cheek_left", "polygon", (2, 3, 4, 48, 31), (210, 245, 60)),
    Region("cheek_right", "polygon", (14, 13, 12, 54, 35), (240, 50, 230)),
    Region("cheekbone_left", "polygon", (0, 1, 2, 31, 39, 40, 41, 36), (70, 240, 240)),
    Region("cheekbone_right", "polygon", (16, 15, 14, 35, 42, 47, 46, 45), (145, 30, 180)),
    Region("philtrum_left", "polygon", (31, 32, 33, 51, 50, 49, 48), (170, 110, 40)),
    Region("philtrum_right", "polygon", (35, 34, 33, 51, 52, 53, 54), (220, 190, 255)),
    Region("nose", "polygon", (27, 42, 35, 34, 33, 32, 31, 39), (245, 130, 48)),
    Region("lips", "ring", tuple(range(48, 60)), (0, 128, 128), hole=tuple(range(60, 68))),
    Region("mouth", "polygon", tuple(range(60, 68)), (250, 190, 212)),
    Region("eye_left", "polygon", tuple(range(36, 42)), (255, 225, 25)),
    Region("eye_right", "polygon", tuple(range(42, 48)), (0, 130, 200)),
    Region("eyebrow_left", "polyline", tuple(range(17, 22)), (230, 25, 75)),
    Region("eyebrow_right", "polyline", tuple(range(22, 27)), (60, 180, 75)),
)

REGION_NAMES: tuple[str, ...] = tuple(r.name for r in REGIONS)

#: ``PALETTE[label]`` is the RGB colour of label image value ``label`` (0 = background, black).
PALETTE = np.array([(0, 0, 0)] + [r.colour for r in REGIONS], dtype=np.uint8)
PALETTE.setflags(write=False)

MIN_EYEBROW_PX = 1


def eyebrow_width(points: np.ndarray, *, eyebrow_thickness: float) -> int:
    """Eyebrow line thickness in pixels: ``eyebrow_thickness * inter-ocular distance``, at least 1."""
    return max(MIN_EYEBROW_PX, int(round(eyebrow_thickness * inter_ocular(points))))


def region_mask(region: Region, points: np.ndarray, *, size: int, eyebrow_thickness: float) -> np.ndarray:
    """Pixels of one region on its own (before painting order and hull clipping).

    Parameters
    ----------
    region : Region
    points : (68, 2) float
        Aligned landmarks (crop pixels), finite.
    size : int
        Crop side S.
    eyebrow_thickness : float
        Eyebrow line thickness as a fraction of the inter-ocular distance.

    Returns
    -------
    (S, S) bool
    """
    pts = np.asarray(points, dtype=np.float64)
    canvas = np.zeros((size, size), np.uint8)
    poly = fixed_point(pts[list(region.indices)])
    if region.kind == "polygon":
        cv2.fillPoly(canvas, [poly], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    elif region.kind == "ring":
        cv2.fillPoly(canvas, [poly], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        cv2.fillPoly(canvas, [fixed_point(pts[list(region.hole)])], 0, lineType=cv2.LINE_8, shift=_SHIFT)
    elif region.kind == "polyline":
        width = eyebrow_width(pts, eyebrow_thickness=eyebrow_thickness)
        cv2.polylines(canvas, [poly], False, 1, thickness=width, lineType=cv2.LINE_8, shift=_SHIFT)
    else:  # pragma: no cover - table is static
        raise ValueError(f"unknown region kind {region.kind!r}")
    return canvas.astype(bool)


def region_labels(points: np.ndarray, *, size: int, eyebrow_thickness: float) -> np.ndarray:
    """Label image of the SFS regions.

    Parameters
    ----------
    points : (68, 2) float
        Aligned landmarks (crop pixels), finite.
    size : int
    eyebrow_thickness : float
        See :func:`region_mask`.

    Returns
    -------
    (S, S) uint8
        0 = background (outside the hull or in no region), ``k`` = ``REGIONS[k - 1]``; regions
        painted in table order, then clipped to the landmarks' convex hull.
    """
    labels = np.zeros((size, size), np.uint8)
    for k, region in enumerate(REGIONS, start=1):
        labels[region_mask(region, points, size=size, eyebrow_thickness=eyebrow_thickness)] = k
    labels[~hull_mask(points, size=size)] = 0
    return labels


def static_shape(points: np.ndarray, *, size: int, eyebrow_thickness: float) -> np.ndarray:
    """SFS image: every region in its colour (:data:`PALETTE`), black elsewhere.

    Parameters
    ----------
    points : (68, 2) float
        Aligned landmarks (crop pixels), finite.
    size : int
    eyebrow_thickness : float
        See :func:`region_mask`.

    Returns
    -------
    (S, S, 3) uint8
        RGB.
    """
    return PALETTE[region_labels(points, size=size, eyebrow_thickness=eyebrow_thickness)]
