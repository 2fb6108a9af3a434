"""``affpipe static``: aligned static facial images (SFA, SFS) for every frame of one video.

Streams the video and its faces table (``results/{ds}/faces/{video}.parquet``, one row per
decoded frame) together and writes ``results/{ds}/static/{video}.h5`` (layout:
:func:`affpipe.io.h5store.static_specs`). Rows where the face was lost are kept with
``valid=False``, all-zero images and NaN landmarks: nothing is invented.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings

log = logging.getLogger(__name__)

BATCH_ROWS = 64  # frames buffered between two writes to the store (bounds memory)
N_LANDMARKS = 68
LOST = "lost"


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


def _faces_columns(path: Path):
    """Open the faces table and check it has the columns this stage needs."""
    import pyarrow.parquet as pq

    from affpipe.errors import DatasetError

    if not path.is_file():
        raise DatasetError("faces table does not exist", path=path, hint="run the faces stage first")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for non-parquet input
        raise DatasetError(f"cannot read faces table as Parquet ({exc})", path=path) from None
    names = set(pf.schema_arrow.names)
    needed = ["frame", "status"] + [f"x{i}" for i in range(N_LANDMARKS)] + [f"y{i}" for i in range(N_LANDMARKS)]
    missing = [c for c in needed if c not in names]
    if missing:
        raise DatasetError(
            f"faces table lacks column(s) {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}", path=path
        )
    return pf, needed


def _face_rows(pf, columns):
    """Yield ``(frame, status, landmarks (68, 2) float64)`` per faces-table row, streaming."""
    import numpy as np

    for batch in pf.iter_batches(batch_size=BATCH_ROWS * 4, columns=columns):
        frames = batch.column("frame").to_numpy(zero_copy_only=False)
        status = batch.column("status").to_pylist()
        xs = np.stack([batch.column(f"x{i}").to_numpy(zero_copy_only=False) for i in range(N_LANDMARKS)], axis=1)
        ys = np.stack([batch.column(f"y{i}").to_numpy(zero_copy_only=False) for i in range(N_LANDMARKS)], axis=1)
        pts = np.stack([xs, ys], axis=2).astype(np.float64)
        for j in range(len(frames)):
            yield int(frames[j]), status[j], pts[j]


def handler(args: argparse.Namespace) -> int:
    import numpy as np

    from affpipe import align, sfs
    from affpipe.config import section_settings
    from affpipe.errors import DatasetError
    from affpipe.io.h5store import STATIC_STAGE, StoreWriter, static_specs
    from affpipe.io.video import iter_frames, probe
    from affpipe.progress import progress

    settings = section_settings("static", load_settings(args.settings))
    size = int(settings["size"])
    margin = float(settings["margin"])
    points = settings["align_landmarks"]
    brow = float(settings["eyebrow_thickness"])

    info = probe(args.video)
    pf, columns = _faces_columns(args.faces)
    n_rows = pf.metadata.num_rows
    log.info("static: %s (%dx%d, %.3f fps, %d frames reported), faces %s (%d rows), S=%d",
             args.video, info.width, info.height, info.fps, info.n_frames_reported, args.faces, n_rows, size)

    specs = static_specs(size)
    buf = {s.name: [] for s in specs}
    n_valid = 0
    n_lost_status = 0

    def flush(writer):
        if buf["frame"]:
            writer.append(**{k: np.stack(v) for k, v in buf.items()})
            for v in buf.values():
                v.clear()

    template = align.template_points(size, margin=margin)
    file_attrs = {
        "size": size,
        "video": str(args.video),
        "video_fps": info.fps,
        "video_width": info.width,
        "video_height": info.height,
        "template": template,
        "sfs_regions": json.dumps(
            [{"label": k, "name": r.name, "rgb": list(r.colour), "kind": r.kind, "indices": list(r.indices),
              "hole": list(r.hole)} for k, r in enumerate(sfs.REGIONS, start=1)]
        ),
    }
    blank = np.zeros((size, size, 3), np.uint8)
    nan_pts = np.full((N_LANDMARKS, 2), np.nan, np.float32)
    nan_m = np.full((2, 3), np.nan)

    with StoreWriter(args.out, specs, stage=STATIC_STAGE, settings=settings,
                     inputs=[args.video, args.faces], attrs=file_attrs) as writer:
        rows = _face_rows(pf, columns)
        n_done = 0
        bar = progress(total=n_rows, desc="static", unit="frame")
        with bar:
            for index, time_s, frame_bgr in iter_frames(args.video):
                row = next(rows, None)
                if row is None:
                    raise DatasetError(
                        f"faces table has {n_rows} rows but the video {args.video} decodes more frames "
                        f"(at least {index + 1}); the faces table must have one row per decoded frame",
                        path=args.faces, hint="re-run the faces stage on this video",
                    )
                frame_no, status, lm = row
                if frame_no != index:
                    raise DatasetError(
                        f"faces table row {index} is for frame {frame_no}, expected {index} "
                        "(one row per decoded frame, in order)", path=args.faces,
                    )
                ok = status != LOST and bool(np.isfinite(lm).all())
                n_lost_status += status == LOST
                if ok:
                    try:
                        face = align.align_face(frame_bgr, lm, size=size, margin=margin, points=points)
                    except ValueError as exc:
                        raise DatasetError(f"frame {index}: landmarks cannot be aligned ({exc})", path=args.faces) from None
                    buf["sfa"].append(face.sfa[..., ::-1])  # BGR -> RGB
                    buf["sfs"].append(sfs.static_shape(face.landmarks, size=size, eyebrow_thickness=brow))
                    buf["landmarks"].append(face.landmarks.astype(np.float32))
                    buf["transform"].append(face.matrix)
                    n_valid += 1
                else:
                    buf["sfa"].append(blank)
                    buf["sfs"].append(blank)
                    buf["landmarks"].append(nan_pts)
                    buf["transform"].append(nan_m)
                buf["frame"].append(np.int32(index))
                buf["time_s"].append(np.float64(time_s))
                buf["valid"].append(ok)
                n_done += 1
                bar.update(1)
                if len(buf["frame"]) >= BATCH_ROWS:
                    flush(writer)
        if next(rows, None) is not None:
            raise DatasetError(
                f"faces table has {n_rows} rows but the video {args.video} decodes only {n_done} frames; "
                "the faces table must have one row per decoded frame",
                path=args.faces, hint="re-run the faces stage on this video",
            )
        flush(writer)
    n_nan = n_done - n_valid - n_lost_status
    log.info("static: wrote %s: %d frames, %d valid (%.1f %%), %d lost%s", args.out, n_done, n_valid,
             100.0 * n_valid / max(n_done, 1), n_lost_status,
             f", {n_nan} with non-finite landmarks although not lost" if n_nan else "")
    return 0
