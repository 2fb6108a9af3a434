"""Per-frame CNN throughput: images/s of training steps and of inference for each backbone and size.

Prints figures, asserts nothing. Random inputs (the network cost does not depend on the content);
training = forward + MSE + backward + SGD step of the full PerFrameRegressor (backbone + default head),
inference = forward_features + head under no_grad in eval mode. Optionally also measures reading +
input mapping from real stores (``--dynamic DIR`` of ``{video}.h5``), streamed and cached.

    .venv/bin/python bench/bench_cnn.py --threads 2
    .venv/bin/python bench/bench_cnn.py --backbones small --sizes 112 --dynamic results/demo/dynamic
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the cnn-train/cnn-features commands do

import numpy as np  # noqa: E402
import torch  # noqa: E402

from affpipe.cnn.backbones import PerFrameRegressor


def rate(fn, images: int, *, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return images * steps / (time.perf_counter() - t0)


def bench_model(backbone: str, size: int, *, channels: int, batch: int, steps: int, device: torch.device) -> tuple[float, float]:
    torch.manual_seed(0)
    model = PerFrameRegressor(backbone, branch_channels=[channels]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.85)
    x = torch.randn(batch, channels, size, size, device=device)
    y = torch.zeros(batch, 2, device=device)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model([x]), y)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    train = rate(train_step, batch, steps=steps)
    model.eval()

    @torch.no_grad()
    def infer():
        model.forward_head(model.forward_features([x]))
        if device.type == "cuda":
            torch.cuda.synchronize()

    inference = rate(infer, batch, steps=steps)
    return train, inference


def bench_reading(folder: Path, *, limit: int) -> None:
    from affpipe.cnn.data import FrameDataset, VideoStores, build_index, preload
    from affpipe.cnn.inputs import parse_input

    spec = parse_input("dfm")
    videos = [VideoStores(p.stem, {"dynamic": p}) for p in sorted(folder.glob("*.h5"))]
    index = build_index(videos, spec)
    pos = index.positions()[:limit]
    kw = dict(scaling="maxabs", input_mean=[0.5], input_std=[0.5])
    ds = FrameDataset(index, pos, spec, **kw)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    streamed = len(ds) / (time.perf_counter() - t0)
    ds.close()
    t0 = time.perf_counter()
    cache = preload(index, pos, spec)
    t_pre = time.perf_counter() - t0
    dc = FrameDataset(index, pos, spec, cache=cache, **kw)
    t0 = time.perf_counter()
    for i in range(len(dc)):
        dc[i]
    cached = len(dc) / (time.perf_counter() - t0)
    print(f"reading dfm {index.size}x{index.size} from {folder} ({len(pos)} frames): streamed {streamed:.0f} frames/s; "
          f"preload {len(pos) / t_pre:.0f} frames/s ({cache.nbytes / len(pos) / 1e3:.1f} kB/frame), then {cached:.0f} frames/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["small", "vgg16"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[112, 224])
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dynamic", type=Path, help="folder of dynamic stores to measure reading on")
    ap.add_argument("--read-limit", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {args.threads} thread(s), batch {args.batch}, {args.steps} timed steps")
    print(f"{'backbone':8s} {'size':>5s} {'train img/s':>12s} {'infer img/s':>12s}")
    for backbone in args.backbones:
        for size in args.sizes:
            batch = args.batch if backbone == "small" else max(2, args.batch // 4)
            train, infer = bench_model(backbone, size, channels=args.channels, batch=batch, steps=args.steps, device=device)
            print(f"{backbone:8s} {size:5d} {train:12.1f} {infer:12.1f}   (batch {batch})", flush=True)
    if args.dynamic:
        bench_reading(args.dynamic, limit=args.read_limit)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
