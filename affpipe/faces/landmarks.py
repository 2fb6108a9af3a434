"""68/66-point landmark conventions (iBUG 300-W order, as produced by dlib's shape predictor).

Landmarks are ``(..., 68, 2)`` float arrays of ``(x, y)`` pixel coordinates in the original frame,
pixel centres at integer coordinates (dlib's and OpenCV's convention). "Left"/"right" in names is the
*image* side.
"""

from __future__ import annotations

import numpy as np

N_LANDMARKS = 68
N_LANDMARKS_66 = 66

#: 0-based indices of the inner-mouth corners, which the 66-point convention (iCCR, used by the DFM
#: paper) does not have.
INNER_MOUTH_CORNERS = (60, 64)

#: The 66 indices (into the 68-point order) kept by :func:`landmarks_66`, in order.
INDICES_66 = np.array([i for i in range(N_LANDMARKS) if i not in INNER_MOUTH_CORNERS], dtype=np.intp)
INDICES_66.setflags(write=False)

#: Outer eye corners (image-left eye's outer corner, image-right eye's outer corner). Their distance is
#: the inter-ocular distance (IOD) of the 300-W benchmark, which normalises every landmark error here.
OUTER_EYE_CORNERS = (36, 45)

#: Index ranges of the two eyes (6 points each), image-left then image-right.
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)


def landmarks_66(points68: np.ndarray) -> np.ndarray:
    """The 66-point view of 68-point landmarks: drop the inner-mouth corners (0-based 60 and 64).

    Parameters
    ----------
    points68 : (..., 68, 2) float
        Landmarks in dlib / iBUG 300-W order.

    Returns
    -------
    (..., 66, 2) float
        A copy, same dtype, in the same order without indices 60 and 64.
    """
    points68 = np.asarray(points68)
    if points68.ndim < 2 or points68.shape[-2:] != (N_LANDMARKS, 2):
        raise ValueError(f"expected landmarks of shape (..., 68, 2), got {points68.shape}")
    return points68[..., INDICES_66, :]


def inter_ocular_distance(points68: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (points 36 and 45), the 300-W normalisation.

    Parameters
    ----------
    points68 : (..., 68, 2) float

    Returns
    -------
    (...) float64
        NaN where the landmarks are NaN.
    """
    points68 = np.asarray(points68, dtype=np.float64)
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(points68[..., a, :] - points68[..., b, :], axis=-1)


def mean_point_error(
    points_a: np.ndarray, points_b: np.ndarray, *, normalise_by: np.ndarray | None = None
) -> np.ndarray:
    """Mean Euclidean distance between corresponding landmarks, optionally divided by a scale.

    Parameters
    ----------
    points_a, points_b : (..., K, 2) float
        Landmark sets to compare (same shape).
    normalise_by : (...) float, optional
        Per-set scale, e.g. :func:`inter_ocular_distance` of the reference set.

    Returns
    -------
    (...) float64
        Mean over the K points (NaN where either set is NaN).
    """
    d = np.linalg.norm(np.asarray(points_a, np.float64) - np.asarray(points_b, np.float64), axis=-1).mean(axis=-1)
    return d if normalise_by is None else d / np.asarray(normalise_by, np.float64)


#: Index permutation mapping the 68 points of a face to those of its mirror image (x -> -x).
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # eyebrows
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    dtype=np.intp,
)
MIRROR_68.setflags(write=False)
