"""Torch runtime set-up for the DR stages: device choice, threads, seeds, determinism, model files.

Model files (``results/{ds}/dr/model_T{T}.pt``) and training checkpoints hold only tensors and
plain Python values (dicts, lists, str, int, float, bool, None), so they load with
``torch.load(weights_only=True)``: opening a model file never executes code from it.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from affpipe.errors import AffpipeError, ConfigError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
MODEL_FORMAT = "affpipe-dr-model"
MODEL_FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "affpipe-dr-checkpoint"


def select_device(name: str):
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    import torch

    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device `cuda` requested but torch sees no CUDA device", hint="set dr.device to auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


def save_torch(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` atomically (temporary file in the same folder, then rename)."""
    import torch

    from affpipe.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
