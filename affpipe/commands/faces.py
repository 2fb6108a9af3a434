"""``affpipe faces``: detect and track one subject's 68 facial landmarks through a video.

Writes ``results/{ds}/faces/{video}.parquet``: one row per decoded frame (status detected /
tracked / lost, box, score, 68 landmarks); layout in :mod:`affpipe.faces.store`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "faces",
        help="face detection + 68-point landmark tracking -> faces .parquet",
        description="Detect the subject's face (dlib HOG by default), track its 68 landmarks from frame to "
        "frame with dlib's shape predictor, re-detecting periodically, and write one row per decoded frame "
        "(detected / tracked / lost). Decoding is streamed; timestamps come from the container.",
    )
    p.add_argument("--video", required=True, type=Path, help="input video (any container FFmpeg reads)")
    p.add_argument("--out", required=True, type=Path, help="output .parquet (written atomically)")
    p.add_argument("--side", choices=("left", "right"), default=None,
                   help="follow the face on this side of the frame (Aff-Wild2 _left/_right annotations); "
                   "default: the largest, most central face, then the one nearest to where it was")
    p.add_argument("--paired", action="store_true",
                   help="with --side: the video also has the other side's track (Aff-Wild2 X_left and X_right); "
                   "track both sides jointly so they never follow the same person, mark frames where they "
                   "still conflict lost in both (side_conflict), and write --side's track")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="threads: FFmpeg/OpenCV threads; with 2 or more, decoding runs alongside tracking (default 1)")
    add_settings_arg(p, what="faces-stage")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings
    from affpipe.errors import ConfigError
    from affpipe.faces.run import track_video
    from affpipe.faces.store import write_faces

    settings = section_settings("faces", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.paired and args.side is None:
        raise ConfigError("--paired needs --side left or --side right (it pairs the two sides of one video)")
    track = track_video(args.video, settings, side=args.side, paired=args.paired, threads=args.threads)
    write_faces(track, args.out)
    return 0
