"""One video's static store: aligned SFA and SFS images for every decoded frame.

Streams the video and its faces table (``results/{ds}/faces/{video}.parquet``, one row per decoded
frame; read by :func:`affpipe.faces.store.stream_landmarks`) together and writes
``results/{ds}/static/{video}.h5`` (layout: :func:`affpipe.io.h5store.static_specs`). Rows where the
face was lost are kept with ``valid=False``, all-zero images and NaN landmarks: nothing is invented.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BATCH_ROWS = 64  # frames buffered between two writes to the store (bounds memory)
N_LANDMARKS = 68
LOST = "lost"


def static_store(video: str | os.PathLike, faces: str | os.PathLike, out: str | os.PathLike,
                 settings: dict[str, Any]) -> dict[str, int]:
    """Write the static store of one video.

    Parameters
    ----------
    video : path
        The video.
    faces : path
        Its faces table (one row per decoded frame, in order).
    out : path
        Static store to write (atomically).
    settings : dict
        Validated ``static`` settings (size, margin, align_landmarks, eyebrow_thickness).

    Returns
    -------
    dict
        ``frames`` (rows written), ``valid`` (rows with an aligned face), ``lost`` (rows the faces
        stage marked lost) and ``nonfinite`` (rows not lost whose landmarks are not all finite).

    Raises
    ------
    DatasetError
        The faces table is missing, unreadable or lacks columns, does not have one row per decoded
        frame in order, or has landmarks that cannot be aligned; naming the file.
    """
    import numpy as np

    from affpipe.errors import DatasetError
    from affpipe.faces.store import stream_landmarks
    from affpipe.io.h5store import STATIC_STAGE, StoreWriter, static_specs
    from affpipe.io.video import iter_frames, probe
    from affpipe.progress import progress
    from affpipe.static import align, sfs

    video, faces = Path(video), Path(faces)
    size = int(settings["size"])
    margin = float(settings["margin"])
    points = settings["align_landmarks"]
    brow = float(settings["eyebrow_thickness"])

    info = probe(video)
    n_rows, rows = stream_landmarks(faces, batch_rows=BATCH_ROWS * 4)
    log.info("static: %s (%dx%d, %.3f fps, %d frames reported), faces %s (%d rows), S=%d",
             video, info.width, info.height, info.fps, info.n_frames_reported, faces, n_rows, size)

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
        "video": str(video),
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

    with StoreWriter(out, specs, stage=STATIC_STAGE, settings=settings,
                     inputs=[video, faces], attrs=file_attrs) as writer:
        n_done = 0
        bar = progress(total=n_rows, desc="static", unit="frame")
        with bar:
            for index, time_s, frame_bgr in iter_frames(video):
                row = next(rows, None)  # raises when the row is not frame `index`
                if row is None:
                    raise DatasetError(
                        f"faces table has {n_rows} rows but the video {video} decodes more frames "
                        f"(at least {index + 1}); the faces table must have one row per decoded frame",
                        path=faces, hint="re-run the faces stage on this video",
                    )
                _, status, lm = row
                ok = status != LOST and bool(np.isfinite(lm).all())
                n_lost_status += status == LOST
                if ok:
                    try:
                        face = align.align_face(frame_bgr, lm, size=size, margin=margin, points=points)
                    except ValueError as exc:
                        raise DatasetError(f"frame {index}: landmarks cannot be aligned ({exc})", path=faces) from None
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
                f"faces table has {n_rows} rows but the video {video} decodes only {n_done} frames; "
                "the faces table must have one row per decoded frame",
                path=faces, hint="re-run the faces stage on this video",
            )
        flush(writer)
    return {"frames": n_done, "valid": n_valid, "lost": int(n_lost_status),
            "nonfinite": n_done - n_valid - int(n_lost_status)}
