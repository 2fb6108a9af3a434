"""``affpipe show FILE.h5 [FILE.h5 ...] --frame N -o out.png``: a labelled montage of one video frame.

Every image dataset (attribute ``kind="image"``) of every given store is drawn for the row whose
``frame`` equals N, in file order then creation order: a static file gives SFA | SFS, a dynamic
file DFA | DFS | mask_a | mask_s | DFM, so ``show static.h5 dynamic.h5 --frame N`` puts them all in
one row.

Display mapping (named in each panel's title):

* uint8 RGB images (``value_range`` [0, 255] or none given) are drawn as stored;
* everything else (float16/float32 dynamic images, uint8 stored with ``scale``/``offset``, binary
  masks, bool) is min-max scaled per image to the full grey/colour range, the title giving the
  original [min, max]; a constant image is drawn black with its value named.

When a file has no row for N (e.g. before the first full window of a dynamic file) or the row is
invalid (face lost), that file's panels say so instead of showing an image, and a warning is
logged.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PANEL_INCHES = 2.4  # size of one image panel
MAX_COLUMNS = 8  # panels per montage row before wrapping
DPI = 110
LANDMARK_DOT = 4  # marker size for --landmarks


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show",
        help="render a montage of every image stored for one video frame (SFA|SFS|DFA|DFS|masks|DFM)",
        description="Render a labelled montage of the images stored for video frame N in one or more "
        "affpipe .h5 stores. Real-valued images are min-max scaled for display.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE.h5", help="affpipe HDF5 store(s) of the same video")
    p.add_argument("--frame", "-f", type=_frame_arg, required=True, metavar="N|auto",
                   help="video frame index (0-based decode order), or `auto`: the middle one of the frames that "
                   "are valid in every given file (the report rule uses this)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output image (.png, .jpg, .pdf, .svg)")
    p.add_argument("--landmarks", action="store_true", help="overlay the aligned landmarks on static images")
    p.set_defaults(func=handler)


def _frame_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame number or 'auto', got {text!r}") from None


def auto_frame(paths: list[Path]) -> int:
    """The middle frame among those valid in every store (else among those valid in any, else 0)."""
    from affpipe.io.h5store import StoreReader

    common: set[int] | None = None
    union: set[int] = set()
    for path in paths:
        with StoreReader(path) as r:
            ok = set(int(f) for f in r.frames[r.valid])
        common = ok if common is None else common & ok
        union |= ok
    pool = sorted(common) if common else sorted(union)
    return pool[len(pool) // 2] if pool else 0


@dataclass
class Panel:
    """One cell of the montage: an image (or None) with its title lines."""

    title: str
    subtitle: str
    image: np.ndarray | None = None  # (H, W, 3) float in [0, 1] or (H, W) float
    message: str = ""
    points: np.ndarray | None = None
    shape: tuple[int, int] = (1, 1)  # (H, W) of the stored images, so message panels match in size


def display_image(img: np.ndarray, *, value_range=None, quantized: bool = False, signed: bool = False) -> tuple[np.ndarray, str]:
    """Map a stored image to a displayable float image in [0, 1].

    Parameters
    ----------
    img : (H, W, C) array
        C in {1, 3}; any dtype.
    value_range : sequence of 2 numbers, optional
        The dataset's ``value_range`` attribute.
    quantized : bool
        True if ``img`` was decoded from uint8 + scale/offset (real-valued).
    signed : bool
        Real values whose sign matters (dataset attribute ``display="signed"``, e.g. DRs): mapped
        symmetrically, ``[-m, m] -> [0, 1]`` with ``m = max |value|``, so 0 is mid-grey.

    Returns
    -------
    image : (H, W, 3) or (H, W) float64 in [0, 1]
    note : str
        How it was mapped ("as stored" or "min-max [lo, hi]").
    """
    x = np.asarray(img)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    raw_ok = (
        x.dtype == np.uint8
        and not quantized
        and (value_range is None or [int(v) for v in np.asarray(value_range).ravel()] == [0, 255])
        and x.ndim == 3
        and int(x.max(initial=0)) > 1
    )
    if raw_ok:
        return x.astype(np.float64) / 255.0, "as stored"
    xf = x.astype(np.float64)
    finite = np.isfinite(xf)
    if not finite.any():
        return np.zeros(xf.shape), "no finite value"
    if signed:
        m = float(np.abs(xf[finite]).max())
        if m == 0:
            return np.full(xf.shape, 0.5), "constant 0 (grey)"
        return np.where(finite, 0.5 + 0.5 * xf / m, 0.5), f"signed ±{m:.3g} (0 = grey)"
    lo, hi = float(xf[finite].min()), float(xf[finite].max())
    if hi == lo:
        return np.zeros(xf.shape), f"constant {lo:.4g}"
    out = np.where(finite, (xf - lo) / (hi - lo), 0.0)
    return out, f"min-max [{lo:.3g}, {hi:.3g}]"


def collect_panels(path: Path, frame: int, *, landmarks: bool = False) -> tuple[list[Panel], str | None]:
    """Panels of one store for video frame ``frame``; also a warning text when there is no image."""
    from affpipe.io.h5store import StoreReader

    with StoreReader(path) as r:
        names = r.image_names()
        stem = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
        if not names:
            return [Panel(title="(no images)", subtitle=stem, message="this store has no image datasets")], None
        row = r.row_of_frame(frame)
        reason = None
        if row is None:
            frames = r.frames
            if frames.size == 0:
                reason = "the file has no rows"
            elif frame < frames.min():
                reason = f"no row for frame {frame}:\nbefore the first row (frame {int(frames.min())}),\ne.g. before the first full window"
            elif frame > frames.max():
                reason = f"no row for frame {frame}:\nafter the last row (frame {int(frames.max())})"
            else:
                reason = f"no row for frame {frame}\n(frame not stored)"
        elif not r.valid[row]:
            reason = f"frame {frame} is invalid\n(valid=False: no face or\nincomplete window): no image"
        panels = []
        pts = None
        if landmarks and row is not None and "landmarks" in r and r.valid[row]:
            pts = np.asarray(r["landmarks"][row], dtype=np.float64)
        for name in names:
            ds = r[name]
            if reason is not None:
                panels.append(Panel(title=name, subtitle=stem, message=reason, shape=tuple(ds.shape[1:3])))
                continue
            quantized = "scale_dataset" in ds.attrs or "offset_dataset" in ds.attrs
            img, note = display_image(r.read_image(name, row), value_range=ds.attrs.get("value_range"), quantized=quantized,
                                      signed=ds.attrs.get("display") == "signed")
            if ds.attrs.get("channel_order") == "BGR" and img.ndim == 3:
                img = img[..., ::-1]
            panels.append(Panel(title=name, subtitle=f"{stem}\n{note}", image=img,
                                points=pts if ds.shape[1:3] == (r.h5.attrs.get("size"),) * 2 else None))
        warning = None if reason is None else f"{path}: " + reason.replace("\n", " ")
        return panels, warning


def render(panels: list[Panel], out: Path, *, suptitle: str) -> None:
    """Draw the panels in a grid and save the figure atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from affpipe.io.atomic import atomic_path

    n = len(panels)
    cols = min(n, MAX_COLUMNS)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, p in zip(axes.ravel(), panels):
        n_sub = p.subtitle.count("\n") + 1
        ax.set_title(p.title, fontsize=11, fontweight="bold", pad=4 + 9 * n_sub)
        ax.text(0.5, 1.01, p.subtitle, transform=ax.transAxes, ha="center", va="bottom", fontsize=7, color="0.3")
        if p.image is None:
            ax.imshow(np.full(p.shape, 0.92), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, p.message, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="firebrick")
            continue
        if p.image.ndim == 2:
            ax.imshow(p.image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(np.clip(p.image, 0.0, 1.0), interpolation="nearest")
        if p.points is not None:
            ax.scatter(p.points[:, 0], p.points[:, 1], s=LANDMARK_DOT, c="lime", linewidths=0)
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI)
    plt.close(fig)


def handler(args: argparse.Namespace) -> int:
    from affpipe.io.h5store import StoreReader

    if args.frame == "auto":
        args.frame = auto_frame(args.files)
        log.info("show: --frame auto chose frame %d", args.frame)
    panels: list[Panel] = []
    times = []
    for path in args.files:
        ps, warning = collect_panels(path, args.frame, landmarks=args.landmarks)
        panels.extend(ps)
        if warning:
            log.warning("%s", warning)
        with StoreReader(path) as r:
            row = r.row_of_frame(args.frame)
            if row is not None and "time_s" in r:
                times.append(float(r["time_s"][row]))
    title = f"frame {args.frame}" + (f"  (t = {times[0]:.3f} s)" if times else "")
    render(panels, args.out, suptitle=title)
    log.info("show: wrote %s (%d panels)", args.out, len(panels))
    return 0
