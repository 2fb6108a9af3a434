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
