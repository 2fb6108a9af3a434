"""DR inference for every valid frame of a video, the DR store, and the 9-channel MDR input.

``results/{ds}/dr/videos/{video}.h5`` (stage ``dr``) has one row per row of the video's static store, in
the same order (same ``frame`` and ``valid``), so the MDR of row i is the static ``sfa[i]`` next to
``dr_T3[i]``, ``dr_T5[i]``:

* ``frame`` (int32), ``valid`` (bool; False rows -- no face -- hold zeros, their scale/offset NaN);
* ``dr_T{T}`` (n, S, S, 3) per configured level T: the UNet output for the row's SFA, values in
  [-1, 1]. ``storage: uint8`` stores per-row min-max quantised values with ``dr_T{T}_scale`` /
  ``dr_T{T}_offset`` (value = q * scale + offset, error <= scale/2 <= 1/255; the h5store
  convention, decoded by :meth:`affpipe.io.h5store.StoreReader.read_image`); ``float16`` the raw
  values. The datasets carry ``display="signed"`` so ``affpipe show`` maps 0 to mid-grey.
* file attributes: ``levels``, ``models`` (path, T, θ, training dataset and videos of each model),
  ``mdr_channels`` (the channel order of :func:`mdr_stack`), ``pixel_scale``.

The MDR (DR paper §3.3) is [image, DR_T3, DR_T5]: :func:`mdr_stack` concatenates the SFA (scaled
to [0, 1]) and the DRs (in [-1, 1]) into (n, S, S, 3 + 3L) float32; :func:`read_mdr` reads it for
some rows of a static/DR store pair.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from affpipe.dr import PIXEL_SCALE
from affpipe.errors import AffpipeError

log = logging.getLogger(__name__)

DR_STAGE = "dr"
STORAGES = ("uint8", "float16")
#: static rows read per batch
READ_ROWS = 64


def dr_name(T: int) -> str:
    """Dataset name of the DR of level T (``dr_T3``)."""
    return f"dr_T{T}"


def dr_specs(size: int, levels: Sequence[int], *, storage: str) -> list:
    """Datasets of a DR store (:mod:`affpipe.io.h5store` conventions)."""
    from affpipe.io.h5store import DatasetSpec

    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    specs = [
        DatasetSpec("frame", (), "int32", "video frame of the row (same rows as the static store)"),
        DatasetSpec("valid", (), "bool", "True where the static row has a face; False rows hold zeros (no DR)"),
    ]
    for T in levels:
        name = dr_name(T)
        what = (f"dynamic representation for a window of 2T+1 = {2 * T + 1} frames inferred by the UNet from the "
                f"row's SFA alone (tanh output, values in [-1, 1]; scores <d, SFA/255> rank the window's frames)")
        attrs: dict[str, Any] = {"channel_order": "DR channels (aligned with the SFA's R, G, B)", "value_range": [-1, 1],
                                 "display": "signed", "T": int(T)}
        if storage == "uint8":
            attrs.update(scale_dataset=f"{name}_scale", offset_dataset=f"{name}_offset",
                         encoding="value = q * scale + offset per row (min-max), |error| <= scale/2")
            specs.append(DatasetSpec(name, (size, size, 3), "uint8", what, image=True, attrs=attrs))
            specs.append(DatasetSpec(f"{name}_scale", (), "float32", f"per-row scale of {name} (NaN where invalid)"))
            specs.append(DatasetSpec(f"{name}_offset", (), "float32", f"per-row offset of {name} (NaN where invalid)"))
        else:
            attrs["encoding"] = "float16 values"
            specs.append(DatasetSpec(name, (size, size, 3), "float16", what, image=True, attrs=attrs))
    return specs


def encode(images: np.ndarray, valid: np.ndarray, *, storage: str) -> dict[str, np.ndarray]:
    """Storage encoding of a batch of DRs of one level.

    Parameters
    ----------
    images : (k, S, S, 3) float
        DR values (anything for invalid rows).
    valid : (k,) bool

    Returns
    -------
    dict
        ``{"": q, "_scale": scale, "_offset": offset}`` for uint8 (invalid rows: 0 / NaN / NaN), or
        ``{"": float16 images}`` (invalid rows 0).
    """
    from affpipe.io.encoding import quantize_uint8

    x = np.where(valid[:, None, None, None], np.asarray(images, dtype=np.float32), 0.0)
    if storage == "float16":
        return {"": x.astype(np.float16)}
    q, scale, offset = quantize_uint8(x, exact_zero=False)  # min-max: the DR stores' documented encoding
    q[~valid] = 0
    scale[~valid] = np.nan
    offset[~valid] = np.nan
    return {"": q, "_scale": scale, "_offset": offset}


def infer_store(models: Sequence[tuple[Any, dict]], static_path: str | os.PathLike, out: str | os.PathLike, *,
                settings: dict[str, Any], device, batch_size: int) -> dict[str, Any]:
    """Write the DR store of one video.

    Parameters
    ----------
    models : sequence of (UNet, metadata)
        From :func:`affpipe.dr.runtime.load_model`, one per level (distinct T).
    static_path : path
        The video's static store.
    out : path
        DR store to write (atomically).
    settings : dict, keyword-only
        Validated ``dr`` settings (storage, compression).
    device : torch.device, keyword-only
    batch_size : int, keyword-only

    Returns
    -------
    dict
        Summary: rows, valid rows, per-level mean |DR|.
    """
    import torch

    from affpipe.io.h5store import StoreWriter, open_static
    from affpipe.progress import progress

    levels = [int(meta["T"]) for _, meta in models]
    if len(set(levels)) != len(levels):
        raise AffpipeError(f"two DR models have the same T ({levels})")
    storage = settings["storage"]
    with open_static(static_path) as reader:
        size = int(reader.h5.attrs["size"])
        for _, meta in models:
            if int(meta["size"]) != size:
                raise AffpipeError(
                    f"DR model {meta['path']} was trained on {meta['size']}x{meta['size']} faces, this static store "
                    f"has {size}x{size}", path=static_path, hint="use static stores of the same size as the training dataset",
                )
        frames, valid = reader.frames, reader.valid
        n = frames.size
        attrs = {
            "size": size,
            "levels": levels,
            "models": [{"path": meta["path"], "T": int(meta["T"]), "theta": float(meta["theta"]),
                        "train_videos": meta.get("train_videos", []), "epochs": int(meta.get("epochs_completed", 0)),
                        "created": meta.get("created", "")} for _, meta in models],
            "mdr_channels": mdr_channel_names(levels),
            "pixel_scale": PIXEL_SCALE,
            "pixel_note": "the UNet sees SFA uint8/255; DRs are in [-1, 1]",
            "storage": storage,
        }
        specs = dr_specs(size, levels, storage=storage)
        inputs = [static_path] + [meta["path"] for _, meta in models]
        abs_sum = {T: 0.0 for T in levels}
        with StoreWriter(out, specs, stage=DR_STAGE, settings=settings, inputs=inputs, attrs=attrs,
                         compression=settings["compression"], compression_level=settings["compression_level"]) as writer, \
                progress(total=n, desc=f"dr-infer {Path(static_path).stem}", unit="frame") as bar, torch.no_grad():
            for a in range(0, n, READ_ROWS):
                b = min(a + READ_ROWS, n)
                ok = valid[a:b]
                sfa = reader["sfa"][a:b]
                batch: dict[str, np.ndarray] = {"frame": frames[a:b].astype(np.int32), "valid": ok}
                idx = np.flatnonzero(ok)
                for model, meta in models:
                    T = int(meta["T"])
                    dr = np.zeros((b - a, size, size, 3), dtype=np.float32)
                    for c in range(0, idx.size, batch_size):
                        sel = idx[c:c + batch_size]
                        x = torch.from_numpy(sfa[sel]).to(device).permute(0, 3, 1, 2).float().mul_(PIXEL_SCALE)
                        dr[sel] = model(x).float().permute(0, 2, 3, 1).cpu().numpy()
                    abs_sum[T] += float(np.abs(dr[idx]).sum())
                    for suffix, arr in encode(dr, ok, storage=storage).items():
                        batch[dr_name(T) + suffix] = arr
                writer.append(**batch)
                bar.update(b - a)
    n_valid = int(valid.sum())
    denom = max(n_valid, 1) * size * size * 3
    return {"rows": int(n), "valid": n_valid, "mean_abs": {T: abs_sum[T] / denom for T in levels}}


def mdr_channel_names(levels: Sequence[int]) -> list[str]:
    """Channel names of the MDR input: ``image_R, image_G, image_B, dr_T3_0, ...``."""
    names = ["image_R", "image_G", "image_B"]
    for T in levels:
        names += [f"{dr_name(T)}_{c}" for c in range(3)]
    return names


def mdr_stack(image: np.ndarray, drs: Sequence[np.ndarray]) -> np.ndarray:
    """The MDR input [image, DR_T1, DR_T2, ...] of the DR paper (§3.3).

    Parameters
    ----------
    image : (n, S, S, 3) uint8
        SFA rows.
    drs : sequence of (n, S, S, 3) float
        Decoded DRs of the same rows, in level order.

    Returns
    -------
    (n, S, S, 3 + 3L) float32
        The image scaled to [0, 1] (uint8/255), then the DRs as stored ([-1, 1]). Channel names:
        :func:`mdr_channel_names`.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 SFA, got {img.dtype}")
    parts = [img.astype(np.float32) * np.float32(PIXEL_SCALE)]
    for d in drs:
        d = np.asarray(d, dtype=np.float32)
        if d.shape != img.shape:
            raise ValueError(f"DR shape {d.shape} differs from the image's {img.shape}")
        parts.append(d)
    return np.concatenate(parts, axis=-1)


def open_dr(path: str | os.PathLike):
    """Open a DR store (layout-checked against its own ``size``/``levels``/``storage`` attributes)."""
    from affpipe.io.h5store import StoreReader

    r = StoreReader(path, stage=DR_STAGE)
    try:
        size, levels, storage = int(r.h5.attrs["size"]), [int(t) for t in r.h5.attrs["levels"]], str(r.h5.attrs["storage"])
    except KeyError as exc:
        r.close()
        raise AffpipeError(f"DR store lacks the file attribute {exc}", path=path) from None
    r.close()
    return StoreReader(path, stage=DR_STAGE, expect=dr_specs(size, levels, storage=storage))


def read_dr(reader, T: int, rows: np.ndarray) -> np.ndarray:
    """Decoded DRs of level T for some rows of an open DR store: (k, S, S, 3) float32."""
    name = dr_name(T)
    if name not in reader:
        raise AffpipeError(f"DR store has no level T={T} (dataset {name!r})", path=reader.path)
    rows = np.asarray(rows, dtype=np.int64)
    q = reader[name][np.sort(rows)] if rows.size else reader[name][:0]
    order = np.argsort(np.argsort(rows))
    q = q[order]
    ds = reader[name]
    if "scale_dataset" in ds.attrs:
        scale = reader[ds.attrs["scale_dataset"]][:][rows].astype(np.float32)
        offset = reader[ds.attrs["offset_dataset"]][:][rows].astype(np.float32)
        return q.astype(np.float32) * scale[:, None, None, None] + offset[:, None, None, None]
    return q.astype(np.float32)


def read_mdr(static_path: str | os.PathLike, dr_path: str | os.PathLike, rows: np.ndarray | None = None,
             *, levels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MDR inputs of some rows of a video.

    Parameters
    ----------
    static_path, dr_path : path
        The video's static store and DR store (same rows).
    rows : (k,) int, optional
        Rows to read (unique); default every valid row.
    levels : sequence of int, optional
        Levels in channel order; default the DR store's ``levels``.

    Returns
    -------
    mdr : (k, S, S, 3 + 3L) float32
        :func:`mdr_stack` of the rows.
    frame : (k,) int32
    valid : (k,) bool

    Raises
    ------
    AffpipeError
        When the two stores do not have the same frames.
    """
    from affpipe.io.h5store import open_static

    with open_static(static_path) as s, open_dr(dr_path) as d:
        if not np.array_equal(s.frames, d.frames):
            raise AffpipeError(f"DR store rows do not match the static store {static_path}", path=dr_path,
                               hint="re-run dr-infer on the current static store")
        levels = [int(t) for t in d.h5.attrs["levels"]] if levels is None else list(levels)
        rows = np.flatnonzero(s.valid) if rows is None else np.asarray(rows, dtype=np.int64)
        srt = np.sort(rows)
        image = s["sfa"][srt][np.argsort(np.argsort(rows))] if rows.size else s["sfa"][:0]
        drs = [read_dr(d, T, rows) for T in levels]
        return mdr_stack(image, drs), s.frames[rows].astype(np.int32), s.valid[rows]
