"""``affpipe quality-table``: per-video tracking and data-quality table from report/summary.json.

Partition, frames decoded, face share, lost frames, multi-face frames, side conflicts and exclusions
per video (:mod:`affpipe.quality_table`), as Markdown and/or a standalone HTML page. Torch-free.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quality-table",
        help="per-video tracking and data-quality table (Markdown, HTML) from report/summary.json",
        description="One row per video: partition, frames decoded, face share, lost frames, multi-face frames, "
        "side conflicts, excluded (reason).",
    )
    p.add_argument("--summary", required=True, type=Path, help="results/DS/report/summary.json")
    p.add_argument("--md", type=Path, help="Markdown output, e.g. results/DS/report/quality.md")
    p.add_argument("--html", type=Path, help="standalone HTML output (shown in the Snakemake report)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe import quality_table as qt
    from affpipe.commands._common import read_json
    from affpipe.errors import AffpipeError
    from affpipe.io.atomic import write_text

    if not (args.md or args.html):
        raise AffpipeError("nothing to write: give --md and/or --html")
    summary = read_json(args.summary, "summary.json")
    if "videos" not in summary:
        raise AffpipeError("summary.json has no `videos` key (not from `affpipe summary`?)", path=args.summary)
    if args.md:
        write_text(qt.markdown(summary, str(args.summary)), args.md)
    if args.html:
        write_text(qt.html(summary, str(args.summary)), args.html)
    return 0
