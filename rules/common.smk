# Config validation and input functions. Rules stay free of Python logic: everything they need
# from the config or the manifest comes from the functions below.
import types
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
from affpipe.config import section_settings, snakemake_layers, validate_config
from affpipe.errors import AffpipeError
from affpipe.plan import CHAIN_PRIORITY

# Types --config strings by the schema (Snakemake passes nested --config values as strings) and
# names, for an invalid value, where it was set: workflow_config.yaml, a --configfile or --config.
try:
    validate_config(config, layers=snakemake_layers(workflow))
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
STAGE_SECTIONS = ("faces", "static", "dynamic", "dr", "demo", "cnn", "regression", "evaluate", "experiments")


wildcard_constraints:
    ds=r"[A-Za-z0-9_-]+",
    src=r"[A-Za-z0-9_-]+",
    video=r"[^/]+",


def _cache_signature(fn):
    """Store `fn`'s parameters where Snakemake looks first (snakemake.common.get_function_params).

    Snakemake asks for the parameters of an input, params or resources function with
    inspect.signature at every call, i.e. several times per job: about a tenth of the DAG build of a
    1,000-video dataset. The parameters of a plain function do not change, so they are computed once.
    """
    try:
        from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR
    except ImportError:  # another Snakemake: it computes them itself
        return fn
    import inspect

    if inspect.isfunction(fn) and not hasattr(fn, FUNC_OVERWRITE_PARAMS_ATTR):
        setattr(fn, FUNC_OVERWRITE_PARAMS_ATTR, inspect.signature(fn).parameters)
    return fn


def dataset_entry(ds):
    """The `datasets.<ds>` config entry, or a clear error listing the configured datasets."""
    try:
        return config["datasets"][ds]
    except KeyError:
        known = ", ".join(sorted(config["datasets"])) or "none"
        raise WorkflowError(
            f"dataset `{ds}` is not configured (config key `datasets.{ds}`); configured datasets: {known}"
        ) from None


_STAGE_SETTINGS = {}


def _stage_settings_cached(section, ds):
    """(JSON in config order, JSON with sorted keys) of the validated `<section>` settings of `ds`.

    Validated once per (section, dataset) and Snakemake process: the config does not change after
    parsing, and validating every job's settings again dominated the DAG build of large datasets.
    """
    key = (section, ds)
    if key not in _STAGE_SETTINGS:
        merged = dict(config.get(section, {}))
        merged.update(dataset_entry(ds).get(section) or {})
        try:
            settings = section_settings(section, merged)
        except AffpipeError as err:
            raise WorkflowError(f"{err} (dataset `{ds}`)") from None
        _STAGE_SETTINGS[key] = (json.dumps(settings), _json(settings))
    return _STAGE_SETTINGS[key]


def _check_dataset_sections():
    """Validate every dataset's per-stage overrides now, so that an invalid value (e.g.
    `datasets.<ds>.dynamic.T: -3`) stops the workflow at once, naming the key, instead of after the
    manifest checkpoint when the first job using it is scheduled."""
    for ds in config.get("datasets") or {}:
        for section in STAGE_SECTIONS:
            if section in (dataset_entry(ds) or {}):
                _stage_settings_cached(section, ds)


def stage_settings(section, ds):
    """Global `<section>` settings with `datasets.<ds>.<section>` merged over them, validated (a fresh
    copy on every call, keys in config order)."""
    return json.loads(_stage_settings_cached(section, ds)[0])


def stage_settings_json(section, ds):
    """`stage_settings` as the compact, key-sorted JSON the rules pass to the CLI."""
    return _stage_settings_cached(section, ds)[1]


def dataset_settings(ds):
    """The dataset entry without the per-stage override sections (what the adapter sees)."""
    return {k: v for k, v in dataset_entry(ds).items() if k not in STAGE_SECTIONS}


def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


_check_dataset_sections()


# --- params functions (one per stage) -------------------------------------------------------
def dataset_settings_json(wildcards):
    return _json(dataset_settings(wildcards.ds))


def demo_settings_json(wildcards):
    return stage_settings_json("demo", wildcards.ds)


def faces_settings_json(wildcards):
    return stage_settings_json("faces", wildcards.ds)


def static_settings_json(wildcards):
    return stage_settings_json("static", wildcards.ds)


def dynamic_settings_json(wildcards):
    return stage_settings_json("dynamic", wildcards.ds)


# --- dataset roots and the manifest checkpoint ------------------------------------------------
def manifest_max_frame_shortfall(wildcards):
    """`faces.max_frame_shortfall` of the dataset: the manifest excludes videos truncated beyond it."""
    return stage_settings("faces", wildcards.ds)["max_frame_shortfall"]


def manifest_inputs(wildcards):
    """Inputs of the manifest: the generated tree for a generated dataset, nothing otherwise. Checks the
    dataset's experiments applied from other datasets first (check_experiment_sources).

    For a real dataset, fail at DAG-build time (also on `snakemake -n`) when its root is unset or
    missing, naming the config key to set.
    """
    entry = dataset_entry(wildcards.ds)
    check_experiment_sources(wildcards.ds)
    if entry.get("generated"):
        return {"tree": generated_tree(wildcards.ds)}
    from affpipe.datasets import check_root

    try:
        check_root(wildcards.ds, dataset_settings(wildcards.ds))
    except AffpipeError as err:
        raise WorkflowError(str(err)) from None
    return {}


def generated_tree(ds):
    """The tree of generated dataset `ds` (written by the demo_data job): its `root`, which must be
    results/<name>/raw of a generated dataset (itself, or e.g. the demo, whose tree also holds the table
    of the unlabelled demo dataset, `datasets.<ds>.table`)."""
    import re

    root = os.path.normpath(dataset_entry(ds).get("root") or f"results/{ds}/raw")
    m = re.fullmatch(r"results/([A-Za-z0-9_-]+)/raw", root)
    if not m or not (dataset_entry(m[1]) or {}).get("generated"):
        raise WorkflowError(f"`datasets.{ds}.root` of a generated dataset (`datasets.{ds}.generated: true`) must be "
                            f"results/<name>/raw of a generated dataset (rule demo_data writes it), got `{root}`")
    return root


@functools.lru_cache(maxsize=None)
def _read_manifest(path, mtime_ns):
    from affpipe.datasets.manifest import read_manifest

    try:
        return read_manifest(path, columns=("path", "n_frames")).by_video()
    except AffpipeError as err:
        raise WorkflowError(str(err)) from None


_MANIFEST_FILES = {}


def _manifest_file(ds):
    """The manifest checkpoint's output of `ds` (IncompleteCheckpointException until it has run).

    Checkpoint.get expands the rule's output on every call, which every per-video job paid several
    times; the path is kept once the checkpoint is done (Snakemake's set of created checkpoint
    outputs only grows, and membership is checked again on each call)."""
    path = _MANIFEST_FILES.get(ds)
    if path is None or path not in checkpoints.created_output:
        path = _MANIFEST_FILES[ds] = checkpoints.manifest.get(ds=ds).output.manifest
    return path


def manifest_rows(ds):
    """Manifest rows by video id (re-evaluated after the manifest checkpoint has run)."""
    path = _manifest_file(ds)
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
    """`--side left|right` for a side row, plus `--paired` when the manifest also has the other side of
    the same video (tracked jointly then; affpipe.faces.sides.side_args, docs/faces.md)."""
    from affpipe.faces.sides import side_args

    row = manifest_row(wildcards)
    if not row.get("side"):
        return ""
    return " ".join(side_args(row, _rows_by_path(wildcards.ds).get(row["path"], ())))


def _rows_by_path(ds):
    """Manifest rows of `ds` grouped by video path (the side rows of one video share it)."""
    path = _manifest_file(ds)
    return _group_rows_by_path(path, os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _group_rows_by_path(path, mtime_ns):
    groups = {}
    for row in _read_manifest(path, mtime_ns).values():
        groups.setdefault(row["path"], []).append(row)
    return groups


def manifest_path(wildcards):
    return _manifest_file(wildcards.ds)


def labels_dir(wildcards):
    """Every video's labels (`{video}.parquet`), written by the manifest checkpoint."""
    return checkpoints.manifest.get(ds=wildcards.ds).output.labels


def per_video(pattern):
    """Input function: `pattern` (with {ds} and {video}) expanded over every video of the dataset."""

    def inputs(wildcards):
        return [pattern.format(ds=wildcards.ds, video=v) for v in video_ids(wildcards.ds)]

    return _cache_signature(inputs)


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


# --- cnn ---
def cnn_settings_json(wildcards, threads):
    """The `cnn` settings cnn-train and cnn-features are given (all of them). Taking `threads` makes it a
    param derived from how the job runs, which Snakemake's params rerun trigger leaves out: the settings
    that re-run the CNN are in cnn_rerun_settings_json."""
    return stage_settings_json("cnn", wildcards.ds)


def cnn_rerun_settings_json(wildcards):
    """cnn_train's and cnn_features' rerun-triggering params: the `cnn` settings but the runtime ones
    (affpipe.plan.CNN_RUNTIME_KEYS); not used by the command line."""
    from affpipe.plan import cnn_rerun_settings

    return _json(cnn_rerun_settings(stage_settings("cnn", wildcards.ds)))


def cnn_spec(wildcards):
    """The parsed `{input}` wildcard (branches and the stores they read)."""
    from affpipe.cnn.inputs import parse_input

    try:
        return parse_input(wildcards.input, mdr_levels=stage_settings("cnn", wildcards.ds)["mdr_levels"])
    except AffpipeError as err:
        raise WorkflowError(f"{err} (in results/{wildcards.ds}/.../{wildcards.input})") from None


#: stores written as one folder by one job per dataset (`dr_infer`); the others are per-video job outputs
FOLDER_STORES = ("dr",)


def _cnn_store_inputs(ds, stores, videos):
    """The stores' files of `videos` (per-video jobs) or their folders (FOLDER_STORES)."""
    from affpipe.plan import store_dir, store_file

    files = []
    for store in stores:
        if store in FOLDER_STORES:
            files.append(store_dir(ds, store))
        else:
            files += [store_file(ds, store, v) for v in videos]
    return files


def _cnn_train_videos(wildcards):
    from affpipe.plan import cnn_train_videos

    return cnn_train_videos(manifest_rows(wildcards.ds))


def cnn_train_stores(wildcards):
    """The input's stores (static, dynamic, dr) of every train and devel video."""
    return _cnn_store_inputs(wildcards.ds, cnn_spec(wildcards).stores, _cnn_train_videos(wildcards))


def cnn_store_args(wildcards):
    """`--static DIR --dynamic DIR --dr DIR` as the input needs them."""
    return _store_args(wildcards.ds, cnn_spec(wildcards).stores)


def _store_args(ds, stores):
    from affpipe.plan import store_dir

    return " ".join(f"--{s} {store_dir(ds, s)}" for s in stores)


def cnn_weights(wildcards):
    """`cnn.weights` as an input of cnn_train (when set): changing the file re-makes model.pt and so the features."""
    weights = stage_settings("cnn", wildcards.ds).get("weights")
    return [weights] if weights else []


def cnn_model(wildcards):
    from affpipe.plan import cnn_model_file

    return cnn_model_file(wildcards.ds, wildcards.input)


def cnn_source_settings_json(wildcards):
    """The source dataset's `cnn` settings (its CNN extracts this dataset's features with them)."""
    return stage_settings_json("cnn", wildcards.src)


def _cnn_source_spec(wildcards):
    from affpipe.cnn.inputs import parse_input

    try:
        return parse_input(wildcards.input, mdr_levels=stage_settings("cnn", wildcards.src)["mdr_levels"])
    except AffpipeError as err:
        raise WorkflowError(f"{err} (in results/{wildcards.ds}/features_from/{wildcards.src}/{wildcards.input})") from None


def cnn_source_model(wildcards):
    """The source dataset's trained CNN of this input."""
    from affpipe.plan import cnn_model_file

    dataset_entry(wildcards.src)
    return cnn_model_file(wildcards.src, wildcards.input)


def cnn_source_features_stores(wildcards):
    """This dataset's stores (of every video) that the source's CNN reads."""
    return _cnn_store_inputs(wildcards.ds, _cnn_source_spec(wildcards).stores, video_ids(wildcards.ds))


def cnn_source_store_args(wildcards):
    return _store_args(wildcards.ds, _cnn_source_spec(wildcards).stores)


def cnn_source_gpus(wildcards):
    device = stage_settings("cnn", wildcards.src)["device"]
    return _gpus(device)


def cnn_features_stores(wildcards):
    """The input's stores of every video (cnn_features extracts them all in one job)."""
    return _cnn_store_inputs(wildcards.ds, cnn_spec(wildcards).stores, video_ids(wildcards.ds))


@functools.lru_cache(maxsize=None)
def _cuda_available():
    """Whether this machine has an NVIDIA GPU, for the rules' `gpu` resource with `device: auto`.

    Torch-free (the DAG build imports no torch): an NVIDIA device node (/dev/nvidia0, ...) or
    nvidia-smi on PATH, and CUDA_VISIBLE_DEVICES not hiding every device (affpipe.cost.gpu_visible).
    The job itself still picks its device with torch at run time (`auto` = CUDA when torch sees it).
    """
    from affpipe.cost import gpu_visible

    return gpu_visible()


def _gpus(device):
    """`resources: gpu` of a job with the `device` setting (affpipe.plan.gpus; GPU check torch-free)."""
    from affpipe.plan import gpus

    return gpus(device, gpu_here=_cuda_available)


def cnn_gpus(wildcards):
    """`resources: gpu` of the CNN rules: 1 when they will run on CUDA (cnn.device cuda, or auto with a GPU here)."""
    device = stage_settings("cnn", wildcards.ds)["device"]
    return _gpus(device)


# --- regression ---
def experiments_settings(ds):
    """The validated `experiments` section for dataset `ds` (global, then `datasets.<ds>.experiments` by name)."""
    return stage_settings("experiments", ds)


def enabled_experiments(ds):
    """Names of the experiments run and scored for `ds`, in config order."""
    names = [name for name, entry in experiments_settings(ds).items() if entry["enabled"]]
    if not names:
        raise WorkflowError(f"no experiment is enabled for dataset `{ds}` (config keys `experiments` and "
                            f"`datasets.{ds}.experiments`)")
    return names


def experiment_entry(wildcards):
    """`experiments.<experiment>` for this dataset, or a clear error naming the configured ones."""
    exps = experiments_settings(wildcards.ds)
    name = wildcards.experiment
    if name not in exps:
        known = ", ".join(exps) or "none"
        raise WorkflowError(f"experiment `{name}` is not configured (config key `experiments.{name}`); "
                            f"configured: {known}")
    if not exps[name]["enabled"]:
        raise WorkflowError(f"experiment `{name}` is disabled for dataset `{wildcards.ds}` "
                            f"(`datasets.{wildcards.ds}.experiments.{name}.enabled`)")
    return exps[name]


_REGRESSION_SETTINGS = {}


def _regression_settings_cached(wildcards):
    """(JSON in config order, JSON with sorted keys) of one experiment's validated `regression`
    settings, validated once per (dataset, experiment) and Snakemake process (as _stage_settings_cached)."""
    key = (experiment_source(wildcards) or wildcards.ds, wildcards.experiment)
    if key not in _REGRESSION_SETTINGS:
        wildcards = types.SimpleNamespace(ds=key[0], experiment=key[1])
        merged = dict(config.get("regression", {}))
        merged.update(dataset_entry(wildcards.ds).get("regression") or {})
        merged.update(experiment_entry(wildcards)["regression"])
        try:
            settings = section_settings("regression", merged)
        except AffpipeError as err:
            raise WorkflowError(f"{err} (dataset `{wildcards.ds}`, experiment `{wildcards.experiment}`)") from None
        _REGRESSION_SETTINGS[key] = (json.dumps(settings), _json(settings))
    return _REGRESSION_SETTINGS[key]


def regression_settings(wildcards):
    """`regression` settings of one experiment: global, `datasets.<ds>.regression`, then
    `experiments.<experiment>.regression`, merged per top-level key and validated (a fresh copy); those of
    the source dataset's experiment for an experiment with `source` (its model was trained with them)."""
    return json.loads(_regression_settings_cached(wildcards)[0])


def regression_settings_json(wildcards):
    return _regression_settings_cached(wildcards)[1]


def _regressor(wildcards):
    """The experiment's registry entry (affpipe.regress.registry; torch-free)."""
    from affpipe.regress.registry import get_regressor

    try:
        return get_regressor(experiment_entry(wildcards)["regressor"])
    except AffpipeError as err:
        raise WorkflowError(f"{err} (dataset `{wildcards.ds}`, experiment `{wildcards.experiment}`)") from None


def _regress_features_input(wildcards):
    """The input whose features the regressor reads: the experiment's, or the one its registry entry
    chooses (e.g. AST-Net's `regression.astnet.attribute_input` when set)."""
    return _regressor(wildcards).features_of(experiment_entry(wildcards)["input"], regression_settings(wildcards))


def _regress_features_dir(wildcards):
    """The features folder an experiment reads: results/{ds}/features/{input}, or for an experiment
    applied from another dataset the one its source's CNN extracted, results/{ds}/features_from/{src}/{input}."""
    from affpipe.plan import features_dir

    return features_dir(wildcards.ds, _regress_features_input(wildcards), source=experiment_source(wildcards))


def regress_features(wildcards):
    """The features folder of the experiment's input (AST-Net: its attribute input; every video's store,
    written by one cnn_features job), and every video's static store when the regressor reads the
    aligned landmarks (e.g. `regression.multilevel.landmarks`). A dataset without labels can train
    nothing: its experiments need `source` (a clear error otherwise)."""
    if experiment_source(wildcards) is None and not dataset_has_labels(wildcards.ds):
        ds, name = wildcards.ds, wildcards.experiment
        raise WorkflowError(
            f"dataset `{ds}` has no labels (no video of results/{ds}/manifest.parquet has a label file), so experiment "
            f"`{name}` cannot be trained on it: set `datasets.{ds}.experiments.{name}.source` to the dataset whose "
            f"trained `{name}` to apply (docs/regression.md, \"Applying trained models to other data\"), or "
            f"`datasets.{ds}.experiments.{name}.enabled: false`")
    files = [_regress_features_dir(wildcards)]
    if _regress_reads_landmarks(wildcards):
        files += _static_stores(wildcards.ds, video_ids(wildcards.ds))
    return files


def _regress_reads_landmarks(wildcards):
    """Whether the experiment's regressor asks for the static stores' aligned landmarks (the
    registry says which datasets it reads, torch-free)."""
    from affpipe.regress.data import LANDMARKS_INPUT

    spec = _regressor(wildcards)
    if spec.inputs is None:
        return False
    try:
        return LANDMARKS_INPUT in spec.reads(regression_settings(wildcards))
    except AffpipeError as err:
        raise WorkflowError(f"{err} (dataset `{wildcards.ds}`, experiment `{wildcards.experiment}`)") from None


def regress_args(wildcards):
    """`--input --regressor --experiment --features [--label] [--backbone]` of one experiment."""
    entry = experiment_entry(wildcards)
    args = ["--input", entry["input"], "--regressor", entry["regressor"], "--experiment", wildcards.experiment,
            "--features", _regress_features_dir(wildcards)]
    src = experiment_source(wildcards)
    if src is not None:
        args += ["--source-dataset", src, "--source-dir", _experiment_dir(src, wildcards.experiment)]
    if entry["label"]:
        args += ["--label", entry["label"]]
    if entry["backbone"]:
        args += ["--backbone", entry["backbone"]]
    if _regress_reads_landmarks(wildcards):
        args += ["--static", _static_dir(wildcards)]
    return " ".join(shlex.quote(a) for a in args)


def _experiment_dir(ds, name):
    from affpipe.plan import experiment_dir

    return experiment_dir(ds, name)


def regress_source(wildcards):
    """The source experiment's training.json (its model.pt is written beside it by the same job), or nothing."""
    src = experiment_source(wildcards)
    return [] if src is None else [f"{_experiment_dir(src, wildcards.experiment)}/training.json"]


def dataset_has_labels(ds):
    """Whether any video of the dataset's manifest has a label file (csv: a non-empty `labels` column)."""
    return any(row.get("label_source") for row in manifest_rows(ds).values())


#: per-dataset sections that shape the images a CNN reads: a source experiment's dataset must have its
#: source's values (keys that only change how the files are stored are left out)
SOURCE_MATCHING_SECTIONS = ("faces", "static", "dynamic")
SOURCE_NOT_SHAPING = ("compression", "compression_level", "max_frame_shortfall")
_SOURCES = {}


def experiment_source(wildcards):
    """The dataset whose trained experiment `wildcards.experiment` of dataset `wildcards.ds` applies
    (`experiments.<name>.source`), or None; checked once per (dataset, experiment) at DAG build."""
    key = (wildcards.ds, wildcards.experiment)
    if key not in _SOURCES:
        _SOURCES[key] = _check_experiment_source(*key, experiment_entry(wildcards))
    return _SOURCES[key]


def _check_experiment_source(ds, name, entry):
    src = entry.get("source")
    if not src:
        return None
    where = f"`datasets.{ds}.experiments.{name}.source`"
    if src == ds:
        raise WorkflowError(f"{where} names the dataset itself; set it to another dataset, or null to train here")
    if src not in config["datasets"]:
        known = ", ".join(sorted(config["datasets"]))
        raise WorkflowError(f"{where} names dataset `{src}`, which is not configured (config key `datasets.{src}`); "
                            f"configured datasets: {known}")
    theirs = experiments_settings(src).get(name)
    if theirs is None or not theirs["enabled"]:
        raise WorkflowError(f"{where} is `{src}`, but dataset `{src}` has no enabled experiment `{name}` to apply "
                            f"(config keys `experiments.{name}` and `datasets.{src}.experiments.{name}`)")
    if theirs.get("source"):
        raise WorkflowError(f"{where} is `{src}`, whose experiment `{name}` is itself applied from "
                            f"`{theirs['source']}`: set {where} to `{theirs['source']}`")
    differ = [f"`{k}` ({ds}: {entry[k]!r}, {src}: {theirs[k]!r})" for k in ("input", "regressor", "backbone")
              if entry[k] != theirs[k]]
    for section in SOURCE_MATCHING_SECTIONS:
        mine, other = stage_settings(section, ds), stage_settings(section, src)
        differ += [f"`{section}.{k}` ({ds}: {mine.get(k)!r}, {src}: {other.get(k)!r})"
                   for k in sorted(set(mine) | set(other)) if k not in SOURCE_NOT_SHAPING and mine.get(k) != other.get(k)]
    if "mdr" in entry["input"] and dr_source(ds) != dr_source(src):
        differ.append(f"`dr.source` ({ds}: {dr_source(ds)!r}, {src}: {dr_source(src)!r}; the MDR images must come "
                      f"from the same DR models)")
    if differ:
        raise WorkflowError(
            f"experiment `{name}` of dataset `{ds}` applies the trained `{name}` of dataset `{src}` ({where}), but "
            f"these settings differ: {'; '.join(differ)}. Set them under `datasets.{ds}` (experiment keys under "
            f"`datasets.{ds}.experiments.{name}`) to the source's values")
    return src


def regress_gpus(wildcards):
    """`resources: gpu` of `regress`: 1 when a trained regressor (registry: `trains`) runs on CUDA."""
    if not _regressor(wildcards).trains:
        return 0
    device = regression_settings(wildcards)["device"]
    return _gpus(device)


def evaluate_settings_json(wildcards):
    return stage_settings_json("evaluate", wildcards.ds)


def _predictions_file(ds, name):
    from affpipe.plan import predictions_file

    return predictions_file(ds, name)


def evaluate_predictions(wildcards):
    """predictions.parquet of every enabled experiment, in config order."""
    return [_predictions_file(wildcards.ds, name) for name in enabled_experiments(wildcards.ds)]


def evaluate_predictions_args(wildcards):
    """`NAME=PATH ...` of every enabled experiment, in config order."""
    ds = wildcards.ds
    return " ".join(shlex.quote(f"{name}={_predictions_file(ds, name)}") for name in enabled_experiments(ds))


# --- dr ---
def dr_settings(ds):
    """The validated `dr` section for dataset `ds` (global, then `datasets.<ds>.dr`)."""
    return stage_settings("dr", ds)


def dr_settings_json(wildcards):
    return _json(dr_settings(wildcards.ds))


def dr_retrain_settings_json(wildcards):
    """dr_train's rerun-triggering params: the `dr` settings whose change retrains the models
    (affpipe.plan.DR_RETRAIN_KEYS); not used by the command line."""
    from affpipe.plan import dr_retrain_settings

    return _json(dr_retrain_settings(dr_settings(wildcards.ds)))


def dr_train_settings_json(wildcards, threads):
    """The `dr` settings dr-train is given (affpipe.plan.dr_train_settings: with the runtime ones, e.g.
    `dr.device`). Taking `threads` makes it a param derived from how the job runs, which Snakemake's
    params rerun trigger leaves out: the settings that retrain are in dr_retrain_settings_json."""
    from affpipe.plan import dr_train_settings

    return _json(dr_train_settings(dr_settings(wildcards.ds)))


def dr_source(ds):
    """Dataset whose DR models dataset `ds` uses (`dr.source`, default itself); must be configured."""
    src = dr_settings(ds)["source"] or ds
    dataset_entry(src)  # a clear error when the source dataset is not configured
    return src


def dr_models(wildcards):
    """The DR model files of every configured level, in MDR channel order."""
    from affpipe.plan import dr_model_file

    src = dr_source(wildcards.ds)
    return [dr_model_file(src, t) for t in dr_settings(wildcards.ds)["levels"]]


def dr_train_static(wildcards):
    """Static stores of the videos a DR training reads: train partition plus `dr.val_partitions`."""
    from affpipe.plan import TRAIN, dr_train_videos

    rows = manifest_rows(wildcards.ds)
    vids = dr_train_videos(rows, dr_settings(wildcards.ds))
    if not any(rows[v]["partition"] == TRAIN for v in vids):
        raise WorkflowError(f"dataset `{wildcards.ds}` has no video in the train partition to train DR models on "
                            f"(set `datasets.<name>.dr.source` to a dataset that has one)")
    return _static_stores(wildcards.ds, vids)


def dr_rank_static(wildcards):
    """Static stores the ranking evaluation may read (`dr.rank_partitions`, default every video; the
    command itself leaves out the models' training videos)."""
    from affpipe.plan import dr_rank_videos

    return _static_stores(wildcards.ds, dr_rank_videos(manifest_rows(wildcards.ds), dr_settings(wildcards.ds)))


def _static_stores(ds, videos):
    from affpipe.plan import store_file

    return [store_file(ds, "static", v) for v in videos]


def _static_dir(wildcards):
    """results/{ds}/static, the folder of the static stores."""
    from affpipe.plan import store_dir

    return store_dir(wildcards.ds, "static")


def dr_gpus(wildcards):
    """`resources: gpu` of the DR rules: 1 when they will run on CUDA (dr.device cuda, or auto with a GPU here)."""
    device = dr_settings(wildcards.ds)["device"]
    return _gpus(device)


# --- CPU cost warning (policy in affpipe/cost.py) ----------------------------------------------
# Printed once per dataset on the Snakemake console when the first training job of that dataset is
# planned (the manifest is known by then, so the estimate uses its frame counts), i.e. before any
# training starts, also on --dry-run. torch-free: the GPU is detected from /dev/nvidia* and nvidia-smi.
_COST_WARNED = set()


def _rule_requests_gpu(name):
    """Whether the jobs of the rule named `name` ask for a GPU through set-resources (`gpu` or `gres`,
    as profiles/slurm sets them; the rules' own `gpu` resource is a function of the local machine).
    Also on --dry-run, where Snakemake does not tell which executor a real run would use."""
    try:
        res = workflow.get_rule(name).resources
    except Exception:  # noqa: BLE001 - an unknown Snakemake internal: assume no request
        return False
    gpu, gres = (_concrete_resource(res.get(k)) for k in ("gpu", "gres"))
    return (isinstance(gpu, int) and gpu > 0) or (isinstance(gres, str) and "gpu" in gres)


def _concrete_resource(value):
    """A rule resource's value when it is a constant (Snakemake wraps them in `Resource` objects),
    else None (a function, evaluated per job)."""
    if callable(value) or value is None:
        return None
    if hasattr(value, "is_evaluable"):
        return None if value.is_evaluable() else value.value
    return value


def _cpu_cost_warning(ds, dr_planned):
    """The cost block of dataset `ds` (None when no paper-size model trains on CPU): its CNNs (one
    per input of an enabled experiment) and, when an experiment reads MDR from this dataset's own DR
    models or a DR training is planned (`dr_planned`), its DR UNets."""
    from affpipe import cost

    rows = manifest_rows(ds).values()
    frames = {part: sum(int(r["n_frames"]) for r in rows if r["partition"] == part) for part in ("train", "devel")}
    all_frames = sum(int(r["n_frames"]) for r in rows)
    side = int(stage_settings("static", ds)["size"])
    gpu_here = cost.gpu_visible()
    slurm = not workflow.local_exec
    costs, devices = [], []
    cnn = stage_settings("cnn", ds)
    if not cost.runs_on_gpu(cnn["device"], gpu_here=gpu_here, gpu_requested=_rule_requests_gpu("cnn_train")):
        devices.append(f"cnn.device: {cnn['device']}")
        inputs = dict.fromkeys(experiments_settings(ds)[n]["input"] for n in enabled_experiments(ds))
        costs += [cost.cnn_cost(i, cnn, image_side=side, train_frames=frames["train"], devel_frames=frames["devel"],
                                all_frames=all_frames) for i in inputs]
    dr = dr_settings(ds)
    uses_dr = any("mdr" in experiments_settings(ds)[n]["input"] for n in enabled_experiments(ds))
    if (dr_planned or (uses_dr and dr_source(ds) == ds)) and not cost.runs_on_gpu(
            dr["device"], gpu_here=gpu_here, gpu_requested=_rule_requests_gpu("dr_train")):
        devices.append(f"dr.device: {dr['device']}")
        costs += [cost.dr_cost(T, dr, image_side=side, train_frames=frames["train"], all_frames=all_frames)
                  for T in dr["levels"]]
    return cost.cpu_warning(ds, costs, frames=all_frames, devices=devices, slurm=slurm)


def _warns_cpu_cost(fn, *, dr):
    """Input function `fn` of a training step, printing the dataset's CPU cost warning first (`dr` =
    the DR training's function)."""

    @functools.wraps(fn)
    def planned(wildcards):
        result = fn(wildcards)
        ds = wildcards.ds
        if ds not in _COST_WARNED and workflow.is_main_process:
            _COST_WARNED.add(ds)
            message = _cpu_cost_warning(ds, dr)
            if message:
                from snakemake.logging import logger

                logger.warning(message)
        return result

    return planned


dr_train_static = _warns_cpu_cost(dr_train_static, dr=True)
cnn_train_stores = _warns_cpu_cost(cnn_train_stores, dr=False)


_SOURCES_CHECKED = set()


def check_experiment_sources(ds):
    """Check every experiment of `ds` applied from another dataset (`experiments.<name>.source`), once.
    Called by the manifest's input function, so that a mismatch stops the workflow as soon as any job of
    `ds` is planned (also on `snakemake -n`), naming the keys, and only then: a change to the source
    dataset's settings does not stop a run whose targets leave `ds` out."""
    if ds in _SOURCES_CHECKED:
        return
    for name, entry in experiments_settings(ds).items():
        if entry["enabled"] and entry.get("source"):
            _SOURCES[(ds, name)] = _check_experiment_source(ds, name, entry)
    _SOURCES_CHECKED.add(ds)


# every function defined above (the rules' input, params and resources functions among them)
for _fn in list(globals().values()):
    if callable(_fn) and getattr(_fn, "__globals__", None) is globals():
        _cache_signature(_fn)


def cnn_priority(wildcards):
    """`priority:` of the CNN jobs of an input (affpipe.plan.cnn_priority: the MDR CNN is on the run's
    longest chain)."""
    from affpipe.plan import cnn_priority as priority

    return priority(wildcards.input)

