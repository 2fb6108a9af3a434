"""``affpipe labels``: one video's valence/arousal labels on its frame times (Parquet)."""

from __future__ import annotations

import argparse
import sys

from affpipe.commands._common import add_settings_arg, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "labels",
        help="resample one video's labels to its frames (frame, time_s, valence, arousal)",
        description="Read the label file(s) the manifest names for one video, check them and resample them "
        "to the video's frame times. Warnings go to stderr, one line each, naming the label file.",
    )
    p.add_argument("--manifest", required=True, metavar="PARQUET", help="results/NAME/manifest.parquet")
    p.add_argument("--video", required=True, metavar="ID", help="video id (the manifest's `video` column)")
    add_settings_arg(p, what="dataset (the `datasets.NAME` config entry)")
    p.add_argument("--out", required=True, metavar="PARQUET", help="output, e.g. results/NAME/labels/ID.parquet")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.datasets import build_labels, dataset_settings, read_manifest
    from affpipe.errors import DatasetError
    from affpipe.io.atomic import write_parquet

    manifest = read_manifest(args.manifest, columns=("path", "fps", "n_frames"))
    dataset = manifest.dataset or "<name>"
    settings = dataset_settings(dataset, load_settings(args.settings))
    built_with = manifest.adapter
    if built_with and built_with != settings["adapter"]:
        raise DatasetError(
            f"the manifest was built by the {built_with} adapter, the settings name {settings['adapter']}; "
            "rebuild the manifest",
            path=args.manifest,
        )
    labels, warnings = build_labels(manifest.row(args.video), settings, dataset=dataset)
    for w in warnings:
        print(f"affpipe labels: warning: {w}", file=sys.stderr)
    write_parquet(labels, args.out)
    return 0
