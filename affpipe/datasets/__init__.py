"""Dataset adapters: a distribution's own layout -> ``manifest.parquet`` and per-video labels.

Adapters (config ``datasets.<name>.adapter``): ``semaine`` (AVEC 2012), ``recola`` (AVEC 2016),
``affwild2`` (ABAW VA challenge) and ``csv`` (a user's table; also the generated demo). Each adapter
module documents the layout it reads and what it skips.
"""

from affpipe.datasets.labels import LABELS_SCHEMA
from affpipe.datasets.manifest import (
    ADAPTERS,
    MANIFEST_SCHEMA,
    Manifest,
    build_labels,
    build_manifest,
    manifest_excluded,
    manifest_warnings,
    read_manifest,
)
from affpipe.datasets.settings import check_root, dataset_settings

__all__ = [
    "ADAPTERS",
    "LABELS_SCHEMA",
    "MANIFEST_SCHEMA",
    "Manifest",
    "build_labels",
    "build_manifest",
    "check_root",
    "dataset_settings",
    "manifest_excluded",
    "manifest_warnings",
    "read_manifest",
]
