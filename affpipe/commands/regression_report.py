"""``affpipe regression-report``: plots of the scored experiments -> ``results/{ds}/report/regression/``.

Reads ``ccc.json`` (from ``affpipe evaluate``) and the predictions files it names, and writes

* ``ccc_bars.png``: CCC of every experiment per partition and dimension, both aggregations (not written
  for a dataset without labels, whose ccc.json says ``"scored": false``: traces of the predictions only);
* ``scatter_{partition}_{dimension}.png``: predicted vs true, one panel per experiment;
* ``trace_{video}.png``: predicted vs true traces of each video of ``evaluate.trace_partitions``
  (at most ``evaluate.max_trace_videos``), all experiments in one figure.

The folder is written as a whole (a temporary folder renamed at the end).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings, parse_pairs

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "regression-report",
        help="plots of the experiments (traces, scatter, CCC bars) -> a folder of PNGs",
        description="Render predicted-vs-true traces per video, scatter plots per dimension and a bar chart "
        "comparing the experiments, from ccc.json and the predictions it names.",
    )
    p.add_argument("--ccc", required=True, type=Path, help="results/DS/ccc.json")
    p.add_argument("--predictions", nargs="*", default=[], metavar="NAME=PARQUET",
                   help="override the predictions paths recorded in ccc.json")
    p.add_argument("--out", required=True, type=Path, help="output folder, e.g. results/DS/report/regression")
    add_settings_arg(p, what="evaluate-stage")
    p.set_defaults(func=handler)


def render(report: dict, preds: list, settings: dict, out: Path) -> list[Path]:
    """Write every figure into ``out`` (an existing folder); returns the files written."""
    import numpy as np

    from affpipe import metrics, plots
    from affpipe.regress.registry import OUTPUT_DIMENSIONS

    written = []
    if report.get("scored", True):  # a dataset without labels: traces of the predictions only
        fig = plots.bar_figure(report)
        plots.save(fig, out / "ccc_bars.png")
        written.append(out / "ccc_bars.png")
    labels = {p.name: report["experiments"][p.name]["label"] for p in preds}
    for part in settings["partitions"]:
        for d, dim in enumerate(OUTPUT_DIMENSIONS):
            entries = []
            for p in preds:
                sel = (p.partition == part) & np.isfinite(p.true[:, d])
                if not sel.any():
                    continue
                entry = report["experiments"][p.name]["partitions"].get(part, {}).get("dimensions", {}).get(dim, {})
                c = entry.get("concatenated", {}).get("ccc")
                entries.append((labels[p.name], p.pred[sel, d], p.true[sel, d], c))
            if entries:
                path = out / f"scatter_{part}_{dim}.png"
                plots.save(plots.scatter_figure(dim, part, entries, max_points=settings["scatter_max_points"]), path)
                written.append(path)
    base = preds[0]
    vids = [v for v in base.videos() if base.partition[base.video == v][0] in settings["trace_partitions"]]
    if len(vids) > settings["max_trace_videos"]:
        log.info("trace plots for the first %d of %d videos (evaluate.max_trace_videos)",
                 settings["max_trace_videos"], len(vids))
        vids = vids[: settings["max_trace_videos"]]
    for vid in vids:
        rows = base.video == vid
        t = base.time_s[rows] if base.time_s is not None else base.frame[rows].astype(float)
        entries = []
        for p in preds:
            r = p.video == vid
            cccs = {}
            for d, dim in enumerate(OUTPUT_DIMENSIONS):
                ok = np.isfinite(p.true[r, d])
                try:
                    cccs[dim] = metrics.ccc(p.pred[r, d][ok], p.true[r, d][ok]) if ok.any() else None
                except metrics.UndefinedMetricError:
                    cccs[dim] = None
            entries.append((labels[p.name], p.pred[r], p.filled[r], cccs))
        path = out / f"trace_{vid}.png"
        plots.save(plots.trace_figure(vid, str(base.partition[rows][0]), t, base.true[rows], entries), path)
        written.append(path)
    return written


def handler(args: argparse.Namespace) -> int:
    import json
    import shutil

    from affpipe.config import section_settings
    from affpipe.errors import AffpipeError
    from affpipe.io.atomic import replace_dir, temp_sibling
    from affpipe.regress.predictions import read_predictions

    settings = section_settings("evaluate", load_settings(args.settings))
    try:
        report = json.loads(args.ccc.read_text())
    except FileNotFoundError:
        raise AffpipeError("ccc.json does not exist (run `affpipe evaluate` first)", path=args.ccc) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AffpipeError(f"cannot read ccc.json ({exc})", path=args.ccc) from None
    if report.get("format") != "affpipe-ccc":
        raise AffpipeError("not an affpipe ccc.json (format attribute missing)", path=args.ccc)
    overrides = dict(parse_pairs(args.predictions)) if args.predictions else {}
    preds = []
    for name, info in report["experiments"].items():
        path = Path(overrides.get(name, info["predictions"]))
        preds.append(read_predictions(path, name))
    if not preds:
        raise AffpipeError("ccc.json lists no experiment", path=args.ccc)
    from affpipe.evaluate import compare_labels

    for p in preds[1:]:
        diff = compare_labels(preds[0], p)
        if diff is not None:
            raise AffpipeError(f"covers {diff} than {preds[0].source}", path=p.source,
                               hint="re-run `affpipe regress` and `affpipe evaluate`")
    out = Path(args.out)
    tmp = temp_sibling(out)  # also removes the folders of a killed earlier run
    tmp.mkdir()
    try:
        written = render(report, preds, settings, tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d figures to %s", len(written), out)
    return 0
