"""``affpipe dr-infer``: the DRs of every configured T for every valid frame of one video, or of every video.

Reads the video's static store, runs each DR model (``model_T{T}.pt``, one per level, in the
order given: that is the MDR channel order) on every valid SFA row and writes
``results/{ds}/dr/videos/{video}.h5`` with the same rows as the static store (layout:
:mod:`affpipe.dr.infer`). Invalid rows (no face) stay invalid, with zeros; nothing is invented.

One video: ``--static FILE --out FILE``. Every video of a manifest, as the workflow runs it (torch
imported and the models loaded once; the output folder replaced as a whole when every video is done):
``--manifest M --static-dir DIR --out-dir DIR``. Each video's file is the same, bit for bit, either way.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from affpipe.commands._common import add_settings_arg, every_video, load_settings, rng_restorer

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dr-infer",
        help="DRs (one per model/level T) for every valid frame of one video (or every video of a manifest) "
        "-> results/{ds}/dr/videos/{video}.h5",
        description="Run the trained DR UNets on every valid SFA row of one static store (--static, --out), or of "
        "every video of a manifest (--manifest, --static-dir, --out-dir); each output has the static store's rows, "
        "one dataset dr_T{T} per model. With the SFA it forms the MDR input [image, DR_T3, DR_T5].",
    )
    p.add_argument("--models", required=True, nargs="+", type=Path, metavar="MODEL.pt",
                   help="DR model files (from dr-train), in MDR channel order, e.g. model_T3.pt model_T5.pt")
    p.add_argument("--static", type=Path, help="one video: its static store (.h5 from `affpipe static`)")
    p.add_argument("--manifest", type=Path, help="every video: results/{ds}/manifest.parquet (with --static-dir, --out-dir)")
    p.add_argument("--static-dir", type=Path, help="every video: folder of the static stores {video}.h5")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="one video: output .h5 (written atomically)")
    out.add_argument("--out-dir", type=Path, help="every video: output folder of {video}.h5 (replaced atomically as a whole)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_settings_arg(p, what="dr")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings
    from affpipe.datasets.manifest import read_manifest
    from affpipe.dr import runtime
    from affpipe.errors import ConfigError
    from affpipe.io.atomic import atomic_dir

    settings = section_settings("dr", load_settings(args.settings))
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    one = args.out is not None
    if one != (args.static is not None) or (not one and (args.manifest is None or args.static_dir is None)) \
            or (one and (args.manifest is not None or args.static_dir is not None)):
        raise ConfigError("give --static and --out (one video), or --manifest, --static-dir and --out-dir (every video)")
    device = runtime.select_device(settings["device"])
    runtime.configure_torch(device=device, threads=args.threads, seed=int(settings["seed"]))
    models = [runtime.load_model(p, device=device) for p in args.models]
    if one:
        _infer(models, args.static, args.out, settings, device, shown=args.out)
        return 0
    inputs = every_video(read_manifest(args.manifest), lambda v: {"static": args.static_dir / f"{v}.h5"},
                         what="static store")
    static = {v: p["static"] for v, p in inputs.items()}
    # every video starts from this state, as it did in a process of its own (seeded, then the models built)
    restore_rng = rng_restorer()
    with atomic_dir(args.out_dir) as tmp:
        for video in static:
            restore_rng()
            _infer(models, static[video], tmp / f"{video}.h5", settings, device, shown=args.out_dir / f"{video}.h5")
    log.info("dr-infer: wrote %d videos' DRs to %s", len(static), args.out_dir)
    return 0


def _infer(models, static: Path, out: Path, settings: dict, device, *, shown: Path) -> None:
    """One video's DR store, written to `out` (`shown` in the log: its final path)."""
    from affpipe.dr.infer import infer_store

    summary = infer_store(models, static, out, settings=settings, device=device,
                          batch_size=int(settings["infer_batch_size"]))
    log.info("dr-infer: wrote %s: %d rows (%d valid), levels %s, mean |DR| %s", shown, summary["rows"], summary["valid"],
             [int(m["T"]) for _, m in models], {f"T{t}": round(v, 4) for t, v in summary["mean_abs"].items()})
