"""``affpipe dr-chart``: bar chart of the DR ranking accuracy (ranking.json from ``affpipe dr-rank``).

Per level T: the learnt DR against the per-window RankSVM upper bound, the similarity baseline and
chance (:func:`affpipe.plots.ranking_figure`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dr-chart",
        help="bar chart (PNG) of the DR ranking accuracy vs RankSVM bound, baseline and chance",
        description="Render ranking.json (affpipe dr-rank) as a bar chart per level T.",
    )
    p.add_argument("--ranking", required=True, type=Path, help="results/DS/dr/ranking.json")
    p.add_argument("-o", "--out", required=True, type=Path, help="output .png (written atomically)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe import plots
    from affpipe.commands._common import read_json
    from affpipe.errors import AffpipeError

    ranking = read_json(args.ranking, "ranking.json")
    if "levels" not in ranking:
        raise AffpipeError("ranking.json has no `levels` key (not from `affpipe dr-rank`?)", path=args.ranking)
    plots.save(plots.ranking_figure(ranking), args.out)
    return 0
