"""``affpipe show-faces``: a PNG contact sheet of a faces table over its video.

Evenly spaced frames, each with the box and the 68 landmarks drawn and the status written on the
tile (green detected, yellow tracked, red cross + "LOST" for lost frames), so tracking quality can be
judged at a glance. The video is streamed; only the chosen frames are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show-faces",
        help="contact sheet (PNG) of evenly spaced frames with the tracked landmarks overlaid",
        description="Render evenly spaced frames of a video with the box, landmarks and status from its "
        "faces table, to judge tracking quality.",
    )
    p.add_argument("--video", required=True, type=Path, help="the video the faces table was made from")
    p.add_argument("--faces", required=True, type=Path, help="faces table (.parquet from `affpipe faces`)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output .png (written atomically)")
    p.add_argument("--n", type=int, default=12, help="number of frames (default 12)")
    p.add_argument("--columns", type=int, default=4, help="tiles per row (default 4)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from affpipe.errors import AffpipeError, DatasetError
    from affpipe.faces.sheet import draw_tile, render_sheet, sample_frames
    from affpipe.faces.store import read_faces
    from affpipe.io.atomic import atomic_path
    from affpipe.io.video import iter_frames

    if args.n < 1 or args.columns < 1:
        raise AffpipeError("--n and --columns must be >= 1")
    if args.out.suffix.lower() != ".png":
        raise AffpipeError("output must be a .png file", path=args.out)
    track = read_faces(args.faces)
    rows = sample_frames(len(track), args.n)
    wanted = set(rows.tolist())
    tiles = {}
    for index, _, frame in iter_frames(args.video):
        if index >= len(track):
            raise DatasetError(f"the video decodes more frames than the faces table has rows ({len(track)})",
                               path=args.faces, hint="re-run the faces stage on this video")
        if index in wanted:
            tiles[index] = draw_tile(frame, track, index)
            if len(tiles) == len(wanted):
                break
    missing = sorted(wanted - set(tiles))
    if missing:
        raise DatasetError(f"the video decodes fewer frames than the faces table has rows (frame {missing[0]} "
                           "not found)", path=args.video, hint="was the faces table made from this video?")
    counts = ", ".join(f"{s} {int(np.count_nonzero(track.status == s))}" for s in ("detected", "tracked", "lost"))
    title = f"{args.video.name}: {len(track)} frames ({counts})"
    sheet = render_sheet([tiles[r] for r in rows], title=title, columns=args.columns)
    ok, buf = cv2.imencode(".png", sheet)
    if not ok:
        raise AffpipeError("cannot encode the contact sheet as PNG", path=args.out)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_bytes(buf.tobytes())
    return 0
