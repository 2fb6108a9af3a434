"""Small synthetic datasets in the real store formats, for the CNN tests (tests/test_cnn_*.py).

Each video has smooth valence/arousal traces; the images encode them so that a CNN can learn them:

* static ``sfa``: region A (left) has brightness 128 + 100 v, region B (right) 128 + 100 a;
* dynamic ``dfa``/``dfs``/``dfm`` (uint8 + per-row scale/offset on the zero-exact grid): a fixed
  reference patch of value 1 (so per-image max-abs scaling keeps the amplitude)
  plus 0.5 v in region A and 0.5 a in region B, plus a little noise;
* dr ``dr_T3``/``dr_T5`` (float16): like the DFM.

Rows follow the real stages: the static store has one row per frame (a few without a face), the
dynamic store one row per window from frame ``SPAN - 1`` on (windows touching a faceless frame are
invalid), the dr store one row per frame but misses the last frame.

The stores are written here with h5py directly, following the documented layout (the conventions in
the docstring of :mod:`affpipe.io.h5store`, the dynamic store of docs/dynamic.md, the zero-exact
uint8 grid described in :mod:`affpipe.io.encoding`), not through affpipe's ``StoreWriter``,
``dynamic_specs`` or ``quantize_uint8``: the readers under test read files of an independent
writer, so a bug in the package's writer or encoder cannot hide behind a matching bug in its reader.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa

from affpipe.io.atomic import write_parquet

SPAN = 5  # dynamic window span (frames)

#: the documented file attribute ``format`` of an affpipe store, and its version
STORE_FORMAT, STORE_FORMAT_VERSION = "affpipe-h5store", 1


def write_store(path: Path, stage: str, datasets: dict, *, attrs: dict | None = None) -> None:
    """Write one complete affpipe HDF5 store with h5py, as documented.

    ``datasets`` maps name -> ``(array, dataset attributes)`` in creation order; every array has the
    same first axis ``n``. Images (4-D) are chunked one row per chunk and tagged ``kind="image"``,
    the rest ``kind="array"``; each dataset gets a ``description``. File attributes: format,
    format_version, affpipe_version, stage, settings, inputs, created, command, n_rows, complete.
    Written to a temporary name, then renamed.
    """
    n = {len(a) for a, _ in datasets.values()}
    assert len(n) == 1, f"datasets of different lengths: {n}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with h5py.File(tmp, "w", track_order=True) as f:
        f.attrs.update({
            "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "affpipe_version": "test-fixture",
            "stage": stage, "settings": "{}", "inputs": "[]",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "tests/support/cnn_synth.py", "n_rows": n.pop(), "complete": True,
        })
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for name, (array, ds_attrs) in datasets.items():
            image = array.ndim == 4
            ds = f.create_dataset(name, data=array, chunks=(1, *array.shape[1:]) if image else None,
                                  maxshape=(None, *array.shape[1:]), compression="gzip")
            ds.attrs["description"] = f"cnn_synth fixture: {name}"
            ds.attrs["kind"] = "image" if image else "array"
            for key, value in ds_attrs.items():
                ds.attrs[key] = value
    os.replace(tmp, path)


def quantize_zero_exact(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 ``q`` and per-row float32 ``scale``, ``offset`` with ``value = q * scale + offset``: 254 steps
    over ``[min(lo, 0), max(hi, 0)]`` with 0 on a level (scale 1 for an all-zero row), as documented."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    lo = np.minimum(flat.min(axis=1), 0.0)
    hi = np.maximum(flat.max(axis=1), 0.0)
    scale = ((hi - lo) / 254).astype(np.float32)
    scale[scale == 0] = 1.0
    zero = np.rint(-lo / scale)
    x = images.reshape(len(images), -1).astype(np.float32)  # levels computed in float32
    q = np.clip(np.rint(x * (1 / scale[:, None]) + zero[:, None].astype(np.float32)), 0, 255).astype(np.uint8)
    offset = (-zero * scale).astype(np.float32)
    return q.reshape(images.shape), scale, offset


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
    rgb = {"channel_order": "RGB", "value_range": [0, 255]}
    write_store(root / "static" / f"{video}.h5", "static", {
        "frame": (frames, {}), "time_s": (frames / 25.0, {}), "valid": (valid, {}), "sfa": (sfa, rgb),
        "sfs": (sfs, rgb), "landmarks": (np.full((n, 68, 2), np.nan, np.float32), {}),
        "transform": (np.full((n, 2, 3), np.nan), {}),
    }, attrs={"size": size})

    def dyn(i: int, noise: float = 0.02) -> np.ndarray:
        img = np.zeros((size, size, 3), np.float32)
        img[ref] = 1.0
        img[ra] = 0.5 * v[i]
        img[rb] = 0.5 * a[i]
        return img + noise * rng.standard_normal(img.shape).astype(np.float32)

    ends = np.arange(SPAN - 1, n)
    wvalid = np.array([valid[e - SPAN + 1:e + 1].all() for e in ends])
    m = len(ends)
    # the documented order: frame, valid, dfa (+ scale, offset), dfs (...), mask_a, mask_s, dfm (...), diagnostics
    out = {"frame": (ends.astype(np.int32), {}), "valid": (wvalid, {})}

    def image(name: str) -> None:
        imgs = np.stack([dyn(e) if ok else np.zeros((size, size, 3), np.float32) for e, ok in zip(ends, wvalid)])
        q, sc, of = quantize_zero_exact(imgs)
        q[~wvalid] = 0  # an invalid row: zeros, NaN scale and offset
        sc[~wvalid] = np.nan
        of[~wvalid] = np.nan
        out[name] = (q, {"channel_order": "RGB", "scale_dataset": f"{name}_scale", "offset_dataset": f"{name}_offset",
                         "encoding": "uint8, value = q * scale + offset per row, zero-exact grid"})
        out[f"{name}_scale"], out[f"{name}_offset"] = (sc, {}), (of, {})

    image("dfa")
    image("dfs")
    out["mask_a"] = (np.ones((m, size, size, 1), np.uint8), {"value_range": [0, 1]})
    out["mask_s"] = (np.zeros((m, size, size, 1), np.uint8), {"value_range": [0, 1]})
    image("dfm")
    out["ranked_share"] = (np.ones((m, 2), np.float32), {"columns": json.dumps(["dfa", "dfs"])})
    out["kkt_residual"] = (np.zeros((m, 2), np.float32), {"columns": json.dumps(["dfa", "dfs"])})
    write_store(root / "dynamic" / f"{video}.h5", "dynamic", out, attrs={"size": size})

    k = n - 1  # the dr store misses the last frame
    dr3 = np.stack([dyn(i) if valid[i] else np.zeros((size, size, 3), np.float32) for i in range(k)]).astype(np.float16)
    write_store(root / "dr" / f"{video}.h5", "dr", {
        "frame": (frames[:k], {}), "valid": (valid[:k], {}), "dr_T3": (dr3, {}),
        "dr_T5": ((dr3 * 0.5).astype(np.float16), {}),
    }, attrs={"size": size})

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
