"""Scores of every experiment: the content of ``results/{ds}/ccc.json``.

Input: each experiment's ``predictions.parquet`` as :func:`affpipe.regress.predictions.read_predictions`
reads it (columns: video, partition, frame, time_s, <dim>_pred, <dim>_true, filled). Output: one self-describing dict,
per experiment, partition and dimension:

* ``concatenated``: CCC, AVEC-script CCC, PCC, MSE over all labelled frames of the partition's videos
  concatenated, plus the means and standard deviations of predictions and labels (a collapsed,
  constant prediction shows as ``pred_std`` ~ 0 and CCC ~ 0);
* ``per_video_mean``: the same metrics per video, averaged over videos (videos where a metric is
  undefined, e.g. PCC on a video with constant labels, are left out and counted);
* counts: videos, frames, labelled frames, and the share of scored frames whose prediction was
  *filled* (no feature at that frame, see :mod:`affpipe.regress.fill`).

An experiment whose predictions were median-filtered (``regression.median_filter``; the file then
also has ``<dim>_pred_raw`` columns) is scored twice: the filtered predictions as above, and the
unfiltered ones under ``partitions_unfiltered`` (same layout as ``partitions``) and in the
``summary.ccc_unfiltered`` block; ``postprocessing`` describes the filter.

Excluded videos (the ``excluded`` list): videos the manifest left out (stage ``manifest``: a file that
cannot be opened or decoded, a missing or bad label file; see ``datasets.<name>.on_bad_input``) and
videos with no feature row in any frame for some experiment (stage ``evaluate``, e.g. no face found in
any frame). The latter have no prediction of their own (their every frame would only be filled from
the training mean), so they are left out of the scores of *every* experiment (the experiments stay
scored on the same videos) and listed with the cause instead; see :func:`videos_without_prediction`.
Frames a truncated video does not have (at or beyond its number of decoded frames, from the faces
table) are not scored either and are counted per video in ``frames_not_scored``.

Only labelled frames (label not NaN) are scored, per dimension. A partition without any labelled
frame (e.g. SEMAINE's test set, whose labels are not distributed) is listed with ``scored: false``.
Predictions are never dropped: every frame has a finite prediction, which is checked. A dataset
without any labelled frame (e.g. a user's own recordings, predicted by models trained on another
dataset: ``experiments.<name>.source``) gets ``"scored": false`` and a ``not_scored_reason`` at the top
level, and ``null`` for every CCC of the summary; its predictions are in each experiment's file.

An experiment applied from another dataset records where its model comes from under ``source``
(dataset, model file and its sha256, training summary); ``null`` for an experiment trained here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping, Sequence

import numpy as np

from affpipe import metrics
from affpipe.regress.predictions import ExperimentPredictions
from affpipe.regress.registry import OUTPUT_DIMENSIONS

CCC_FORMAT = "affpipe-ccc"
CCC_FORMAT_VERSION = 1
PARTITIONS = ("train", "devel", "test")
#: ``reason`` of an excluded video whose faces table has no face in any frame (ccc.json, summary.json)
NO_FACE_REASON = "no face found in any frame: no prediction"


def videos_without_prediction(experiments: Sequence[ExperimentPredictions]) -> dict[str, list[str]]:
    """Videos whose every frame is filled in at least one experiment: ``{video: [experiment, ...]}``.

    Such a video had no feature row at all (no face found in any frame, or too short for a single
    dynamic window): the regressor predicted nothing on it.
    """
    out: dict[str, list[str]] = {}
    for p in experiments:
        for vid in p.videos():
            if bool(p.filled[p.video == vid].all()):
                out.setdefault(vid, []).append(p.name)
    return out


def drop_videos(p: ExperimentPredictions, videos: set[str]) -> ExperimentPredictions:
    """``p`` without the rows of ``videos``."""
    if not videos:
        return p
    return keep_rows(p, ~np.isin(p.video.astype(str), sorted(videos)))


def frames_not_decoded(p: ExperimentPredictions, decoded: Mapping[str, int]) -> np.ndarray:
    """Rows whose frame is at or beyond the number of frames that decoded (``decoded[video]``).

    A truncated video has labels (and, from the fill rule, predictions) up to the frame count its
    container reports, but no image after the last decoded frame: those frames are not scored.
    """
    limit = np.array([decoded.get(v, np.iinfo(np.int64).max) for v in p.video.tolist()], dtype=np.int64)
    return p.frame >= limit


def keep_rows(p: ExperimentPredictions, keep: np.ndarray) -> ExperimentPredictions:
    """``p`` restricted to the rows where ``keep`` is True."""
    if keep.all():
        return p
    arrays = {k: getattr(p, k)[keep] for k in ("video", "partition", "frame", "pred", "true", "filled")}
    for k in ("time_s", "pred_raw"):
        if getattr(p, k) is not None:
            arrays[k] = getattr(p, k)[keep]
    return dataclasses.replace(p, **arrays)


def _describe(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "std": float(x.std())}


def score_partition(p: ExperimentPredictions, partition: str) -> dict[str, Any]:
    """Scores of one experiment on one partition (see the module docstring).

    Returns
    -------
    dict
        ``scored``, ``videos``, ``frames``, ``filled_frames``, ``filled_share``,
        ``videos_without_features`` and per dimension ``labelled_frames``, ``filled_share``
        (among the labelled frames), ``concatenated`` and ``per_video_mean``.
    """
    sel = p.partition == partition
    vids = list(dict.fromkeys(p.video[sel].tolist()))
    out: dict[str, Any] = {
        "videos": len(vids),
        "frames": int(sel.sum()),
        "filled_frames": int(p.filled[sel].sum()),
        "filled_share": float(p.filled[sel].mean()) if sel.any() else 0.0,
        "videos_without_features": int(sum(bool(p.filled[sel & (p.video == v)].all()) for v in vids)),
    }
    dims: dict[str, Any] = {}
    for d, name in enumerate(OUTPUT_DIMENSIONS):
        lab = sel & np.isfinite(p.true[:, d])
        entry: dict[str, Any] = {"labelled_frames": int(lab.sum())}
        if not lab.any():
            entry["scored"] = False
            dims[name] = entry
            continue
        entry["scored"] = True
        entry["labelled_videos"] = len(set(p.video[lab].tolist()))
        entry["filled_frames"] = int(p.filled[lab].sum())
        entry["filled_share"] = float(p.filled[lab].mean())
        x, y = p.pred[lab, d], p.true[lab, d]
        conc = metrics.scores(x, y)
        conc.update({"pred_mean": float(x.mean()), "pred_std": float(x.std()),
                     "true_mean": float(y.mean()), "true_std": float(y.std())})
        entry["concatenated"] = conc
        per_video: dict[str, Any] = {}
        undefined: dict[str, int] = {}
        xs = [p.pred[lab & (p.video == v), d] for v in vids]
        ys = [p.true[lab & (p.video == v), d] for v in vids]
        keep = [i for i, a in enumerate(xs) if a.size > 0]
        xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        for m in metrics.METRIC_NAMES:
            if m == "ccc_avec_script":
                pairs = [(a, b) for a, b in zip(xs, ys) if a.size >= 2]
                short = len(xs) - len(pairs)
                value, counts = (metrics.aggregate([a for a, _ in pairs], [b for _, b in pairs], m,
                                                   aggregation="per_video_mean") if pairs else (None, {"videos": 0, "videos_undefined": 0}))
                counts["videos_undefined"] += short
            else:
                value, counts = metrics.aggregate(xs, ys, m, aggregation="per_video_mean")
            per_video[m] = value
            if counts["videos_undefined"]:
                undefined[m] = counts["videos_undefined"]
        per_video["videos"] = len(xs)
        per_video["videos_undefined"] = undefined
        entry["per_video_mean"] = per_video
        dims[name] = entry
    out["scored"] = any(v["scored"] for v in dims.values())
    out["dimensions"] = dims
    return out


def compare_labels(a: ExperimentPredictions, b: ExperimentPredictions) -> str | None:
    """None if the two experiments cover the same frames with the same labels, else the difference."""
    if a.video.shape != b.video.shape or not (np.array_equal(a.video, b.video) and np.array_equal(a.frame, b.frame)):
        va, vb = set(a.videos()), set(b.videos())
        if va != vb:
            return f"other videos ({len(va ^ vb)} differ, e.g. {sorted(va ^ vb)[0]})"
        return "other frames for the same videos"
    if not np.array_equal(a.partition, b.partition):
        return "other partitions"
    if not np.array_equal(np.isnan(a.true), np.isnan(b.true)) or not np.allclose(
        np.nan_to_num(a.true), np.nan_to_num(b.true), rtol=0, atol=1e-6
    ):
        return "other label values"
    return None


def config_hash(experiments: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any]) -> str:
    """sha256 of what defines the scores: each experiment's definition and settings hash, and ``settings``."""
    blob = json.dumps({"experiments": experiments, "evaluate": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def experiment_info(p: ExperimentPredictions) -> dict[str, Any]:
    """What an experiment is, from its predictions file's metadata."""
    m = p.meta
    keys = ("label", "input", "regressor", "backbone", "fill_rule", "fill_description", "postprocessing",
            "selected_epoch", "settings_sha256", "created", "affpipe_version")
    info = {k: m.get(k) or None for k in keys}
    if info["selected_epoch"] is not None:
        info["selected_epoch"] = int(info["selected_epoch"])
    info["label"] = info["label"] or p.name
    try:
        info["notes"] = json.loads(m.get("notes") or "[]")
    except json.JSONDecodeError:
        info["notes"] = []
    info["predictions"] = p.source
    try:
        info["source"] = json.loads(m["source"]) if m.get("source") else None
    except json.JSONDecodeError:
        info["source"] = None
    return info


#: ``not_scored_reason`` of a ccc.json (and summary.json) whose dataset has no labelled frame
NOT_SCORED_REASON = ("no labelled frame: the videos of this dataset have no labels (empty `labels` column, or "
                     "labels not distributed), so nothing is scored; the predictions are in each experiment's "
                     "predictions.parquet and the trace plots")


def build_report(
    experiments: Sequence[ExperimentPredictions],
    *,
    partitions: Sequence[str],
    settings: Mapping[str, Any],
    dataset: str | None = None,
    excluded: Sequence[Mapping[str, Any]] = (),
    frames_not_scored: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The ``ccc.json`` document for ``experiments`` (in the given order).

    ``excluded``: the videos left out (``video, partition, stage, reason`` and optionally ``file``),
    stored as is in the ``excluded`` list; the caller has already dropped their rows.
    ``frames_not_scored``: frames of scored videos left out (e.g. beyond the last decoded frame of a
    truncated video), stored as is; the caller has already dropped them.
    """
    import datetime as _dt

    from affpipe import __version__

    infos = {p.name: experiment_info(p) for p in experiments}
    exps: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    summary_raw: dict[str, Any] = {}

    def ccc_summary(parts: Mapping[str, Any]) -> dict[str, Any]:
        return {
            part: {
                name: (d["concatenated"]["ccc"] if d.get("scored") else None)
                for name, d in res["dimensions"].items()
            }
            for part, res in parts.items()
        }

    for p in experiments:
        parts = {part: score_partition(p, part) for part in partitions}
        exps[p.name] = {**infos[p.name], "partitions": parts}
        summary[p.name] = ccc_summary(parts)
        if p.pred_raw is not None:
            raw = dataclasses.replace(p, pred=p.pred_raw, pred_raw=None)
            parts_raw = {part: score_partition(raw, part) for part in partitions}
            exps[p.name]["partitions_unfiltered"] = parts_raw
            summary_raw[p.name] = ccc_summary(parts_raw)
    definition = {name: {k: infos[name][k] for k in ("input", "regressor", "backbone", "fill_rule", "settings_sha256")}
                  for name in infos}
    for name in infos:
        if infos[name]["source"] is not None:
            definition[name]["source"] = infos[name]["source"]
    scored = any(part["scored"] for e in exps.values() for part in e["partitions"].values())
    return {
        "format": CCC_FORMAT,
        "format_version": CCC_FORMAT_VERSION,
        "affpipe_version": __version__,
        "dataset": dataset,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": config_hash(definition, settings),
        "config_hash_covers": "each experiment's input, regressor, backbone, fill rule and regression settings "
        "(sha256 of their JSON), and the evaluate settings",
        "evaluate_settings": dict(settings),
        "scored": scored,
        **({} if scored else {"not_scored_reason": NOT_SCORED_REASON}),
        "metrics": metrics.METRIC_DEFINITIONS,
        "aggregations": metrics.AGGREGATION_DEFINITIONS,
        "scored_frames": "frames with a label (per dimension); every frame has a prediction, frames without a "
        "feature get one from the experiment's fill rule and count in filled_share",
        "summary": {
            "what": "CCC (population), concatenated over the partition's videos; null = partition not labelled",
            "ccc": summary,
            **({"ccc_unfiltered": summary_raw,
                "ccc_unfiltered_what": "the same CCC of the predictions before the experiment's median filter "
                "(only experiments with one; see experiments.<name>.postprocessing)"} if summary_raw else {}),
        },
        "excluded_what": "videos not scored, with the stage that left them out and why: `manifest` = the "
        "video or its labels could not be used (no per-video job ran), `evaluate` = no prediction of its own "
        "(no feature row in any frame)",
        "excluded": [dict(e) for e in excluded],
        "frames_not_scored": [dict(e) for e in frames_not_scored],
        "experiments": exps,
    }
