"""dlib's 68-point shape predictor, array in / array out."""

from __future__ import annotations

import functools
import math

import numpy as np

from affpipe.faces.landmarks import N_LANDMARKS


def box_to_dlib_rect(box):
    """``x0, y0, x1, y1`` (x1/y1 exclusive, float) -> ``dlib.rectangle`` (inclusive int corners).

    Coordinates are rounded half up, so a box that came from a dlib rectangle maps back exactly.
    """
    import dlib

    x0, y0, x1, y1 = (int(math.floor(float(v) + 0.5)) for v in box)
    return dlib.rectangle(x0, y0, x1 - 1, y1 - 1)


@functools.lru_cache(maxsize=2)
def _load(path: str):
    import dlib

    return dlib.shape_predictor(path)


class LandmarkPredictor:
    """dlib ``shape_predictor_68_face_landmarks.dat``.

    Parameters
    ----------
    model_path : path, optional
        Default: the file shipped by ``face-recognition-models``. The loaded model (~100 MB, ~0.7 s
        to load) is cached per path within the process; it is read-only, so sharing is safe.
    """

    def __init__(self, model_path=None):
        from affpipe.resources import DLIB_68_MODEL, dlib_model_path

        self._sp = _load(str(model_path or dlib_model_path(DLIB_68_MODEL)))

    def predict(self, image_rgb: np.ndarray, box) -> np.ndarray:
        """Landmarks of the face in ``box``.

        Parameters
        ----------
        image_rgb : (H, W, 3) uint8
            RGB frame, C-contiguous (the box may extend past its borders).
        box : (4,) float
            ``x0, y0, x1, y1``, HOG-like (see :mod:`affpipe.faces.boxmodel`).

        Returns
        -------
        (68, 2) float64
            Pixel coordinates (dlib rounds them to integers).
        """
        shape = self._sp(image_rgb, box_to_dlib_rect(box))
        out = np.empty((N_LANDMARKS, 2), np.float64)
        for i in range(N_LANDMARKS):
            p = shape.part(i)
            out[i, 0] = p.x
            out[i, 1] = p.y
        return out
