"""``affpipe dynamic``: DFA, DFS, dynamic-pixel masks and DFM for every window of one video.

Reads ``results/{ds}/static/{video}.h5`` and writes ``results/{ds}/dynamic/{video}.h5`` (layout:
:mod:`affpipe.dynamic.store`; the work, workers and merge: :func:`affpipe.dynamic.run.dynamic_store`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dynamic",
        help="dynamic facial images (DFA, DFS, masks, DFM) per sliding window -> .h5",
        description="For every window of T frames (stride, hop) of one video's static file, solve the RankSVM "
        "of the DFM paper (Eq. 3) on the SFA and SFS windows (DFA, DFS), find the dynamic pixels and fuse "
        "them into the DFM. Windows with a frame without a face are kept as invalid rows.",
    )
    p.add_argument("--static", required=True, type=Path, help="static store of the video (.h5 from `affpipe static`)")
    p.add_argument("--out", required=True, type=Path, help="output .h5 (written atomically)")
    p.add_argument("--threads", type=int, default=1, help="worker processes (windows are split into contiguous ranges)")
    add_settings_arg(p, what="dynamic-stage")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings
    from affpipe.dynamic.run import dynamic_store
    from affpipe.errors import ConfigError

    settings = section_settings("dynamic", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    attrs = dynamic_store(args.static, args.out, settings, threads=args.threads)
    log.info(
        "dynamic: wrote %s: %d windows (%d valid); ranked pairs %.4f, pairs inside the margin %.3f, "
        "max KKT residual %.2g, %.1f Newton iterations per window",
        args.out, attrs["n_windows"], attrs["n_valid_windows"], attrs["ranked_share_mean"],
        attrs["at_bound_share_mean"], attrs["kkt_residual_max"], attrs["solver_iterations_mean"],
    )
    return 0
