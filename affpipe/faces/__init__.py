"""Face detection and 68-point landmark tracking (stage ``faces``).

Public API for later stages (light imports: numpy, pyarrow)::

    from affpipe.faces import read_faces, landmarks_66
    track = read_faces("results/demo/faces/vid.parquet")   # FacesTrack
    track.frame, track.status, track.points                  # (N,), (N,), (N, 68, 2) float32
    pts66 = landmarks_66(track.points)                       # (N, 66, 2)

Running the tracker (imports OpenCV/dlib): :func:`affpipe.faces.run.track_video`,
:class:`affpipe.faces.tracker.FaceTracker`; both are also reachable as attributes of this package.

Modules: :mod:`~affpipe.faces.landmarks` (68/66-point conventions), :mod:`~affpipe.faces.boxmodel`
(landmarks <-> detector box), :mod:`~affpipe.faces.detectors` (hog / cnn / cascade backends),
:mod:`~affpipe.faces.predictor` (dlib shape predictor), :mod:`~affpipe.faces.appearance` (loss test),
:mod:`~affpipe.faces.tracker` (state machine), :mod:`~affpipe.faces.smoothing`,
:mod:`~affpipe.faces.store` (the parquet contract), :mod:`~affpipe.faces.run` (video loop),
:mod:`~affpipe.faces.sheet` (contact sheets).
"""

from affpipe.faces.landmarks import (
    INDICES_66,
    INNER_MOUTH_CORNERS,
    N_LANDMARKS,
    inter_ocular_distance,
    landmarks_66,
    mean_point_error,
)
from affpipe.faces.store import FacesTrack, read_faces, read_metadata, write_faces

__all__ = [
    "INDICES_66",
    "INNER_MOUTH_CORNERS",
    "N_LANDMARKS",
    "FacesTrack",
    "FaceTracker",
    "inter_ocular_distance",
    "landmarks_66",
    "mean_point_error",
    "read_faces",
    "read_metadata",
    "track_video",
    "write_faces",
]


def __getattr__(name: str):
    # Heavy parts (OpenCV, dlib) load on first use only.
    if name == "track_video":
        from affpipe.faces.run import track_video

        return track_video
    if name == "FaceTracker":
        from affpipe.faces.tracker import FaceTracker

        return FaceTracker
    raise AttributeError(f"module 'affpipe.faces' has no attribute {name!r}")
