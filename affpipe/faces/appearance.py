"""Cheap appearance check for tracking: does the tracked face still look like the detected one?

At every detection the tracker stores a small grey patch of the face, sampled in the face's own
frame (the similarity from :data:`~affpipe.faces.boxmodel.MEAN_SHAPE_IN_HOG_BOX` to the landmarks),
so pose, scale and in-plane rotation changes are factored out. On tracked frames the same patch is
sampled at the new landmarks and compared by normalised cross-correlation (NCC). A scene cut, the face
leaving, or the landmarks drifting onto background drop the NCC to about 0; expressions and partial
occlusions (hands) keep it well above (see ``tests/test_faces_tracking.py`` for measured values).
"""

from __future__ import annotations

import cv2
import numpy as np

from affpipe.faces.boxmodel import fit_mean_shape

PATCH_SIZE = 32  # side of the comparison patch, px
# Part of the HOG box (unit square) that is sampled: the inner face (brows to mouth), little
# background or hair.
PATCH_LO, PATCH_HI = 0.15, 0.85
# Patches whose grey-level standard deviation is below this (0-255 scale) have no texture to compare
# (black or blank frames): their similarity is 0.
MIN_PATCH_STD = 2.0


def face_patch(image_rgb: np.ndarray, points68: np.ndarray) -> np.ndarray | None:
    """Zero-mean, unit-norm grey patch of the inner face.

    Parameters
    ----------
    image_rgb : (H, W, 3) uint8
    points68 : (68, 2) float
        Landmarks in that image.

    Returns
    -------
    (PATCH_SIZE, PATCH_SIZE) float32 or None
        None when the patch has no texture (see :data:`MIN_PATCH_STD`).
    """
    z, t = fit_mean_shape(points68)
    z, t = complex(z), complex(t)
    step = (PATCH_HI - PATCH_LO) / PATCH_SIZE
    origin = z * complex(PATCH_LO + step / 2, PATCH_LO + step / 2) + t
    a = z * step
    # maps patch pixel (u, v) to image (x, y); WARP_INVERSE_MAP samples the image there
    m = np.array([[a.real, -a.imag, origin.real], [a.imag, a.real, origin.imag]], np.float64)
    patch = cv2.warpAffine(image_rgb, m, (PATCH_SIZE, PATCH_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
    grey = patch.astype(np.float32).mean(axis=2)
    grey -= grey.mean()
    norm = float(np.linalg.norm(grey))
    if norm / PATCH_SIZE < MIN_PATCH_STD:
        return None
    return grey / norm


def patch_similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Normalised cross-correlation of two :func:`face_patch` results, in [-1, 1] (0 if either is None)."""
    if a is None or b is None:
        return 0.0
    return float(np.dot(a.ravel(), b.ravel()))
