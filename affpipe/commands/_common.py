"""Shared CLI helpers: stage settings passed as JSON, so rules stay thin and hand use stays easy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from affpipe.errors import ConfigError


def add_settings_arg(parser: argparse.ArgumentParser, *, what: str) -> None:
    """Add ``--settings JSON`` (a JSON object, or ``@file.json``) to a subparser."""
    parser.add_argument(
        "--settings",
        default="{}",
        metavar="JSON",
        help=f"{what} settings as a JSON object or @file.json; the Snakemake rules pass the "
        "validated section of workflow_config.yaml here. Missing keys take the schema defaults.",
    )


def load_settings(text: str) -> dict[str, Any]:
    """Parse a ``--settings`` value (JSON object, or ``@path`` to a JSON/YAML file)."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read settings file ({exc.strerror})", path=path) from None
        if path.suffix in {".yaml", ".yml"}:
            import yaml

            value = yaml.safe_load(raw)
        else:
            value = json.loads(raw)
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("--settings must be a JSON object")
    return value


def parse_pairs(values: list[str]) -> list[tuple[str, Path]]:
    """``--predictions NAME=PATH ...`` arguments -> [(name, path)]; errors name the bad argument."""
    out: list[tuple[str, Path]] = []
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--predictions expects NAME=PATH, got {v!r}")
        if name in {n for n, _ in out}:
            raise ConfigError(f"--predictions names experiment {name!r} twice")
        out.append((name, Path(path)))
    return out


def store_paths(spec, dirs: dict[str, Path | None], video: str, *, folders: bool) -> dict[str, Path]:
    """Store kind -> file for ``video``; a store the input needs but not given is a ConfigError."""
    out = {}
    for store in spec.stores:
        d = dirs.get(store)
        if d is None:
            raise ConfigError(f"input {spec.name!r} needs the {store} stores: pass --{store}")
        out[store] = d / f"{video}.h5" if folders else d
    return out


def read_json(path: Path, what: str, fmt: str | None = None) -> dict:
    """A JSON file another command wrote (``what`` names it in errors; ``fmt``: its expected ``format``)."""
    from affpipe.errors import AffpipeError

    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise AffpipeError(f"{what} does not exist", path=path) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AffpipeError(f"cannot read {what} ({exc})", path=path) from None
    if fmt is not None and doc.get("format") != fmt:
        raise AffpipeError(f"not an affpipe {what} (format attribute is not {fmt!r})", path=path)
    return doc


def every_video(manifest_rows: list[dict], inputs_of, *, what: str) -> dict[str, dict[str, Path]]:
    """``{video: {name: path}}`` for every video of a manifest's rows (sorted), with ``inputs_of(video)``
    giving its input files; every file is checked to exist before any work is done (a file missing at
    the end of a batched job would waste the rest). ``what`` names the files in the error."""
    from affpipe.errors import AffpipeError

    videos = sorted(row["video"] for row in manifest_rows)
    paths = {v: inputs_of(v) for v in videos}
    missing = [p for v in videos for p in paths[v].values() if not p.is_file()]
    if missing:
        raise AffpipeError(f"{what} does not exist ({len(missing)} of the {len(videos)} videos' files are missing)",
                           path=missing[0])
    return paths


def rng_restorer():
    """A function restoring Python's, NumPy's and torch's random state to what it is now: a batched
    job calls it before each video, so every video starts as it would in a process of its own."""
    import random

    import numpy as np
    import torch

    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def restore() -> None:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])

    return restore
