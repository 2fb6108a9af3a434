"""``python -m affpipe <command>``: one subcommand per pipeline stage.

Every Snakemake rule calls one of these through ``shell:``; each also runs by hand on one video.
Subcommands live in :mod:`affpipe.commands`, one module each, and register themselves through a
``register(subparsers)`` function. Heavy imports (torch, dlib) happen inside the handlers so that
``--help`` stays fast.

Errors a user can act on (:class:`affpipe.errors.AffpipeError`) are printed on one line naming the
file and the cause, and the process exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from affpipe import __version__
from affpipe.errors import AffpipeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="affpipe",
        description="affpipe: faces -> static/dynamic facial images -> features -> valence/arousal.",
    )
    parser.add_argument("--version", action="version", version=f"affpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import affpipe.commands as commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        importlib.import_module(f"affpipe.commands.{mod.name}").register(sub)
    return parser


def passive_omp_wait() -> None:
    """Make idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``, unless the user set it).

    Runs before any command imports torch (DR, CNN and regression all use it). Measured on the demo
    (small CNN, 112x112, 2 threads, 2-core machine loaded by other jobs): 40 frames/s training with the default spinning, 214 with PASSIVE
    (1 thread: 201). Unloaded machines see no difference.
    """
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    passive_omp_wait()
    try:
        return int(args.func(args) or 0)
    except AffpipeError as err:
        print(f"affpipe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"affpipe {args.command}: interrupted", file=sys.stderr)
        return 130
