"""Features and per-frame predictions of a trained CNN for one video -> ``features/{input}/{video}.h5``.

Output layout (:func:`feature_specs`), one row per row of the input's primary store (``dynamic`` for
``dfa``/``dfs``/``dfm`` and pairs of them, ``static`` for ``sfa``/``sfs``/``mdr``), in the same order:

* ``frame`` (n,) int32 -- the video frame of the row (for dynamic inputs the window's last frame);
* ``valid`` (n,) bool -- the row had a valid image in every branch's store (see
  :mod:`affpipe.cnn.data`); invalid rows are never fed to the network;
* ``features`` (n, D) float32 or float16 -- the concatenated branch features (VGG-16: fc6 after
  ReLU, 4096-D per branch; small: 256-D per branch), NaN on invalid rows;
* ``pred`` (n, 2) float32 -- the CNN's own (valence, arousal), NaN on invalid rows; absent for a
  ``cnn.mode: pretrained`` model (the given weights, untrained: no head output is meaningful);
* optionally (``cnn.store_taps``, default on) the multi-level taps of
  :meth:`affpipe.cnn.backbones.PerFrameRegressor.forward_taps`, in the dtype of ``features``, NaN on
  invalid rows: ``tap_low`` (n, D_low) -- the 2nd pooling layer, global-average-pooled (VGG-16: 128
  per branch; small: 32) and ``tap_high`` (n, D_high) -- the last pooling layer, global-average-pooled
  (VGG-16: 512 per branch; small: 128). The ``fc`` tap is ``features`` itself.

File attributes: the model's metadata (backbone, input, epoch, devel score, scaling) besides the
standard provenance. Stage name ``features``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from affpipe.cnn.data import FrameDataset, VideoStores, build_index, make_loader
from affpipe.cnn.inputs import InputSpec, parse_input
from affpipe.cnn.train import to_device
from affpipe.errors import AffpipeError

log = logging.getLogger(__name__)

FEATURES_STAGE = "features"
#: Rows per write (the feature dataset's chunk height; each chunk is then compressed once).
WRITE_ROWS = 1024
FLOAT16_MAX = float(np.finfo(np.float16).max)
#: Stored taps: dataset name -> tap name of :meth:`PerFrameRegressor.forward_taps` (``fc`` = ``features``).
TAP_DATASETS = {"tap_low": "low", "tap_high": "high"}


def has_head(meta: Mapping[str, Any]) -> bool:
    """False for a ``cnn.mode: pretrained`` model: its head is untrained and no ``pred`` is stored."""
    return meta.get("mode", "finetune") != "pretrained"


def feature_specs(dim: int, *, dtype: str = "float32", tap_dims: Mapping[str, int] | None = None,
                  pred: bool = True) -> list:
    """Datasets of a features store.

    Parameters
    ----------
    dim : int
        Width of ``features``.
    dtype : {"float32", "float16"}
        dtype of ``features`` (and of the taps).
    tap_dims : mapping, optional
        Tap widths by tap name (``low``, ``high``); given = the store holds ``tap_low``/``tap_high``.
    pred : bool
        The store holds ``pred`` (not for a ``cnn.mode: pretrained`` model).
    """
    from affpipe.io.h5store import DatasetSpec

    taps = []
    if tap_dims is not None:
        taps = [
            DatasetSpec("tap_low", (int(tap_dims["low"]),), dtype,
                        "multi-level tap `low`: the 2nd pooling layer's output, global-average-pooled per channel "
                        "(branches concatenated); NaN where invalid"),
            DatasetSpec("tap_high", (int(tap_dims["high"]),), dtype,
                        "multi-level tap `high`: the last pooling layer's output, global-average-pooled per channel "
                        "(branches concatenated); NaN where invalid"),
        ]
    return [
        DatasetSpec("frame", (), "int32", "video frame of the row (dynamic inputs: the last frame of its window)"),
        DatasetSpec("valid", (), "bool", "the row has a valid image in every branch; False rows hold NaN"),
        DatasetSpec("features", (dim,), dtype,
                    "per-frame CNN features: the branches' feature layers (VGG-16: fc6 after ReLU) concatenated; NaN where invalid"),
        *([DatasetSpec("pred", (2,), "float32", "the per-frame CNN's own (valence, arousal) prediction; NaN where invalid",
                       attrs={"columns": ["valence", "arousal"]})] if pred else []),
        *taps,
    ]


def spec_from_meta(meta: Mapping[str, Any]) -> InputSpec:
    """The model's input spec (checked against the channels it was trained with)."""
    spec = parse_input(meta["input"], mdr_levels=meta.get("mdr_levels", (3, 5)))
    if spec.branch_channels != list(meta["channels"]):
        raise AffpipeError(f"model input {meta['input']!r} has channels {meta['channels']}, this affpipe builds {spec.branch_channels}")
    return spec


def extract_video(model: torch.nn.Module, meta: Mapping[str, Any], stores: VideoStores, *, device: torch.device,
                  batch_size: int, amp: bool = False, workers: int = 0,
                  block_rows: int = WRITE_ROWS, taps: bool = False) -> tuple[int, Iterator[dict[str, np.ndarray]]]:
    """Features and predictions of every row of one video, as a stream of row blocks.

    Parameters
    ----------
    model : PerFrameRegressor
        On ``device``.
    meta : mapping
        The model's metadata (:func:`affpipe.cnn.train.load_model`).
    stores : VideoStores
        The video's store paths (labels unused).
    block_rows : int
        Rows per yielded block (memory is bounded by one block plus one batch).
    taps : bool
        Also compute the multi-level taps (blocks then carry ``tap_low`` and ``tap_high``).

    Returns
    -------
    n : int
        Number of rows.
    blocks : iterator of dict
        Consecutive row blocks, each with ``frame`` (k,) int32, ``valid`` (k,) bool, ``features``
        (k, D) float32 (NaN where invalid) and ``pred`` (k, 2) float32 (NaN where invalid); with
        ``taps`` also ``tap_low`` (k, D_low) and ``tap_high`` (k, D_high) float32 (NaN where invalid).

    Raises
    ------
    AffpipeError
        The stores do not match the model (image size) or cannot be read; non-finite outputs.
    """
    spec = spec_from_meta(meta)
    index = build_index([VideoStores(stores.video, stores.paths, None, stores.partition)], spec)
    n = len(index)
    where = next(iter(stores.paths.values()))
    if n and index.size != int(meta["size"]):
        raise AffpipeError(f"images are {index.size}x{index.size}, the model was trained on {meta['size']}x{meta['size']}",
                           path=where, hint="use the same static.size for training and extraction")
    return n, _blocks(model, meta, spec, index, device=device, batch_size=batch_size, amp=amp, workers=workers,
                      block_rows=block_rows, where=where, video=stores.video, taps=taps)


def _blocks(model, meta, spec: InputSpec, index, *, device, batch_size, amp, workers, block_rows, where, video,
            taps=False):
    from affpipe.progress import progress

    n = len(index)
    d = int(meta["num_features"])
    positions = index.positions()
    sc = meta["scaling"]
    input_size = int(meta["input_size"])
    model.eval()
    head = has_head(meta)
    widths = {"features": d, **({"pred": 2} if head else {})}
    if taps:
        widths.update({name: int(model.tap_dims[tap]) for name, tap in TAP_DATASETS.items()})

    def empty(a: int, b: int) -> dict[str, np.ndarray]:
        return {"frame": index.frame[a:b], "valid": index.valid[a:b],
                **{k: np.full((b - a, w), np.nan, dtype=np.float32) for k, w in widths.items()}}

    start = 0
    block = empty(0, min(block_rows, n))
    if positions.size:
        ds = FrameDataset(index, positions, spec, scaling=sc["dynamic_scaling"], input_mean=sc["input_mean"],
                          input_std=sc["input_std"])
        loader = make_loader(ds, range(len(ds)), batch_size=batch_size, workers=workers, pin_memory=device.type == "cuda")
        done = 0
        with torch.no_grad(), progress(total=len(ds), desc=f"features {video}", unit="frame") as bar:
            for branches, _ in loader:
                xs = to_device(branches, device, input_size, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                    if taps:
                        t = model.forward_taps(xs)
                        f = t["fc"]
                    else:
                        f = model.forward_features(xs)
                out = {"features": f}
                if head:
                    out["pred"] = model.forward_head(f)
                if taps:
                    out.update({name: t[tap] for name, tap in TAP_DATASETS.items()})
                out = {k: v.float().cpu().numpy() for k, v in out.items()}
                if not all(np.isfinite(v).all() for v in out.values()):
                    raise AffpipeError("the CNN produced non-finite features, taps or predictions", path=where)
                f = out["features"]
                rows = positions[done:done + len(f)]
                done += len(f)
                bar.update(len(f))
                k = 0
                while k < len(rows):
                    while rows[k] >= start + block_rows:  # rows past this block: flush it
                        yield block
                        start += block_rows
                        block = empty(start, min(start + block_rows, n))
                    m = k
                    while m < len(rows) and rows[m] < start + block_rows:
                        m += 1
                    for key, value in out.items():
                        block[key][rows[k:m] - start] = value[k:m]
                    k = m
        ds.close()
    while start < n:
        yield block
        start += block_rows
        if start < n:
            block = empty(start, min(start + block_rows, n))


def write_features(out: str | os.PathLike, blocks, *, dim: int, meta: Mapping[str, Any], settings: Mapping[str, Any],
                   inputs: list, dtype: str = "float32", video: str = "",
                   tap_dims: Mapping[str, int] | None = None) -> dict[str, int]:
    """Write the row blocks of :func:`extract_video` atomically as a features store; returns row counts.

    ``tap_dims`` (tap name -> width) given = the blocks carry the taps and they are stored too.
    """
    from affpipe.io.h5store import StoreWriter

    keys = ("backbone", "input", "num_features", "epoch", "size", "input_size", "channels", "scaling", "devel_score",
            "head_hidden", "selection", "mode", "weights", "weights_sha256")
    attrs = {f"model_{k}": meta.get(k) for k in keys if meta.get(k) is not None}
    attrs.update(video=video, feature_dtype=dtype,
                 row_note="one row per row of the input's primary store; frame = video frame; invalid rows are NaN")
    counts = {"rows": 0, "valid": 0}
    stored = ("features", *(TAP_DATASETS if tap_dims is not None else ()))
    pred = has_head(meta)
    with StoreWriter(out, feature_specs(dim, dtype=dtype, tap_dims=tap_dims, pred=pred), stage=FEATURES_STAGE, settings=settings,
                     inputs=inputs, attrs=attrs, compression="gzip", compression_level=1) as w:
        for block in blocks:
            if dtype == "float16":
                for key in stored:
                    big = float(np.nanmax(np.abs(block[key]))) if np.isfinite(block[key]).any() else 0.0
                    if big > FLOAT16_MAX:
                        raise AffpipeError(f"{key} reach {big:.3g}, beyond float16's range ({FLOAT16_MAX:g})",
                                           path=out, hint="set cnn.feature_dtype: float32")
            w.append(frame=block["frame"], valid=block["valid"], **({"pred": block["pred"]} if pred else {}),
                     **{key: block[key].astype(dtype) for key in stored})
            counts["rows"] += len(block["frame"])
            counts["valid"] += int(block["valid"].sum())
    return counts
