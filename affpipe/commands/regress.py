"""``affpipe regress``: one experiment -- train a sequence regressor, predict every frame of every video.

Reads the manifest, ``<labels>/{video}.parquet`` and ``<features>/{video}.h5`` of every video; trains
on train, selects on devel, then predicts train, devel and (only then) test; fills the frames without a
feature and writes ``predictions.parquet`` (see :mod:`affpipe.regress.experiment` for its columns),
plus ``--summary`` JSON (training history, selected epoch, fill shares) and ``model.pt`` next to the
predictions. Resumable: a per-epoch ``checkpoint.pt`` next to the output is continued by a re-run with
the same settings and inputs, and deleted once the predictions are written.

With ``--source-dir`` nothing is trained: the trained experiment of another dataset (its folder,
``results/A/experiments/NAME``: training.json and model.pt) predicts every video of this one, with
its own recorded settings (``--settings`` is not used then); the labels may all be NaN.

Example (by hand)::

    python -m affpipe regress --manifest results/demo/manifest.parquet \\
        --features results/demo/features/dfm --labels results/demo/labels \\
        --input dfm --regressor bgru --experiment dfm_bgru \\
        --settings '{"max_epochs": 30}' --out results/demo/experiments/dfm_bgru/predictions.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from affpipe.commands._common import add_settings_arg, load_settings


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "regress",
        help="train/select a sequence regressor (e.g. BGRU) on CNN features and predict every frame -> .parquet",
        description="One experiment: train on the train partition, select the epoch on devel, predict every "
        "video (test only after selection), fill frames without a feature (flagged) and write the per-frame "
        "predictions with the labels.",
    )
    p.add_argument("--manifest", required=True, type=Path, help="results/DS/manifest.parquet")
    p.add_argument("--features", required=True, type=Path, help="folder of the features stores, results/DS/features/INPUT")
    p.add_argument("--labels", required=True, type=Path, help="folder of the label files, results/DS/labels")
    p.add_argument("--input", required=True, help="input representation of the features (recorded; e.g. dfm, dfa+dfs)")
    p.add_argument("--regressor", default="bgru",
                   help="regressor name (bgru; cnn/none = the CNN's per-frame predictions; multilevel = the multi-level CNN-RNN)")
    p.add_argument("--static", type=Path, default=None,
                   help="folder of the static stores, results/DS/static (aligned landmarks; read only when the "
                   "regressor asks for them, e.g. regression.multilevel.landmarks: true)")
    p.add_argument("--experiment", default=None, help="experiment name (default: the output's folder name)")
    p.add_argument("--label", default=None, help="display name for reports (default: the experiment name)")
    p.add_argument("--backbone", default=None, help="check that the features come from this backbone")
    p.add_argument("--out", required=True, type=Path, help="predictions.parquet (written atomically)")
    p.add_argument("--summary", type=Path, default=None, help="JSON summary of the run (default: training.json next to --out)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--source-dir", type=Path, default=None, metavar="DIR",
                   help="apply this trained experiment of another dataset (results/A/experiments/NAME) instead of "
                   "training; its settings are used")
    p.add_argument("--source-dataset", default=None, metavar="NAME",
                   help="name of that dataset (recorded; default: the folder three levels above --source-dir)")
    add_settings_arg(p, what="regression-stage (the `regression` section with the experiment's overrides)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from affpipe.config import section_settings
    from affpipe.errors import ConfigError
    from affpipe.regress.experiment import Experiment, SourceModel, run_experiment
    from affpipe.regress.registry import get_regressor

    settings = section_settings("regression", load_settings(args.settings))
    get_regressor(args.regressor)  # unknown name -> one-line error listing the known ones
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    exp = Experiment(
        name=args.experiment or args.out.parent.name,
        input=args.input,
        regressor=args.regressor,
        backbone=args.backbone or None,
        label=args.label,
        manifest=args.manifest,
        features_dir=args.features,
        labels_dir=args.labels,
        static_dir=args.static,
    )
    summary_out = args.summary or args.out.with_name("training.json")
    source = None
    if args.source_dir is not None:
        source = SourceModel(dataset=args.source_dataset or args.source_dir.resolve().parent.parent.name,
                             experiment_dir=args.source_dir)
    run_experiment(exp, settings, out=args.out, summary_out=summary_out, threads=args.threads, source=source)
    return 0
