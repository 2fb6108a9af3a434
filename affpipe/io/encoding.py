"""Storage encodings of real-valued images: the one place that turns them into uint8 and back.

A real-valued image (a dynamic image, a DR) stored as uint8 carries a per-row affine code:
``value = q * scale + offset`` with ``q`` uint8 and ``scale``, ``offset`` float32 (one of each per
row, in the datasets named by the image's ``scale_dataset`` / ``offset_dataset`` attributes, see
:mod:`affpipe.io.h5store`). :func:`quantize_uint8` makes the code, :func:`dequantize_uint8` reads it
(``StoreReader.read_image`` decodes with it). Two level grids exist, and the stores say which in
their ``encoding`` attribute:

* **zero-exact** (default; dynamic images, ``affpipe dynamic``): 254 steps over
  ``[min(lo, 0), max(hi, 0)]`` with 0 on a level, so a pixel that is exactly 0 (a DFM pixel outside
  both masks) decodes to exactly 0;
* **min-max** (``exact_zero=False``; the DR stores, ``affpipe dr-infer``): 255 steps over
  ``[lo, hi]``, offset = the row's minimum. Kept because the DR stores are documented with it
  (``dr.storage`` in the schema) and switching would change every DR file and the scores built on
  them.

Both recover every value to within ``scale / 2`` (plus float32 rounding).
"""

from __future__ import annotations

import numpy as np

#: Steps of the zero-exact grid (254, so that 0 can sit exactly on one of the 255 levels).
ZERO_EXACT_STEPS = 254
#: Steps of the min-max grid.
MIN_MAX_STEPS = 255


def quantize_uint8(images, *, exact_zero: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row affine uint8 quantisation of real-valued images.

    Parameters
    ----------
    images : (k, ...) float
        Finite values (NaN not allowed).
    exact_zero : bool, keyword-only
        True: the zero-exact grid, ``scale = (max(hi, 0) - min(lo, 0)) / 254`` and 0 maps to exactly 0
        (computed in float32, rounded with OpenCV's saturating round-to-nearest). False: the min-max
        grid, ``scale = (hi - lo) / 255`` and ``offset = lo`` (computed in float64).

    Returns
    -------
    q : (k, ...) uint8
    scale : (k,) float32
        1 for constant rows (min-max) or all-zero rows (zero-exact).
    offset : (k,) float32
        :func:`dequantize_uint8` ``(q, scale, offset)`` recovers every value to within ``scale / 2``
        (plus float32 rounding).
    """
    if not exact_zero:
        return _quantize_min_max(images)
    import cv2

    x = np.asarray(images)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    k = x.shape[0]
    flat = x.reshape(k, -1)
    lo = np.minimum(flat.min(axis=1, initial=0.0), 0.0).astype(np.float64)
    hi = np.maximum(flat.max(axis=1, initial=0.0), 0.0).astype(np.float64)
    scale = ((hi - lo) / ZERO_EXACT_STEPS).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)
    zero = np.rint(-lo / scale.astype(np.float64))
    # offset = -(zero * scale) evaluated in float32 exactly as the decoder does, so q = zero -> 0.0
    offset = -(zero.astype(np.float32) * scale)
    q = np.empty(x.shape, dtype=np.uint8)
    for i in range(k):  # one fused, saturating, round-to-nearest pass per image
        row = flat[i]
        cv2.addWeighted(row, 1.0 / float(scale[i]), row, 0.0, float(zero[i]), dst=q[i].reshape(-1), dtype=cv2.CV_8U)
    return q, scale, offset.astype(np.float32)


def _quantize_min_max(images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The min-max grid of :func:`quantize_uint8` (``exact_zero=False``)."""
    x = np.asarray(images, dtype=np.float64)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    lo = flat.min(axis=1) if flat.size else np.zeros(n)
    hi = flat.max(axis=1) if flat.size else np.zeros(n)
    scale = (hi - lo) / MIN_MAX_STEPS
    scale[scale == 0] = 1.0
    q = np.rint((x - lo.reshape((n,) + (1,) * (x.ndim - 1))) / scale.reshape((n,) + (1,) * (x.ndim - 1)))
    return np.clip(q, 0, 255).astype(np.uint8), scale.astype(np.float32), lo.astype(np.float32)


def dequantize_uint8(q: np.ndarray, scale, offset) -> np.ndarray:
    """Decode one row: ``q * scale + offset`` in float32 (either grid).

    Parameters
    ----------
    q : (...) uint8
        One row's codes.
    scale, offset : float or None
        The row's scale and offset (None: 1 and 0).

    Returns
    -------
    (...) float32
    """
    s = np.float32(scale) if scale is not None else np.float32(1.0)
    o = np.float32(offset) if offset is not None else np.float32(0.0)
    return q.astype(np.float32) * s + o
