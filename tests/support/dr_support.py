"""Shared inputs of the DR tests (no tests here): synthetic static stores with a known motion.

A "face" is a fixed random texture inside a disc (zero outside, like an SFA masked outside the
landmark hull) with a bright Gaussian blob that moves steadily along a line: a known monotone
change (the blob's position), so the frames around frame t can be ranked by their distance to t
and the DR that ranks them is the blob at its current place. The stores are written with the
real static layout (:func:`affpipe.io.h5store.static_specs`), so every reader check applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from affpipe.io.h5store import STATIC_STAGE, StoreWriter, static_specs

SIZE = 32
FPS = 25.0
BLOB_SIGMA = 2.5  # pixels
BLOB_TRAVEL = 0.5  # share of the image side the blob travels (along x and y) over a sequence
BLOB_GAIN = 110.0  # uint8 levels at the blob's peak


def moving_blob_frames(n: int, *, size: int = SIZE, seed: int = 0, travel: float = BLOB_TRAVEL) -> np.ndarray:
    """(n, size, size, 3) uint8 frames of a textured disc with a blob moving steadily along a diagonal.

    The blob starts at ``(1 - travel) / 2`` of the side and moves ``travel * size`` pixels along x (and
    back along y) over the n frames, staying inside the disc.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    disc = (xx - c) ** 2 + (yy - c) ** 2 <= (0.48 * size) ** 2
    texture = rng.uniform(40, 120, size=(size, size, 3))
    colour = rng.uniform(0.6, 1.0, size=3)
    pos0 = (1 - travel) / 2 * size
    speed = travel * size / max(n - 1, 1)
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        p = pos0 + speed * i
        blob = np.exp(-((xx - p) ** 2 + (yy - (size - p)) ** 2) / (2 * BLOB_SIGMA**2))
        img = texture + BLOB_GAIN * blob[..., None] * colour
        img[~disc] = 0
        frames[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames


def write_static(path: Path, frames: np.ndarray, *, valid: np.ndarray | None = None, frame_ids: np.ndarray | None = None,
                 fps: float = FPS) -> Path:
    """Write ``frames`` as a static store (invalid rows are zeroed, as the static stage does)."""
    n, size = frames.shape[0], frames.shape[1]
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    frame_ids = np.arange(n) if frame_ids is None else np.asarray(frame_ids)
    sfa = frames.copy()
    sfa[~valid] = 0
    lm = np.where(valid[:, None, None], 1.0, np.nan) * np.ones((n, 68, 2))
    tr = np.where(valid[:, None, None], 1.0, np.nan) * np.ones((n, 2, 3))
    with StoreWriter(path, static_specs(size), stage=STATIC_STAGE, settings={"size": size}, attrs={"size": size}) as w:
        w.append(frame=frame_ids.astype(np.int32), time_s=frame_ids / fps, valid=valid, sfa=sfa,
                 sfs=np.zeros_like(sfa), landmarks=lm.astype(np.float32), transform=tr)
    return path


def write_dataset(root: Path, videos: dict[str, tuple[str, np.ndarray]], *, fps: float = FPS) -> tuple[Path, Path]:
    """Static stores ``root/static/{video}.h5`` and a manifest ``root/manifest.parquet``.

    Parameters
    ----------
    videos : dict
        video id -> (partition, frames (n, S, S, 3) uint8).

    Returns
    -------
    manifest, static_dir
    """
    static_dir = root / "static"
    static_dir.mkdir(parents=True, exist_ok=True)
    rows = {"video": [], "path": [], "partition": [], "fps": [], "n_frames": [], "subject": []}
    for vid, (part, frames) in videos.items():
        write_static(static_dir / f"{vid}.h5", frames, fps=fps)
        rows["video"].append(vid)
        rows["path"].append(f"videos/{vid}.mp4")
        rows["partition"].append(part)
        rows["fps"].append(fps)
        rows["n_frames"].append(len(frames))
        rows["subject"].append(vid)
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table(rows), manifest)
    return manifest, static_dir


def tiny_settings(**over) -> dict:
    """``dr`` settings for seconds-long CPU tests: a 4-channel, 2-level UNet, few steps."""
    s = {"width": 4, "depth": 2, "epochs": 2, "batch_size": 8, "windows_per_epoch": 32, "val_windows": 32,
         "stride": 1, "device": "cpu", "theta_calibration_windows": 64, "rank_windows_per_video": 40,
         "levels": [1, 2], "infer_batch_size": 16}
    s.update(over)
    return s
