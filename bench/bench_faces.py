"""Benchmark the faces stage (prints figures; no asserts).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_faces.py [--workdir DIR]

For WolfgangLanger_Pexels.mp4 (640x360 H.264, 472 frames) and a 640x480 clip made from it (padded,
re-encoded with OpenCV's only encoder, MPEG-4 part 2 "mp4v", which decodes faster than H.264):

* decode-only fps (streamed decode + BGR->RGB, 1 decoder thread);
* detect-every-frame fps (``redetect_every: 1``, ``redetect_region: frame``, ``detect_max_width: 0``:
  dlib HOG + predictor on every full-resolution frame);
* tracking-mode fps (default settings), single thread, and with ``--threads 2`` (decode in a
  background thread);
* mean landmark difference tracking vs detect-every-frame, % of the inter-ocular distance (IOD,
  outer eye corners), over frames that have a face in both;
* frame-to-frame landmark jitter (% IOD) on a still-head stretch: the 20-frame window of
  single_face.mp4 with the least nose motion (and the same for WolfgangLanger), both modes.

All rates include decoding and exclude loading the dlib models (they are loaded once before timing).
Each rate is given per second of wall-clock time and per second of this process's CPU time (the
per-core figure, less sensitive to other jobs on a shared machine); the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from affpipe.config import section_settings  # noqa: E402
from affpipe.faces.detectors import make_detector  # noqa: E402
from affpipe.faces.landmarks import inter_ocular_distance, mean_point_error  # noqa: E402
from affpipe.faces.predictor import LandmarkPredictor  # noqa: E402
from affpipe.faces.run import track_video  # noqa: E402
from affpipe.io.video import iter_frames  # noqa: E402
from affpipe.resources import pyfeat_media  # noqa: E402

STILL_WINDOW = 20  # frames
NOSE = [27, 28, 29, 30]


def make_640x480(src: Path, out: Path) -> Path:
    vw = None
    for _, _, f in iter_frames(src):
        f = cv2.copyMakeBorder(f, 60, 60, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        if vw is None:
            vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 23.976, (f.shape[1], f.shape[0]))
        vw.write(f)
    vw.release()
    return out


class Rate:
    """Frames per second of wall-clock time and per second of this process's CPU time."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, n: int) -> "Rate":
        self.wall_fps = n / (time.perf_counter() - self.wall)
        self.cpu_fps = n / max(time.process_time() - self.cpu, 1e-9)
        return self

    def __str__(self) -> str:
        return f"{self.wall_fps:7.1f} frames/s wall, {self.cpu_fps:7.1f} frames per CPU-second"


def decode_fps(path: Path) -> Rate:
    r = Rate()
    n = 0
    for _, _, f in iter_frames(path, threads=1):
        cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
        n += 1
    return r.stop(n)


def timed_track(path: Path, overrides: dict, threads: int = 1):
    settings = section_settings("faces", overrides)
    r = Rate()
    track = track_video(path, settings, threads=threads, progress_desc=None)
    return track, r.stop(len(track))


def jitter(points: np.ndarray, valid: np.ndarray) -> tuple[float, int]:
    """Mean frame-to-frame landmark displacement (% IOD) in the stillest STILL_WINDOW-frame window."""
    iod = inter_ocular_distance(points)
    step = np.linalg.norm(np.diff(points, axis=0), axis=-1)  # (N-1, 68)
    nose = step[:, NOSE].mean(axis=1) / iod[1:]
    ok = valid[1:] & valid[:-1]
    best, start = np.inf, 0
    for s in range(len(nose) - STILL_WINDOW + 1):
        if ok[s:s + STILL_WINDOW].all():
            m = nose[s:s + STILL_WINDOW].mean()
            if m < best:
                best, start = m, s
    sel = slice(start, start + STILL_WINDOW)
    return float(100 * (step[sel].mean(axis=1) / iod[1:][sel]).mean()), start


def bench(name: str, path: Path) -> None:
    print(f"\n== {name}: {path.name}")
    print(f"decode only           : {decode_fps(path)}")
    ref, rate_ref = timed_track(path, {"redetect_every": 1, "redetect_region": "frame", "detect_max_width": 0})
    print(f"detect every frame    : {rate_ref}   {ref.metadata['status_counts']}")
    trk, rate_trk = timed_track(path, {})
    print(f"tracking (1 thread)   : {rate_trk}   {trk.metadata['status_counts']}   "
          f"speed-up x{rate_trk.wall_fps / rate_ref.wall_fps:.1f} wall, x{rate_trk.cpu_fps / rate_ref.cpu_fps:.1f} CPU")
    _, rate_trk2 = timed_track(path, {}, threads=2)
    print(f"tracking (2 threads)  : {rate_trk2}")
    both = (ref.status != "lost") & (trk.status != "lost")
    err = 100 * mean_point_error(trk.points[both], ref.points[both],
                                 normalise_by=inter_ocular_distance(ref.points[both]))
    tracked = trk.status[both] == "tracked"
    print(f"tracking vs detect-every-frame: mean {err.mean():.2f} % IOD (tracked frames only "
          f"{err[tracked].mean():.2f}), median {np.median(err):.2f}, p95 {np.percentile(err, 95):.2f}, "
          f"max {err.max():.2f}  over {both.sum()} frames")


def bench_jitter() -> None:
    print("\n== jitter on a still-head stretch (stillest 20-frame window by nose motion)")
    for video in ("single_face.mp4", "WolfgangLanger_Pexels.mp4"):
        path = pyfeat_media(video)
        for label, overrides in (("detect every frame", {"redetect_every": 1, "redetect_region": "frame",
                                                         "detect_max_width": 0}),
                                 ("tracking", {}), ("tracking + smoothing_sigma 1", {"smoothing_sigma": 1.0})):
            t, _ = timed_track(path, overrides)
            j, start = jitter(t.points.astype(np.float64), t.status != "lost")
            print(f"{video:28s} {label:30s}: {j:.2f} % IOD per frame (frames {start}-{start + STILL_WINDOW})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the 640x480 clip (default: temp)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    make_detector("hog")  # load the models once, outside the timings
    LandmarkPredictor()
    wl = pyfeat_media("WolfgangLanger_Pexels.mp4")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        clip = make_640x480(wl, work / "wolfgang_640x480_mp4v.mp4")
        bench("640x360 H.264", wl)
        bench("640x480 mp4v", clip)
    bench_jitter()
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
