"""Per-frame CNN training: MSE on the train partition, model selection by the devel CCC, resumable.

:func:`train_model` trains a :class:`~affpipe.cnn.backbones.PerFrameRegressor` on the labelled valid
rows of the train partition and scores it on devel after every epoch (mean of the valence and
arousal CCC over the devel frames concatenated, population statistics). It keeps the best epoch's
weights; training stops after ``epochs`` or ``patience`` epochs without improvement.

* **Augmentation** (optional, ``augment_shift``): a random translation per training sample
  (:func:`random_shift`); nothing at evaluation or extraction.
* **Loss**: mean squared error over the finite label entries (a frame labelled in one dimension
  only contributes that dimension).
* **Optimizers**: SGD with momentum (the DFM paper's lr 5e-3, momentum 0.85, Keras decay 1e-4:
  ``lr / (1 + decay * step)``), or Adam with the same decay.
* **Determinism**: the weights are initialised from ``seed``; epoch ``e`` draws its sample order from
  a generator seeded with ``(seed, e)`` and seeds dropout from it too, so a resumed run repeats
  exactly what an uninterrupted one would have done. ``torch.use_deterministic_algorithms`` is on
  (warn-only for operations without a deterministic kernel, e.g. some CUDA backward passes).
* **Resumable**: after every epoch the full state (weights, optimizer, scheduler, AMP scaler,
  history, early-stopping state) is written atomically to ``checkpoint.pt`` and the best weights to
  ``best.pt`` next to the output; a re-run with the same settings and data continues after the last
  finished epoch (a different fingerprint starts over). Everything is stored as tensors and plain
  types and loaded with ``torch.load(weights_only=True)``.
* **Devices**: ``auto`` = CUDA when available (AMP autocast + gradient scaling, pinned memory,
  larger default batches), else CPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from affpipe import __version__, runtime
from affpipe.cnn.backbones import PerFrameRegressor, load_pretrained
from affpipe.cnn.data import (FrameDataset, FrameIndex, encoded_bytes, make_loader, network_input_bytes, network_inputs,
                              preload, tensor_batches)
from affpipe.cnn.inputs import InputSpec, resize_batch
from affpipe.errors import AffpipeError
from affpipe.progress import progress

log = logging.getLogger(__name__)

MODEL_FORMAT = "affpipe-cnn"
MODEL_FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
#: Default batch sizes (train, eval) when the settings leave them null.
DEFAULT_BATCH = {"cuda": (128, 256), "cpu": (32, 64)}
#: Seed offset separating the per-epoch generators from the initialisation seed.
EPOCH_SEED_STRIDE = 1_000_003
ADAM_BETAS = (0.9, 0.999)
#: Offset separating the augmentation generator's seed from the sample-order seed.
AUGMENT_SEED_OFFSET = 500_000
#: Settings that may change between a run and its resumption (extending ``epochs`` continues training).
RESUME_FREE_KEYS = ("epochs", "patience", "device", "amp", "loader_workers", "cache_bytes", "eval_batch_size",
                    "feature_dtype")


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``cnn.device``: ``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is an error
    (:func:`affpipe.runtime.select_device`)."""
    return runtime.select_device(name, key="cnn.device")


def batch_sizes(settings: Mapping[str, Any], device: torch.device) -> tuple[int, int]:
    """(train, eval) batch sizes: the settings, or the device's defaults."""
    train_default, eval_default = DEFAULT_BATCH["cuda" if device.type == "cuda" else "cpu"]
    return int(settings.get("batch_size") or train_default), int(settings.get("eval_batch_size") or eval_default)


def set_determinism(seed: int, *, deterministic: bool, device: torch.device) -> None:
    """Seed torch/numpy and (``cnn.deterministic``) switch on deterministic kernels, on CPU too with
    only a warning for an op without one (:mod:`affpipe.runtime`)."""
    runtime.seed_everything(seed, python=False)
    if deterministic:
        runtime.deterministic_kernels(device, strict_cpu=False)


def ccc(pred: np.ndarray, true: np.ndarray) -> float:
    """Concordance correlation coefficient (population statistics, ddof 0) of two 1-D arrays.

    NaN when fewer than two values or both constant.
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(true, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    cov = np.mean((x - mx) * (y - my))
    den = vx + vy + (mx - my) ** 2
    return float(2 * cov / den) if den > 0 else float("nan")


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite entries of ``target`` ((B, 2) each)."""
    ok = torch.isfinite(target)
    diff = torch.where(ok, pred.float() - torch.nan_to_num(target), torch.zeros_like(pred, dtype=torch.float32))
    return (diff**2).sum() / ok.sum().clamp(min=1)


def scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """CCC and MSE per dimension over the finite labels, plus ``ccc_mean`` (the selection score)."""
    out: dict[str, float] = {}
    for j, dim in enumerate(("valence", "arousal")):
        ok = np.isfinite(true[:, j])
        out[f"ccc_{dim}"] = ccc(pred[ok, j], true[ok, j])
        out[f"mse_{dim}"] = float(np.mean((pred[ok, j] - true[ok, j]) ** 2)) if ok.any() else float("nan")
    vals = [out["ccc_valence"], out["ccc_arousal"]]
    out["ccc_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def to_device(branches, device: torch.device, input_size: int | None, non_blocking: bool = False) -> list[torch.Tensor]:
    return [resize_batch(b.to(device, non_blocking=non_blocking), input_size) for b in branches]


@torch.no_grad()
def predict(model: PerFrameRegressor, batches, *, total: int, device: torch.device, input_size: int | None, amp: bool,
            features: bool = False, desc: str = "predict") -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``model`` over ``(branches, target)`` batches of ``total`` samples (a loader or
    :func:`~affpipe.cnn.data.tensor_batches`); returns predictions (m, 2) float32 and optionally
    features (m, D) float32."""
    model.eval()
    preds, feats = [], []
    with progress(total=total, desc=desc, unit="frame") as bar:
        for branches, _ in batches:
            xs = to_device(branches, device, input_size, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                f = model.forward_features(xs)
                p = model.forward_head(f)
            preds.append(p.float().cpu().numpy())
            if features:
                feats.append(f.float().cpu().numpy())
            bar.update(len(xs[0]))
    d = model.num_features
    pred = np.concatenate(preds) if preds else np.zeros((0, 2), np.float32)
    feat = (np.concatenate(feats) if feats else np.zeros((0, d), np.float32)) if features else None
    return pred.astype(np.float32), feat


def random_shift(xs: list[torch.Tensor], max_shift: int, *, generator: torch.Generator) -> list[torch.Tensor]:
    """Translate every sample by a random integer offset in [-max_shift, max_shift]^2 (training augmentation).

    The same offset is applied to all branches of a sample (they show the same face); the image is
    padded by replicating its border, so the uncovered margin repeats the (background) border pixels.

    Parameters
    ----------
    xs : list of (B, C_i, H, W) tensors
    max_shift : int
        Largest offset in pixels.
    generator : torch.Generator
        CPU generator of the offsets (seeded per epoch, so resumed runs repeat them).
    """
    b = xs[0].shape[0]
    offsets = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator).tolist()
    out = []
    for x in xs:
        h, w = x.shape[-2:]
        padded = torch.nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
        out.append(torch.stack([padded[i, :, max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
                                for i, (dy, dx) in enumerate(offsets)]))
    return out


def fingerprint(payload: Mapping[str, Any]) -> str:
    """Stable hash of plain-typed training inputs (settings, data, model) for resuming."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
@dataclass
class TrainData:
    """The frame index of the train and devel videos, and the positions used."""

    index: FrameIndex
    train: np.ndarray   # labelled valid train rows
    devel: np.ndarray   # labelled valid devel rows (possibly subsampled)


def select_data(index: FrameIndex, settings: Mapping[str, Any]) -> TrainData:
    """Labelled valid rows of train and devel (devel evenly subsampled to ``devel_frames``)."""
    train = index.positions(partition="train", labelled=True)
    devel = index.positions(partition="devel", labelled=True)
    cap = settings.get("devel_frames")
    if cap and devel.size > cap:
        devel = devel[np.linspace(0, devel.size - 1, int(cap)).round().astype(np.int64)]
        devel = np.unique(devel)
    return TrainData(index, train, devel)


def build_model(spec: InputSpec, settings: Mapping[str, Any], *, input_size: int) -> PerFrameRegressor:
    return PerFrameRegressor(settings["backbone"], branch_channels=spec.branch_channels,
                             head_hidden=settings.get("head_hidden"), dropout=float(settings["dropout"]),
                             input_size=input_size)


def _optimizer(model: torch.nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                               weight_decay=settings["weight_decay"])
    return torch.optim.Adam(model.parameters(), lr=settings["lr"], betas=ADAM_BETAS, weight_decay=settings["weight_decay"])


def epoch_order(n: int, *, seed: int, epoch: int, limit: int | None) -> np.ndarray:
    """Sample order of one epoch: a seeded permutation of ``range(n)``, cut to ``limit``."""
    g = torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)
    order = torch.randperm(n, generator=g).numpy()
    return order[:limit] if limit else order


def train_model(spec: InputSpec, data: TrainData, settings: Mapping[str, Any], *, out: str | os.PathLike,
                threads: int = 1, extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train, select on devel and write ``out`` (``model.pt``); returns the model metadata.

    Parameters
    ----------
    spec : InputSpec
    data : TrainData
    settings : mapping
        Validated ``cnn`` section.
    out : path
        ``results/{ds}/cnn/{input}/model.pt``. ``checkpoint.pt`` and ``best.pt`` live next to it.
    threads : int
        torch intra-op threads; DataLoader workers are capped at ``threads - 1``.
    extra_meta : mapping, optional
        Plain-typed metadata added to ``model.pt`` (e.g. the dataset and video lists).

    Raises
    ------
    AffpipeError
        No labelled train frames.
    """
    out = Path(out)
    index = data.index
    if data.train.size == 0:
        raise AffpipeError(f"no labelled train frames with a valid {spec.name} image "
                           f"({len(index)} rows over {len(index.videos)} videos)",
                           hint="check the manifest partitions and the labels")
    torch.set_num_threads(max(1, int(threads)))
    seed = int(settings["seed"])
    device = resolve_device(settings["device"])
    set_determinism(seed, deterministic=bool(settings["deterministic"]), device=device)
    amp = bool(settings["amp"]) and device.type == "cuda"
    bs_train, bs_eval = batch_sizes(settings, device)
    input_size = int(settings.get("input_size") or index.size)

    model = build_model(spec, settings, input_size=input_size)
    weights_report = None
    if settings.get("weights"):
        weights_report = load_pretrained(model, settings["weights"], backbone=settings["backbone"],
                                         inflate=settings["inflate_first_conv"])
        log.info("cnn: loaded %d tensors from %s%s; ignored: %s", len(weights_report["loaded"]), settings["weights"],
                 f" (inflated {', '.join(weights_report['inflated'])})" if weights_report["inflated"] else "",
                 ", ".join(weights_report["ignored"]) or "none")
    model.to(device)
    opt = _optimizer(model, settings)
    decay = float(settings["lr_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + decay * step))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    # data: the network inputs in memory when they fit the budget beside the encoded images they are
    # computed from (prepared once, not per epoch); else the encoded images in memory; else streamed
    n_samples = data.train.size + data.devel.size
    need = encoded_bytes(index, n_samples, spec)
    need_inputs = network_input_bytes(spec, n_samples, input_size)
    budget = int(settings["cache_bytes"])
    cached = need <= budget
    prepared = need + need_inputs <= budget
    workers = 0 if cached else min(int(settings["loader_workers"]), max(0, int(threads) - 1))
    common = dict(scaling=settings["dynamic_scaling"], input_mean=settings["input_mean"], input_std=settings["input_std"])
    memory = (f"network inputs prepared in memory ({need_inputs / 1e6:.0f} MB)" if prepared
              else f"cached in memory ({need / 1e6:.0f} MB encoded)" if cached
              else f"streamed from HDF5 ({need / 1e6:.0f} MB encoded)")
    log.info("cnn: input %s (%s), %d train / %d devel labelled frames, %dx%d -> %d, backbone %s (%d-D features), "
             "device %s%s, batch %d, %s, %d loader worker(s)",
             spec.name, " + ".join(f"{b.name}:{b.channels}ch" for b in spec.branches), data.train.size, data.devel.size,
             index.size, index.size, input_size, settings["backbone"], model.num_features, device, " + AMP" if amp else "",
             bs_train, memory, workers)
    train_ds = FrameDataset(index, data.train, spec, cache=preload(index, data.train, spec, desc="read train") if cached else None, **common)
    devel_ds = FrameDataset(index, data.devel, spec, cache=preload(index, data.devel, spec, desc="read devel") if cached else None, **common) \
        if data.devel.size else None
    train_inputs = devel_inputs = None
    if prepared:
        train_inputs = network_inputs(train_ds, input_size=input_size, desc="prepare train")
        train_ds.cache = None  # the encoded images are no longer needed
        if devel_ds is not None:
            devel_inputs = network_inputs(devel_ds, input_size=input_size, desc="prepare devel")
            devel_ds.cache = None

    def batches(ds: FrameDataset, inputs, order, batch_size: int):
        if inputs is not None:
            return tensor_batches(inputs, index.targets[ds.positions], order, batch_size=batch_size)
        return make_loader(ds, order, batch_size=batch_size, workers=workers, pin_memory=device.type == "cuda")

    fp = fingerprint({
        "settings": {k: v for k, v in settings.items() if k not in RESUME_FREE_KEYS},
        "input": spec.to_plain(), "batch": bs_train, "input_size": input_size,
        "videos": [(v.video, v.partition) for v in index.videos], "train": int(data.train.size),
        "devel": int(data.devel.size), "version": MODEL_FORMAT_VERSION,
    })
    ckpt_path, best_path = out.with_name(CHECKPOINT_NAME), out.with_name(BEST_NAME)
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": []}
    if ckpt_path.is_file():
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            log.warning("cnn: cannot read checkpoint %s (%s): starting over", ckpt_path, exc)
            ckpt = None
        if ckpt is not None and ckpt.get("fingerprint") == fp:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if amp and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            state = ckpt["state"]
            log.info("cnn: resuming from %s after epoch %d (best devel CCC %.4f at epoch %d)", ckpt_path,
                     state["epoch"], state["best_score"], state["best_epoch"])
        elif ckpt is not None:
            log.info("cnn: checkpoint %s is from other settings or data: starting over", ckpt_path)

    limit = settings.get("train_frames_per_epoch")
    shift = int(round(float(settings["augment_shift"]) * input_size))
    patience = settings.get("patience")
    epochs = int(settings["epochs"])
    t_start = time.perf_counter()
    while state["epoch"] < epochs and not (patience and state["bad_epochs"] >= patience):
        epoch = state["epoch"] + 1
        order = epoch_order(len(train_ds), seed=seed, epoch=epoch, limit=limit)
        torch.manual_seed(seed * EPOCH_SEED_STRIDE + epoch)  # dropout
        loader = batches(train_ds, train_inputs, order, bs_train)
        aug_gen = torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch + AUGMENT_SEED_OFFSET)
        model.train()
        t0 = time.perf_counter()
        total, count = 0.0, 0
        with progress(total=len(order), desc=f"train epoch {epoch}/{epochs}", unit="frame") as bar:
            for branches, target in loader:
                xs = to_device(branches, device, input_size, non_blocking=True)
                if shift:
                    xs = random_shift(xs, shift, generator=aug_gen)
                y = target.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                    pred = model(xs)
                loss = masked_mse(pred, y)
                if not torch.isfinite(loss):
                    raise AffpipeError(f"training diverged at epoch {epoch} (loss {loss.item()})",
                                       hint="lower cnn.lr")
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                total += float(loss.item()) * len(y)
                count += len(y)
                bar.update(len(y))
        train_time = time.perf_counter() - t0
        rec: dict[str, Any] = {"epoch": epoch, "train_mse": total / max(count, 1), "train_frames": count,
                               "train_s": round(train_time, 2), "lr": float(sched.get_last_lr()[0])}
        if devel_ds is not None:
            dl = batches(devel_ds, devel_inputs, range(len(devel_ds)), bs_eval)
            pred, _ = predict(model, dl, total=len(devel_ds), device=device, input_size=input_size, amp=amp,
                              desc=f"devel epoch {epoch}")
            sc = scores(pred, index.targets[data.devel])
            rec.update({f"devel_{k}": v for k, v in sc.items()})
            score = sc["ccc_mean"] if np.isfinite(sc["ccc_mean"]) else -math.inf
        else:
            score = float(epoch)  # no devel partition: the last epoch is kept (recorded in the metadata)
        improved = state["best_epoch"] == 0 or score > state["best_score"]  # epoch 1 is kept even with a NaN score
        if improved:
            state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch, 0
            runtime.save_torch({"epoch": epoch, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, best_path)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append(rec)
        runtime.save_torch({
            "fingerprint": fp, "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if amp else {}, "state": state,
        }, ckpt_path)
        log.info("cnn: epoch %d/%d: train MSE %.4f (%d frames, %.1f s, %.0f frames/s)%s%s", epoch, epochs,
                 rec["train_mse"], count, train_time, count / max(train_time, 1e-9),
                 f"; devel CCC valence {rec['devel_ccc_valence']:.4f} arousal {rec['devel_ccc_arousal']:.4f}"
                 if devel_ds is not None else "; no devel frames", " (best)" if improved else "")

    best = torch.load(best_path, map_location="cpu", weights_only=True)
    if int(best["epoch"]) != int(state["best_epoch"]):
        raise AffpipeError(f"best.pt holds epoch {best['epoch']}, the checkpoint says {state['best_epoch']}",
                           path=best_path, hint="delete checkpoint.pt and best.pt and re-run")
    best_rec = next(r for r in state["history"] if r["epoch"] == state["best_epoch"])
    devel_score = {k[len("devel_"):]: v for k, v in best_rec.items() if k.startswith("devel_")} or None
    if devel_score is None:
        log.warning("cnn: no labelled devel frames: kept the last epoch's model without model selection")
    meta: dict[str, Any] = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "affpipe_version": __version__,
        "backbone": settings["backbone"], "input": spec.name, "branches": spec.to_plain(),
        "channels": spec.branch_channels, "size": int(index.size), "input_size": input_size,
        "num_features": int(model.num_features), "head_hidden": int(model.head.hidden), "dropout": float(settings["dropout"]),
        "scaling": {"static": "x / 255", "dynamic_scaling": settings["dynamic_scaling"],
                    "input_mean": list(settings["input_mean"]), "input_std": list(settings["input_std"])},
        "mdr_levels": list(settings["mdr_levels"]),
        "epoch": int(state["best_epoch"]), "epochs_run": int(state["epoch"]),
        "selection": "devel ccc_mean (mean of valence and arousal CCC, ddof 0, devel frames concatenated)"
        if devel_score else "last epoch (no labelled devel frames)",
        "devel_score": devel_score, "history": state["history"],
        "n_train_frames": int(data.train.size), "n_devel_frames": int(data.devel.size),
        "weights": settings.get("weights"), "weights_report": weights_report, "seed": seed,
        "device": str(device), "amp": amp, "batch_size": bs_train,
        "settings": copy.deepcopy(dict(settings)), "train_wall_s": round(time.perf_counter() - t_start, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(extra_meta or {})
    meta = json.loads(json.dumps(meta, default=str))  # plain types only (weights_only loading)
    runtime.save_torch({"state_dict": best["model"], "metadata": meta}, out)
    train_ds.close()
    if devel_ds is not None:
        devel_ds.close()
    return meta


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (provenance of the weights a pretrained model is made of)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pretrained_model(spec: InputSpec, settings: Mapping[str, Any], *, size: int, out: str | os.PathLike,
                     extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``cnn.mode: pretrained``: write ``out`` (``model.pt``) holding ``cnn.weights`` as given, untrained.

    The network is built as for training and every backbone parameter is loaded from the weights
    (:func:`affpipe.cnn.backbones.load_pretrained`: a missing or mismatched layer is an error naming the
    file and the key). The head is not trained and its output is never stored (the features of such a
    model have no ``pred``). Returns the model metadata (``mode: pretrained``, ``epoch`` 0).

    Parameters
    ----------
    spec : InputSpec
    settings : mapping
        Validated ``cnn`` section with ``mode: pretrained``.
    size : int
        Side of the stored images (checked again at extraction).

    Raises
    ------
    ConfigError
        No ``cnn.weights``, or a backbone other than vgg16.
    AffpipeError
        The weights do not fit (file and key named).
    """
    from affpipe.errors import ConfigError

    if settings["backbone"] != "vgg16":
        raise ConfigError(f"cnn.mode: pretrained extracts VGG-16 (VGG-Face) fc6 features and needs cnn.backbone: vgg16, "
                          f"got {settings['backbone']!r}")
    weights = settings.get("weights")
    if not weights:
        raise ConfigError("cnn.mode: pretrained needs cnn.weights: the path of a VGG-Face (or torchvision VGG-16) "
                          "state dict; set it, or use cnn.mode: finetune to train a network")
    t_start = time.perf_counter()
    if list(settings["input_mean"]) == [0.5] and list(settings["input_std"]) == [0.5]:
        log.warning("cnn: mode pretrained with the default input normalisation (mean 0.5, std 0.5): the weights "
                    "%s expect their own (e.g. VGG-Face: cnn.input_mean [0.5066, 0.4108, 0.3670], input_std "
                    "[0.003922]); the features are computed as configured", weights)
    input_size = int(settings.get("input_size") or size)
    torch.manual_seed(int(settings["seed"]))  # the (unused, unstored) head's initialisation
    model = build_model(spec, settings, input_size=input_size)
    report = load_pretrained(model, weights, backbone=settings["backbone"], inflate=settings["inflate_first_conv"])
    log.info("cnn: mode pretrained: %d tensors of %s, no training%s; ignored: %s", len(report["loaded"]), weights,
             f" (inflated {', '.join(report['inflated'])})" if report["inflated"] else "",
             ", ".join(report["ignored"]) or "none")
    meta: dict[str, Any] = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "affpipe_version": __version__,
        "mode": "pretrained",
        "backbone": settings["backbone"], "input": spec.name, "branches": spec.to_plain(),
        "channels": spec.branch_channels, "size": int(size), "input_size": input_size,
        "num_features": int(model.num_features), "head_hidden": int(model.head.hidden), "dropout": float(settings["dropout"]),
        "scaling": {"static": "x / 255", "dynamic_scaling": settings["dynamic_scaling"],
                    "input_mean": list(settings["input_mean"]), "input_std": list(settings["input_std"])},
        "mdr_levels": list(settings["mdr_levels"]),
        "epoch": 0, "epochs_run": 0,
        "selection": "none: cnn.mode pretrained (the given weights, not trained; no head output is stored)",
        "devel_score": None, "history": [], "n_train_frames": 0, "n_devel_frames": 0,
        "weights": weights, "weights_sha256": file_sha256(weights), "weights_report": report,
        "seed": int(settings["seed"]), "settings": copy.deepcopy(dict(settings)),
        "train_wall_s": round(time.perf_counter() - t_start, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(extra_meta or {})
    meta = json.loads(json.dumps(meta, default=str))
    runtime.save_torch({"state_dict": model.state_dict(), "metadata": meta}, out)
    return meta


def load_model(path: str | os.PathLike) -> tuple[PerFrameRegressor, dict[str, Any]]:
    """Load a ``model.pt`` written by :func:`train_model` (``weights_only=True``) into a CPU model."""
    path = Path(path)
    if not path.is_file():
        raise AffpipeError("CNN model file does not exist", path=path, hint="run `affpipe cnn-train` first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AffpipeError(f"cannot load the CNN model ({type(exc).__name__}: {exc})", path=path,
                           hint="delete it and re-run cnn-train") from None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise AffpipeError(f"not an affpipe CNN model (metadata format {None if meta is None else meta.get('format')!r})", path=path)
    if int(meta.get("format_version", 0)) > MODEL_FORMAT_VERSION:
        raise AffpipeError(f"model format version {meta['format_version']} is newer than this affpipe understands", path=path)
    model = PerFrameRegressor(meta["backbone"], branch_channels=meta["channels"], head_hidden=meta["head_hidden"],
                              dropout=meta["dropout"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise AffpipeError(f"weights do not match the recorded architecture ({exc})", path=path) from None
    model.eval()
    return model, meta
