"""What a run's GPU models will cost without a GPU: the policy behind the workflow's start-up warning.

Torch-free (the Snakemake DAG build imports it). The constants are CPU rates measured with
``bench/bench_cost.py`` on the project's 2-core VM (2 threads, as the rules use; the machine was
shared, load average 0.9-1.2 during the run; README.md "Cost on CPU" has the figures, and those of
an earlier run at load 2-3, up to 3x slower for the paper-size UNet). Estimates scale
them linearly with the number of frames and epochs, and with the image area (and the UNet width²)
when a setting differs from the measured one; they are meant to tell minutes from days, not to
plan to the minute.

A *paper-size* model is one whose CPU cost is measured in hours per 1,000 frames: the VGG-16
per-frame CNN (``cnn.backbone: vgg16``, the default) and a DR UNet of width >= 32 (the default is
64). The CPU preset ``config/cpu.yaml`` uses the demo's sizes instead (small CNN, UNet width 16).
"""

from __future__ import annotations

import glob
import math
import os
import shutil
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

#: the CPU preset shipped with the repository (passed with --configfile)
CPU_PRESET = "config/cpu.yaml"
#: the SLURM profile (GPU rules ask for a GPU there)
SLURM_PROFILE = "profiles/slurm"

#: UNet width from which a DR model counts as paper-size (the paper's is 64, the preset's 16)
DR_PAPER_MIN_WIDTH = 32
#: CNN backbones that count as paper-size
CNN_PAPER_BACKBONES = ("vgg16",)

# --- measured CPU rates, 2 threads (bench/bench_cost.py; see README.md "Cost on CPU") -------------
#: per-frame CNN training, frames/s (forward, MSE, backward, SGD step), by (backbone, input side)
CNN_TRAIN_FPS = {("vgg16", 224): 1.87, ("small", 112): 778.0}
#: per-frame CNN inference (features and predictions), frames/s, by (backbone, input side)
CNN_INFER_FPS = {("vgg16", 224): 8.1, ("small", 112): 2106.0}
#: DR UNet training, seconds per window (forward, rank loss over 2T+1 frames, backward, Adam), by
#: (width, depth, image side), T = 3
DR_TRAIN_S_PER_WINDOW = {(64, 4, 224): 1.27, (16, 3, 112): 0.0211}
#: DR UNet inference, seconds per frame and level, by (width, depth, image side)
DR_INFER_S_PER_FRAME = {(64, 4, 224): 0.313, (16, 3, 112): 0.0062}

SECONDS_PER_HOUR = 3600.0
PER_FRAMES = 1000  # estimates without a manifest are per this many frames


def is_paper_size_cnn(backbone: str) -> bool:
    return backbone in CNN_PAPER_BACKBONES


def is_paper_size_dr(width: int) -> bool:
    return int(width) >= DR_PAPER_MIN_WIDTH


def _nearest(table: Mapping[tuple, float], key: tuple) -> tuple[tuple, float]:
    """The measured entry closest to `key` (same first element preferred, then by log-distance)."""

    def distance(k: tuple) -> float:
        return sum(abs(math.log(max(a, 1) / max(b, 1))) if isinstance(a, (int, float)) else (0 if a == b else 100)
                   for a, b in zip(k, key))

    best = min(table, key=distance)
    return best, table[best]


def cnn_seconds_per_frame(backbone: str, side: int, *, train: bool) -> float:
    """CPU seconds per frame of one CNN branch at input side `side` (scaled by area from the nearest
    measured (backbone, side))."""
    table = CNN_TRAIN_FPS if train else CNN_INFER_FPS
    same = {k: v for k, v in table.items() if k[0] == backbone} or table
    (_, ref_side), fps = _nearest(same, (backbone, side))
    return (side / ref_side) ** 2 / fps


def dr_seconds(width: int, depth: int, side: int, *, train: bool) -> float:
    """CPU seconds per training window (or per inferred frame) of one UNet, scaled from the nearest
    measured configuration by width² x side²."""
    table = DR_TRAIN_S_PER_WINDOW if train else DR_INFER_S_PER_FRAME
    (ref_w, _, ref_side), sec = _nearest(table, (width, depth, side))
    return sec * (width / ref_w) ** 2 * (side / ref_side) ** 2


@dataclass(frozen=True)
class ModelCost:
    """Estimated CPU cost of one model of a run: its training and its per-frame inference."""

    what: str  # e.g. "per-frame CNN vgg16 on dfa+dfs"
    keys: str  # the config keys that size it
    paper_size: bool
    train_s: float  # all epochs
    infer_s: float  # every frame of the dataset
    epochs: int

    @property
    def total_s(self) -> float:
        return self.train_s + self.infer_s


def cnn_cost(input_name: str, settings: Mapping, *, image_side: int, train_frames: int, devel_frames: int,
             all_frames: int) -> ModelCost:
    """CPU cost of the per-frame CNN of one input (`cnn` settings): every epoch trains on
    min(train_frames, cnn.train_frames_per_epoch) frames and scores the devel frames; then features
    for all frames. A two-branch input (dfa+dfs) costs two networks."""
    backbone = settings["backbone"]
    side = int(settings.get("input_size") or image_side)
    branches = len(input_name.split("+"))
    limit = settings.get("train_frames_per_epoch")
    per_epoch = min(train_frames, int(limit)) if limit else train_frames
    devel = min(devel_frames, int(settings["devel_frames"])) if settings.get("devel_frames") else devel_frames
    epochs = int(settings["epochs"])
    train_s = branches * epochs * (per_epoch * cnn_seconds_per_frame(backbone, side, train=True)
                                   + devel * cnn_seconds_per_frame(backbone, side, train=False))
    infer_s = branches * all_frames * cnn_seconds_per_frame(backbone, side, train=False)
    return ModelCost(f"per-frame CNN ({backbone}, {side} px) on {input_name}", "cnn.backbone, cnn.epochs",
                     is_paper_size_cnn(backbone), train_s, infer_s, epochs)


def dr_cost(T: int, settings: Mapping, *, image_side: int, train_frames: int, all_frames: int) -> ModelCost:
    """CPU cost of the DR UNet of one level T (`dr` settings): every epoch trains on
    min(train windows, dr.windows_per_epoch) windows and ranks dr.val_windows; then the DR of every
    frame."""
    width, depth = int(settings["width"]), int(settings["depth"])
    limit = settings.get("windows_per_epoch")
    per_epoch = min(train_frames, int(limit)) if limit else train_frames
    epochs = int(settings["epochs"])
    infer = dr_seconds(width, depth, image_side, train=False)
    train_s = epochs * (per_epoch * dr_seconds(width, depth, image_side, train=True)
                        + int(settings.get("val_windows") or 0) * infer)
    infer_s = all_frames * infer
    return ModelCost(f"DR UNet T={T} (width {width}, depth {depth}, {image_side} px)", "dr.width, dr.depth, dr.epochs",
                     is_paper_size_dr(width), train_s, infer_s, epochs)


def gpu_visible(dev_glob: str = "/dev/nvidia[0-9]*") -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch: a device node or nvidia-smi,
    and CUDA_VISIBLE_DEVICES not hiding every device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob(dev_glob)) or shutil.which("nvidia-smi") is not None


def runs_on_gpu(device: str, *, gpu_here: bool, gpu_requested: bool = False) -> bool:
    """Whether a job with `device` (cnn/dr/regression.device) will use a GPU: `cuda...` always (it
    fails without one), `auto` when the machine running it has one (`gpu_here`, or the job is
    submitted with a GPU request, `gpu_requested`), `cpu` never."""
    if device.startswith("cuda"):
        return True
    if device == "auto":
        return gpu_here or gpu_requested
    return False


def format_hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * SECONDS_PER_HOUR:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / SECONDS_PER_HOUR:.1f} h"


def cpu_warning(ds: str, costs: Sequence[ModelCost], *, frames: int | None, devices: Iterable[str],
                slurm: bool = False) -> str | None:
    """The warning block for dataset `ds` when any paper-size model of `costs` will run on CPU, else None.

    Parameters
    ----------
    costs : the models that will train on CPU.
    frames : the dataset's frames (from the manifest), or None when the costs are per 1,000 frames.
    devices : the `<section>.device` settings shown in the message, e.g. ["cnn.device: auto"].
    slurm : the run submits to SLURM but the GPU rules ask for no GPU there.
    """
    big = [c for c in costs if c.paper_size]
    if not big:
        return None
    scope = f"{frames:,} frames in results/{ds}/manifest.parquet" if frames is not None else f"per {PER_FRAMES:,} frames"
    lines = [
        "=" * 78,
        f"WARNING: paper-size models of dataset `{ds}` will train WITHOUT A GPU.",
        f"Estimated CPU time on 2 cores ({scope}; rates measured by bench/bench_cost.py, see README.md"
        " \"Cost on CPU\"):",
    ]
    for c in costs:
        lines.append(f"  - {c.what}: {format_hours(c.train_s)} training ({c.epochs} epochs at most), "
                     f"{format_hours(c.infer_s)} inference")
    total = sum(c.total_s for c in costs)
    lines.append(f"  total about {format_hours(total)} of CPU time before results/{ds}/ccc.json"
                 + (" (more with more frames)" if frames is None else ""))
    lines.append(f"  device settings: {', '.join(devices)}; no GPU visible here (no /dev/nvidia*, no nvidia-smi)"
                 if not slurm else f"  device settings: {', '.join(devices)}; the SLURM jobs of these rules ask for no GPU")
    lines += [
        "To switch:",
        f"  - on CPU, the demo's model sizes (small CNN, UNet width 16, minutes per video): add "
        f"--configfile {CPU_PRESET}",
        f"  - on a SLURM cluster with GPUs: --workflow-profile {SLURM_PROFILE} (the CNN, DR and regression "
        "jobs ask for one GPU each; docs/cluster.md)",
        "  - on a machine with a GPU: keep cnn.device / dr.device / regression.device at auto (or cuda)",
        "Stop now with Ctrl-C if this is not what you want; finished jobs are kept.",
        "=" * 78,
    ]
    return "\n".join(lines)
