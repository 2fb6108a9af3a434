"""Progress output that reads well both on a terminal and in a Snakemake log file."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LOG_INTERVAL_S = 10.0  # seconds between progress lines when stderr is a log file


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it") -> tqdm:
    """A tqdm bar on stderr; in a log file (not a TTY) one plain line every ``LOG_INTERVAL_S``."""
    tty = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.2 if tty else LOG_INTERVAL_S,
        ascii=not tty,
        dynamic_ncols=tty,
        leave=True,
    )
