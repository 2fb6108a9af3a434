"""``affpipe dr-rank``: ranking accuracy of DR models on unseen videos -> ranking.json (DR paper §4.3).

For every model (level T) and every evaluated video, windows of 2T+1 valid frames are sampled as
the model was trained (its stride, scaled by the video's frame rate), at most
``rank_windows_per_video`` per video, spread evenly. On each window three rankers are scored on
the same T(T+1) same-side pairs (:mod:`affpipe.dr.ranking`): the DR of the centre frame, the
window's own RankSVM (upper bound) and the untrained similarity baseline; chance is 50 %.
Ranking needs no labels, so any video with a static store can be evaluated.

Videos: ``--static`` files directly, or a manifest and static folder; then ``rank_partitions``
chooses the partitions, and by default every video not trained on (a video whose static store was
a training input of one of the models is left out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from affpipe.commands._common import add_settings_arg, load_settings

log = logging.getLogger(__name__)

#: windows processed at a time per video (bounds memory: 2T+1 frames each)
RANK_CHUNK = 64


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dr-rank",
        help="ranking accuracy of DR models on unseen videos vs the per-window RankSVM upper bound -> ranking.json",
        description="Score how well each DR model ranks the frames around the frame it was inferred from (share of "
        "same-side pairs with the nearer frame scored higher), next to the per-window RankSVM upper bound, an "
        "untrained similarity baseline and chance (50%%). Needs no labels.",
    )
    p.add_argument("--models", required=True, nargs="+", type=Path, metavar="MODEL.pt", help="DR model files (from dr-train)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, help="manifest of the evaluated dataset (with --static-dir)")
    src.add_argument("--static", nargs="+", type=Path, metavar="X.h5", help="static stores to evaluate (ids = file stems)")
    p.add_argument("--static-dir", type=Path, help="folder of the manifest's static stores ({video}.h5)")
    p.add_argument("--out", required=True, type=Path, help="output JSON, e.g. results/{ds}/dr/ranking.json (atomic)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_settings_arg(p, what="dr")
    p.set_defaults(func=handler)


def _select_videos(args, settings, metas) -> tuple[list, list[dict[str, str]]]:
    from affpipe.datasets.manifest import read_manifest
    from affpipe.dr.data import videos_from_manifest, videos_from_paths
    from affpipe.errors import ConfigError
    from affpipe.plan import PARTITIONS, dr_rank_partitions

    if args.static:
        return videos_from_paths(args.static), []
    if args.static_dir is None:
        raise ConfigError("--manifest needs --static-dir")
    explicit = dr_rank_partitions(settings)
    parts = list(explicit) if explicit is not None else list(PARTITIONS)
    rows = read_manifest(args.manifest)
    parts = [p for p in parts if any(r["partition"] == p for r in rows)]
    videos = videos_from_manifest(args.manifest, args.static_dir, partitions=parts)
    left_out = []
    if explicit is None:
        trained = {t for m in metas for t in m.get("train_inputs", [])}
        keep = []
        for v in videos:
            if os.path.realpath(v.path) in trained:
                left_out.append({"video": v.video, "reason": "a training video of the models"})
            else:
                keep.append(v)
        videos = keep
    return videos, left_out


def rank_model(model, meta: dict, videos: list, store, *, settings: dict[str, Any], device) -> dict[str, Any]:
    """Ranking results of one model on some videos (see the module docstring)."""
    import numpy as np

    from affpipe.dr import ranking
    from affpipe.dr.data import build_windows
    from affpipe.dr.windows import evenly_spaced
    from affpipe.progress import progress

    T = int(meta["T"])
    ws = build_windows(videos, T=T, stride=int(meta["stride"]), reference_fps=float(meta["reference_fps"]))
    per_video_cap = settings["rank_windows_per_video"]
    chosen = []
    for i in range(len(videos)):
        idx = np.flatnonzero(ws.video == i)
        chosen.append(idx[evenly_spaced(idx.size, per_video_cap)])
    ws = ws.subset(np.concatenate(chosen) if chosen else np.zeros(0, np.int64))
    deltas = {"dr": [], "ranksvm": [], "similarity": []}
    kkt = []
    which = []
    with progress(total=len(ws), desc=f"dr-rank T={T}", unit="window") as bar:
        for a in range(0, len(ws), RANK_CHUNK):
            idx = np.arange(a, min(a + RANK_CHUNK, len(ws)))
            frames = store.windows(ws, idx)  # (k, 2T+1, S, S, 3) uint8
            d = ranking.model_directions(model, np.ascontiguousarray(frames[:, T]), device=device,
                                         batch_size=int(settings["infer_batch_size"]))
            deltas["dr"].append(ranking.deltas_from_directions(d, frames, T=T))
            svm, res = ranking.ranksvm_deltas(frames, T=T, lam=float(settings["ranksvm_lambda"]))
            deltas["ranksvm"].append(svm)
            kkt.append(res)
            deltas["similarity"].append(ranking.similarity_deltas(frames, T=T))
            which.append(ws.video[idx])
            bar.update(idx.size)
    m = ranking.n_pairs(T)
    deltas = {k: np.concatenate(v) if v else np.zeros((0, m)) for k, v in deltas.items()}
    vid = np.concatenate(which) if which else np.zeros(0, np.int64)
    kkt = np.concatenate(kkt) if kkt else np.zeros(0)
    theta = float(meta["theta"])
    out: dict[str, Any] = {
        "T": T,
        "window_frames": 2 * T + 1,
        "pairs_per_window": m,
        "model": meta["path"],
        "stride_at_reference_fps": int(meta["stride"]),
        "reference_fps": float(meta["reference_fps"]),
        "theta": theta,
        "trained_on": meta.get("train_videos", []),
        "epochs": int(meta.get("epochs_completed", 0)),
        "chance": ranking.CHANCE,
        "dr": ranking.accuracy_summary(deltas["dr"], T=T),
        "ranksvm_upper_bound": ranking.accuracy_summary(deltas["ranksvm"], T=T),
        "similarity_baseline": ranking.accuracy_summary(deltas["similarity"], T=T),
    }
    out["dr"]["success_share"] = float((deltas["dr"] > theta).mean()) if deltas["dr"].size else float("nan")
    out["ranksvm_upper_bound"].update({"lambda": float(settings["ranksvm_lambda"]),
                                       "kkt_residual_max": float(kkt.max()) if kkt.size else float("nan")})
    per_video = {}
    for i, v in enumerate(videos):
        sel = vid == i
        if not sel.any():
            per_video[v.video] = {"partition": v.partition, "windows": 0, "note": "no window of 2T+1 valid frames"}
            continue
        per_video[v.video] = {
            "partition": v.partition,
            "fps": v.fps,
            "stride": int(ws.stride[ws.video == i][0]),
            "windows": int(sel.sum()),
            "dr": float((deltas["dr"][sel] > 0).mean()),
            "ranksvm_upper_bound": float((deltas["ranksvm"][sel] > 0).mean()),
            "similarity_baseline": float((deltas["similarity"][sel] > 0).mean()),
        }
    out["per_video"] = per_video
    return out


def handler(args: argparse.Namespace) -> int:
    from affpipe import __version__
    from affpipe.config import section_settings
    from affpipe.dr import runtime
    from affpipe.dr.data import FrameStore
    from affpipe.errors import AffpipeError, ConfigError
    from affpipe.io.atomic import write_text

    settings = section_settings("dr", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    device = runtime.select_device(settings["device"])
    runtime.configure_torch(device=device, threads=args.threads, seed=int(settings["seed"]))
    loaded = [runtime.load_model(p, device=device) for p in args.models]
    videos, left_out = _select_videos(args, settings, [m for _, m in loaded])
    if not videos:
        raise AffpipeError("no video to evaluate (all were training videos, or none in rank_partitions)",
                           path=args.manifest or None, hint="set dr.rank_partitions")
    store = FrameStore(videos, cache_mb=0)  # windows are read chunk by chunk
    for _, meta in loaded:
        if int(meta["size"]) != store.size:
            raise AffpipeError(f"model trained on {meta['size']}x{meta['size']} faces, the evaluated static stores have "
                               f"{store.size}x{store.size}", path=meta["path"])
    results = {}
    for model, meta in loaded:
        res = rank_model(model, meta, videos, store, settings=settings, device=device)
        results[f"T{meta['T']}"] = res
        log.info(
            "dr-rank T=%d: %d windows of %d video(s): DR ranking accuracy %.4f (past %.4f, future %.4f); RankSVM upper "
            "bound %.4f; similarity baseline %.4f; chance 0.5",
            res["T"], res["dr"]["windows"], sum(1 for v in res["per_video"].values() if v["windows"]),
            res["dr"]["accuracy"], res["dr"].get("accuracy_past", float("nan")), res["dr"].get("accuracy_future", float("nan")),
            res["ranksvm_upper_bound"]["accuracy"], res["similarity_baseline"]["accuracy"],
        )
    store.close()
    doc = {
        "description": "Ranking accuracy (share of same-side frame pairs (a, b) of a window of 2T+1 frames, a nearer "
        "to the centre, with <d, I_a> > <d, I_b>) on videos the models were not trained on. dr = the UNet's DR of the "
        "centre frame; ranksvm_upper_bound = each window's own RankSVM on its pairs (trained on the frames it ranks; its "
        "value depends on its lambda, recorded with it); similarity_baseline = d = centre "
        "frame minus its mean; chance = 0.5. Pixels are SFA uint8/255.",
        "affpipe_version": __version__,
        "videos": [{"video": v.video, "partition": v.partition, "static": os.fspath(v.path)} for v in videos],
        "left_out": left_out,
        "settings": {k: settings[k] for k in ("rank_partitions", "rank_windows_per_video", "ranksvm_lambda")},
        "levels": results,
    }
    write_text(json.dumps(doc, indent=2, default=float) + "\n", args.out)
    log.info("dr-rank: wrote %s", args.out)
    return 0
