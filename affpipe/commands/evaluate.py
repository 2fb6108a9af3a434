"""``affpipe evaluate``: score every experiment's predictions -> ``results/{ds}/ccc.json``.

CCC (population; also the AVEC-script variant), PCC and MSE per experiment, partition and dimension,
concatenated over videos and averaged over videos, with the number of videos and frames and the
share of filled frames (see :mod:`affpipe.evaluate`). Checks that every manifest video is predicted
in its partition, that every frame has a finite prediction, and that all experiments were scored
against the same labels. Videos the manifest excluded, and videos without a single feature row
(e.g. no face found in any frame), are listed in ``excluded`` with the cause, and not scored.

Example::

    python -m affpipe evaluate --manifest results/demo/manifest.parquet \\
        --predictions dfm_bgru=results/demo/experiments/dfm_bgru/predictions.parquet \\
                      sfa_bgru=results/demo/experiments/sfa_bgru/predictions.parquet \\
        --out results/demo/ccc.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings, parse_pairs

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score the experiments' predictions (CCC, PCC, MSE; both aggregations) -> ccc.json",
        description="Score each experiment's predictions.parquet per partition and dimension and write one "
        "self-describing JSON file (metric definitions, aggregations, config hash, affpipe version).",
    )
    p.add_argument("--predictions", required=True, nargs="+", metavar="NAME=PARQUET",
                   help="experiment name and its predictions.parquet, in report order")
    p.add_argument("--manifest", type=Path, default=None,
                   help="results/DS/manifest.parquet: check that every video is predicted in its partition")
    p.add_argument("--faces", type=Path, default=None, metavar="DIR",
                   help="results/DS/faces: name the cause (no face found) of a video left out for having no prediction")
    p.add_argument("--dataset", default=None, help="dataset name recorded in the output (default: the manifest's)")
    p.add_argument("--out", required=True, type=Path, help="ccc.json (written atomically)")
    add_settings_arg(p, what="evaluate-stage")
    p.set_defaults(func=handler)


def no_prediction_reason(video: str, experiments: list[str], faces_dir: Path | None) -> str:
    """Why a video has no prediction of its own (no feature row in any frame of ``experiments``)."""
    from affpipe.evaluate import NO_FACE_REASON

    if faces_dir is not None:
        from affpipe.faces.store import has_face

        path = faces_dir / f"{video}.parquet"
        if path.is_file() and not has_face(path):
            return NO_FACE_REASON
    return f"no feature row in any frame (experiment(s) {', '.join(experiments)}): no prediction"


def decoded_frames(faces_dir: Path, videos: list[str]) -> dict[str, int]:
    """Number of decoded frames of each video (rows of its faces table; videos without one are left out)."""
    from affpipe.faces.store import count_frames

    out = {}
    for v in videos:
        path = faces_dir / f"{v}.parquet"
        if path.is_file():
            out[v] = count_frames(path)
    return out


def check_against_manifest(p, manifest) -> str | None:
    """Every manifest video predicted, in its partition, and nothing else (``manifest``: an
    :class:`affpipe.datasets.Manifest`); returns the dataset name."""
    from affpipe.errors import AffpipeError

    want = {r["video"]: r["partition"] for r in manifest}
    got = {}
    for v, part in zip(p.video, p.partition):
        got.setdefault(v, part)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        what = []
        if missing:
            what.append(f"{len(missing)} manifest video(s) missing (e.g. {missing[0]})")
        if extra:
            what.append(f"{len(extra)} video(s) not in the manifest (e.g. {extra[0]})")
        raise AffpipeError("predictions do not match the manifest: " + "; ".join(what), path=p.source,
                           hint="re-run `affpipe regress` for this experiment")
    moved = sorted(v for v in want if got[v] != want[v])
    if moved:
        raise AffpipeError(f"video {moved[0]} is {got[moved[0]]} here but {want[moved[0]]} in {manifest.path}"
                           f"{f' ({len(moved)} videos differ)' if len(moved) > 1 else ''}", path=p.source)
    return manifest.dataset


def handler(args: argparse.Namespace) -> int:
    import json

    from affpipe.config import section_settings
    from affpipe.datasets.manifest import read_manifest
    from affpipe.errors import AffpipeError
    from affpipe.evaluate import (
        NO_FACE_REASON,
        build_report,
        compare_labels,
        drop_videos,
        frames_not_decoded,
        keep_rows,
        videos_without_prediction,
    )
    from affpipe.faces.advice import faces_table_hint
    from affpipe.io.atomic import write_text
    from affpipe.regress.predictions import read_predictions

    settings = section_settings("evaluate", load_settings(args.settings))
    pairs = parse_pairs(args.predictions)
    preds = [read_predictions(path, name) for name, path in pairs]
    manifest = read_manifest(args.manifest) if args.manifest is not None else None
    dataset = args.dataset
    if manifest is not None:
        for p in preds:  # every experiment (the dataset name is taken from the first check)
            found = check_against_manifest(p, manifest)
            dataset = dataset or found
    for p in preds[1:]:
        diff = compare_labels(preds[0], p)
        if diff is not None:
            raise AffpipeError(f"covers {diff} than {preds[0].source}: the experiments were not run on the same "
                               "labels", path=p.source, hint="re-run `affpipe regress` for the stale experiment")
    excluded = manifest.excluded() if manifest is not None else []
    partition_of = {v: part for v, part in zip(preds[0].video, preds[0].partition)}
    unpredicted = videos_without_prediction(preds)
    for vid, names in sorted(unpredicted.items()):
        reason = no_prediction_reason(vid, names, args.faces)
        entry = {"video": vid, "partition": partition_of[vid], "stage": "evaluate", "reason": reason}
        if reason == NO_FACE_REASON:
            entry["hint"] = faces_table_hint(args.faces / f"{vid}.parquet")
        excluded.append(entry)
    for e in excluded:
        log.warning("video %s (%s) not scored (%s stage): %s%s", e["video"], e["partition"], e["stage"],
                    f"{e['file']}: {e['reason']}" if e.get("file") else e["reason"],
                    f"; {e['hint']}" if e.get("hint") else "")
    preds = [drop_videos(p, set(unpredicted)) for p in preds]
    frames_not_scored = []
    if args.faces is not None:
        decoded = decoded_frames(args.faces, preds[0].videos())
        beyond = frames_not_decoded(preds[0], decoded)  # every experiment has the same (video, frame) rows
        for vid in dict.fromkeys(preds[0].video[beyond].tolist()):
            n = int((beyond & (preds[0].video == vid)).sum())
            frames_not_scored.append({
                "video": vid, "partition": partition_of[vid], "frames": n,
                "reason": f"truncated video: {decoded[vid]} frames decode, the labels cover {decoded[vid] + n}; "
                "frames without an image are not scored"})
            log.warning("video %s: %d frame(s) beyond the last decoded frame are not scored", vid, n)
        preds = [keep_rows(p, ~frames_not_decoded(p, decoded)) for p in preds]
    report = build_report(preds, partitions=settings["partitions"], settings=settings, dataset=dataset,
                          excluded=excluded, frames_not_scored=frames_not_scored)
    write_text(json.dumps(report, indent=2) + "\n", args.out)
    for name, parts in report["summary"]["ccc"].items():
        text = "; ".join(
            f"{part} " + ", ".join(f"{d} {v:.3f}" if v is not None else f"{d} n/a" for d, v in dims.items())
            for part, dims in parts.items()
        )
        log.info("%s CCC (concatenated): %s", name, text)
        raw = report["summary"].get("ccc_unfiltered", {}).get(name)
        if raw is not None:
            text = "; ".join(
                f"{part} " + ", ".join(f"{d} {v:.3f}" if v is not None else f"{d} n/a" for d, v in dims.items())
                for part, dims in raw.items()
            )
            log.info("%s CCC before the median filter: %s", name, text)
    return 0
