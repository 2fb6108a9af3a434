"""Small synthetic datasets in the real store formats, for the CNN tests (tests/test_cnn_*.py).

Each video has smooth valence/arousal traces; the images encode them so that a CNN can learn them:

* static ``sfa``: region A (left) has brightness 128 + 100 v, region B (right) 128 + 100 a;
* dynamic ``dfa``/``dfs``/``dfm`` (stored with the dynamic stage's own uint8 + scale/offset
  encoding): a fixed reference patch of value 1 (so per-image max-abs scaling keeps the amplitude)
  plus 0.5 v in region A and 0.5 a in region B, plus a little noise;
* dr ``dr_T3``/``dr_T5`` (float16): like the DFM.

Rows follow the real stages: the static store has one row per frame (a few without a face), the
dynamic store one row per window from frame ``SPAN - 1`` on (windows touching a faceless frame are
invalid), the dr store one row per frame but misses the last frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from affpipe.dynamic.store import dynamic_specs
from affpipe.io.atomic import write_parquet
from affpipe.io.encoding import quantize_uint8
from affpipe.io.h5store import DatasetSpec, StoreWriter, static_specs

SPAN = 5  # dynamic window span (frames)


def traces(n: int, phase: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n)
    return (0.8 * np.sin(2 * np.pi * t / 37.0 + phase)).astype(np.float32), \
        (0.8 * np.cos(2 * np.pi * t / 23.0 + 2 * phase)).astype(np.float32)


def regions(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    a = (xx < size // 2) & (yy > size // 4)
    b = (xx >= size // 2) & (yy > size // 4)
    ref = (yy < size // 6) & (xx < size // 6)
    return a, b, ref


def write_video(root: Path, video: str, *, n: int = 40, size: int = 32, phase: float = 0.0,
                faceless: tuple[int, ...] = (7,), seed: int = 0, unlabelled: tuple[int, ...] = (3,)) -> None:
    """Write static, dynamic, dr stores and labels of one synthetic video under ``root``."""
    rng = np.random.default_rng(seed)
    v, a = traces(n, phase)
    ra, rb, ref = regions(size)
    valid = np.ones(n, bool)
    valid[list(faceless)] = False

    sfa = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        if valid[i]:
            sfa[i][ra] = np.uint8(128 + 100 * v[i])
            sfa[i][rb] = np.uint8(128 + 100 * a[i])
    sfs = (sfa // 2).astype(np.uint8)
    frames = np.arange(n, dtype=np.int32)
    (root / "static").mkdir(parents=True, exist_ok=True)
    with StoreWriter(root / "static" / f"{video}.h5", static_specs(size), stage="static", settings={},
                     attrs={"size": size}) as w:
        w.append(frame=frames, time_s=frames / 25.0, valid=valid, sfa=sfa, sfs=sfs,
                 landmarks=np.full((n, 68, 2), np.nan, np.float32), transform=np.full((n, 2, 3), np.nan))

    def dyn(i: int, noise: float = 0.02) -> np.ndarray:
        img = np.zeros((size, size, 3), np.float32)
        img[ref] = 1.0
        img[ra] = 0.5 * v[i]
        img[rb] = 0.5 * a[i]
        return img + noise * rng.standard_normal(img.shape).astype(np.float32)

    ends = np.arange(SPAN - 1, n)
    wvalid = np.array([valid[e - SPAN + 1:e + 1].all() for e in ends])
    out = {"frame": ends.astype(np.int32), "valid": wvalid}
    for name in ("dfa", "dfs", "dfm"):
        imgs = np.stack([dyn(e) if ok else np.zeros((size, size, 3), np.float32) for e, ok in zip(ends, wvalid)])
        q, sc, of = quantize_uint8(imgs)
        q[~wvalid] = 0
        sc[~wvalid] = np.nan
        of[~wvalid] = np.nan
        out[name], out[f"{name}_scale"], out[f"{name}_offset"] = q, sc, of
    m = len(ends)
    out["mask_a"] = np.ones((m, size, size, 1), np.uint8)
    out["mask_s"] = np.zeros((m, size, size, 1), np.uint8)
    out["ranked_share"] = np.ones((m, 2), np.float32)
    out["kkt_residual"] = np.zeros((m, 2), np.float32)
    (root / "dynamic").mkdir(parents=True, exist_ok=True)
    with StoreWriter(root / "dynamic" / f"{video}.h5", dynamic_specs(size, keep=["dfa", "dfs", "masks", "dfm"], storage="uint8"),
                     stage="dynamic", settings={}, attrs={"size": size}) as w:
        w.append(**out)

    dr_specs = [DatasetSpec("frame", (), "int32", "frame"), DatasetSpec("valid", (), "bool", "valid"),
                DatasetSpec("dr_T3", (size, size, 3), "float16", "DR T=3", image=True),
                DatasetSpec("dr_T5", (size, size, 3), "float16", "DR T=5", image=True)]
    k = n - 1  # the dr store misses the last frame
    dr3 = np.stack([dyn(i) if valid[i] else np.zeros((size, size, 3), np.float32) for i in range(k)]).astype(np.float16)
    (root / "dr").mkdir(parents=True, exist_ok=True)
    with StoreWriter(root / "dr" / f"{video}.h5", dr_specs, stage="dr", settings={}, attrs={"size": size}) as w:
        w.append(frame=frames[:k], valid=valid[:k], dr_T3=dr3, dr_T5=(dr3 * 0.5).astype(np.float16))

    lv, la = v.copy(), a.copy()
    lv[list(unlabelled)] = np.nan
    la[list(unlabelled)] = np.nan
    table = pa.table({"frame": pa.array(frames, pa.int32()), "time_s": pa.array(frames / 25.0),
                      "valence": pa.array(lv, pa.float32()), "arousal": pa.array(la, pa.float32())})
    write_parquet(table, root / "labels" / f"{video}.parquet")


def write_dataset(root: Path, *, partitions=(("train", 4), ("devel", 2), ("test", 1)), n: int = 40, size: int = 32) -> list[str]:
    """Videos ``{partition}_{i}`` with stores and labels, plus ``manifest.parquet``; returns the ids."""
    rows = []
    k = 0
    for part, count in partitions:
        for i in range(count):
            vid = f"{part}_{i}"
            write_video(root, vid, n=n, size=size, phase=0.7 * k, seed=k)
            rows.append({"video": vid, "path": f"/nonexistent/{vid}.mp4", "partition": part, "fps": 25.0, "n_frames": n})
            k += 1
    write_parquet(pa.Table.from_pylist(rows), root / "manifest.parquet")
    return [r["video"] for r in rows]
