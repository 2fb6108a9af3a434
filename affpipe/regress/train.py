"""Generic trainer of sequence regressors: masked MSE, devel selection, resumable, deterministic.

Protocol (honest by construction: the trainer is only ever given train and devel videos; the test
partition is opened by the caller after :func:`fit_sequence_model` has returned):

* **Inputs.** Features are standardised (:class:`FeatureScaler`, ``regression.feature_norm``): with
  the mean and standard deviation of the train partition's valid rows (default; stored with the
  model), per video, or not at all. A feature with std below :data:`MIN_FEATURE_STD` is only centred.
* **Sequences.** Train videos are cut into windows of ``seq_len`` valid rows
  (:mod:`affpipe.regress.sequences`); windows without any labelled frame are skipped.
* **Loss.** ``regression.loss`` (:mod:`affpipe.regress.losses`): MSE (default) or ``1 - mean CCC``
  over the labelled (row, dimension) entries of a batch; unlabelled entries and padding are masked
  out, never filled in.
* **Optimiser.** SGD with momentum (DFM paper: lr 5e-3, momentum 0.85) and Keras-style time-based
  decay ``lr_step = lr / (1 + lr_decay * step)`` (paper: 1e-4), or Adam; optional gradient-norm
  clipping. Mixed precision (float16 autocast with a gradient scaler) on CUDA only.
* **Selection.** After every epoch the devel videos are predicted (the same windowed inference as
  the final prediction) and scored; the epoch with the best devel score (mean of the valence and
  arousal CCC, concatenated over devel videos, or the lowest MSE) is kept. Training stops after
  ``patience`` epochs without an improvement of at least ``min_delta``, or at ``max_epochs``. A
  collapsed model (constant output) scores CCC 0 and is reported as such, never masked.
* **Resumable.** A checkpoint (model, optimiser, step, best model, history) is written atomically
  after every epoch; a re-run with the same settings and inputs continues from it and gives the
  same result as an uninterrupted run (the shuffling and dropout of epoch ``e`` are seeded from
  ``(seed, e)``). A checkpoint from other settings or inputs is ignored (logged). Checkpoints hold
  only tensors and plain types and are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from affpipe import runtime
from affpipe.errors import AffpipeError
from affpipe.regress import sequences
from affpipe.regress.data import VideoData
from affpipe.regress.losses import LOSS_RECORD_KEYS, LOSSES, masked_mse  # noqa: F401 - masked_mse re-exported
from affpipe.regress.registry import OUTPUT_DIMENSIONS, RegressorSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "affpipe-regress-checkpoint"
CHECKPOINT_VERSION = 1
#: features whose train std is below this are centred but not scaled (dead units)
MIN_FEATURE_STD = 1e-6
#: rows read per block when computing the normalisation statistics
STATS_BLOCK_ROWS = 4096
#: seed offsets, so the epoch seeds of shuffling and dropout never coincide
SHUFFLE_SEED_MULT = 1_000_003
#: devel prediction std below this share of the label std is reported as a (near) collapse
COLLAPSE_STD_RATIO = 0.05
SELECTION_METRICS = ("ccc_mean", "mse")
FEATURE_NORMS = ("train", "video", "none")


# --------------------------------------------------------------------------------------------
# device, determinism
# --------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``regression.device``: ``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a
    :class:`ConfigError` (:func:`affpipe.runtime.select_device`)."""
    return runtime.select_device(name, key="regression.device")


def set_determinism(device: torch.device) -> None:
    """Deterministic kernels (CPU: strict; CUDA: cuBLAS workspace config, deterministic cuDNN)."""
    runtime.deterministic_kernels(device)


# --------------------------------------------------------------------------------------------
# feature normalisation
# --------------------------------------------------------------------------------------------
@dataclass
class Normalizer:
    """Per-feature standardisation ``(x - mean) / scale``."""

    mean: np.ndarray  # (D,) float32
    scale: np.ndarray  # (D,) float32, > 0

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(n, D) any float -> (n, D) float32."""
        return (np.asarray(x, dtype=np.float32) - self.mean) / self.scale

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.from_numpy(self.mean.copy()), "scale": torch.from_numpy(self.scale.copy())}

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor]) -> "Normalizer":
        return cls(mean=state["mean"].numpy().astype(np.float32), scale=state["scale"].numpy().astype(np.float32))

    @classmethod
    def identity(cls, dim: int) -> "Normalizer":
        return cls(mean=np.zeros(dim, np.float32), scale=np.ones(dim, np.float32))


def fit_normalizer(videos: Sequence[VideoData], *, dim: int) -> Normalizer:
    """Mean and std (ddof 0) of every valid row of ``videos`` (float64 accumulation, streamed).

    Parameters
    ----------
    videos : the train partition.
    dim : feature width D.
    """
    n = 0
    s = np.zeros(dim)
    ss = np.zeros(dim)
    for v in videos:
        for a in range(0, len(v.source), STATS_BLOCK_ROWS):
            x = v.source.rows(a, min(a + STATS_BLOCK_ROWS, len(v.source))).astype(np.float64)
            n += x.shape[0]
            s += x.sum(axis=0)
            ss += (x * x).sum(axis=0)
    if n == 0:
        raise AffpipeError("the train partition has no valid feature row (no face found in any train video?)")
    mean = s / n
    var = np.maximum(ss / n - mean * mean, 0.0)
    std = np.sqrt(var)
    scale = np.where(std < MIN_FEATURE_STD, 1.0, std)
    return Normalizer(mean=mean.astype(np.float32), scale=scale.astype(np.float32))


class FeatureScaler:
    """Standardisation of the features before the regressor (``regression.feature_norm``).

    * ``train``: one mean/std for every video, from the train partition's valid rows (stored with the model);
    * ``video``: each video standardised by the mean/std of its own valid rows (per-subject or
      per-session normalisation, as in many AVEC systems: it removes a video's constant feature offset,
      e.g. identity appearance, and with it any affect level that is constant over the whole video).
      Uses the video's features only, never labels; a test video's statistics are computed when it is
      predicted;
    * ``none``: raw features.
    """

    def __init__(self, mode: str, global_norm: Normalizer):
        if mode not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {mode!r}")
        self.mode = mode
        self.global_norm = global_norm
        self._per_video: dict[str, Normalizer] = {}

    def for_video(self, video: VideoData) -> Normalizer:
        if self.mode != "video":
            return self.global_norm
        key = str(video.source.path)
        if key not in self._per_video:
            if len(video.source) == 0:
                self._per_video[key] = Normalizer.identity(video.source.dim)
            else:
                self._per_video[key] = fit_normalizer([video], dim=video.source.dim)
        return self._per_video[key]

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.global_norm.state()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "FeatureScaler":
        return cls(str(state["mode"]), Normalizer.from_state(state))


# --------------------------------------------------------------------------------------------
# sequences and batches
# --------------------------------------------------------------------------------------------
def max_gap_frames(video: VideoData, settings: Mapping[str, Any]) -> int:
    """``regression.max_gap_s`` in frames of this video (its manifest fps)."""
    if not (video.fps and video.fps > 0):
        raise AffpipeError(f"video {video.video!r} has no frame rate in the manifest (fps {video.fps!r}); "
                           "regression.max_gap_s cannot be converted to frames")
    return int(round(float(settings["max_gap_s"]) * video.fps))


def video_windows(video: VideoData, settings: Mapping[str, Any], *, hop: int) -> np.ndarray:
    """(w, 2) ``[start, stop)`` windows over the video's valid rows (never across a long gap)."""
    segs = sequences.segments(video.frames, max_gap=max_gap_frames(video, settings))
    out = []
    for a, b in segs:
        w = sequences.windows(int(b - a), seq_len=int(settings["seq_len"]), hop=hop)
        out.append(w + a)
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def training_windows(videos: Sequence[VideoData], settings: Mapping[str, Any]) -> np.ndarray:
    """(m, 3) int64 rows ``(video index, start, stop)`` of every training window with a label."""
    out = []
    for i, v in enumerate(videos):
        lab = np.isfinite(v.targets).any(axis=1)
        for a, b in video_windows(v, settings, hop=int(settings["train_hop"])):
            if lab[a:b].any():
                out.append((i, a, b))
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


def collate(
    videos: Sequence[VideoData], spans: np.ndarray, scaler: FeatureScaler, *, with_targets: bool = True
) -> dict[str, torch.Tensor]:
    """A zero-padded batch of windows.

    Parameters
    ----------
    spans : (B, 3) int
        ``(video index, start, stop)``.

    Returns
    -------
    dict
        ``x`` (B, L, D) float32, ``lengths`` (B,) int64, and with targets ``y`` (B, L, 2) float32
        (0 where unlabelled) and ``mask`` (B, L, 2) float32 (1 = labelled real row).
    """
    lengths = spans[:, 2] - spans[:, 1]
    L = int(lengths.max())
    dim = videos[int(spans[0, 0])].source.dim
    x = np.zeros((len(spans), L, dim), dtype=np.float32)
    y = np.zeros((len(spans), L, 2), dtype=np.float32)
    mask = np.zeros((len(spans), L, 2), dtype=np.float32)
    for j, (vi, a, b) in enumerate(spans):
        v = videos[int(vi)]
        x[j, : b - a] = scaler.for_video(v).apply(v.source.rows(int(a), int(b)))
        if with_targets:
            t = v.targets[a:b]
            ok = np.isfinite(t)
            y[j, : b - a] = np.where(ok, t, 0.0)
            mask[j, : b - a] = ok
    batch = {"x": torch.from_numpy(x), "lengths": torch.from_numpy(lengths.astype(np.int64))}
    if with_targets:
        batch["y"] = torch.from_numpy(y)
        batch["mask"] = torch.from_numpy(mask)
    return batch


# --------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------
def _autocast(device: torch.device, enabled: bool):
    import contextlib

    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_video(
    model: torch.nn.Module,
    video: VideoData,
    scaler: FeatureScaler,
    settings: Mapping[str, Any],
    *,
    device: torch.device,
) -> np.ndarray:
    """Predictions on every valid row of one video.

    Windows of ``seq_len`` rows every ``predict_hop`` rows inside each segment, outputs of
    overlapping windows averaged with triangular weights (:func:`sequences.overlap_average`).

    Returns
    -------
    (k, 2) float64
        (valence, arousal) per valid row of ``video`` (k = its number of valid rows).
    """
    model.eval()
    k = len(video.source)
    if k == 0:
        return np.zeros((0, 2))
    hop = int(settings["predict_hop"] or max(1, int(settings["seq_len"]) // 2))
    segs = sequences.segments(video.frames, max_gap=max_gap_frames(video, settings))
    result = np.empty((k, 2))
    bs = int(settings["batch_size"])
    amp = bool(settings["amp"])
    for a, b in segs:
        wins = sequences.windows(int(b - a), seq_len=int(settings["seq_len"]), hop=hop)
        spans = np.concatenate([np.zeros((len(wins), 1), np.int64), wins + a], axis=1)
        outs: list[np.ndarray] = []
        for s in range(0, len(spans), bs):
            chunk = spans[s : s + bs]
            batch = collate([video], chunk, scaler, with_targets=False)
            with _autocast(device, amp):
                out = model(batch["x"].to(device), batch["lengths"])
            out = out.float().cpu().numpy()
            for j, (_, wa, wb) in enumerate(chunk):
                outs.append(out[j, : wb - wa].astype(np.float64))
        result[a:b] = sequences.overlap_average(int(b - a), wins, outs)
    if not np.all(np.isfinite(result)):
        raise AffpipeError("the model predicted non-finite values", path=video.source.path)
    return result


def devel_scores(preds: Sequence[np.ndarray], videos: Sequence[VideoData]) -> dict[str, float]:
    """Scores of valid-row predictions against the labels, concatenated over ``videos``.

    Returns ``ccc_<dim>``, ``mse_<dim>``, ``std_pred_<dim>``, ``std_true_<dim>``, ``ccc_mean`` and
    ``mse`` (mean over dimensions). An undefined CCC (both sides the same constant) counts as 0.
    """
    from affpipe import metrics

    out: dict[str, float] = {}
    for d, name in enumerate(OUTPUT_DIMENSIONS):
        p = np.concatenate([pr[:, d] for pr in preds]) if preds else np.zeros(0)
        t = np.concatenate([v.targets[:, d] for v in videos]) if videos else np.zeros(0)
        ok = np.isfinite(t)
        p, t = p[ok], t[ok].astype(np.float64)
        if p.size == 0:
            out[f"ccc_{name}"], out[f"mse_{name}"] = float("nan"), float("nan")
            out[f"std_pred_{name}"], out[f"std_true_{name}"] = float("nan"), float("nan")
            continue
        try:
            out[f"ccc_{name}"] = metrics.ccc(p, t)
        except metrics.UndefinedMetricError:
            out[f"ccc_{name}"] = 0.0
        out[f"mse_{name}"] = metrics.mse(p, t)
        out[f"std_pred_{name}"] = float(p.std())
        out[f"std_true_{name}"] = float(t.std())
    out["ccc_mean"] = float(np.mean([out[f"ccc_{n}"] for n in OUTPUT_DIMENSIONS]))
    out["mse"] = float(np.mean([out[f"mse_{n}"] for n in OUTPUT_DIMENSIONS]))
    return out


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What :func:`fit_sequence_model` returns."""

    model: torch.nn.Module  # the selected weights, in eval mode, on the training device
    scaler: FeatureScaler
    best_epoch: int  # 1-based; 0 = no epoch ran
    best_score: float
    history: list[dict[str, float]]
    stopped_early: bool
    n_windows: int
    resumed_from_epoch: int
    notes: list[str] = field(default_factory=list)


def fingerprint(settings: Mapping[str, Any], *, regressor: str, dim: int, files: Sequence[Path]) -> str:
    """sha256 over the settings that change the result and the (path, size, mtime) of the inputs."""
    relevant = {k: v for k, v in settings.items() if k not in ("device", "max_memory_gb")}
    stat = []
    for p in files:
        st = Path(p).stat()
        stat.append([os.fspath(p), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"settings": relevant, "regressor": regressor, "dim": dim, "files": stat}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _make_optimizer(model: torch.nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    lr = float(settings["lr"])
    wd = float(settings["weight_decay"])
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(settings["momentum"]), weight_decay=wd)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)


def _lr_at(step: int, settings: Mapping[str, Any]) -> float:
    return float(settings["lr"]) / (1.0 + float(settings["lr_decay"]) * step)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    runtime.save_torch(state, path)


def _load_checkpoint(path: Path, fp: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is ignored, loudly
        log.warning("%s: cannot read the checkpoint (%s); training starts over", path, exc)
        return None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        log.warning("%s: not an affpipe regression checkpoint; training starts over", path)
        return None
    if state.get("fingerprint") != fp:
        log.warning("%s: written for other settings or inputs; training starts over", path)
        return None
    return state


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of epoch ``epoch`` (0-based) for shuffling and sampling: seeded from ``(seed, epoch)``."""
    return torch.Generator().manual_seed(seed * SHUFFLE_SEED_MULT + epoch)


def check_devel_selectable(devel: Sequence[VideoData], settings: Mapping[str, Any]) -> None:
    """:class:`AffpipeError` when ``selection`` is ``devel`` but no devel video has a labelled valid row."""
    if settings["selection"] == "devel" and not any(np.isfinite(v.targets).any() for v in devel):
        raise AffpipeError(
            "model selection on devel needs devel videos with labelled valid frames; there are none",
            hint="set regression.selection to `last` to train a fixed number of epochs without selection",
        )


def make_scaler(train: Sequence[VideoData], settings: Mapping[str, Any], *, dim: int) -> FeatureScaler:
    """The :class:`FeatureScaler` of ``regression.feature_norm`` (train statistics from ``train``)."""
    mode = settings["feature_norm"]
    return FeatureScaler(mode, fit_normalizer(train, dim=dim) if mode == "train" else Normalizer.identity(dim))


class SelectionLoop:
    """The epoch loop every trainer shares: devel selection, early stopping, resumable checkpoints.

    A trainer builds its model and optimiser, then hands the loop a function that trains one epoch
    (:meth:`run`). The loop owns everything around it: resuming from a matching checkpoint, seeding
    epoch ``e``'s dropout with ``seed + e``, scoring the devel videos after every epoch with the
    trainer's own ``predict``, keeping the best epoch (``selection``, ``selection_metric``,
    ``min_delta``), stopping after ``patience`` epochs without improvement, writing the checkpoint
    atomically after every epoch, and reporting a collapsed (near-constant) selected model.

    Parameters
    ----------
    name : regressor name (logs).
    model, optimizer : the freshly initialised model (on ``device``) and its optimiser.
    scaler : the feature scaler (replaced by the checkpoint's on resume).
    settings : the validated ``regression`` section.
    checkpoint : the checkpoint path; fp : :func:`fingerprint` a checkpoint must carry to be resumed.
    grad_scaler : the CUDA gradient scaler, when mixed precision is used.
    max_epochs : epochs at most (default ``settings["max_epochs"]``).

    Attributes
    ----------
    step : int
        Optimiser steps taken so far (restored on resume; trainers advance it).
    """

    def __init__(self, *, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: FeatureScaler, settings: Mapping[str, Any], checkpoint: Path, fp: str,
                 grad_scaler: torch.amp.GradScaler | None = None, max_epochs: int | None = None):
        self.name = name
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.settings = settings
        self.checkpoint = Path(checkpoint)
        self.fp = fp
        self.grad_scaler = grad_scaler
        self.max_epochs = int(settings["max_epochs"] if max_epochs is None else max_epochs)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.best_state = _clone_state(model)
        self.best_epoch, self.best_score, self.since_best = 0, -math.inf, 0
        self.stopped_early = False
        self.resumed_from = 0

    def resume(self) -> None:
        """Continue from the checkpoint when it matches the fingerprint (else start over, logged)."""
        state = _load_checkpoint(self.checkpoint, self.fp)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.grad_scaler is not None and self.grad_scaler.is_enabled() and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best_state = state["best_model"]
        self.best_epoch, self.best_score = int(state["best_epoch"]), float(state["best_score"])
        self.since_best = int(state["since_best"])
        self.stopped_early = bool(state["stopped_early"])
        self.scaler = FeatureScaler.from_state(state["scaler"])
        self.resumed_from = self.epoch
        log.info("resuming from %s after epoch %d (best so far: epoch %d, score %.4f)",
                 self.checkpoint, self.epoch, self.best_epoch, self.best_score)

    def run(
        self,
        train_epoch: Callable[[int], dict[str, float]],
        predict: Callable[[VideoData], np.ndarray],
        devel: Sequence[VideoData],
        *,
        n_windows: int,
        loss_key: str = "train_mse",
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
        first_selectable: int = 1,
    ) -> FitResult:
        """Train until ``max_epochs`` or early stop; return the selected model.

        Parameters
        ----------
        train_epoch : ``train_epoch(epoch)`` trains epoch ``epoch`` (0-based; the model is in train
            mode and ``torch`` is seeded with ``seed + epoch``), advances :attr:`step` and returns the
            epoch's record (plain floats, including ``loss_key`` and ``lr``).
        predict : ``predict(video) -> (k, 2)`` predictions on a devel video's valid rows with the
            current model (the same inference as the final prediction).
        devel : the devel videos (scored after every epoch).
        n_windows : training units per epoch (reported).
        loss_key : the record's training-loss entry (logged).
        on_epoch_end : called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint is saved.
        first_selectable : the first epoch (1-based) that may be selected; earlier epochs (a warm-up
            with another loss) are trained and scored but neither selected nor counted for patience.
        """
        from affpipe.progress import progress

        settings = self.settings
        selection = settings["selection"]
        seed = int(settings["seed"])
        patience = int(settings["patience"])
        bar = progress(total=self.max_epochs, desc=f"{self.name} epochs", unit="epoch")
        bar.update(self.epoch)
        with bar:
            while self.epoch < self.max_epochs and not self.stopped_early:
                t0 = time.monotonic()
                torch.manual_seed(seed + self.epoch)  # dropout and sampling of this epoch
                self.model.train()
                record: dict[str, float] = {"epoch": self.epoch + 1, **train_epoch(self.epoch)}
                self.epoch += 1
                record["steps"] = self.step
                if devel:
                    preds = [predict(v) for v in devel]
                    scores = devel_scores(preds, devel)
                    record.update({f"devel_{k}": v for k, v in scores.items()})
                if selection == "devel":
                    metric = settings["selection_metric"]
                    score = record["devel_ccc_mean"] if metric == "ccc_mean" else -record["devel_mse"]
                else:
                    score = float(self.epoch)
                if self.epoch < first_selectable:
                    pass  # warm-up epoch: not a candidate, not counted for patience
                elif score > self.best_score + (float(settings["min_delta"]) if selection == "devel" else 0.0):
                    self.best_score, self.best_epoch, self.since_best = float(score), self.epoch, 0
                    self.best_state = _clone_state(self.model)
                else:
                    self.since_best += 1
                record["seconds"] = time.monotonic() - t0
                record = {k: float(v) for k, v in record.items()}  # plain floats: the checkpoint is weights_only
                record["epoch"] = int(record["epoch"])
                record["steps"] = int(record["steps"])
                self.history.append(record)
                if selection == "devel" and patience and self.since_best >= patience:
                    self.stopped_early = True
                use_amp = self.grad_scaler is not None and self.grad_scaler.is_enabled()
                _save_checkpoint(self.checkpoint, {
                    "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": self.fp,
                    "epoch": self.epoch, "step": self.step, "model": _clone_state(self.model),
                    "optimizer": self.optimizer.state_dict(),
                    "grad_scaler": self.grad_scaler.state_dict() if use_amp else {},
                    "best_model": self.best_state, "best_epoch": self.best_epoch, "best_score": self.best_score,
                    "since_best": self.since_best, "stopped_early": self.stopped_early, "history": self.history,
                    "scaler": self.scaler.state(),
                })
                bar.update(1)
                log.info(
                    "epoch %d: %s %.4f%s (%.1f s)%s", self.epoch, loss_key, record[loss_key],
                    "".join(f", devel CCC {n} {record[f'devel_ccc_{n}']:.3f}" for n in OUTPUT_DIMENSIONS) if devel else "",
                    record["seconds"], "  *best*" if self.best_epoch == self.epoch else "",
                )
                if on_epoch_end is not None:
                    on_epoch_end(self.epoch, record)
        if self.stopped_early:
            log.info("early stop: no devel improvement for %d epochs; best epoch %d", patience, self.best_epoch)
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        return FitResult(model=self.model, scaler=self.scaler, best_epoch=self.best_epoch,
                         best_score=self.best_score, history=self.history, stopped_early=self.stopped_early,
                         n_windows=int(n_windows), resumed_from_epoch=self.resumed_from,
                         notes=collapse_notes(self.history, self.best_epoch) if devel else [])


def collapse_notes(history: Sequence[Mapping[str, float]], best_epoch: int) -> list[str]:
    """Notes for the dimensions whose selected devel predictions are nearly constant (collapse)."""
    notes = []
    best = next((h for h in history if h["epoch"] == best_epoch), None)
    if best is None:
        return notes
    for name in OUTPUT_DIMENSIONS:
        sp, st = best.get(f"devel_std_pred_{name}"), best.get(f"devel_std_true_{name}")
        if sp is not None and st and sp < COLLAPSE_STD_RATIO * st:
            note = (f"{name}: the selected model's devel predictions are nearly constant (std {sp:.4g} vs "
                    f"label std {st:.4g}): the model has collapsed to the mean for this dimension")
            log.warning(note)
            notes.append(note)
    return notes


@dataclass
class TrainingStart:
    """What every trainer starts from (:func:`start_training`)."""

    dim: int  # input width
    seed: int  # ``regression.seed``
    model: torch.nn.Module  # built on ``device`` from the seed (resumed weights when a checkpoint matched)
    optimizer: torch.optim.Optimizer
    grad_scaler: torch.amp.GradScaler | None  # None for a trainer without mixed precision
    use_amp: bool  # float16 autocast with ``grad_scaler`` (CUDA and ``regression.amp`` only)
    loop: SelectionLoop  # resumed from the checkpoint when it matched


def start_training(
    spec: RegressorSpec,
    train: Sequence[VideoData],
    devel: Sequence[VideoData],
    settings: Mapping[str, Any],
    *,
    checkpoint: Path,
    device: torch.device,
    fingerprint_files: Sequence[Path] = (),
    units: str,
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
    mixed_precision: bool = True,
    max_epochs: int | None = None,
) -> TrainingStart:
    """The set-up every sequence trainer shares, in this order: devel must be selectable
    (:func:`check_devel_selectable`), deterministic kernels on ``device``, the checkpoint fingerprint,
    the feature scaler (``regression.feature_norm``), torch seeded with ``regression.seed``, the model
    built (``spec.build``) on ``device``, its optimiser, the gradient scaler, and the
    :class:`SelectionLoop` resumed from a matching checkpoint; then one log line.

    The trainer prepares and checks its own training data before (fail early, before the scaler reads
    the train features), then trains with the returned loop.

    Parameters
    ----------
    spec, train, devel, settings, checkpoint, device, fingerprint_files : as for :func:`fit_sequence_model`.
    units : the training units for the log line (e.g. ``"120 windows of <= 40 rows"``).
    make_optimizer : ``make_optimizer(model)``; default the ``regression.optimizer`` setting.
    mixed_precision : False for a trainer without float16 autocast (no gradient scaler).
    max_epochs : epochs at most (default ``regression.max_epochs``).
    """
    check_devel_selectable(devel, settings)
    dim = train[0].source.dim if train else 0
    seed = int(settings["seed"])
    set_determinism(device)
    fp = fingerprint(settings, regressor=spec.name, dim=dim, files=fingerprint_files)
    scaler = make_scaler(train, settings, dim=dim)
    torch.manual_seed(seed)
    model = spec.build(dim, settings).to(device)
    optimizer = make_optimizer(model) if make_optimizer is not None else _make_optimizer(model, settings)
    use_amp = mixed_precision and device.type == "cuda" and bool(settings["amp"])
    grad_scaler = torch.amp.GradScaler("cuda", enabled=use_amp) if mixed_precision else None
    loop = SelectionLoop(name=spec.name, model=model, optimizer=optimizer, scaler=scaler, settings=settings,
                         checkpoint=checkpoint, fp=fp, grad_scaler=grad_scaler, max_epochs=max_epochs)
    loop.resume()
    log.info("training %s: %d train videos, %s, %d devel videos, input %d-D, %s, up to %d epochs",
             spec.name, len(train), units, len(devel), dim, device, loop.max_epochs)
    return TrainingStart(dim=dim, seed=seed, model=model, optimizer=optimizer, grad_scaler=grad_scaler,
                         use_amp=use_amp, loop=loop)


def fit_sequence_model(
    spec: RegressorSpec,
    train: Sequence[VideoData],
    devel: Sequence[VideoData],
    settings: Mapping[str, Any],
    *,
    checkpoint: Path,
    device: torch.device,
    fingerprint_files: Sequence[Path] = (),
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train a sequence regressor on ``train``, select the epoch on ``devel``.

    A regressor with its own trainer (``spec.fit``) is handed over to it with the same arguments;
    the others are trained here with the masked MSE over windows of ``seq_len`` rows.

    Parameters
    ----------
    spec : a ``kind="sequence"`` regressor.
    train, devel : the videos of the two partitions (labels loaded; test is never passed here).
    settings : the validated ``regression`` section.
    checkpoint : where the per-epoch checkpoint lives (resumed from when it matches).
    device : from :func:`resolve_device`.
    fingerprint_files : input files whose (size, mtime) must match for a checkpoint to be resumed.
    on_epoch_end : called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint is saved.

    Returns
    -------
    FitResult
    """
    if spec.fit is not None:
        return spec.fit(spec, train, devel, settings, checkpoint=checkpoint, device=device,
                        fingerprint_files=fingerprint_files, on_epoch_end=on_epoch_end)
    spans = training_windows(train, settings)
    if spans.shape[0] == 0:
        raise AffpipeError("the train partition has no labelled valid frame to train on")
    run = start_training(
        spec, train, devel, settings, checkpoint=checkpoint, device=device, fingerprint_files=fingerprint_files,
        units=f"{spans.shape[0]} windows of <= {int(settings['seq_len'])} rows",
    )
    seed, model, optimizer, grad_scaler, use_amp, loop = (
        run.seed, run.model, run.optimizer, run.grad_scaler, run.use_amp, run.loop)
    bs = int(settings["batch_size"])
    loss_name = settings.get("loss", "mse")
    loss_fn, loss_key = LOSSES[loss_name], LOSS_RECORD_KEYS[loss_name]
    clip = settings["grad_clip_norm"]

    def train_epoch(epoch: int) -> dict[str, float]:
        order = torch.randperm(spans.shape[0], generator=epoch_generator(seed, epoch)).numpy()
        total, weight = 0.0, 0.0
        for s in range(0, len(order), bs):
            batch = collate(train, spans[order[s : s + bs]], loop.scaler)
            x, y, mask = (batch[k].to(device) for k in ("x", "y", "mask"))
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(loop.step, settings)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, use_amp):
                out = model(x, batch["lengths"])
            loss = loss_fn(out, y, mask)
            check_finite_loss(loss, epoch=epoch, checkpoint=checkpoint)
            grad_scaler.scale(loss).backward()
            if clip:
                grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            grad_scaler.step(optimizer)
            grad_scaler.update()
            loop.step += 1
            n = float(mask.sum().item())
            total += loss.item() * n
            weight += n
        return {loss_key: total / max(weight, 1.0), "lr": _lr_at(loop.step, settings)}

    def predict(v: VideoData) -> np.ndarray:
        return predict_video(model, v, loop.scaler, settings, device=device)

    return loop.run(train_epoch, predict, devel, n_windows=spans.shape[0], loss_key=loss_key, on_epoch_end=on_epoch_end)


def check_finite_loss(loss: torch.Tensor, *, epoch: int, checkpoint: Path) -> None:
    """:class:`AffpipeError` naming the epoch when the training loss is not finite (divergence)."""
    if not torch.isfinite(loss):
        raise AffpipeError(
            f"training diverged: the loss is {loss.item()} at epoch {epoch + 1}",
            path=checkpoint,
            hint="lower regression.lr or set regression.grad_clip_norm",
        )
