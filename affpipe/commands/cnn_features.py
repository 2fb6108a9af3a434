"""``affpipe cnn-features``: features and per-frame predictions of a trained CNN for one video.

Writes ``results/{ds}/features/{input}/{video}.h5`` (layout in :mod:`affpipe.cnn.extract`): one row per
row of the input's primary store, ``frame``, ``valid``, ``features`` (n, D), ``pred`` (n, 2) and (``cnn.store_taps``)
the multi-level taps ``tap_low`` and ``tap_high``.

Example::

    python -m affpipe cnn-features --model results/demo/cnn/dfm/model.pt --video astronaut_01 \\
        --dynamic results/demo/dynamic/astronaut_01.h5 --out results/demo/features/dfm/astronaut_01.h5
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings
from affpipe.commands.cnn_train import add_store_args, store_paths

log = logging.getLogger(__name__)

#: Settings this command uses; everything else (architecture, scaling) comes from the model file.
EXTRACTION_KEYS = ("device", "amp", "eval_batch_size", "feature_dtype", "store_taps", "loader_workers", "seed",
                   "deterministic")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cnn-features",
        help="per-frame CNN features and predictions of one video -> .h5",
        description="Run a model trained by cnn-train over every valid row of one video's input representation "
        "and store its features (VGG-16: fc6) and its own valence/arousal prediction per row.",
    )
    p.add_argument("--model", required=True, type=Path, help="model.pt from cnn-train")
    p.add_argument("--video", default=None, help="video id (recorded in the output; default: the output's stem)")
    add_store_args(p, folders=False)
    p.add_argument("--out", required=True, type=Path, help="output .h5 (written atomically)")
    p.add_argument("--threads", type=int, default=1, help="torch threads; loader workers are capped at threads - 1")
    add_settings_arg(p, what="cnn (device, eval_batch_size, feature_dtype, loader_workers are used)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    import torch

    from affpipe.cnn.data import VideoStores
    from affpipe.cnn.extract import extract_video, spec_from_meta, write_features
    from affpipe.cnn.train import batch_sizes, load_model, resolve_device, set_determinism
    from affpipe.config import section_settings
    from affpipe.errors import ConfigError

    settings = section_settings("cnn", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    set_determinism(int(settings["seed"]), deterministic=bool(settings["deterministic"]))
    model, meta = load_model(args.model)
    spec = spec_from_meta(meta)
    video = args.video or args.out.stem
    paths = store_paths(spec, {"static": args.static, "dynamic": args.dynamic, "dr": args.dr}, video, folders=False)
    device = resolve_device(settings["device"])
    amp = bool(settings["amp"]) and device.type == "cuda"
    _, bs_eval = batch_sizes(settings, device)
    workers = min(int(settings["loader_workers"]), max(0, args.threads - 1))
    model.to(device)
    taps = bool(settings["store_taps"])
    n, blocks = extract_video(model, meta, VideoStores(video, paths), device=device, batch_size=bs_eval, amp=amp,
                              workers=workers, taps=taps)
    # provenance: the model's training settings, with the extraction keys of this run
    used = {**meta.get("settings", {}), **{k: settings[k] for k in EXTRACTION_KEYS}}
    counts = write_features(args.out, blocks, dim=int(meta["num_features"]), meta=meta, settings=used,
                            inputs=[args.model, *paths.values()], dtype=settings["feature_dtype"], video=video,
                            tap_dims=model.tap_dims if taps else None)
    log.info("cnn-features: wrote %s: %d rows (%d valid), %d-D %s features of %s (%s, epoch %d), device %s", args.out,
             counts["rows"], counts["valid"], meta["num_features"], settings["feature_dtype"], meta["input"],
             meta["backbone"], meta["epoch"], device)
    return 0
