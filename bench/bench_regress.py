"""Benchmark of the sequence regressor (prints figures, no asserts).

    .venv/bin/python bench/bench_regress.py [--dim 4096] [--hidden 200] [--seq-len 100] [--batch 32]
        [--steps 5] [--threads 2] [--device auto]

1. One SGD step (forward, masked MSE, backward, clip, update) of the paper's BGRU on a batch of
   ``batch x seq_len x dim`` standardised features: ms per step and training rows per second.
2. Inference throughput (rows per second, windows of seq_len with 50 % overlap).
3. Metrics: CCC/PCC/MSE of 10^6 frames (ms).

The defaults are the DFM paper's sizes (VGG-16 fc6 features, 200 units); ``--dim 256 --hidden 200``
is the demo (small CNN).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from affpipe import metrics
from affpipe.config import section_settings
from affpipe.regress.registry import get_regressor
from affpipe.regress.train import masked_mse, resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = section_settings("regression", {"bgru": {"hidden_units": args.hidden}})
    torch.manual_seed(0)
    model = get_regressor("bgru").build(args.dim, settings).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=settings["momentum"])
    x = torch.randn(args.batch, args.seq_len, args.dim, device=device)
    y = torch.rand(args.batch, args.seq_len, 2, device=device) * 2 - 1
    mask = torch.ones_like(y)
    lengths = torch.full((args.batch,), args.seq_len, dtype=torch.int64)
    params = sum(p.numel() for p in model.parameters())
    print(f"BGRU {args.dim}->{args.hidden}x2->2: {params / 1e6:.2f} M parameters, device {device}, "
          f"{args.threads} torch thread(s)")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = masked_mse(model(x, lengths), y, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip_norm"])
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    rows = args.batch * args.seq_len
    print(f"train step: {dt * 1e3:.0f} ms for {args.batch} x {args.seq_len} rows -> {rows / dt:.0f} rows/s")

    model.eval()
    with torch.no_grad():
        model(x, lengths)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model(x, lengths)
        dt = (time.perf_counter() - t0) / args.steps
    # with 50 % window overlap every row is predicted twice
    print(f"inference: {rows / dt / 2:.0f} video rows/s (windows overlapping by half)")

    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, 1_000_000)
    p = 0.7 * t + rng.normal(scale=0.3, size=t.size)
    t0 = time.perf_counter()
    metrics.scores(p, t)
    print(f"metrics.scores on 10^6 frames: {(time.perf_counter() - t0) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
