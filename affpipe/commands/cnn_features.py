"""``affpipe cnn-features``: features and per-frame predictions of a trained CNN, for one video or every video.

Writes ``results/{ds}/features/{input}/{video}.h5`` (layout in :mod:`affpipe.cnn.extract`): one row per
row of the input's primary store, ``frame``, ``valid``, ``features`` (n, D), ``pred`` (n, 2) and (``cnn.store_taps``)
the multi-level taps ``tap_low`` and ``tap_high``.

One video (store arguments are files)::

    python -m affpipe cnn-features --model results/demo/cnn/dfm/model.pt --video astronaut_01 \\
        --dynamic results/demo/dynamic/astronaut_01.h5 --out results/demo/features/dfm/astronaut_01.h5

Every video of a manifest, as the workflow runs it (store arguments are folders of ``{video}.h5``; torch
is imported and the model loaded once; the output folder is replaced as a whole when every video is done)::

    python -m affpipe cnn-features --model results/demo/cnn/dfm/model.pt --manifest results/demo/manifest.parquet \\
        --dynamic results/demo/dynamic --out-dir results/demo/features/dfm

Each video's file is the same, bit for bit, whichever of the two forms wrote it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, every_video, load_settings, rng_restorer, store_paths

log = logging.getLogger(__name__)

#: Settings this command uses; everything else (architecture, scaling) comes from the model file.
EXTRACTION_KEYS = ("device", "amp", "eval_batch_size", "feature_dtype", "store_taps", "loader_workers", "seed",
                   "deterministic")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cnn-features",
        help="per-frame CNN features and predictions of one video (or every video of a manifest) -> .h5",
        description="Run a model trained by cnn-train over every valid row of one video's input representation "
        "(--out), or of every video of a manifest (--manifest, --out-dir), and store its features (VGG-16: fc6) "
        "and its own valence/arousal prediction per row.",
    )
    p.add_argument("--model", required=True, type=Path, help="model.pt from cnn-train")
    p.add_argument("--video", default=None, help="one video: its id (recorded in the output; default: the output's stem)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="every video: results/{ds}/manifest.parquet (with --out-dir; store arguments are folders)")
    p.add_argument("--static", type=Path, help="static stores (.h5 file of the video; with --manifest, folder of "
                   "{video}.h5); needed by sfa, sfs, mdr")
    p.add_argument("--dynamic", type=Path, help="dynamic stores (file or folder, as --static); needed by dfa, dfs, dfm")
    p.add_argument("--dr", type=Path, help="DR stores (file or folder, as --static); needed by mdr")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="one video: output .h5 (written atomically)")
    out.add_argument("--out-dir", type=Path, help="every video: output folder of {video}.h5 (with --manifest; "
                     "replaced atomically as a whole)")
    p.add_argument("--threads", type=int, default=1, help="torch threads; loader workers are capped at threads - 1")
    add_settings_arg(p, what="cnn (device, eval_batch_size, feature_dtype, loader_workers are used)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    import torch

    from affpipe.cnn.extract import spec_from_meta
    from affpipe.cnn.train import load_model, resolve_device, set_determinism
    from affpipe.config import section_settings
    from affpipe.datasets.manifest import read_manifest
    from affpipe.errors import ConfigError
    from affpipe.io.atomic import atomic_dir

    settings = section_settings("cnn", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if (args.manifest is None) != (args.out_dir is None):
        raise ConfigError("--manifest and --out-dir go together (every video); one video takes --out")
    if args.manifest is not None and args.video is not None:
        raise ConfigError("--video names the one video of --out; with --manifest every video is extracted")
    torch.set_num_threads(args.threads)
    device = resolve_device(settings["device"])
    set_determinism(int(settings["seed"]), deterministic=bool(settings["deterministic"]), device=device)
    model, meta = load_model(args.model)
    # every video starts from this state, as it did in a process of its own (seeded, then the model built)
    restore_rng = rng_restorer()
    spec = spec_from_meta(meta)
    dirs = {"static": args.static, "dynamic": args.dynamic, "dr": args.dr}
    model.to(device)
    if args.out is not None:
        video = args.video or args.out.stem
        _extract(model, meta, settings, args, video, store_paths(spec, dirs, video, folders=False), args.out, device,
                 shown=args.out)
        return 0
    paths = every_video(read_manifest(args.manifest), lambda v: store_paths(spec, dirs, v, folders=True), what="store file")
    with atomic_dir(args.out_dir) as tmp:
        for video in paths:
            restore_rng()
            _extract(model, meta, settings, args, video, paths[video], tmp / f"{video}.h5", device,
                     shown=args.out_dir / f"{video}.h5")
    log.info("cnn-features: wrote %d videos' features of %s to %s", len(paths), meta["input"], args.out_dir)
    return 0


def _extract(model, meta, settings, args, video: str, paths: dict, out: Path, device, *, shown: Path) -> None:
    """One video's features file, written to `out` (`shown` in the log: its final path)."""
    from affpipe.cnn.data import VideoStores
    from affpipe.cnn.extract import extract_video, write_features
    from affpipe.cnn.train import batch_sizes

    amp = bool(settings["amp"]) and device.type == "cuda"
    _, bs_eval = batch_sizes(settings, device)
    workers = min(int(settings["loader_workers"]), max(0, args.threads - 1))
    taps = bool(settings["store_taps"])
    n, blocks = extract_video(model, meta, VideoStores(video, paths), device=device, batch_size=bs_eval, amp=amp,
                              workers=workers, taps=taps)
    # provenance: the model's training settings, with the extraction keys of this run
    used = {**meta.get("settings", {}), **{k: settings[k] for k in EXTRACTION_KEYS}}
    counts = write_features(out, blocks, dim=int(meta["num_features"]), meta=meta, settings=used,
                            inputs=[args.model, *paths.values()], dtype=settings["feature_dtype"], video=video,
                            tap_dims=model.tap_dims if taps else None)
    log.info("cnn-features: wrote %s: %d rows (%d valid), %d-D %s features of %s (%s, epoch %d), device %s", shown,
             counts["rows"], counts["valid"], meta["num_features"], settings["feature_dtype"], meta["input"],
             meta["backbone"], meta["epoch"], device)
