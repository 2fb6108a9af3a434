"""``affpipe dr-train``: train the DR UNet of one window half-length T with the rank loss (Eq. 3).

Reads the SFA stacks of the manifest's train partition (and of ``val_partitions`` for the
per-epoch validation ranking accuracy) from ``--static-dir/{video}.h5`` and writes the model file
``results/{ds}/dr/model_T{T}.pt`` (weights and metadata; loads with
``torch.load(weights_only=True)``). A checkpoint ``<out>.ckpt`` is written after every epoch;
re-running an interrupted training continues from it (see :mod:`affpipe.dr.train`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dr-train",
        help="train the DR UNet for one window half-length T (rank loss, self-supervised) -> model_T{T}.pt",
        description="Train a UNet that maps one masked face image to its dynamic representation, with the rank "
        "loss of the DR paper (Eq. 3) on windows of 2T+1 frames of the train partition. Resumes an interrupted "
        "run from <out>.ckpt.",
    )
    p.add_argument("--manifest", required=True, type=Path, help="manifest of the training dataset (results/{ds}/manifest.parquet)")
    p.add_argument("--static-dir", required=True, type=Path, help="folder of its static stores ({video}.h5)")
    p.add_argument("--T", required=True, type=int, dest="T", help="window half-length T (N = 2T+1 frames)")
    p.add_argument("--out", required=True, type=Path, help="model file, e.g. results/{ds}/dr/model_T3.pt (written atomically)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_settings_arg(p, what="dr")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings
    from affpipe.dr.data import videos_from_manifest
    from affpipe.dr.train import prepare_data, train_dr
    from affpipe.errors import ConfigError, DatasetError
    from affpipe.plan import dr_train_partitions

    settings = section_settings("dr", load_settings(args.settings))
    if args.T < 1:
        raise ConfigError(f"--T must be >= 1, got {args.T}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    train_parts, val_parts = dr_train_partitions(settings)
    train = videos_from_manifest(args.manifest, args.static_dir, partitions=train_parts)
    if not train:
        raise DatasetError("the manifest has no video in the train partition", path=args.manifest)
    val = videos_from_manifest(args.manifest, args.static_dir, partitions=val_parts) if val_parts else []
    data = prepare_data(train, val, T=args.T, settings=settings, source=str(args.static_dir))
    meta = train_dr(data, T=args.T, settings=settings, out=args.out, threads=args.threads)
    last = meta["history"][-1]
    log.info("dr-train: wrote %s (T=%d, %d epochs; last validation ranking accuracy %s)", args.out, args.T,
             meta["epochs_completed"], f"{last['val_accuracy']:.4f}" if "val_accuracy" in last else "n/a")
    return 0
