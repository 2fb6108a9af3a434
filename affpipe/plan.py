"""What each training job reads and which settings retrain it: the workflow's policy, torch-free.

The Snakemake layer (rules/common.smk) and the commands both ask this module, so that the files a
rule lists as inputs are the ones its command reads, and a change of settings re-runs exactly the jobs
whose results it changes; and it spells the ``results/`` layout the rules' inputs are built from. It
imports no torch, OpenCV or dlib (the DAG build imports it), so it is testable without Snakemake
(tests/test_plan.py).

Manifest rows are mappings with at least ``partition``; they are passed either as a mapping of video
id to row (as rules/common.smk holds them) or as an iterable of rows with a ``video`` key (as
:func:`affpipe.datasets.manifest.read_manifest` returns them).

**DR settings** (section ``dr``) fall in four groups, every key of the schema in exactly one:

* :data:`DR_TRAINING_KEYS`: what a trained model depends on, ``epochs`` aside; an interrupted
  training resumes from its checkpoint only when they are unchanged (:mod:`affpipe.dr.train`).
* :data:`DR_RETRAIN_KEYS` = those plus ``epochs``: a change retrains the models (the ``dr_train``
  rule's rerun-triggering params).
* :data:`DR_RUNTIME_KEYS`: how a job computes (device, mixed precision, memory, loader processes),
  not what: a change re-runs nothing.
* :data:`DR_NOT_TRAINING_KEYS`: settings of the other DR jobs (ranking, inference, storage) and of the
  datasets using the models; not given to ``dr-train``.

**CNN settings** (section ``cnn``): every key but :data:`CNN_RUNTIME_KEYS` (loader processes and the
in-memory cache size, which change neither the weights nor the features) re-runs the CNN's training
and feature extraction when it changes. ``device`` is not among them: with ``batch_size`` or
``eval_batch_size`` left null the device chooses the batch size, which changes the result.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from affpipe.datasets.layout import PARTITIONS

TRAIN = "train"
#: partitions a per-frame CNN reads: it trains on train and selects its epoch on devel
CNN_TRAIN_PARTITIONS = ("train", "devel")

DR_TRAINING_KEYS = (
    "stride", "reference_fps", "theta", "theta_chance", "theta_calibration_windows", "gamma", "epsilon",
    "width", "depth", "lr", "betas", "batch_size", "windows_per_epoch", "val_partitions", "val_windows", "seed",
)
DR_RETRAIN_KEYS = DR_TRAINING_KEYS + ("epochs",)
DR_RUNTIME_KEYS = ("device", "amp", "cache_mb", "loader_workers")
#: cnn settings that change neither a trained CNN nor its features (tests/test_cnn_train.py checks that
#: loader_workers 0 and 2 give bit-identical weights)
CNN_RUNTIME_KEYS = ("cache_bytes", "loader_workers")
DR_NOT_TRAINING_KEYS = ("source", "levels", "rank_partitions", "rank_windows_per_video", "ranksvm_lambda",
                        "infer_batch_size", "storage", "compression", "compression_level")


# --- the results/ layout (the rules' output patterns spell the same paths with wildcards) -----------
def dataset_dir(ds: str) -> str:
    """``results/{ds}``: everything the workflow writes for dataset ``ds``."""
    return f"results/{ds}"


def store_dir(ds: str, store: str) -> str:
    """Folder of a per-video store kind (``static``, ``dynamic``, ``dr``; :data:`affpipe.cnn.inputs.STORE_DIRS`)."""
    from affpipe.cnn.inputs import STORE_DIRS

    return f"{dataset_dir(ds)}/{STORE_DIRS[store]}"


def store_file(ds: str, store: str, video: str) -> str:
    """One video's store of a kind: ``results/{ds}/static/{video}.h5``, ..."""
    return f"{store_dir(ds, store)}/{video}.h5"


def dr_model_file(ds: str, T: int) -> str:
    """The DR model of window half-length ``T`` trained on ``ds``."""
    return f"{dataset_dir(ds)}/dr/model_T{T}.pt"


def cnn_model_file(ds: str, input_name: str) -> str:
    """The per-frame CNN of an input trained on ``ds``."""
    return f"{dataset_dir(ds)}/cnn/{input_name}/model.pt"


def features_dir(ds: str, input_name: str, *, source: str | None = None) -> str:
    """Features of ``ds``'s videos by its own CNN of an input, or by dataset ``source``'s CNN."""
    if source is None:
        return f"{dataset_dir(ds)}/features/{input_name}"
    return f"{dataset_dir(ds)}/features_from/{source}/{input_name}"


def experiment_dir(ds: str, name: str) -> str:
    """An experiment's folder (model.pt, training.json, predictions.parquet)."""
    return f"{dataset_dir(ds)}/experiments/{name}"


def predictions_file(ds: str, name: str) -> str:
    return f"{experiment_dir(ds, name)}/predictions.parquet"


def dr_retrain_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The validated ``dr`` settings whose change retrains the DR models (:data:`DR_RETRAIN_KEYS`)."""
    return {k: settings[k] for k in DR_RETRAIN_KEYS}


def dr_train_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The validated ``dr`` settings ``dr-train`` is given: all but :data:`DR_NOT_TRAINING_KEYS`, in
    their order (the retraining ones and the runtime ones)."""
    return {k: v for k, v in settings.items() if k not in DR_NOT_TRAINING_KEYS}


def cnn_rerun_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The validated ``cnn`` settings whose change re-runs the CNN's training and features: all but
    :data:`CNN_RUNTIME_KEYS`."""
    return {k: v for k, v in settings.items() if k not in CNN_RUNTIME_KEYS}


#: Scheduling priority of the jobs of the longest chain of a run: face tracking and the static images
#: (the DR models train on them), the DR training and inference, and the CNN on the MDR input, which
#: waits for all of them. Snakemake starts the highest-priority ready job first; everything else has 0. On a
#: 2-core demo run this starts the DR training as soon as its images exist and keeps the chain moving
#: while the other core works through the independent jobs (a scheduling hint: outputs are the same).
CHAIN_PRIORITY = 10


def cnn_priority(input_name: str) -> int:
    """Scheduling priority of the CNN jobs of an input: :data:`CHAIN_PRIORITY` for inputs that read
    the DR (``mdr``), else 0."""
    return CHAIN_PRIORITY if "mdr" in input_name.split("+") else 0


def gpus(device: str, *, gpu_here: Callable[[], bool]) -> int:
    """The ``gpu`` resource of a job with the ``device`` setting: 1 on CUDA (``cuda``, ``cuda:N``, or
    ``auto`` when ``gpu_here()``, asked only then), else 0."""
    return 1 if device.startswith("cuda") or (device == "auto" and gpu_here()) else 0


def _partitions(rows: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Video id -> partition of manifest rows (either form, see the module docstring)."""
    if isinstance(rows, Mapping):
        return {video: row["partition"] for video, row in rows.items()}
    return {row["video"]: row["partition"] for row in rows}


def videos_in(rows, partitions: Iterable[str] | None) -> list[str]:
    """Sorted ids of the videos of ``rows`` in ``partitions`` (None: every video)."""
    parts = None if partitions is None else set(partitions)
    return sorted(v for v, p in _partitions(rows).items() if parts is None or p in parts)


def dr_train_partitions(settings: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training, validation) partitions of a DR training: train, and ``dr.val_partitions`` without it."""
    return (TRAIN,), tuple(p for p in settings["val_partitions"] if p != TRAIN)


def dr_train_videos(rows, settings: Mapping[str, Any]) -> list[str]:
    """Sorted ids of the videos a DR training reads (training and validation partitions)."""
    train, val = dr_train_partitions(settings)
    return videos_in(rows, train + val)


def dr_rank_partitions(settings: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Partitions the DR ranking evaluation reads: ``dr.rank_partitions``, or None = every video (the
    command then leaves out the models' training videos)."""
    parts = settings["rank_partitions"]
    return None if parts is None else tuple(parts)


def dr_rank_videos(rows, settings: Mapping[str, Any]) -> list[str]:
    """Sorted ids of the videos the DR ranking evaluation may read."""
    return videos_in(rows, dr_rank_partitions(settings))


def cnn_train_videos(rows) -> list[str]:
    """Sorted ids of the videos a per-frame CNN training reads (:data:`CNN_TRAIN_PARTITIONS`)."""
    return videos_in(rows, CNN_TRAIN_PARTITIONS)


__all__ = [
    "cnn_model_file", "dataset_dir", "dr_model_file", "experiment_dir", "features_dir", "predictions_file",
    "store_dir", "store_file",
    "CNN_RUNTIME_KEYS", "CNN_TRAIN_PARTITIONS", "DR_NOT_TRAINING_KEYS", "DR_RETRAIN_KEYS", "DR_RUNTIME_KEYS", "DR_TRAINING_KEYS",
    "PARTITIONS", "TRAIN", "cnn_rerun_settings", "cnn_train_videos", "dr_rank_partitions", "dr_rank_videos", "dr_retrain_settings",
    "dr_train_partitions", "dr_train_settings", "dr_train_videos", "gpus", "videos_in",
]
