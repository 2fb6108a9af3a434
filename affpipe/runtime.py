"""Torch run-time set-up shared by the stages that train or run models (DR, CNN, regression):
device choice, seeding, deterministic kernels and atomic model files.

torch is imported inside the functions: importing this module costs nothing (e.g. at DAG build).
"""

from __future__ import annotations

import os
import random
import re
import sys
from typing import Any

from affpipe.errors import ConfigError

#: device names a ``<section>.device`` setting may take (the schemas narrow them per stage)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def select_device(name: str, *, key: str):
    """The torch device of setting ``key`` (e.g. ``"cnn.device"``) whose value is ``name``.

    ``auto`` = CUDA when torch sees a GPU, else CPU; ``cpu``; ``cuda`` or ``cuda:N``.

    Raises
    ------
    ConfigError
        Naming ``key``: an unknown device name, or CUDA asked for where torch sees none.
    """
    import torch

    if not DEVICE_PATTERN.fullmatch(str(name)):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key} is {name!r} but torch sees no CUDA device", hint=f"set {key} to auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, *, python: bool = True) -> None:
    """Seed Python's (``python``), NumPy's and torch's global generators from ``seed``."""
    import numpy as np
    import torch

    if python:
        random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def deterministic_kernels(device, *, strict_cpu: bool = True) -> None:
    """Ask torch for deterministic kernels: on CUDA the cuBLAS workspace setting and deterministic
    cuDNN, ops without a deterministic kernel only warning; on CPU strictly (an op without one
    raises) unless ``strict_cpu`` is False."""
    import torch

    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        use_deterministic_algorithms(True, warn_only=True)
    else:
        use_deterministic_algorithms(True, warn_only=not strict_cpu)


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=warn_only)`` without its import of
    ``torch._inductor`` where that is not loaded yet.

    Since torch 2.x the public call also sets Inductor's ``deterministic`` option, and to do so imports
    ``torch._inductor.config``, which loads TorchDynamo: about 2 s of CPU in every process that
    calls it (measured with torch 2.13 on the project's VM: a third of a tiny regress or cnn-train
    job). Only ``torch.compile`` reads that option and affpipe never compiles, so where Inductor is not
    loaded only the kernels' flag is set; where it is (someone compiled in this process), the public
    call sets both.
    """
    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if "torch._inductor.config" in sys.modules or setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (temporary file in the same folder, then rename)."""
    import torch

    from affpipe.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
