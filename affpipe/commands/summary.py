"""``affpipe summary``: one JSON overview of every stage's output for a dataset.

Reads only the data contracts (Parquet columns and HDF5 datasets named in docs/design), not any
stage's internals, so it doubles as a consistency check between stages: a video whose stages
disagree on the number of frames is reported, not hidden. ``excluded`` lists the videos left out
of scoring, as in ccc.json: those the manifest excluded (stage ``manifest``, with the cause) and
those without a face in any frame (stage ``evaluate``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


MULTI_FACE_COUNT_METHOD = (
    "frames with n_faces >= 2, where n_faces of the frames without a count (-1) is the last count before "
    "them (the first count for frames before it). Faces are counted by full-frame detections: every frame "
    "while the track is lost, every re-detection in redetect_region frame mode and for side tracks, and in "
    "roi mode every count_faces_every-th re-detection; counted_frames says how many frames were counted."
)


def held_face_counts(n_faces):
    """Per-frame face counts with the uncounted frames (-1) holding the last count.

    Parameters
    ----------
    n_faces : (N,) int
        Faces found by a full-frame detection on each frame, -1 where none ran.

    Returns
    -------
    (N,) int
        Frames before the first count take the first count; all -1 if no frame was counted.
    """
    import numpy as np

    n = np.asarray(n_faces, np.int64)
    counted = np.nonzero(n >= 0)[0]
    if len(counted) == 0:
        return n.copy()
    last = np.maximum.accumulate(np.where(n >= 0, np.arange(len(n)), -1))
    last[last < 0] = counted[0]
    return n[last]


def _faces(path: Path) -> dict:
    import numpy as np
    import pyarrow.compute as pc

    from affpipe.faces.store import read_columns, read_metadata

    table = read_columns(path, ["status", "n_faces"])
    counts = {k: 0 for k in ("detected", "tracked", "lost")}
    for entry in pc.value_counts(table["status"]).to_pylist():
        counts[entry["values"]] = entry["counts"]
    # frames with more than one face in the picture (the tracker follows one of them)
    n_faces = table["n_faces"].to_numpy()
    counted = n_faces >= 0
    multi = int(np.count_nonzero(held_face_counts(n_faces) >= 2)) if counted.any() else None
    meta = read_metadata(path)
    return {
        "frames_decoded": table.num_rows, **counts,
        "multi_face_frames": multi,
        "multi_face_count": {"counted_frames": int(counted.sum()),
                             "multi_face_counted_frames": int(np.count_nonzero(n_faces >= 2)),
                             "method": MULTI_FACE_COUNT_METHOD},
        # Aff-Wild2 X_left / X_right tracked jointly: frames where both tracks were on one face (marked lost)
        "side_conflict_frames": meta.get("side_conflict_frames"),
        "lost_reasons": meta.get("lost_reasons") or {},  # lost frames by cause (faces metadata)
    }


def _labels(path: Path) -> dict:
    import numpy as np

    from affpipe.datasets.labels import read_labels

    labels = read_labels(path)
    labelled = np.isfinite(labels.values).all(axis=1)
    return {"frames": labels.n_frames, "labelled_frames": int(labelled.sum())}


def _h5(path: Path) -> dict:
    import numpy as np

    from affpipe.io.h5store import StoreReader

    with StoreReader(path) as r:  # a foreign, truncated or unfinished file: an error naming it
        return {"rows": int(r.n_rows), "valid": int(np.count_nonzero(r.valid)), "datasets": sorted(r.h5.keys())}


def summarize(manifest: Path, results: Path) -> dict:
    from affpipe.datasets.manifest import read_manifest
    from affpipe.faces.advice import faces_table_hint
    from affpipe.evaluate import NO_FACE_REASON, NOT_SCORED_REASON

    table = read_manifest(manifest, columns=("fps", "n_frames"))
    rows = table.rows
    excluded = table.excluded()
    videos = {}
    problems = []
    for row in rows:
        vid = row["video"]
        entry: dict = {"partition": row["partition"], "fps": row["fps"], "n_frames_reported": row["n_frames"]}
        for stage, sub, ext, fn in (
            ("labels", "labels", "parquet", _labels),
            ("faces", "faces", "parquet", _faces),
            ("static", "static", "h5", _h5),
            ("dynamic", "dynamic", "h5", _h5),
        ):
            path = results / sub / f"{vid}.{ext}"
            entry[stage] = fn(path) if path.exists() else None
        faces, static = entry["faces"], entry["static"]
        if faces and static and static["rows"] != faces["frames_decoded"]:
            problems.append(f"{vid}: static has {static['rows']} rows but {faces['frames_decoded']} frames were decoded")
        if faces and faces["frames_decoded"] != row["n_frames"]:
            problems.append(
                f"{vid}: container reports {row['n_frames']} frames, {faces['frames_decoded']} decoded"
            )
        if faces and faces["frames_decoded"] and faces["lost"] == faces["frames_decoded"]:
            excluded.append({"video": vid, "partition": row["partition"], "stage": "evaluate",
                             "reason": NO_FACE_REASON, "hint": faces_table_hint(results / "faces" / f"{vid}.parquet")})
        videos[vid] = entry
    totals: dict = {"videos": len(videos), "excluded": len(excluded)}
    for key in ("detected", "tracked", "lost", "frames_decoded"):
        totals[key] = sum((v["faces"] or {}).get(key, 0) for v in videos.values())
    totals["dfi"] = sum((v["dynamic"] or {}).get("valid", 0) for v in videos.values())
    totals["labelled_frames"] = sum((v["labels"] or {}).get("labelled_frames", 0) for v in videos.values())
    # a dataset without labels (e.g. a user's recordings predicted by another dataset's models) is not scored
    scored = {"scored": True} if totals["labelled_frames"] else {"scored": False, "not_scored_reason": NOT_SCORED_REASON}
    return {"dataset": results.name, **scored, "totals": totals, "problems": problems, "excluded": excluded,
            "videos": videos}


def _run(args: argparse.Namespace) -> int:
    from affpipe import __version__
    from affpipe.io.atomic import write_text

    summary = summarize(Path(args.manifest), Path(args.results))
    summary["affpipe_version"] = __version__
    for line in summary["problems"]:
        log.warning(line)
    for vid, v in summary["videos"].items():
        conflicts = (v["faces"] or {}).get("side_conflict_frames")
        if conflicts:
            log.warning("video %s: %d frames where its left and right tracks were on the same face (marked lost)",
                        vid, conflicts)
    for e in summary["excluded"]:
        log.warning("video %s (%s) excluded (%s stage): %s", e["video"], e["partition"], e["stage"], e["reason"])
    t = summary["totals"]
    log.info(
        "%d videos, %d frames decoded: %d detected, %d tracked, %d lost; %d dynamic images",
        t["videos"], t["frames_decoded"], t["detected"], t["tracked"], t["lost"], t["dfi"],
    )
    write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n", args.out)
    return 0


def register(sub) -> None:
    p = sub.add_parser("summary", help="overview of every stage's output for one dataset (JSON)")
    p.add_argument("--manifest", required=True, help="results/{ds}/manifest.parquet")
    p.add_argument("--results", required=True, help="results/{ds} folder")
    p.add_argument("--out", required=True, help="output JSON path")
    p.set_defaults(func=_run)
