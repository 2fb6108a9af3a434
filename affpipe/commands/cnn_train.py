"""``affpipe cnn-train``: train the per-frame CNN of one input on a dataset -> ``cnn/{input}/model.pt``.

Reads the manifest (partitions), the labels and the stores the input needs (``--static``,
``--dynamic``, ``--dr`` folders holding ``{video}.h5``) of the train and devel videos; trains on train,
selects the epoch on devel (:mod:`affpipe.cnn.train`). With ``cnn.mode: pretrained`` nothing is trained:
``model.pt`` holds ``cnn.weights`` as given (:func:`affpipe.cnn.train.pretrained_model`). ``checkpoint.pt`` / ``best.pt`` next to the
output make a re-run continue after the last finished epoch.

Example::

    python -m affpipe cnn-train --input dfm --manifest results/demo/manifest.parquet \\
        --labels results/demo/labels --dynamic results/demo/dynamic \\
        --out results/demo/cnn/dfm/model.pt --settings '{"backbone": "small", "epochs": 4}' --threads 2
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings, store_paths

log = logging.getLogger(__name__)


def add_store_args(p: argparse.ArgumentParser, *, folders: bool) -> None:
    what = "folder of {video}.h5" if folders else ".h5 file of the video"
    p.add_argument("--static", type=Path, help=f"static stores ({what}); needed by sfa, sfs, mdr")
    p.add_argument("--dynamic", type=Path, help=f"dynamic stores ({what}); needed by dfa, dfs, dfm")
    p.add_argument("--dr", type=Path, help=f"DR stores ({what}); needed by mdr")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cnn-train",
        help="train the per-frame CNN of one input representation -> model.pt",
        description="Train a per-frame CNN (cnn.backbone) regressing valence and arousal (MSE) from one input "
        "representation (sfa, sfs, dfa, dfs, dfm, mdr, or a two-branch pair like dfa+dfs) on the train partition, "
        "keeping the epoch with the best devel CCC. Resumable: re-running continues from checkpoint.pt.",
    )
    p.add_argument("--input", required=True, help="input representation, e.g. dfm, mdr or dfa+dfs")
    p.add_argument("--manifest", required=True, type=Path, help="results/{ds}/manifest.parquet")
    p.add_argument("--labels", required=True, type=Path, help="folder of {video}.parquet labels")
    add_store_args(p, folders=True)
    p.add_argument("--out", required=True, type=Path, help="model file (results/{ds}/cnn/{input}/model.pt)")
    p.add_argument("--threads", type=int, default=1, help="torch threads; loader workers are capped at threads - 1")
    add_settings_arg(p, what="cnn")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.cnn.data import VideoStores, build_index
    from affpipe.cnn.inputs import parse_input
    from affpipe.cnn.train import pretrained_model, select_data, train_model
    from affpipe.config import section_settings
    from affpipe.datasets.manifest import read_manifest
    from affpipe.errors import ConfigError
    from affpipe.plan import CNN_TRAIN_PARTITIONS, cnn_train_videos

    settings = section_settings("cnn", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    spec = parse_input(args.input, mdr_levels=settings["mdr_levels"])
    dirs = {"static": args.static, "dynamic": args.dynamic, "dr": args.dr}
    rows = read_manifest(args.manifest).by_video()
    videos = [VideoStores(vid, store_paths(spec, dirs, vid, folders=True), args.labels / f"{vid}.parquet",
                          rows[vid]["partition"]) for vid in cnn_train_videos(rows)]
    counts = {p: sum(v.partition == p for v in videos) for p in CNN_TRAIN_PARTITIONS}
    log.info("cnn-train: %s: %d train and %d devel videos", args.manifest, counts["train"], counts["devel"])
    index = build_index(videos, spec)
    extra = {
        "manifest": str(args.manifest),
        "train_videos": [v.video for v in videos if v.partition == "train"],
        "devel_videos": [v.video for v in videos if v.partition == "devel"],
    }
    if settings["mode"] == "pretrained":
        meta = pretrained_model(spec, settings, size=index.size, out=args.out, extra_meta=extra)
        log.info("cnn-train: wrote %s: the weights of %s as given (cnn.mode: pretrained, not trained)", args.out,
                 settings["weights"])
        return 0
    data = select_data(index, settings)
    meta = train_model(spec, data, settings, out=args.out, threads=args.threads, extra_meta=extra)
    score = meta["devel_score"]
    log.info("cnn-train: wrote %s: epoch %d of %d%s", args.out, meta["epoch"], meta["epochs_run"],
             f", devel CCC valence {score['ccc_valence']:.4f} arousal {score['ccc_arousal']:.4f}" if score else
             " (no devel frames: last epoch)")
    return 0
