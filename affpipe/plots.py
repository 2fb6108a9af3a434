"""Report figures of the regression results (matplotlib, Agg backend; no file I/O except :func:`save`).

* :func:`trace_figure` -- one video: predicted vs true valence and arousal over time, every experiment
  in it; predictions on frames without a feature (filled) are drawn dotted.
* :func:`scatter_figure` -- one dimension and partition: predicted vs true, one panel per experiment,
  with the identity line and the concatenated CCC in the title.
* :func:`bar_figure` -- CCC of every experiment, per partition and dimension, both aggregations.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from affpipe.regress.models import OUTPUT_DIMENSIONS  # noqa: E402

TRUTH_COLOR = "black"
#: colour-blind-safe qualitative palette (Okabe-Ito), one colour per experiment
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DPI = 110
VALUE_LIMITS = (-1.05, 1.05)
SCATTER_SEED = 0


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def trace_figure(
    video: str,
    partition: str,
    time_s: np.ndarray,
    true: np.ndarray,
    preds: Sequence[tuple[str, np.ndarray, np.ndarray, Mapping[str, float | None]]],
):
    """Predicted vs true traces of one video.

    Parameters
    ----------
    time_s : (n,) float
        Frame times.
    true : (n, 2) float
        Labels (valence, arousal); NaN = unlabelled (gap in the black line).
    preds : list of (label, pred (n, 2), filled (n,) bool, ccc_by_dimension)
        One entry per experiment; ``ccc_by_dimension`` maps dimension -> this video's CCC (or None).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = plt.subplots(2, 1, figsize=(11, 5.6), sharex=True, constrained_layout=True)
    for d, (ax, name) in enumerate(zip(axes, OUTPUT_DIMENSIONS)):
        for i, (label, pred, filled, cccs) in enumerate(preds):
            real = np.where(filled, np.nan, pred[:, d])
            # dotted where filled, including the neighbours so the dotted pieces join the solid line
            edge = filled | np.r_[filled[1:], False] | np.r_[False, filled[:-1]]
            fill_part = np.where(edge, pred[:, d], np.nan)
            c = cccs.get(name)
            text = f"{label} (CCC {c:.2f} on this video)" if c is not None else f"{label}"
            ax.plot(time_s, real, color=color(i), lw=1.4, label=text, zorder=2 + i)
            ax.plot(time_s, fill_part, color=color(i), lw=1.2, ls=":", zorder=2 + i)
        if np.isfinite(true[:, d]).any():
            ax.plot(time_s, true[:, d], color=TRUTH_COLOR, lw=2.2, alpha=0.75, label="label", zorder=1)
        else:
            ax.text(0.5, 0.92, "no labels for this video", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_ylabel(name)
        ax.set_ylim(*VALUE_LIMITS)
        ax.axhline(0, color="0.8", lw=0.8, zorder=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, ncol=min(3, len(preds) + 1), framealpha=0.85)
    axes[-1].set_xlabel("time (s)")
    axes[0].set_title(f"{video} ({partition}): predicted vs true; dotted = no feature at that frame (filled)")
    return fig


def scatter_figure(
    dimension: str,
    partition: str,
    entries: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]],
    *,
    max_points: int,
):
    """Predicted vs true for one dimension and partition, one panel per experiment.

    Parameters
    ----------
    entries : list of (label, pred (n,), true (n,), ccc)
        Labelled frames only (finite ``true``); ``ccc`` is the concatenated CCC on all of them.
    max_points : int
        Points drawn per panel (a fixed-seed subsample when there are more).
    """
    k = max(1, len(entries))
    cols = min(k, 3)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 4.0 * rows), squeeze=False, constrained_layout=True)
    rng = np.random.default_rng(SCATTER_SEED)
    for i, ax in enumerate(axes.flat):
        if i >= len(entries):
            ax.axis("off")
            continue
        label, pred, true, c = entries[i]
        n = pred.shape[0]
        idx = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
        ax.scatter(true[idx], pred[idx], s=3, alpha=0.25, color=color(i), edgecolors="none", rasterized=True)
        ax.plot(VALUE_LIMITS, VALUE_LIMITS, color="0.3", lw=0.8, ls="--")
        ax.set_xlim(*VALUE_LIMITS)
        ax.set_ylim(*VALUE_LIMITS)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ctext = f"CCC {c:.3f}" if c is not None else "CCC undefined"
        sub = f", {idx.size} of {n} shown" if idx.size < n else f", n={n}"
        ax.set_title(f"{label}\n{ctext}{sub}", fontsize=9)
        ax.set_xlabel(f"true {dimension}")
        ax.set_ylabel(f"predicted {dimension}")
    fig.suptitle(f"{dimension}, {partition} partition (all frames with a label)")
    return fig


def bar_figure(report: Mapping[str, Any]):
    """CCC per experiment, partition and dimension, both aggregations (from a ``ccc.json`` dict)."""
    exps = list(report["experiments"])
    parts = [p for p in report["evaluate_settings"]["partitions"]
             if any(report["experiments"][e]["partitions"][p]["scored"] for e in exps)]
    aggs = ("concatenated", "per_video_mean")
    cols = max(1, len(parts))
    fig, axes = plt.subplots(len(aggs), cols, figsize=(max(5.5, 1.4 * len(exps) + 2.5) * cols, 7.5),
                             squeeze=False, constrained_layout=True)
    width = 0.8 / len(OUTPUT_DIMENSIONS)
    x = np.arange(len(exps))
    lowest = 0.0
    for e in exps:
        for part in parts:
            for entry in report["experiments"][e]["partitions"][part]["dimensions"].values():
                for agg in aggs:
                    v = entry.get(agg, {}).get("ccc") if entry.get("scored") else None
                    if v is not None:
                        lowest = min(lowest, v)
    for r, agg in enumerate(aggs):
        for c in range(cols):
            ax = axes[r, c]
            if not parts:
                ax.text(0.5, 0.5, "no labelled partition", ha="center", transform=ax.transAxes)
                ax.axis("off")
                continue
            part = parts[c]
            for d, dim in enumerate(OUTPUT_DIMENSIONS):
                vals = []
                for e in exps:
                    entry = report["experiments"][e]["partitions"][part]["dimensions"][dim]
                    v = entry.get(agg, {}).get("ccc") if entry.get("scored") else None
                    vals.append(np.nan if v is None else v)
                pos = x + (d - (len(OUTPUT_DIMENSIONS) - 1) / 2) * width
                bars = ax.bar(pos, vals, width, label=dim, color=PALETTE[d])
                for b, v in zip(bars, vals):
                    if np.isfinite(v):
                        ax.text(b.get_x() + b.get_width() / 2, max(v, 0) + 0.02, f"{v:.2f}",
                                ha="center", va="bottom", fontsize=8)
            ax.set_xticks(x, [report["experiments"][e]["label"] for e in exps], rotation=20, ha="right", fontsize=9)
            ax.set_ylim(lowest - 0.08, 1.1)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.grid(axis="y", alpha=0.3)
            ax.set_ylabel("CCC")
            ax.set_title(f"{part}: {agg.replace('_', ' ')}", fontsize=10)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside upper right", ncol=len(names), fontsize=9)
    fig.suptitle(f"CCC per experiment ({report.get('dataset') or 'dataset'})", x=0.3)
    return fig


def save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG atomically and close it."""
    from affpipe.io.atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
