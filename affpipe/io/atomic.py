"""Atomic file writes: write ``<name>.tmp-<pid>`` next to the target, then ``os.replace``.

An interrupted run therefore never leaves a half-written file under the final name, so
Snakemake (or a user) never mistakes a partial output for a finished one. A process killed hard
(SIGKILL, a node failure, a SLURM time limit) cannot remove its temporary file; the next write of
the same target removes such leftovers first (:func:`clear_stale`), so a resumed run leaves none.
Snakemake never runs two jobs writing the same output at once, so a leftover is always stale.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


#: Name patterns (``{name}`` = the target's file name) of the temporary siblings written by affpipe:
#: ``atomic_path`` files, hidden temporary folders (the demo tree), folders moved aside while being
#: replaced, and the per-process parts of ``affpipe dynamic``.
STALE_PATTERNS = ("{name}.tmp-*", ".{name}.tmp-*", "{name}.old-*", ".{name}.old-*")


def clear_stale(path: str | os.PathLike, patterns: Iterable[str] = STALE_PATTERNS) -> list[Path]:
    """Remove temporary siblings of ``path`` left by an earlier, killed writer of the same target.

    Parameters
    ----------
    path : path-like
        The final output path.
    patterns : iterable of str
        Glob patterns in the target's folder, ``{name}`` standing for the target's file name.

    Returns
    -------
    removed : list of Path
        The files and folders removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for pattern in patterns:
        for p in path.parent.glob(pattern.format(name=glob.escape(path.name))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed


def temp_sibling(path: str | os.PathLike, *, hidden: bool = False) -> Path:
    """A fresh temporary path next to ``path`` (``<name>.tmp-<pid>``, or ``.<name>.tmp-<pid>`` when
    ``hidden``), after removing stale temporaries of the same target (:func:`clear_stale`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)
    return path.with_name(f"{'.' if hidden else ''}{path.name}.tmp-{os.getpid()}")


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an older ``out`` as late as possible.

    The older ``out`` is first moved aside to ``.<name>.old-<pid>`` (removed afterwards, or by
    :func:`clear_stale` on the next write if this process is killed in between).
    """
    tmp, out = Path(tmp), Path(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists() or out.is_symlink():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh hidden temporary folder next to ``path``; it replaces ``path`` on success.

    For commands writing a folder of files in one job (e.g. every video's features of one CNN
    input): a reader sees the old folder or the complete new one, never a mix. On an exception
    the temporary folder is removed; one left by a killed earlier writer is removed first.
    """
    tmp = temp_sibling(path, hidden=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    On an exception the temporary file is removed and the target is left untouched. Temporaries
    left by a killed earlier writer of the same target are removed first.
    """
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_parquet(table: pa.Table, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> None:
    """Write a pyarrow table atomically, merging ``metadata`` into the schema metadata."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
