"""``affpipe results-table``: paper-style results tables (Markdown, booktabs LaTeX, HTML) from ccc.json.

Rows = experiments; columns = CCC and PCC of arousal and valence per scored partition; one table per
aggregation (concatenated; per-video mean), the aggregation named in the caption
(:mod:`affpipe.results_table`). Torch-free.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from affpipe.commands._common import read_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "results-table",
        help="paper-style results tables (Markdown, LaTeX booktabs, HTML) from ccc.json",
        description="Experiments as rows, CCC and PCC of arousal and valence per scored partition as columns, "
        "one table per aggregation; the best value of each column in bold.",
    )
    p.add_argument("--ccc", required=True, type=Path, help="results/DS/ccc.json")
    p.add_argument("--md", type=Path, help="Markdown output, e.g. results/DS/report/results.md")
    p.add_argument("--tex", type=Path, help="LaTeX output (booktabs; \\input it), e.g. results/DS/report/results.tex")
    p.add_argument("--html", type=Path, help="standalone HTML output (shown in the Snakemake report)")
    p.add_argument("--aggregation", nargs="+", default=None, metavar="AGG",
                   help="aggregations to tabulate, in order (default: concatenated per_video_mean)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe import results_table as rt
    from affpipe.errors import AffpipeError
    from affpipe.io.atomic import write_text

    if not (args.md or args.tex or args.html):
        raise AffpipeError("nothing to write: give at least one of --md, --tex, --html")
    report = read_json(args.ccc, "ccc.json", "affpipe-ccc")
    aggs = tuple(args.aggregation or rt.AGGREGATIONS)
    source = str(args.ccc)
    try:
        outputs = [(args.md, rt.markdown), (args.tex, rt.latex), (args.html, rt.html)]
        texts = [(path, fn(report, aggs, source)) for path, fn in outputs if path]
    except rt.ResultsTableError as exc:
        raise AffpipeError(str(exc), path=args.ccc) from None
    for path, text in texts:
        write_text(text, path)
    return 0
