"""The dynamic store ``results/{ds}/dynamic/{video}.h5``: its layout, and the rows of a block of windows.

One row per window (layout: :func:`dynamic_specs`):

* ``frame`` (window's last frame), ``valid`` (False: the window had a frame without a face; its
  images are zeros, nothing is invented);
* ``dfa``, ``dfs``, ``dfm`` (n, S, S, 3) -- per ``storage``: uint8 with per-row ``<name>_scale`` /
  ``<name>_offset`` (value = q * scale + offset; 0 is exact: the zero-exact grid of
  :func:`affpipe.io.encoding.quantize_uint8`) or float16;
* ``mask_a``, ``mask_s`` (n, S, S, 1) uint8 0/1 (see :mod:`affpipe.dynamic.masks` for which pixels);
* ``ranked_share`` and ``kkt_residual`` (n, 2) float32, columns (dfa, dfs): the share of the
  window's T(T-1)/2 pairs the image ranks correctly, and the RankSVM's KKT residual, measured against
  the problem as solved: the window's Gram matrix of float32 dot products (the band of
  :mod:`affpipe.dynamic.windows`), not the float64 one (against which it is up to ~1e-7, see
  docs/dynamic.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DYNAMIC_STAGE = "dynamic"
#: dynamic image -> static stream it is computed from
SOURCE = {"dfa": "sfa", "dfs": "sfs"}
DIAG_COLUMNS = ("dfa", "dfs")

STORAGE_NOTE = {
    "uint8": "real-valued image stored as uint8 q with value = q * <name>_scale + <name>_offset per row; "
    "0 is exactly representable and |error| <= scale/2",
    "float16": "real-valued image stored as float16",
}
MASK_NOTE = {
    "mask_s": "1 where the SFS window is dynamic: sum over the window of |last SFS - SFS_i| exceeds "
    "mask_tolerance in some channel (moving region boundaries)",
    "mask_a": "1 where the SFA window is dynamic and mask_s is 0 (overlap removed from the appearance mask)",
}


def dynamic_specs(size: int, *, keep, storage: str) -> list:
    """Datasets of a dynamic store, in creation order (the order ``affpipe show`` draws them).

    Parameters
    ----------
    size : int
        Side S of the static images.
    keep : collection of {"dfa", "dfs", "masks", "dfm"}
    storage : {"uint8", "float16"}
    """
    from affpipe.io.h5store import DatasetSpec

    specs = [
        DatasetSpec("frame", (), "int32", "video frame the row belongs to: the last frame of its window"),
        DatasetSpec("valid", (), "bool", "True where all required frames of the window had a face; False rows hold zeros"),
    ]
    what = {
        "dfa": "dynamic facial appearance: exact RankSVM (Eq. 3) dynamic image of the window's SFA images",
        "dfs": "dynamic facial shape: exact RankSVM (Eq. 3) dynamic image of the window's SFS images",
        "dfm": "dynamic facial model: mask_s * DFS + mask_a * DFA",
    }

    def image(name: str) -> list:
        attrs: dict[str, Any] = {"channel_order": "RGB", "encoding": STORAGE_NOTE[storage]}
        out = []
        if storage == "uint8":
            attrs.update(scale_dataset=f"{name}_scale", offset_dataset=f"{name}_offset")
            out.append(DatasetSpec(name, (size, size, 3), "uint8", what[name], image=True, attrs=attrs))
            out.append(DatasetSpec(f"{name}_scale", (), "float32", f"per-row scale of {name} (NaN where invalid)"))
            out.append(DatasetSpec(f"{name}_offset", (), "float32", f"per-row offset of {name} (NaN where invalid)"))
        else:
            out.append(DatasetSpec(name, (size, size, 3), "float16", what[name], image=True, attrs=attrs))
        return out

    for name in ("dfa", "dfs"):
        if name in keep:
            specs += image(name)
    if "masks" in keep:
        for name in ("mask_a", "mask_s"):
            specs.append(DatasetSpec(name, (size, size, 1), "uint8", MASK_NOTE[name], image=True, attrs={"value_range": [0, 1]}))
    if "dfm" in keep:
        specs += image("dfm")
    cols = {"columns": list(DIAG_COLUMNS)}
    specs.append(DatasetSpec("ranked_share", (2,), "float32",
                             "share of the window's T(T-1)/2 frame pairs (t<q) with <d, V_q - V_t> > 0, for (dfa, dfs); "
                             "NaN where not computed", attrs=cols))
    specs.append(DatasetSpec("kkt_residual", (2,), "float32",
                             "KKT residual of the exact RankSVM solution in margin units, for (dfa, dfs), measured against "
                             "the problem as solved (Gram matrix of float32 dot products of the frame differences; "
                             "against the float64 Gram matrix the residual is larger, up to ~1e-7); NaN for the "
                             "approximate solver or where not computed", attrs=cols))
    return specs


def encode_image(images, valid, *, storage: str) -> dict[str, np.ndarray]:
    """The datasets of one real-valued image (DFA, DFS or DFM) for a batch of windows.

    Parameters
    ----------
    images : (k, S, S, 3) float
    valid : (k,) bool
    storage : {"uint8", "float16"}, keyword-only

    Returns
    -------
    dict
        ``{"": q, "_scale": scale, "_offset": offset}`` for uint8 (zero-exact grid; invalid rows
        0 / NaN / NaN), or ``{"": float16 images}``; the keys are suffixes of the image's name.
    """
    from affpipe.io.encoding import quantize_uint8

    if storage != "uint8":
        return {"": images.astype(np.float16)}
    q, scale, offset = quantize_uint8(images)
    q[~valid] = 0
    scale[~valid] = np.nan
    offset[~valid] = np.nan
    return {"": q, "_scale": scale, "_offset": offset}


def encode_block(block, *, keep, storage: str) -> dict[str, np.ndarray]:
    """Rows of one :class:`affpipe.dynamic.windows.WindowBlock`, for :meth:`StoreWriter.append`."""
    from affpipe.dynamic import masks

    k = len(block.ends)
    valid = block.valid
    out: dict[str, Any] = {"frame": block.ends.astype(np.int32), "valid": valid}
    images = {n: block.images[SOURCE[n]] for n in ("dfa", "dfs") if SOURCE[n] in block.images}
    if "masks" in keep or "dfm" in keep:
        mask_s, mask_a = masks.fusion_masks(block.dynamic["sfs"], block.dynamic["sfa"])
        if "masks" in keep:
            out["mask_s"] = mask_s[..., None].astype(np.uint8)
            out["mask_a"] = mask_a[..., None].astype(np.uint8)
        if "dfm" in keep:
            images["dfm"] = masks.fuse_dfm(images["dfs"], images["dfa"], mask_s, mask_a)
    for name, img in images.items():
        if name not in keep:
            continue
        for suffix, arr in encode_image(img, valid, storage=storage).items():
            out[name + suffix] = arr
    for diag, key in (("ranked_share", "ranked_share"), ("kkt_residual", "kkt_residual")):
        cols = []
        for name in DIAG_COLUMNS:
            stats = block.stats.get(SOURCE[name], {})
            cols.append(stats.get(key, np.full(k, np.nan)))
        out[diag] = np.stack(cols, axis=1).astype(np.float32)
    return out
