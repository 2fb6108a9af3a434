"""``affpipe manifest``: scan a dataset's distribution tree into ``results/<name>/manifest.parquet``."""

from __future__ import annotations

import argparse
import sys

from affpipe.commands._common import add_settings_arg, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "manifest",
        help="list a dataset's videos (id, path, partition, fps, frames, labels) into a Parquet manifest",
        description="Scan the dataset's distribution tree with its adapter (semaine, recola, affwild2, csv) "
        "and write one row per video. Videos are probed, not decoded. Warnings go to stderr, one line each.",
    )
    p.add_argument("--dataset", required=True, metavar="NAME", help="dataset key (config `datasets.NAME`)")
    add_settings_arg(p, what="dataset (the `datasets.NAME` config entry)")
    p.add_argument("--max-frame-shortfall", type=float, default=None, metavar="SHARE",
                   help="the faces stage's faces.max_frame_shortfall: a video whose frame at "
                   "ceil(n*(1-SHARE))-1 does not decode is truncated and excluded (default: first frame only)")
    p.add_argument("--out", required=True, metavar="PARQUET", help="output, e.g. results/NAME/manifest.parquet")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.datasets import build_manifest, manifest_excluded, manifest_warnings
    from affpipe.io.atomic import write_parquet

    table = build_manifest(args.dataset, load_settings(args.settings), max_frame_shortfall=args.max_frame_shortfall)
    for w in manifest_warnings(table):
        print(f"affpipe manifest: warning: {w}", file=sys.stderr)
    excluded = manifest_excluded(table.schema.metadata)
    for e in excluded:
        print(f"affpipe manifest: warning: video {e['video']} ({e['partition']}) excluded: {e['file']}: {e['reason']}",
              file=sys.stderr)
    write_parquet(table, args.out)
    print(f"affpipe manifest: {table.num_rows} videos -> {args.out}"
          + (f"; {len(excluded)} excluded (see the warnings above)" if excluded else ""), file=sys.stderr)
    return 0
