"""Fast piecewise-affine image warping on a fixed triangulation.

One frame is warped with a single dense inverse map and :func:`cv2.remap`:

1. For each destination triangle, the affine map destination -> source is solved (batched 3x3).
2. The destination triangles are rasterised into a label image (``cv2.fillConvexPoly``, sub-pixel
   vertices), small triangles first so that large neighbours win the shared edge pixels (an affine
   extrapolated past the edge of a thin triangle can be badly stretched). Degenerate and folded
   triangles are skipped: their neighbours cover their pixels.
3. Each pixel's source coordinates are its triangle's affine applied to the pixel centre; pixels
   outside every triangle use a fallback affine (a global similarity, typically).

At 256x256 with ~150 triangles this takes a few milliseconds (skimage's PiecewiseAffineTransform,
which searches the triangulation per pixel, takes over a second).

Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

#: Sub-pixel bits for cv2.fillConvexPoly vertices (1/16 pixel).
RASTER_SHIFT = 4
#: Destination triangles with a signed area below this (px^2) - degenerate, or folded over (negative
#: area for a mesh from :func:`triangulate`) - are not rasterised: the neighbours they collapse
#: onto or fold over cover their pixels.
MIN_TRIANGLE_AREA = 0.05


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangulation of a point set.

    Parameters
    ----------
    points : (N, 2) float
        Distinct points (pixels).

    Returns
    -------
    triangles : (M, 3) int64
        Vertex indices into ``points``, each triangle counter-clockwise in image coordinates
        (positive signed area with y pointing down).
    """
    pts = np.asarray(points, float)
    tri = Delaunay(pts).simplices.astype(np.int64)
    area = signed_areas(pts, tri)
    flip = area < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas of triangles.

    Parameters
    ----------
    points : (N, 2) or (T, N, 2) float
    triangles : (M, 3) int

    Returns
    -------
    area : (M,) or (T, M) float64
        Positive for the orientation :func:`triangulate` returns; a sign change between the source
        and the destination configuration means the warp folds there.
    """
    p = np.asarray(points, float)
    a, b, c = p[..., triangles[:, 0], :], p[..., triangles[:, 1], :], p[..., triangles[:, 2], :]
    return 0.5 * ((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))


def triangle_affines(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Per-triangle affine maps from destination to source coordinates.

    Parameters
    ----------
    src, dst : (N, 2) float
        Corresponding points.
    triangles : (M, 3) int

    Returns
    -------
    affines : (M, 2, 3) float64
        ``affines[k] @ [x, y, 1] = source point`` for a destination point in triangle ``k``.
        Degenerate destination triangles get a least-squares solution (they are never rasterised).
    """
    d = np.asarray(dst, float)[triangles]  # (M, 3, 2)
    s = np.asarray(src, float)[triangles]  # (M, 3, 2)
    dh = np.concatenate([d, np.ones(d.shape[:2] + (1,))], axis=2)  # (M, 3, 3)
    det = np.linalg.det(dh)
    ok = np.abs(det) > 1e-9
    out = np.empty((len(triangles), 3, 2))
    if ok.any():
        out[ok] = np.linalg.solve(dh[ok], s[ok])
    if (~ok).any():
        out[~ok] = np.linalg.pinv(dh[~ok]) @ s[~ok]
    return np.transpose(out, (0, 2, 1))


def piecewise_affine_maps(
    src_points: np.ndarray,
    dst_points: np.ndarray,
    triangles: np.ndarray,
    *,
    out_shape: tuple[int, int],
    fallback: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense inverse maps (for :func:`cv2.remap`) of a piecewise-affine warp.

    Parameters
    ----------
    src_points, dst_points : (N, 2) float
        Mesh vertices in the source image and in the output image (pixels, pixel centres at
        integer coordinates).
    triangles : (M, 3) int
        Mesh triangles, positively oriented (e.g. from :func:`triangulate`). A triangle whose
        destination is degenerate or folded over (signed area < ``MIN_TRIANGLE_AREA``) is skipped.
    out_shape : (H, W), keyword-only
        Output image size.
    fallback : (2, 3) float, optional, keyword-only
        Output -> source affine for pixels outside the mesh; default: the least-squares affine
        fitted to all mesh points.

    Returns
    -------
    map_x, map_y : (H, W) float32
        Source x and y for every output pixel.
    """
    src = np.asarray(src_points, float)
    dst = np.asarray(dst_points, float)
    h, w = out_shape
    aff = triangle_affines(src, dst, triangles)  # (M, 2, 3)
    if fallback is None:
        dh = np.concatenate([dst, np.ones((len(dst), 1))], axis=1)
        fallback = np.linalg.lstsq(dh, src, rcond=None)[0].T
    aff = np.concatenate([aff, np.asarray(fallback, float)[None]], axis=0).astype(np.float32)

    m = len(triangles)
    labels = np.full((h, w), m, dtype=np.int32)
    area = signed_areas(dst, triangles)
    order = np.argsort(area, kind="stable")
    verts = np.round(dst[triangles] * (1 << RASTER_SHIFT)).astype(np.int32)  # (M, 3, 2)
    for k in order:
        if area[k] < MIN_TRIANGLE_AREA:
            continue
        cv2.fillConvexPoly(labels, verts[k], int(k), lineType=cv2.LINE_8, shift=RASTER_SHIFT)

    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    map_x = aff[:, 0, 0][labels] * xs + aff[:, 0, 1][labels] * ys + aff[:, 0, 2][labels]
    map_y = aff[:, 1, 0][labels] * xs + aff[:, 1, 1][labels] * ys + aff[:, 1, 2][labels]
    return map_x, map_y


def warp_piecewise_affine(
    image: np.ndarray,
    src_points: np.ndarray,
    dst_points: np.ndarray,
    triangles: np.ndarray,
    *,
    out_shape: tuple[int, int],
    fallback: np.ndarray | None = None,
    border_mode: int = cv2.BORDER_REFLECT101,
) -> np.ndarray:
    """Warp ``image`` so that ``src_points`` land on ``dst_points`` (bilinear resampling).

    Parameters
    ----------
    image : (H0, W0, C) or (H0, W0) uint8 or float32
    src_points, dst_points : (N, 2) float
    triangles : (M, 3) int
    out_shape : (H, W), keyword-only
    fallback : (2, 3) float, optional, keyword-only
        See :func:`piecewise_affine_maps`.
    border_mode : int, keyword-only
        OpenCV border mode for samples outside ``image``.

    Returns
    -------
    warped : (H, W, C) or (H, W), same dtype as ``image``
    """
    map_x, map_y = piecewise_affine_maps(src_points, dst_points, triangles, out_shape=out_shape, fallback=fallback)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=border_mode)


def similarity_matrix(*, center: np.ndarray, angle_rad: float, scale: float, shift: np.ndarray) -> np.ndarray:
    """2x3 matrix of ``p -> scale * R(angle) (p - center) + center + shift``.

    Parameters
    ----------
    center : (2,) float
    angle_rad : float
        Rotation angle, counter-clockwise on screen (y down), radians.
    scale : float
    shift : (2,) float

    Returns
    -------
    m : (2, 3) float64
    """
    c, s = np.cos(angle_rad) * scale, np.sin(angle_rad) * scale
    r = np.array([[c, s], [-s, c]])  # counter-clockwise on screen with y pointing down
    center = np.asarray(center, float)
    t = center + np.asarray(shift, float) - r @ center
    return np.concatenate([r, t[:, None]], axis=1)


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points ``(..., 2)``."""
    p = np.asarray(points, float)
    return p @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine."""
    return cv2.invertAffineTransform(np.asarray(m, float))
