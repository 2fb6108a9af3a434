"""``affpipe static``: aligned static facial images (SFA, SFS) for every frame of one video.

Reads the video and its faces table and writes ``results/{ds}/static/{video}.h5`` (the work:
:func:`affpipe.static.run.static_store`; layout: :func:`affpipe.io.h5store.static_specs`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "static",
        help="aligned static facial images SFA/SFS per frame -> .h5",
        description="Align every frame's face to the canonical template and render SFA (appearance inside "
        "the landmark hull) and SFS (15 coloured semantic regions). Images are stored RGB.",
    )
    p.add_argument("--video", required=True, type=Path, help="input video")
    p.add_argument("--faces", required=True, type=Path, help="faces table of that video (.parquet from `affpipe faces`)")
    p.add_argument("--out", required=True, type=Path, help="output .h5 (written atomically)")
    add_settings_arg(p, what="static-stage")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings
    from affpipe.static.run import static_store

    settings = section_settings("static", load_settings(args.settings))
    n = static_store(args.video, args.faces, args.out, settings)
    log.info("static: wrote %s: %d frames, %d valid (%.1f %%), %d lost%s", args.out, n["frames"], n["valid"],
             100.0 * n["valid"] / max(n["frames"], 1), n["lost"],
             f", {n['nonfinite']} with non-finite landmarks although not lost" if n["nonfinite"] else "")
    return 0
