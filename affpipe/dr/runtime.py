"""Torch runtime set-up for the DR stages: device choice, threads, seeds, determinism, model files.

Model files (``results/{ds}/dr/model_T{T}.pt``) and training checkpoints hold only tensors and
plain Python values (dicts, lists, str, int, float, bool, None), so they load with
``torch.load(weights_only=True)``: opening a model file never executes code from it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from affpipe import runtime
from affpipe.errors import AffpipeError, ConfigError
from affpipe.runtime import save_torch  # noqa: F401 - the DR model files and checkpoints are written with it

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
MODEL_FORMAT = "affpipe-dr-model"
MODEL_FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "affpipe-dr-checkpoint"


def select_device(name: str):
    """``dr.device``: ``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if name not in DEVICES:
        raise ConfigError(f"dr.device must be one of {', '.join(DEVICES)}, got {name!r}")
    return runtime.select_device(name, key="dr.device")


def configure_torch(*, device, threads: int | None, seed: int) -> None:
    """Seed every generator, limit CPU threads and ask for deterministic kernels.

    On CPU every kernel used by :mod:`affpipe.dr.unet` is deterministic; on CUDA cuDNN is asked
    for deterministic algorithms and the few ops without one only warn.
    """
    import torch

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    runtime.seed_everything(seed)
    runtime.deterministic_kernels(device)


def load_torch(path: str | os.PathLike, *, what: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` on CPU, with errors naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise AffpipeError(f"{what} does not exist", path=path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle, ...
        raise AffpipeError(f"cannot load {what} ({type(exc).__name__}: {exc})", path=path,
                           hint="delete it and re-run the stage that writes it") from None
    if not isinstance(obj, dict):
        raise AffpipeError(f"{what} does not hold a dict", path=path)
    return obj


def load_model(path: str | os.PathLike, *, device=None):
    """Load a DR model file.

    Returns
    -------
    model : affpipe.dr.unet.UNet
        In eval mode, on ``device`` (CPU by default).
    record : dict
        The file's metadata (``T``, ``theta``, ``stride``, ``settings``, ``history``, ...) without the
        weights.

    Raises
    ------
    AffpipeError
        Naming the file when it is missing, not a DR model, or its weights do not fit the stored
        architecture.
    """
    from affpipe.dr.unet import UNet, UNetConfig

    path = Path(path)
    rec = load_torch(path, what="DR model file")
    if rec.get("format") != MODEL_FORMAT:
        raise AffpipeError(f"not an affpipe DR model (format={rec.get('format')!r}, expected {MODEL_FORMAT!r})", path=path)
    if int(rec.get("format_version", -1)) > MODEL_FORMAT_VERSION:
        raise AffpipeError(f"DR model format version {rec.get('format_version')} is newer than this affpipe understands", path=path)
    try:
        model = UNet(UNetConfig(**rec["arch"]))
        model.load_state_dict(rec["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise AffpipeError(f"DR model weights do not match its architecture ({exc})", path=path) from None
    model.eval()
    if device is not None:
        model.to(device)
    meta = {k: v for k, v in rec.items() if k != "state_dict"}
    meta["path"] = os.fspath(path)
    return model, meta
