"""One experiment end to end: train (if the regressor needs it), predict every video, fill, write.

Order of events (the test partition is opened only after the model is final):

1. open the train and devel videos (labels + features stores);
2. sequence regressor: fit on train, select on devel (:func:`affpipe.regress.train.fit_sequence_model`);
   per-frame regressor (``cnn``): nothing to fit, the stored ``pred`` is the prediction;
3. predict train and devel, then open and predict the test videos;
4. fill the frames without a feature (:mod:`affpipe.regress.fill`), optionally median-filter each
   video's predictions (``regression.median_filter``, :mod:`affpipe.regress.postprocess`) and write
   ``predictions.parquet`` (one row per frame of every video) and a JSON summary of the run.

Applied from another dataset (``experiments.<name>.source``, :class:`SourceModel`): nothing is trained;
the source experiment's ``model.pt`` (sequence regressors) and its recorded settings, feature
normalisation and train label mean (the fill value) predict every video of this dataset, train, devel
and test alike, with the same inference as the source's own predictions. The dataset may have no
labels at all (then ``<dim>_true`` is NaN on every row and nothing is scored).

A regressor may read other datasets of the features store than ``features`` (and the aligned
landmarks of the static stores, ``exp.static_dir``) (``spec.inputs``) and train with its own values
of some settings (``spec.prepare_settings``, applied first; the effective settings are recorded).

``predictions.parquet`` (format, writer and reader: :mod:`affpipe.regress.predictions`): one row per
frame of every video. With a median filter (a window > 1) the predictions are the filtered ones and
``<dim>_pred_raw`` hold the unfiltered ones. Its schema metadata holds the experiment, input,
regressor, backbone, fill rule, post-processing, selected epoch, the settings (JSON) and their hash.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from affpipe import __version__
from affpipe.errors import AffpipeError, ConfigError
from affpipe.regress import data as rdata
from affpipe.regress import postprocess
from affpipe.regress.fill import FILL_DESCRIPTIONS, NO_FEATURE_RULE, fill_predictions
from affpipe.regress.predictions import video_predictions, write_predictions
from affpipe.regress.registry import OUTPUT_DIMENSIONS, get_regressor

log = logging.getLogger(__name__)

PARTITION_ORDER = ("train", "devel", "test")
#: file attribute / settings key names under which a features store may record its backbone
BACKBONE_KEYS = ("backbone",)


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``settings``."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Experiment:
    """What one experiment is (``experiments.<name>`` plus where its inputs are)."""

    name: str
    input: str
    regressor: str
    backbone: str | None
    label: str | None
    manifest: Path
    features_dir: Path
    labels_dir: Path
    static_dir: Path | None = None  # results/{ds}/static (aligned landmarks), for regressors that read them


@dataclass(frozen=True)
class SourceModel:
    """A trained experiment of another dataset, applied here (``experiments.<name>.source``).

    ``experiment_dir`` is that experiment's folder, ``results/<dataset>/experiments/<name>``: its
    ``training.json`` (settings, train label mean) and, for a sequence regressor, ``model.pt``.
    """

    dataset: str
    experiment_dir: Path

    @property
    def summary_path(self) -> Path:
        return Path(self.experiment_dir) / "training.json"

    @property
    def model_path(self) -> Path:
        return Path(self.experiment_dir) / "model.pt"


@dataclass
class _Applied:
    """What :func:`_load_source` read: the source's settings, fill value, model and scaler."""

    settings: dict[str, Any]
    fallback: np.ndarray
    info: dict[str, Any]
    model: Any = None
    scaler: Any = None
    input_dim: int | None = None
    input_groups: list[list[Any]] | None = None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_source(source: SourceModel, exp: Experiment, spec) -> _Applied:
    """Read the source experiment (training.json, model.pt) and check it is the same experiment.

    Raises
    ------
    ConfigError
        Naming the file: a missing file, or another input or regressor than ``exp``'s.
    """
    import torch

    path = source.summary_path
    if not path.is_file():
        raise ConfigError(f"the source experiment has no training summary (run experiment {exp.name!r} of dataset "
                          f"{source.dataset!r} first)", path=path)
    try:
        trained = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the source experiment's training summary ({exc})", path=path) from None
    for key, mine in (("input", exp.input), ("regressor", spec.name)):
        if trained.get(key) != mine:
            raise ConfigError(f"the source experiment's {key} is {trained.get(key)!r}, this experiment's is {mine!r}",
                              path=path, hint=f"set experiments.{exp.name}.{key} to {trained.get(key)!r}")
    settings = dict(trained["settings"])
    fallback = np.array([float(trained["train_label_mean"][d]) for d in OUTPUT_DIMENSIONS])
    info = {"dataset": source.dataset, "training_summary": os.fspath(path),
            "selected_epoch": trained.get("selected_epoch"), "settings_sha256": trained.get("settings_sha256")}
    applied = _Applied(settings=settings, fallback=fallback, info=info)
    if spec.kind != "sequence":
        return applied
    mpath = source.model_path
    if not mpath.is_file():
        raise ConfigError(f"the source experiment has no model.pt (it is written next to its predictions; rerun "
                          f"experiment {exp.name!r} of dataset {source.dataset!r})", path=mpath)
    state = torch.load(mpath, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "affpipe-regressor":
        raise ConfigError("not an affpipe regressor model", path=mpath)
    if state["regressor"] != spec.name or state["input"] != exp.input:
        raise ConfigError(f"model.pt holds a {state['regressor']!r} regressor on {state['input']!r}, this "
                          f"experiment is {spec.name!r} on {exp.input!r}", path=mpath)
    settings = json.loads(state["settings_json"])
    groups = json.loads(state["input_groups_json"])
    dim = int(state["input_dim"])
    from affpipe.regress.train import FeatureScaler

    torch.manual_seed(int(settings["seed"]))
    model = spec.rebuild(dim, groups, settings)
    model.load_state_dict(state["model"])
    model.eval()
    info["model"] = os.fspath(mpath)
    info["model_sha256"] = _file_sha256(mpath)
    applied.settings = settings
    applied.model = model
    applied.scaler = FeatureScaler.from_state(state["feature_norm"])
    applied.input_dim, applied.input_groups = dim, groups
    return applied


def _store_backbone(source: rdata.FeatureSource) -> str | None:
    for key in BACKBONE_KEYS:
        if key in source.attrs:
            return str(source.attrs[key])
    try:
        stored = json.loads(source.attrs.get("settings", "{}"))
    except (TypeError, json.JSONDecodeError):
        return None
    for key in BACKBONE_KEYS:
        if isinstance(stored, dict) and key in stored:
            return str(stored[key])
    return None


def _check_backbone(exp: Experiment, videos: list[rdata.VideoData]) -> str | None:
    """The backbone recorded in the features stores; an error if it differs from ``exp.backbone``."""
    found = None
    for v in videos:
        b = _store_backbone(v.source)
        if b is None:
            continue
        if exp.backbone is not None and b != exp.backbone:
            raise ConfigError(
                f"experiment {exp.name!r} asks for backbone {exp.backbone!r} but these features come from {b!r}",
                path=v.source.path,
                hint=f"set experiments.{exp.name}.backbone to null or {b!r}, or retrain the CNN with that backbone",
            )
        found = found or b
    if exp.backbone is not None and found is None:
        log.warning("experiment %s: the features stores do not record their backbone; cannot check it is %s",
                    exp.name, exp.backbone)
    return found


def run_experiment(
    exp: Experiment,
    settings: Mapping[str, Any],
    *,
    out: Path,
    summary_out: Path | None = None,
    threads: int = 1,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    source: SourceModel | None = None,
) -> dict[str, Any]:
    """Run one experiment and write its predictions (and summary) atomically.

    Parameters
    ----------
    exp : Experiment
    settings : the validated ``regression`` section (with the experiment's overrides merged in).
    out : ``results/{ds}/experiments/{name}/predictions.parquet``.
    summary_out : JSON summary of the run (training history, fill statistics); optional.
    threads : torch CPU threads.
    on_epoch_end : passed to the trainer (tests use it to interrupt a run).
    source : apply this trained experiment of another dataset instead of training (``settings`` are
        then the source's, recorded with its model; the argument is not used).

    Returns
    -------
    dict
        The summary.
    """
    import torch

    from affpipe.io.atomic import write_text
    from affpipe.regress import train as rtrain

    t_start = time.monotonic()
    spec = get_regressor(exp.regressor)
    applied = _load_source(source, exp, spec) if source is not None else None
    if applied is not None:
        settings = applied.settings
    elif spec.prepare_settings is not None:
        settings = spec.prepare_settings(settings)
    windows = [int(settings["median_filter"][d]) for d in OUTPUT_DIMENSIONS] if "median_filter" in settings \
        else [postprocess.NO_FILTER] * len(OUTPUT_DIMENSIONS)
    for d, w in zip(OUTPUT_DIMENSIONS, windows):
        try:
            postprocess.check_window(w, key=f"regression.median_filter.{d}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    filtering = postprocess.is_active(windows)
    torch.set_num_threads(max(1, int(threads)))
    rows = rdata.read_manifest(exp.manifest)
    if not rows:
        raise AffpipeError("the manifest lists no video", path=exp.manifest)
    if spec.inputs is not None:
        dataset = tuple(spec.inputs(settings))
    else:
        dataset = rdata.PRED_DATASET if spec.kind == "per_frame" else rdata.FEATURES_DATASET
    inputs = rdata.Inputs(features_dir=Path(exp.features_dir), labels_dir=Path(exp.labels_dir), dataset=dataset,
                          static_dir=Path(exp.static_dir) if exp.static_dir is not None else None)
    fit_videos = rdata.load_videos(rows, inputs, partitions=("train", "devel"))
    train = [v for v in fit_videos if v.partition == "train"]
    devel = [v for v in fit_videos if v.partition == "devel"]
    if not train and applied is None:
        raise AffpipeError("the manifest has no train video", path=exp.manifest)
    backbone = _check_backbone(exp, fit_videos)
    fallback = applied.fallback if applied is not None else rdata.train_label_mean(train)
    out = Path(out)
    checkpoint = out.with_name("checkpoint.pt")
    summary: dict[str, Any] = {
        "format": "affpipe-regression-summary",
        "affpipe_version": __version__,
        "experiment": exp.name,
        "label": exp.label or exp.name,
        "input": exp.input,
        "regressor": spec.name,
        "regressor_description": spec.description,
        "backbone": backbone if backbone is not None else exp.backbone,
        "settings": dict(settings),
        "settings_sha256": settings_hash(dict(settings)),
        "features_dir": os.fspath(exp.features_dir),
        "fill_rule": settings["fill"],
        "fill_description": FILL_DESCRIPTIONS[settings["fill"]] + "; " + NO_FEATURE_RULE,
        "postprocessing": (
            "running median over each video's frames after the fill rule, centred windows shrinking at the "
            "video's ends: " + ", ".join(f"{d} {w} frames" for d, w in zip(OUTPUT_DIMENSIONS, windows))
            + "; unfiltered predictions in <dim>_pred_raw"
        ) if filtering else "none",
        "inputs": list(dataset) if isinstance(dataset, tuple) else [dataset],
        "train_label_mean": dict(zip(OUTPUT_DIMENSIONS, map(float, fallback))),
        "notes": [],
    }
    if applied is not None:
        summary["source"] = applied.info
        summary["notes"].append(f"applied from dataset {source.dataset!r}: nothing trained on this dataset; the "
                                "settings, feature normalisation and fill value are the source experiment's")

    model = None
    if applied is not None and spec.kind == "sequence":
        device = rtrain.resolve_device(settings["device"])
        rtrain.set_determinism(device)
        source_model = applied.model.to(device)
        summary["device"] = str(device)
        summary["input_dim"] = applied.input_dim
        summary["input_groups"] = applied.input_groups
        summary["selected_epoch"] = applied.info["selected_epoch"]
        predict_rows = spec.predict or rtrain.predict_video

        def check_width(v: rdata.VideoData) -> None:
            if v.source.dim != applied.input_dim or (
                    applied.input_groups and [list(g) for g in v.source.groups] != applied.input_groups):
                raise ConfigError(
                    f"these features have the columns {v.source.groups} ({v.source.dim}), the source model was "
                    f"trained on {applied.input_groups} ({applied.input_dim})", path=v.source.path,
                    hint="the CNN and its settings must be the source dataset's")

        def predict(v: rdata.VideoData) -> np.ndarray:
            check_width(v)
            return predict_rows(source_model, v, applied.scaler, settings, device=device)
    elif spec.kind == "sequence":
        device = rtrain.resolve_device(settings["device"])
        summary["device"] = str(device)
        budget = float(settings["max_memory_gb"]) * rdata.GIB
        need = rdata.total_bytes(fit_videos)
        in_memory = need <= budget
        if in_memory:
            for v in fit_videos:
                v.source.load()
        log.info("features of train+devel: %.2f GB, %s", need / rdata.GIB,
                 "held in memory" if in_memory else f"read from the files on demand (> max_memory_gb {settings['max_memory_gb']})")
        summary["features_in_memory"] = in_memory
        result = rtrain.fit_sequence_model(
            spec, train, devel, settings, checkpoint=checkpoint, device=device,
            fingerprint_files=sorted(set(inputs.files)), on_epoch_end=on_epoch_end,
        )
        model = result.model
        summary.update({
            "input_dim": train[0].source.dim,
            "input_groups": [[name, width] for name, width in train[0].source.groups],
            "train_windows": result.n_windows,
            "selection": settings["selection"],
            "selection_metric": settings["selection_metric"] if settings["selection"] == "devel" else "last epoch",
            "selected_epoch": result.best_epoch,
            "selected_score": result.best_score,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch,
            "history": result.history,
        })
        summary["notes"] += result.notes

        predict_rows = spec.predict or rtrain.predict_video

        def predict(v: rdata.VideoData) -> np.ndarray:
            return predict_rows(model, v, result.scaler, settings, device=device)
    else:
        summary["input_dim"] = fit_videos[0].source.dim if fit_videos else None

        def predict(v: rdata.VideoData) -> np.ndarray:
            return v.source.rows(0, len(v.source)).astype(np.float64)

    # -- predict: train and devel, then (only now) the test partition ---------------------
    tables = []
    fill_stats: dict[str, dict[str, int]] = {}
    beyond = 0

    def emit(v: rdata.VideoData) -> None:
        nonlocal beyond
        pred = predict(v)
        values, filled = fill_predictions(v.labels.n_frames, v.frames, pred, rule=settings["fill"], fallback=fallback)
        raw = values
        if filtering:
            values = postprocess.median_filter_predictions(raw, windows=windows).astype(np.float32)
        stats = fill_stats.setdefault(v.partition, {"videos": 0, "frames": 0, "filled_frames": 0,
                                                    "videos_without_features": 0})
        stats["videos"] += 1
        stats["frames"] += v.labels.n_frames
        stats["filled_frames"] += int(filled.sum())
        if len(v.source) == 0:
            stats["videos_without_features"] += 1
            note = f"{v.video} ({v.partition}) has no valid feature row: every frame gets the train mean label"
            log.warning(note)
            summary["notes"].append(note)
        beyond += v.source.beyond
        tables.append(video_predictions(v.video, v.partition, frame=v.labels.frame, time_s=v.labels.time_s, pred=values,
                                        true=v.labels.values, filled=filled, raw=raw if filtering else None))
        v.source.unload()
        v.source.close()

    for v in fit_videos:
        emit(v)
    test_videos = rdata.load_videos(rows, inputs, partitions=("test",))
    for v in test_videos:
        emit(v)
    order = {v: i for i, v in enumerate(r["video"] for r in rows)}
    tables.sort(key=lambda t: order[t["video"][0].as_py()] if t.num_rows else -1)
    for part in fill_stats.values():
        part["filled_share"] = part["filled_frames"] / part["frames"] if part["frames"] else 0.0
    summary["fill"] = fill_stats
    summary["feature_rows_beyond_labels"] = beyond
    summary["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    summary["seconds"] = time.monotonic() - t_start

    meta = {
        "affpipe_version": __version__,
        "experiment": exp.name,
        "label": exp.label or exp.name,
        "input": exp.input,
        "regressor": spec.name,
        "backbone": summary["backbone"] or "",
        "fill_rule": settings["fill"],
        "fill_description": summary["fill_description"],
        "postprocessing": summary["postprocessing"],
        "selected_epoch": str(summary.get("selected_epoch", "")),
        "settings": json.dumps(dict(settings), sort_keys=True, default=str),
        "settings_sha256": summary["settings_sha256"],
        "manifest": os.fspath(exp.manifest),
        "features_dir": os.fspath(exp.features_dir),
        "labels_dir": os.fspath(exp.labels_dir),
        "created": summary["created"],
        "notes": json.dumps(summary["notes"]),
        **({"source": json.dumps(summary["source"], sort_keys=True)} if applied is not None else {}),
    }
    if summary_out is not None:
        write_text(json.dumps(summary, indent=2, sort_keys=False, default=_json_default) + "\n", summary_out)
    if model is not None:
        _save_model(out.with_name("model.pt"), model, result.scaler, summary)
    write_predictions(tables, out, raw=filtering, metadata=meta)
    if checkpoint.exists():
        checkpoint.unlink()
    for part, s in fill_stats.items():
        log.info("%s: %d videos, %d frames, %.1f%% filled (%s)", part, s["videos"], s["frames"],
                 100 * s["filled_share"], settings["fill"])
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _save_model(path: Path, model, scaler, summary: Mapping[str, Any]) -> None:
    """The selected sequence model: weights, feature normalisation and how it was made (plain types),
    written atomically (:func:`affpipe.runtime.save_torch`)."""
    from affpipe.runtime import save_torch

    state = {
        "format": "affpipe-regressor",
        "affpipe_version": __version__,
        "regressor": summary["regressor"],
        "input": summary["input"],
        "input_dim": int(summary["input_dim"]),
        "input_groups_json": json.dumps(summary.get("input_groups", [])),
        "settings_json": json.dumps(summary["settings"], sort_keys=True, default=str),
        "selected_epoch": int(summary.get("selected_epoch", 0)),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "feature_norm": scaler.state(),
    }
    save_torch(state, path)
