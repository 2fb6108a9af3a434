"""Benchmark of the demo generator (prints figures, no asserts).

    .venv/bin/python bench/bench_demo.py [--frames 200] [--full]

1. Per-frame cost of the piecewise-affine warp (dense inverse map + cv2.remap, mouth cavity) and of
   the whole frame (expression landmarks, warp, noise, MPEG-4 encode), at the default frame size.
2. For comparison, one frame warped with scikit-image's PiecewiseAffineTransform + warp.
3. With ``--full``: the whole default demo (``affpipe demo`` with default settings) into a temporary
   folder: wall time, frames/s, bytes on disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from affpipe.config import section_settings
from affpipe.demo.expression import ExpressionStrengths, displace_landmarks
from affpipe.demo.generate import CODECS, generate_demo, load_identities, plan_video, render_video, video_seed
from affpipe.demo.render import render_frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--full", action="store_true", help="also time the whole default demo")
    args = ap.parse_args()

    settings = section_settings("demo", {"identities": ["man_video"], "partitions": {"train": ["man_video"]}})
    strengths = ExpressionStrengths.from_settings(settings["expression"])
    (ident,) = load_identities(settings, strengths)
    rig = ident.rig
    t = np.arange(args.frames) / settings["fps"]
    targets = displace_landmarks(rig.landmarks, np.sin(t), np.cos(0.7 * t), strengths=strengths)
    still = np.eye(2, 3)
    print(f"threads: OpenCV {cv2.getNumThreads()}; frame {rig.out_size[0]}x{rig.out_size[1]}; "
          f"mesh {len(rig.mesh_points)} points, {len(rig.triangles)} triangles")

    render_frame(rig, targets[0], still)
    t0 = time.perf_counter()
    for k in range(args.frames):
        render_frame(rig, targets[k], still)
    dt = (time.perf_counter() - t0) / args.frames
    print(f"render_frame (warp + cavity): {1000 * dt:.2f} ms/frame")

    plan = plan_video(
        video_seed(0, ident.name, 0), n_frames=args.frames, fps=settings["fps"], frame_width=settings["frame_width"],
        valence_min=ident.valence_min, traces=settings["traces"], head_motion=settings["head_motion"],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        t0 = time.perf_counter()
        render_video(ident, plan, path, strengths=strengths, fps=settings["fps"], noise_sigma=settings["noise_sigma"], codec=CODECS["mp4v"])
        dt = (time.perf_counter() - t0) / args.frames
        print(f"full frame (landmarks, warp, noise, mp4v encode): {1000 * dt:.2f} ms/frame; "
              f"{path.stat().st_size / args.frames / 1024:.1f} KiB/frame")

    from skimage.transform import PiecewiseAffineTransform, warp

    w, h = rig.out_size
    dst = rig.mesh(targets[1])[:, :] - rig.offset
    t0 = time.perf_counter()
    tf = PiecewiseAffineTransform.from_estimate(dst, rig.mesh_points)
    warp(rig.canvas, tf, output_shape=(h, w), preserve_range=True)
    print(f"skimage PiecewiseAffineTransform + warp: {1000 * (time.perf_counter() - t0):.0f} ms/frame")

    if args.full:
        defaults = section_settings("demo")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "raw"
            t0 = time.perf_counter()
            summary = generate_demo(defaults, out)
            wall = time.perf_counter() - t0
            n = len(summary["videos"]) * defaults["frames_per_video"]
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(f"default demo: {len(summary['videos'])} videos, {n} frames in {wall:.1f} s "
                  f"({n / wall:.0f} frames/s), {size / 2**20:.1f} MiB on disk")


if __name__ == "__main__":
    main()
