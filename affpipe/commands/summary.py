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


def _faces(path: Path) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["status", "n_faces"])
    counts = {k: 0 for k in ("detected", "tracked", "lost")}
    for entry in pc.value_counts(table["status"]).to_pylist():
        counts[entry["values"]] = entry["counts"]
    # frames where a full-frame detection found more than one face (the tracker follows one of them)
    multi = int(pc.sum(pc.greater(table["n_faces"], 1)).as_py() or 0)
    return {"frames_decoded": table.num_rows, **counts, "multi_face_frames": multi}


def _labels(path: Path) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["valence", "arousal"])
    v = table["valence"].to_numpy(zero_copy_only=False)
    a = table["arousal"].to_numpy(zero_copy_only=False)
    labelled = np.isfinite(v) & np.isfinite(a)
    return {"frames": table.num_rows, "labelled_frames": int(labelled.sum())}


def _h5(path: Path) -> dict:
    import numpy as np

    from affpipe.io.h5store import StoreReader

    with StoreReader(path) as r:  # a foreign, truncated or unfinished file: an error naming it
        return {"rows": int(r.n_rows), "valid": int(np.count_nonzero(r.valid)), "datasets": sorted(r.h5.keys())}


def summarize(manifest: Path, results: Path) -> dict:
    import pyarrow.parquet as pq

    from affpipe.datasets import manifest_excluded
    from affpipe.faces.advice import faces_table_hint
    from affpipe.evaluate import NO_FACE_REASON

    table = pq.read_table(manifest)
    rows = table.to_pylist()
    excluded = manifest_excluded(table.schema.metadata)
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
    return {"dataset": results.name, "totals": totals, "problems": problems, "excluded": excluded, "videos": videos}


def _run(args: argparse.Namespace) -> int:
    from affpipe import __version__
    from affpipe.io.atomic import write_text

    summary = summarize(Path(args.manifest), Path(args.results))
    summary["affpipe_version"] = __version__
    for line in summary["problems"]:
        log.warning(line)
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
