"""Self-supervised training of a DR UNet with the rank loss (DR paper §3.2, Eq. 3).

One model per window half-length T. Each step takes ``batch_size`` windows of 2T+1 valid frames
from the training videos, feeds the centre frame I_t to the UNet and applies Eq. 3 to its output
d_t and the window's frames. Adam with the paper's lr 1e-3 and betas (0.5, 0.9).

* **Seeded**: the initial weights come from ``seed``; the windows of epoch e are a permutation
  drawn from ``numpy.random.default_rng([seed, e])``. No other randomness is used (no dropout, no
  augmentation), so the same data, settings and seed give the same weights on CPU.
* **Resumable**: after every epoch the model, optimizer (and loss-scaler) state and the history are
  written atomically to ``<model>.ckpt``. A new run with the same training data and
  training-relevant settings (:data:`TRAINING_KEYS`; ``epochs`` may differ) continues after the
  last finished epoch, and produces the same weights as an uninterrupted run. A checkpoint from
  other data or settings is ignored (logged) and training starts over. The checkpoint is removed
  once the final model file is written.
* **Logged**: a progress bar over each epoch's batches, then one line per epoch with the mean
  loss, the training ranking accuracy (share of pairs with δ > 0) and the validation ranking
  accuracy on unseen videos.
* **Devices**: CUDA with float16 autocast and loss scaling when available (``amp``), CPU
  otherwise, with ``threads`` torch threads.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from affpipe import __version__
from affpipe.dr import PIXEL_SCALE
from affpipe.dr import runtime
from affpipe.dr.data import FrameStore, VideoInfo, WindowSet, build_windows
from affpipe.dr.rankloss import calibrate_theta, chance_success, pair_difference_norms
from affpipe.dr.windows import evenly_spaced, n_pairs
from affpipe.errors import AffpipeError
from affpipe.plan import DR_TRAINING_KEYS

log = logging.getLogger(__name__)

#: settings that change what training computes; a checkpoint resumes only when they are unchanged
#: (affpipe.plan.DR_TRAINING_KEYS: with `epochs`, they are the settings whose change retrains the models)
TRAINING_KEYS = DR_TRAINING_KEYS
CHECKPOINT_SUFFIX = ".ckpt"
#: windows read at a time while calibrating θ
CALIBRATION_BATCH = 64


@dataclass
class EpochStats:
    """Running sums of one pass over windows."""

    loss: float = 0.0
    windows: int = 0
    pairs: int = 0
    correct: int = 0
    success: int = 0

    def add(self, loss, deltas, theta: float) -> None:
        import torch

        with torch.no_grad():
            self.loss += float(loss.detach().sum())
            self.windows += int(deltas.shape[0])
            self.pairs += int(deltas.numel())
            self.correct += int((deltas > 0).sum())
            self.success += int((deltas > theta).sum())

    def summary(self) -> dict[str, float]:
        nan = float("nan")
        return {
            "loss": self.loss / self.windows if self.windows else nan,
            "accuracy": self.correct / self.pairs if self.pairs else nan,
            "success": self.success / self.pairs if self.pairs else nan,
            "windows": self.windows,
        }


@dataclass
class TrainData:
    """Everything a training run reads: videos, windows and their frames."""

    train_videos: list[VideoInfo]
    val_videos: list[VideoInfo]
    train: WindowSet
    val: WindowSet  # indices refer to train_videos + val_videos
    store: FrameStore
    inputs: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Checkpoint of a training run writing ``out``: ``<out>.ckpt``."""
    out = Path(out)
    return out.with_name(out.name + CHECKPOINT_SUFFIX)


def prepare_data(train_videos: Sequence[VideoInfo], val_videos: Sequence[VideoInfo], *, T: int, settings: Mapping[str, Any],
                 source: str = "") -> TrainData:
    """Windows of the training and validation videos, and their frame store (not yet loaded).

    Raises
    ------
    AffpipeError
        When no training window of 2T+1 valid frames exists (``source`` names where they came from).
    """
    train_videos, val_videos = list(train_videos), list(val_videos)
    train = build_windows(train_videos, T=T, stride=settings["stride"], reference_fps=settings["reference_fps"])
    if len(train) == 0:
        raise AffpipeError(
            f"no training window of 2T+1 = {2 * T + 1} valid frames (stride {settings['stride']}) in the "
            f"{len(train_videos)} training video(s)", path=source or None,
            hint="check that the train partition has static stores with faces, or lower T/stride",
        )
    allv = train_videos + val_videos
    val = build_windows(allv, T=T, stride=settings["stride"], reference_fps=settings["reference_fps"])
    val = val.subset(np.flatnonzero(val.video >= len(train_videos)))
    val = val.subset(evenly_spaced(len(val), settings["val_windows"]))
    store = FrameStore(allv, cache_mb=settings["cache_mb"])
    from affpipe.io.h5store import file_info

    inputs = [dict(file_info(v.path), video=v.video, partition=v.partition) for v in allv]
    return TrainData(train_videos, val_videos, train, val, store, inputs)


def choose_theta(data: TrainData, settings: Mapping[str, Any], *, T: int) -> tuple[float, float]:
    """θ (fixed, or calibrated against chance on training windows) and its chance level.

    Returns
    -------
    theta : float
    chance : float
        Mean probability that a random DR ranks a sampled training pair with δ > θ.
    """
    idx = evenly_spaced(len(data.train), settings["theta_calibration_windows"])
    norms = []
    for a in range(0, idx.size, CALIBRATION_BATCH):
        frames = data.store.windows(data.train, idx[a:a + CALIBRATION_BATCH])
        norms.append(pair_difference_norms(frames, T=T, scale=PIXEL_SCALE))
    norms = np.concatenate(norms)
    if settings["theta"] == "auto":
        try:
            theta = calibrate_theta(norms, chance=settings["theta_chance"])
        except ValueError as exc:
            raise AffpipeError(f"cannot calibrate θ on {idx.size} training windows: {exc}",
                               hint="set dr.theta to a number") from None
    else:
        theta = float(settings["theta"])
    return theta, chance_success(theta, norms)


def fingerprint(data: TrainData, settings: Mapping[str, Any], *, T: int) -> str:
    """Hash of what a training run computes: T, the training-relevant settings and the input files."""
    payload = {
        "T": T,
        "settings": {k: settings[k] for k in TRAINING_KEYS},
        "inputs": [(i["video"], i["partition"], i["size"], i["mtime"]) for i in data.inputs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def to_tensor(frames: np.ndarray, device):
    """(B, N, S, S, 3) uint8 -> (B, N, 3, S, S) float32 on ``device``, scaled by PIXEL_SCALE."""
    import torch

    x = torch.from_numpy(frames)
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x.permute(0, 1, 4, 2, 3).float().mul_(PIXEL_SCALE)


class _BatchDataset:
    """Map-style dataset whose item i is batch i (uint8 frames) of a fixed list of batches."""

    def __init__(self, store: FrameStore, ws: WindowSet, batches: list[np.ndarray]):
        self.store, self.ws, self.batches = store, ws, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store.windows(self.ws, self.batches[i])


def iterate_batches(store: FrameStore, ws: WindowSet, order: np.ndarray, *, batch_size: int, workers: int = 0) -> Iterator[np.ndarray]:
    """uint8 frames (B, 2T+1, S, S, 3) of the windows ``order`` in batches (the last may be smaller)."""
    batches = [order[a:a + batch_size] for a in range(0, order.size, batch_size)]
    ds = _BatchDataset(store, ws, batches)
    if workers <= 0:
        for i in range(len(ds)):
            yield ds[i]
        return
    import torch

    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=lambda x: x, persistent_workers=False)
    yield from loader


def evaluate(model, store: FrameStore, ws: WindowSet, *, T: int, theta: float, gamma: float, epsilon: float,
             batch_size: int, device, amp: bool = False) -> dict[str, float]:
    """Mean loss and ranking accuracy of ``model`` on some windows (no gradient)."""
    import torch

    from affpipe.dr.rankloss import rank_loss

    stats = EpochStats()
    model.eval()
    with torch.no_grad():
        for frames in iterate_batches(store, ws, np.arange(len(ws)), batch_size=batch_size):
            x = to_tensor(frames, device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                d = model(x[:, T])
            loss, deltas = rank_loss(d, x, T=T, theta=theta, gamma=gamma, epsilon=epsilon)
            stats.add(loss, deltas, theta)
    return stats.summary()


def train_dr(data: TrainData, *, T: int, settings: Mapping[str, Any], out: str | os.PathLike, threads: int | None = None,
             on_epoch_end: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train (or continue training) the DR model for half-window ``T`` and write it to ``out``.

    Parameters
    ----------
    data : TrainData
        From :func:`prepare_data`.
    T : int, keyword-only
    settings : mapping, keyword-only
        Validated ``dr`` settings.
    out : path, keyword-only
        Model file to write (``results/{ds}/dr/model_T{T}.pt``); the checkpoint is ``<out>.ckpt``.
    threads : int, optional, keyword-only
        torch CPU threads.
    on_epoch_end : callable, optional, keyword-only
        Called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint is written (an
        exception raised there interrupts training like a crash would).

    Returns
    -------
    dict
        The model file's metadata (everything but the weights).
    """
    import torch

    from affpipe.dr.rankloss import rank_loss
    from affpipe.dr.unet import UNet, UNetConfig, n_parameters
    from affpipe.progress import progress

    out = Path(out)
    ckpt_path = checkpoint_path(out)
    device = runtime.select_device(settings["device"])
    seed = int(settings["seed"])
    runtime.configure_torch(device=device, threads=threads, seed=seed)
    amp = bool(settings["amp"]) and device.type == "cuda"
    gamma, epsilon = float(settings["gamma"]), float(settings["epsilon"])
    epochs, batch_size = int(settings["epochs"]), int(settings["batch_size"])

    data.store.load(progress_desc="dr-train: loading SFA" if data.store.in_memory else None)
    log.info(
        "dr-train T=%d: %d training windows from %d video(s), %d validation windows from %d video(s); frames %s "
        "(%.0f MiB); %d pairs per window",
        T, len(data.train), len(data.train_videos), len(data.val), len(data.val_videos),
        "in memory" if data.store.in_memory else "read from the stores", data.store.total_bytes / 2**20, n_pairs(T),
    )
    theta, chance = choose_theta(data, settings, T=T)
    log.info("dr-train T=%d: θ = %.6g (%s); a random DR ranks a training pair with δ > θ with probability %.3g",
             T, theta, "calibrated" if settings["theta"] == "auto" else "fixed", chance)

    arch = UNetConfig(width=int(settings["width"]), depth=int(settings["depth"]))
    model = UNet(arch).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(settings["lr"]), betas=tuple(settings["betas"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    fp = fingerprint(data, settings, T=T)
    history: list[dict[str, Any]] = []
    start = 0
    if ckpt_path.is_file():
        ck = runtime.load_torch(ckpt_path, what="DR training checkpoint")
        if ck.get("format") == runtime.CHECKPOINT_FORMAT and ck.get("fingerprint") == fp:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if amp and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            history = list(ck["history"])
            start = int(ck["epoch"])
            theta = float(ck["theta"])
            log.info("dr-train T=%d: resuming from %s after epoch %d", T, ckpt_path, start)
        else:
            log.warning("dr-train T=%d: ignoring %s (written for other data or settings); starting over", T, ckpt_path)
    log.info("dr-train T=%d: UNet width %d depth %d (%d parameters) on %s%s, %d threads, %d epochs, batch %d",
             T, arch.width, arch.depth, n_parameters(model), device, " with AMP" if amp else "",
             torch.get_num_threads(), epochs, batch_size)

    per_epoch = len(data.train) if settings["windows_per_epoch"] is None else min(len(data.train), int(settings["windows_per_epoch"]))
    for epoch in range(start, epochs):
        t0 = time.monotonic()
        order = np.random.default_rng([seed, epoch]).permutation(len(data.train))[:per_epoch]
        stats = EpochStats()
        model.train()
        n_batches = math.ceil(order.size / batch_size)
        with progress(total=n_batches, desc=f"dr-train T={T} epoch {epoch + 1}/{epochs}", unit="batch") as bar:
            for frames in iterate_batches(data.store, data.train, order, batch_size=batch_size,
                                          workers=int(settings["loader_workers"])):
                x = to_tensor(frames, device)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                    d = model(x[:, T])
                loss, deltas = rank_loss(d, x, T=T, theta=theta, gamma=gamma, epsilon=epsilon)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss.mean()).backward()
                scaler.step(opt)
                scaler.update()
                if not torch.isfinite(loss).all():
                    raise AffpipeError(f"DR training diverged at epoch {epoch + 1} (non-finite loss)",
                                       path=out, hint="lower dr.lr or dr.gamma")
                stats.add(loss, deltas, theta)
                bar.update(1)
                bar.set_postfix(loss=f"{stats.loss / stats.windows:.4g}", acc=f"{stats.correct / stats.pairs:.3f}", refresh=False)
        rec: dict[str, Any] = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in stats.summary().items()}}
        if len(data.val):
            val = evaluate(model, data.store, data.val, T=T, theta=theta, gamma=gamma, epsilon=epsilon,
                           batch_size=batch_size, device=device, amp=amp)
            rec.update({f"val_{k}": v for k, v in val.items()})
        rec["seconds"] = time.monotonic() - t0
        history.append(rec)
        log.info(
            "dr-train T=%d: epoch %d/%d: loss %.4g, train ranking accuracy %.4f (δ>θ %.4f)%s, %.0f s",
            T, epoch + 1, epochs, rec["train_loss"], rec["train_accuracy"], rec["train_success"],
            f", validation ranking accuracy {rec['val_accuracy']:.4f} on {rec['val_windows']} windows of "
            f"{len(data.val_videos)} unseen video(s) (chance 0.5)" if "val_accuracy" in rec else ", no validation videos",
            rec["seconds"],
        )
        runtime.save_torch({
            "format": runtime.CHECKPOINT_FORMAT,
            "fingerprint": fp,
            "epoch": epoch + 1,
            "theta": theta,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if amp else None,
            "history": history,
        }, ckpt_path)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, rec)

    meta = {
        "format": runtime.MODEL_FORMAT,
        "format_version": runtime.MODEL_FORMAT_VERSION,
        "affpipe_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "T": T,
        "window_frames": 2 * T + 1,
        "pairs_per_window": n_pairs(T),
        "stride": int(settings["stride"]),
        "reference_fps": float(settings["reference_fps"]),
        "pixel_scale": PIXEL_SCALE,
        "pixel_note": "UNet input and scores use uint8/255; the DR is tanh output in [-1, 1]",
        "size": data.store.size,
        "theta": theta,
        "theta_chance": chance,
        "gamma": gamma,
        "epsilon": epsilon,
        "arch": arch.to_dict(),
        "settings": dict(settings),
        "history": history,
        "epochs_completed": len(history),
        "train_videos": [v.video for v in data.train_videos],
        "train_inputs": [os.path.realpath(v.path) for v in data.train_videos],
        "val_videos": [v.video for v in data.val_videos],
        "n_train_windows": len(data.train),
        "n_val_windows": len(data.val),
        "inputs": data.inputs,
        "fingerprint": fp,
        "device": str(device),
    }
    runtime.save_torch({**meta, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, out)
    ckpt_path.unlink(missing_ok=True)
    data.store.close()
    return meta
