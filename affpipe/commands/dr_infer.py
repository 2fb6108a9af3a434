"""``affpipe dr-infer``: the DRs of every configured T for every valid frame of one video.

Reads the video's static store, runs each DR model (``model_T{T}.pt``, one per level, in the
order given: that is the MDR channel order) on every valid SFA row and writes
``results/{ds}/dr/{video}.h5`` with the same rows as the static store (layout:
:mod:`affpipe.dr.infer`). Invalid rows (no face) stay invalid, with zeros; nothing is invented.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dr-infer",
        help="DRs (one per model/level T) for every valid frame of one video -> results/{ds}/dr/{video}.h5",
        description="Run the trained DR UNets on every valid SFA row of one static store; the output has the same "
        "rows, one dataset dr_T{T} per model. With the SFA it forms the MDR input [image, DR_T3, DR_T5].",
    )
    p.add_argument("--models", required=True, nargs="+", type=Path, metavar="MODEL.pt",
                   help="DR model files (from dr-train), in MDR channel order, e.g. model_T3.pt model_T5.pt")
    p.add_argument("--static", required=True, type=Path, help="static store of the video (.h5 from `affpipe static`)")
    p.add_argument("--out", required=True, type=Path, help="output .h5 (written atomically)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_settings_arg(p, what="dr")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings
    from affpipe.dr import runtime
    from affpipe.dr.infer import infer_store
    from affpipe.errors import ConfigError

    settings = section_settings("dr", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    device = runtime.select_device(settings["device"])
    runtime.configure_torch(device=device, threads=args.threads, seed=int(settings["seed"]))
    models = [runtime.load_model(p, device=device) for p in args.models]
    summary = infer_store(models, args.static, args.out, settings=settings, device=device,
                          batch_size=int(settings["infer_batch_size"]))
    log.info("dr-infer: wrote %s: %d rows (%d valid), levels %s, mean |DR| %s", args.out, summary["rows"], summary["valid"],
             [int(m["T"]) for _, m in models], {f"T{t}": round(v, 4) for t, v in summary["mean_abs"].items()})
    return 0
