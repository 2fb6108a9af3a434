"""``affpipe manifest``: scan a dataset's distribution tree into ``results/<name>/manifest.parquet``
and (``--labels-dir``, as the workflow runs it) every video's labels into ``results/<name>/labels/``."""

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
    p.add_argument("--labels-dir", default=None, metavar="DIR",
                   help="also write every listed video's labels to DIR/ID.parquet (what `affpipe labels` writes "
                   "for one video), e.g. results/NAME/labels; the folder is replaced as a whole")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.datasets import build_manifest, manifest_excluded, manifest_warnings
    from affpipe.io.atomic import atomic_dir, write_parquet

    labels = {} if args.labels_dir else None
    table = build_manifest(args.dataset, load_settings(args.settings), max_frame_shortfall=args.max_frame_shortfall,
                           labels=labels)
    for w in manifest_warnings(table):
        print(f"affpipe manifest: warning: {w}", file=sys.stderr)
    excluded = manifest_excluded(table.schema.metadata)
    for e in excluded:
        print(f"affpipe manifest: warning: video {e['video']} ({e['partition']}) excluded: {e['file']}: {e['reason']}",
              file=sys.stderr)
    if labels is not None:
        # the labels first: a run killed in between leaves no manifest, so the job is redone as a whole
        with atomic_dir(args.labels_dir) as tmp:
            for video, (lbl, warnings) in sorted(labels.items()):
                for w in warnings:
                    print(f"affpipe manifest: warning: labels of {video}: {w}", file=sys.stderr)
                write_parquet(lbl, tmp / f"{video}.parquet")
    write_parquet(table, args.out)
    print(f"affpipe manifest: {table.num_rows} videos -> {args.out}"
          + (f"; {len(excluded)} excluded (see the warnings above)" if excluded else "")
          + (f"; their labels -> {args.labels_dir}/" if labels is not None else ""), file=sys.stderr)
    return 0
