"""Report figures of the regression results (matplotlib, Agg backend; no file I/O except :func:`save`).

* :func:`trace_figure` -- one video: predicted vs true valence and arousal over time, one small panel
  per experiment and dimension (shared axes, the label in every panel, the video's CCC in the title);
  predictions on frames without a feature (filled) are drawn dotted.
* :func:`scatter_figure` -- one dimension and partition: predicted vs true, one panel per experiment,
  with the identity line and the concatenated CCC in the title.
* :func:`bar_figure` -- CCC of every experiment, per partition and dimension, both aggregations.
* :func:`ranking_figure` -- DR ranking accuracy per T against the RankSVM bound, the similarity
  baseline and chance (from a ``ranking.json`` dict).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.lines  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from affpipe.regress.registry import OUTPUT_DIMENSIONS  # noqa: E402

TRUTH_COLOR = "black"
#: colour-blind-safe qualitative palette (Okabe-Ito), one colour per experiment
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DPI = 110
VALUE_LIMITS = (-1.05, 1.05)
SCATTER_SEED = 0
#: (width, height) in inches of one trace panel (one experiment, one dimension)
TRACE_PANEL_SIZE = (5.2, 1.45)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def trace_figure(
    video: str,
    partition: str,
    time_s: np.ndarray,
    true: np.ndarray,
    preds: Sequence[tuple[str, np.ndarray, np.ndarray, Mapping[str, float | None]]],
):
    """Predicted vs true traces of one video: one small panel per experiment and dimension.

    A grid with one row per experiment and one column per dimension (valence, arousal), shared x and
    y axes; every panel draws the label (black) and that experiment's prediction, so each line can be
    read; the panel title gives the experiment and its CCC on this video.

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
    rows = max(1, len(preds))
    cols = len(OUTPUT_DIMENSIONS)
    fig, axes = plt.subplots(rows, cols, figsize=(TRACE_PANEL_SIZE[0] * cols, TRACE_PANEL_SIZE[1] * rows + 0.9),
                             sharex=True, sharey=True, squeeze=False, constrained_layout=True)
    labelled = [np.isfinite(true[:, d]).any() for d in range(cols)]
    for i in range(rows):
        for d, name in enumerate(OUTPUT_DIMENSIONS):
            ax = axes[i, d]
            ax.axhline(0, color="0.85", lw=0.8, zorder=0)
            ax.grid(alpha=0.3)
            if labelled[d]:
                ax.plot(time_s, true[:, d], color=TRUTH_COLOR, lw=1.6, alpha=0.8, label="label", zorder=1)
            if i >= len(preds):
                continue
            label, pred, filled, cccs = preds[i]
            real = np.where(filled, np.nan, pred[:, d])
            # dotted where filled, including the neighbours so the dotted pieces join the solid line
            edge = filled | np.r_[filled[1:], False] | np.r_[False, filled[:-1]]
            fill_part = np.where(edge, pred[:, d], np.nan)
            ax.plot(time_s, real, color=color(i), lw=1.4, label="prediction", zorder=2)
            ax.plot(time_s, fill_part, color=color(i), lw=1.2, ls=":", zorder=2)
            c = cccs.get(name)
            ctext = f"CCC {c:.2f}" if c is not None else ("no labels" if not labelled[d] else "CCC undefined")
            ax.set_title(f"{label}: {name}, {ctext}", fontsize=9, loc="left")
            if d == 0:
                ax.set_ylabel("value", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].set_ylim(*VALUE_LIMITS)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    handles = [matplotlib.lines.Line2D([], [], color=TRUTH_COLOR, lw=1.6, label="label")] if any(labelled) else []
    handles += [matplotlib.lines.Line2D([], [], color="0.4", lw=1.4, label="prediction"),
                matplotlib.lines.Line2D([], [], color="0.4", lw=1.2, ls=":", label="prediction, no feature (filled)")]
    fig.legend(handles=handles, loc="outside upper right", ncol=3, fontsize=8, frameon=False)
    title = "predicted vs true, CCC on this video" if any(labelled) else "predictions (no labels: not scored)"
    fig.suptitle(f"{video} ({partition}): {title}", x=0.02, ha="left", fontsize=11)
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


RANKING_SERIES = (
    ("dr", "DR (learnt)", PALETTE[0]),
    ("ranksvm_upper_bound", "RankSVM upper bound", PALETTE[2]),
    ("similarity_baseline", "similarity baseline", PALETTE[1]),
)


def ranking_figure(ranking: Mapping[str, Any]):
    """DR ranking accuracy per level T: DR vs the RankSVM upper bound vs the similarity baseline vs chance.

    ``ranking`` is a ``ranking.json`` dict (``affpipe dr-rank``); each bar is labelled with its value
    and the bars' windows/pairs are in the x tick label.
    """
    levels = list(ranking.get("levels", {}).items())
    fig, ax = plt.subplots(figsize=(max(5.5, 2.6 * len(levels) + 1.5), 4.2), constrained_layout=True)
    width = 0.8 / len(RANKING_SERIES)
    chance = None
    ticks = []
    for j, (name, lev) in enumerate(levels):
        for s, (key, label, col) in enumerate(RANKING_SERIES):
            v = (lev.get(key) or {}).get("accuracy")
            pos = j + (s - (len(RANKING_SERIES) - 1) / 2) * width
            if v is None:
                ax.text(pos, 0.02, "n/a", ha="center", fontsize=8, rotation=90)
                continue
            ax.bar(pos, v, width, color=col, label=label if j == 0 else None)
            ax.text(pos, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=8, zorder=4,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.85})
        chance = lev.get("chance", chance)
        dr = lev.get("dr") or {}
        ticks.append(f"T={lev.get('T', name)}\n{dr.get('windows', '?')} windows, {dr.get('pairs', '?')} pairs")
    if chance is not None:
        ax.axhline(chance, color="0.3", ls="--", lw=1, label=f"chance ({chance:g})")
    ax.set_xticks(np.arange(len(levels)), ticks, fontsize=9)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("ranking accuracy (same-side pairs)")
    ax.grid(axis="y", alpha=0.3)
    n_videos = len(ranking.get("videos", []))
    ax.set_title(f"Dynamic representations: ranking accuracy on {n_videos} unseen video(s)", fontsize=10)
    if levels:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "ranking.json has no level", ha="center", transform=ax.transAxes)
    return fig


def save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG atomically and close it."""
    from affpipe.io.atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
