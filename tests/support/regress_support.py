"""Synthetic inputs for the regression and evaluation tests (no tests here).

Writes a small dataset in the contracts of the earlier stages: ``manifest.parquet``, per-video
``labels/{video}.parquet`` (frame, time_s, valence, arousal) and ``features/{input}/{video}.h5``
(affpipe HDF5 stores with ``frame``, ``valid``, ``features`` and optionally the per-frame CNN's
``pred``). The features are a fixed random linear map of the labels of the last few frames plus
an identity-specific offset and noise, so the labels are learnable from them (and a sequence model
can beat a frame-wise one by averaging the noise out); frames before the first "dynamic window"
and a run of "lost face" frames have no valid row, like a real dynamic-image input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from affpipe.io.atomic import write_parquet
from affpipe.io.h5store import DatasetSpec, StoreWriter

FPS = 25.0


@dataclass
class SynthDataset:
    root: Path
    manifest: Path
    labels_dir: Path
    features_dir: Path
    videos: dict[str, str]  # video -> partition


def _traces(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / FPS
    out = np.zeros((n, 2))
    for d in range(2):
        for _ in range(3):
            f = rng.uniform(0.05, 0.4)
            out[:, d] += rng.uniform(0.15, 0.35) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return np.clip(out, -1, 1)


def make_dataset(
    root: Path,
    *,
    partitions: dict[str, int] | None = None,
    n_frames: int = 200,
    dim: int = 12,
    first_valid: int = 18,
    noise: float = 0.6,
    informative: bool = True,
    with_pred: bool = False,
    dtype: str = "float32",
    seed: int = 0,
    lost: tuple[int, int] | None = (100, 130),
    unlabelled: tuple[int, int] | None = (40, 50),
) -> SynthDataset:
    """Write a synthetic dataset under ``root`` (see the module docstring).

    ``partitions`` maps partition -> number of videos (default 6 train, 2 devel, 2 test). The first
    train video loses its face on frames ``lost`` (no valid rows); the first devel video has
    unlabelled frames ``unlabelled``.
    """
    partitions = partitions or {"train": 6, "devel": 2, "test": 2}
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(6, dim)) / np.sqrt(3)
    labels_dir = root / "labels"
    features_dir = root / "features" / "dfm"
    videos: dict[str, str] = {}
    manifest_rows = []
    for part, count in partitions.items():
        for i in range(count):
            vid = f"{part}_{i:02d}"
            videos[vid] = part
            y = _traces(rng, n_frames)
            # features: labels now, 4 and 8 frames ago (a "dynamic" input), identity offset, noise
            lagged = np.concatenate([y, np.roll(y, 4, axis=0), np.roll(y, 8, axis=0)], axis=1)
            if not informative:
                lagged = rng.normal(size=lagged.shape) * 0.3
            x = lagged @ W + rng.normal(scale=0.3, size=dim) + rng.normal(scale=noise, size=(n_frames, dim))
            valid = np.zeros(n_frames, dtype=bool)
            valid[first_valid:] = True
            if lost and part == "train" and i == 0:
                valid[lost[0] : lost[1]] = False
            lab = y.astype(np.float32).copy()
            if unlabelled and part == "devel" and i == 0:
                lab[unlabelled[0] : unlabelled[1]] = np.nan
            write_parquet(pa.table({
                "frame": pa.array(np.arange(n_frames, dtype=np.int32)),
                "time_s": pa.array(np.arange(n_frames) / FPS),
                "valence": pa.array(lab[:, 0]),
                "arousal": pa.array(lab[:, 1]),
            }), labels_dir / f"{vid}.parquet")
            write_features(features_dir / f"{vid}.h5", np.arange(first_valid, n_frames), x[first_valid:],
                           valid[first_valid:], pred=(y[first_valid:] * 0.8 + rng.normal(scale=0.1, size=(n_frames - first_valid, 2)))
                           if with_pred else None, dtype=dtype)
            manifest_rows.append({"video": vid, "path": f"/nonexistent/{vid}.mp4", "partition": part, "fps": FPS,
                                  "n_frames": n_frames, "subject": f"s{vid}"})
    manifest = root / "manifest.parquet"
    write_parquet(pa.Table.from_pylist(manifest_rows), manifest, metadata={"dataset": "synth"})
    return SynthDataset(root=root, manifest=manifest, labels_dir=labels_dir, features_dir=features_dir, videos=videos)


def write_features(path: Path, frames: np.ndarray, x: np.ndarray, valid: np.ndarray, *, pred=None,
                   dtype: str = "float32", attrs: dict | None = None) -> None:
    """A features store in the CNN stage's layout; invalid rows hold NaN, as the store convention says."""
    dim = x.shape[1]
    specs = [
        DatasetSpec("frame", (), "int32", "video frame of the row"),
        DatasetSpec("valid", (), "bool", "row has a feature"),
        DatasetSpec("features", (dim,), dtype, "synthetic CNN features"),
    ]
    data = {"frame": frames.astype(np.int32), "valid": valid, "features": np.where(valid[:, None], x, np.nan).astype(dtype)}
    if pred is not None:
        specs.append(DatasetSpec("pred", (2,), "float32", "per-frame (valence, arousal)"))
        data["pred"] = np.where(valid[:, None], pred, np.nan).astype(np.float32)
    with StoreWriter(path, specs, stage="features", settings={"backbone": "small"}, attrs=attrs or {"backbone": "small"}) as w:
        w.append(**data)


#: fast training settings for tests (tiny BGRU, Adam, few epochs)
FAST_SETTINGS = {
    "seq_len": 40,
    "train_hop": 20,
    "batch_size": 8,
    "max_epochs": 12,
    "patience": 0,
    "optimizer": "adam",
    "lr": 0.01,
    "lr_decay": 0.0,
    "device": "cpu",
    "bgru": {"hidden_units": 16},
}
