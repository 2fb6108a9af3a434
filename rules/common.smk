# Config validation and input functions. Rules stay free of Python logic: everything they need
# from the config or the manifest comes from the functions below.
import functools
import json
import os
import shlex
import sys

# The workflow's own package, importable here for config validation even when Snakemake runs
# from another environment than the one affpipe is installed in.
sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

import affpipe
from affpipe.config import section_settings, validate_config
from affpipe.errors import AffpipeError

try:
    validate_config(config)
except AffpipeError as err:
    raise WorkflowError(str(err)) from None

ENV = "../envs/affpipe.yaml"


def _affpipe_command():
    """How jobs call the CLI: `python -m affpipe` inside a conda env (--sdm conda), otherwise the
    interpreter running Snakemake (so `.venv/bin/snakemake` works without activating the venv)."""
    from snakemake.settings.types import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python -m affpipe"
    return f"{shlex.quote(sys.executable)} -m affpipe"


AFFPIPE = _affpipe_command()
STAGE_SECTIONS = ("faces", "static", "dynamic", "demo")


wildcard_constraints:
    ds=r"[A-Za-z0-9_-]+",
    video=r"[^/]+",


def dataset_entry(ds):
    """The `datasets.<ds>` config entry, or a clear error listing the configured datasets."""
    try:
        return config["datasets"][ds]
    except KeyError:
        known = ", ".join(sorted(config["datasets"])) or "none"
        raise WorkflowError(
            f"dataset `{ds}` is not configured (config key `datasets.{ds}`); configured datasets: {known}"
        ) from None


def stage_settings(section, ds):
    """Global `<section>` settings with `datasets.<ds>.<section>` merged over them, validated."""
    merged = dict(config.get(section, {}))
    merged.update(dataset_entry(ds).get(section) or {})
    try:
        return section_settings(section, merged)
    except AffpipeError as err:
        raise WorkflowError(f"{err} (dataset `{ds}`)") from None


def dataset_settings(ds):
    """The dataset entry without the per-stage override sections (what the adapter sees)."""
    return {k: v for k, v in dataset_entry(ds).items() if k not in STAGE_SECTIONS}


def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- params functions (one per stage) -------------------------------------------------------
def dataset_settings_json(wildcards):
    return _json(dataset_settings(wildcards.ds))


def demo_settings_json(wildcards):
    return _json(stage_settings("demo", wildcards.ds))


def faces_settings_json(wildcards):
    return _json(stage_settings("faces", wildcards.ds))


def static_settings_json(wildcards):
    return _json(stage_settings("static", wildcards.ds))


def dynamic_settings_json(wildcards):
    return _json(stage_settings("dynamic", wildcards.ds))


# --- dataset roots and the manifest checkpoint ------------------------------------------------
def manifest_inputs(wildcards):
    """Inputs of the manifest: the generated tree for a generated dataset, nothing otherwise.

    For a real dataset, fail at DAG-build time (also on `snakemake -n`) when its root is unset or
    missing, naming the config key to set.
    """
    entry = dataset_entry(wildcards.ds)
    if entry.get("generated"):
        return {"tree": f"results/{wildcards.ds}/raw"}
    from affpipe.datasets import check_root

    try:
        check_root(wildcards.ds, dataset_settings(wildcards.ds))
    except AffpipeError as err:
        raise WorkflowError(str(err)) from None
    return {}


@functools.lru_cache(maxsize=None)
def _read_manifest(path, mtime_ns):
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return {row["video"]: row for row in rows}


def manifest_rows(ds):
    """Manifest rows by video id (re-evaluated after the manifest checkpoint has run)."""
    path = checkpoints.manifest.get(ds=ds).output.manifest
    return _read_manifest(path, os.stat(path).st_mtime_ns)


def manifest_row(wildcards):
    rows = manifest_rows(wildcards.ds)
    try:
        return rows[wildcards.video]
    except KeyError:
        raise WorkflowError(
            f"video `{wildcards.video}` is not in results/{wildcards.ds}/manifest.parquet"
        ) from None


def video_ids(ds):
    return sorted(manifest_rows(ds))


def video_path(wildcards):
    return manifest_row(wildcards)["path"]


def video_side_arg(wildcards):
    side = manifest_row(wildcards).get("side") or ""
    return f"--side {side}" if side else ""


def manifest_path(wildcards):
    return checkpoints.manifest.get(ds=wildcards.ds).output.manifest


def per_video(pattern):
    """Input function: `pattern` (with {ds} and {video}) expanded over every video of the dataset."""

    def inputs(wildcards):
        return [pattern.format(ds=wildcards.ds, video=v) for v in video_ids(wildcards.ds)]

    return inputs


def report_videos(ds):
    """The first `report.montages_per_dataset` videos (sorted ids), one per partition first."""
    n = config["report"]["montages_per_dataset"]
    rows = manifest_rows(ds)
    chosen, seen = [], set()
    for vid in sorted(rows):
        part = rows[vid]["partition"]
        if part not in seen:
            chosen.append(vid)
            seen.add(part)
    for vid in sorted(rows):
        if vid not in chosen:
            chosen.append(vid)
    return chosen[:n]


def report_pictures(wildcards):
    vids = report_videos(wildcards.ds)
    return {
        "sheets": [f"results/{wildcards.ds}/report/faces/{v}.png" for v in vids],
        "montages": [f"results/{wildcards.ds}/report/montages/{v}.png" for v in vids],
    }
