"""Dataset settings (config ``datasets.<name>``): validation, defaults and the root folder check.

Defaults live only in ``affpipe/schemas/dataset.schema.yaml``; this module fills them in and turns a
missing or unset ``root`` into an error that names the config key to set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from affpipe.config import validated_copy
from affpipe.errors import DatasetError

SCHEMA_FILE = "dataset.schema.yaml"

# What a user would typically pass as root, for the example in the "root is not set" message.
ROOT_EXAMPLES = {
    "semaine": "/path/to/AVEC2012",
    "recola": "/path/to/AVEC2016",
    "affwild2": "/path/to/Aff-Wild2",
    "csv": "/path/to/folder-with-videos.csv",
}


def config_key(name: str, key: str) -> str:
    """Dotted config key of one setting of dataset ``name``, e.g. ``datasets.semaine.root``."""
    return f"datasets.{name}.{key}"


def dataset_settings(name: str, settings: dict[str, Any] | None) -> dict[str, Any]:
    """Validate one ``datasets.<name>`` entry and fill in the schema defaults (returns a copy;
    validated once per distinct content and process, :func:`affpipe.config.validated_copy`).

    Raises
    ------
    ConfigError
        Naming every offending key as ``datasets.<name>.<key>``.
    """
    return validated_copy(settings, SCHEMA_FILE, prefix=f"datasets.{name}")


def _root_hint(name: str, adapter: str) -> str:
    example = ROOT_EXAMPLES.get(adapter, "/path/to/data")
    return (
        f"set it in workflow_config.yaml or pass --config 'datasets={{{name}: {{root: {example}}}}}'"
    )


def check_root(name: str, settings: dict[str, Any] | None) -> Path:
    """Cheap check that dataset ``name`` has a usable root folder; no video is touched.

    The Snakefile calls this while building the DAG, so ``snakemake -n results/<name>/...`` fails at
    once when the root is unset or missing.

    Parameters
    ----------
    name : str
        Dataset key in the config (``datasets.<name>``).
    settings : dict
        That config entry (defaults are filled in here).

    Returns
    -------
    pathlib.Path
        The root folder, absolute (relative roots are taken from the current working directory,
        which is the Snakemake working directory when run by the workflow).

    Raises
    ------
    DatasetError
        If ``root`` is null, does not exist, or is not a folder; the message names
        ``datasets.<name>.root``.
    ConfigError
        If the entry does not match the schema.
    """
    s = dataset_settings(name, settings)
    key = config_key(name, "root")
    hint = _root_hint(name, s["adapter"])
    if s["root"] is None or not str(s["root"]).strip():
        raise DatasetError(f"config key `{key}` is not set: {hint}")
    root = Path(s["root"]).expanduser()
    if not root.is_absolute():
        root = Path.cwd() / root
    if not root.exists():
        raise DatasetError(f"dataset root folder does not exist (config key `{key}`)", path=root, hint=hint)
    if not root.is_dir():
        raise DatasetError(f"dataset root is not a folder (config key `{key}`)", path=root, hint=hint)
    return root.resolve()
