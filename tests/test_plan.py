"""affpipe.plan: which videos feed each training job and which settings retrain it (issue 14 §3), without
Snakemake; and, through the workflow, that dr_train's rerun-triggering params follow it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from affpipe import plan
from affpipe.config import load_schema, section_settings

ROOT = Path(__file__).resolve().parent.parent

ROWS = {"a": {"partition": "train"}, "b": {"partition": "devel"}, "c": {"partition": "test"},
        "d": {"partition": "train"}, "e": {"partition": "devel"}}


def test_dr_keys_classify_every_schema_key_once():
    keys = list(load_schema("dr.schema.yaml")["properties"])
    groups = (plan.DR_RETRAIN_KEYS, plan.DR_RUNTIME_KEYS, plan.DR_NOT_TRAINING_KEYS)
    assert sorted(k for g in groups for k in g) == sorted(keys)
    assert set(plan.DR_RETRAIN_KEYS) == set(plan.DR_TRAINING_KEYS) | {"epochs"}


def test_dr_checkpoint_keys_are_the_plans():
    from affpipe.dr.train import TRAINING_KEYS

    assert TRAINING_KEYS == plan.DR_TRAINING_KEYS


def test_runtime_settings_do_not_change_the_retrain_settings_science_ones_do():
    base = section_settings("dr", {})
    runtime = section_settings("dr", {"device": "cpu", "amp": False, "cache_mb": 1, "loader_workers": 3})
    assert plan.dr_retrain_settings(runtime) == plan.dr_retrain_settings(base)
    assert plan.dr_train_settings(runtime) != plan.dr_train_settings(base)  # dr-train is still told them
    assert plan.dr_train_settings(runtime)["device"] == "cpu"
    for science in ({"lr": 0.002}, {"epochs": 3}, {"seed": 1}, {"val_partitions": ["devel", "test"]}):
        assert plan.dr_retrain_settings(section_settings("dr", science)) != plan.dr_retrain_settings(base), science
    # keys of the other DR jobs are neither a trigger nor given to dr-train
    other = section_settings("dr", {"rank_windows_per_video": 7, "levels": [3]})
    assert plan.dr_retrain_settings(other) == plan.dr_retrain_settings(base)
    assert plan.dr_train_settings(other) == plan.dr_train_settings(base)


def test_partition_selection_either_row_form():
    as_list = [{"video": v, **r} for v, r in reversed(list(ROWS.items()))]
    settings = section_settings("dr", {})
    for rows in (ROWS, as_list):
        assert plan.dr_train_videos(rows, settings) == ["a", "b", "d", "e"]  # val_partitions: [devel]
        assert plan.dr_rank_videos(rows, settings) == ["a", "b", "c", "d", "e"]  # rank_partitions: null
        assert plan.cnn_train_videos(rows) == ["a", "b", "d", "e"]
        assert plan.videos_in(rows, ["test"]) == ["c"]
    assert plan.dr_train_partitions(settings) == (("train",), ("devel",))
    # train listed in val_partitions is not validated on, only trained on
    assert plan.dr_train_partitions(section_settings("dr", {"val_partitions": ["train", "test"]})) == (("train",), ("test",))
    assert plan.dr_train_videos(ROWS, section_settings("dr", {"val_partitions": []})) == ["a", "d"]
    assert plan.dr_rank_videos(ROWS, section_settings("dr", {"rank_partitions": ["test", "devel"]})) == ["b", "c", "e"]
    assert plan.dr_rank_partitions(section_settings("dr", {})) is None


def test_gpus_asks_the_machine_only_for_auto():
    asked = []

    def here():
        asked.append(1)
        return True

    assert [plan.gpus(d, gpu_here=here) for d in ("cpu", "cuda", "cuda:1")] == [0, 1, 1] and not asked
    assert plan.gpus("auto", gpu_here=here) == 1 and asked
    assert plan.gpus("auto", gpu_here=lambda: False) == 0


def test_registry_says_which_features_a_regressor_reads():
    from affpipe.regress.registry import get_regressor

    settings = section_settings("regression", {})
    assert get_regressor("astnet").features_of("dfm", settings) == "dfm"  # attribute_input: null
    settings["astnet"]["attribute_input"] = "sfa"
    assert get_regressor("astnet").features_of("dfm", settings) == "sfa"
    assert get_regressor("bgru").features_of("dfm", settings) == "dfm"


@pytest.mark.parametrize(("rules", "pattern", "path"), [
    ("static.smk", "results/{ds}/static/{video}.h5", lambda w: plan.store_file(w["ds"], "static", w["video"])),
    ("dynamic.smk", "results/{ds}/dynamic/{video}.h5", lambda w: plan.store_file(w["ds"], "dynamic", w["video"])),
    ("dr.smk", "results/{ds}/dr/videos", lambda w: plan.store_dir(w["ds"], "dr")),
    ("dr.smk", "results/{ds}/dr/model_T{T}.pt", lambda w: plan.dr_model_file(w["ds"], w["T"])),
    ("cnn.smk", "results/{ds}/cnn/{input}/model.pt", lambda w: plan.cnn_model_file(w["ds"], w["input"])),
    ("cnn.smk", "results/{ds}/features/{input}", lambda w: plan.features_dir(w["ds"], w["input"])),
    ("cnn.smk", "results/{ds}/features_from/{src}/{input}",
     lambda w: plan.features_dir(w["ds"], w["input"], source=w["src"])),
    ("regression.smk", "results/{ds}/experiments/{experiment}/predictions.parquet",
     lambda w: plan.predictions_file(w["ds"], w["experiment"])),
])
def test_layout_is_the_rules_outputs(rules, pattern, path):
    """The paths the input functions build from affpipe.plan are the ones the rules write."""
    assert f'"{pattern}"' in (ROOT / "rules" / rules).read_text()
    w = {"ds": "d1", "video": "v_2", "T": 3, "input": "dfa+dfs", "src": "d0", "experiment": "e"}
    assert path(w) == pattern.format(**w)


def test_plan_imports_no_ml_stack():
    code = ("import sys, affpipe.plan; heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'cv2', 'dlib')]; "
            "assert not heavy, heavy")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _dry_run(base, cfg, targets):
    res = subprocess.run([sys.executable, "-m", "snakemake", *base, "--configfile", str(cfg), "-n", "--", *targets],
                         cwd=cfg.parent, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    return out


def _dry_runs(base, configs: dict, targets) -> dict:
    """`_dry_run` with each config file of ``configs`` (name -> path), two at a time (each is a
    single-threaded DAG build; dry runs take no lock and write no output): name -> output."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(configs, pool.map(lambda cfg: _dry_run(base, cfg, targets), configs.values())))


DR_TARGET, CNN_TARGET = "results/aw/dr/model_T3.pt", "results/aw/cnn/sfa/model.pt"
TARGETS = (DR_TARGET, CNN_TARGET)
#: what the jobs of DR_TARGET and CNN_TARGET were recorded with
FIRST = {"dr": {"device": "auto"}, "cnn": {"loader_workers": 4}}
#: settings of plan.DR_RUNTIME_KEYS and plan.CNN_RUNTIME_KEYS changed at once
RUNTIME = {"dr": {"device": "cpu", "amp": False, "cache_mb": 1, "loader_workers": 2, "rank_windows_per_video": 5,
                  "infer_batch_size": 8},
           "cnn": {"loader_workers": 0, "cache_bytes": 1000}}
#: one science setting changed at a time: name -> (section, settings)
SCIENCE = {"dr_lr": ("dr", {"lr": 0.002}), "dr_epochs": ("dr", {"epochs": 3}),
           "cnn_lr": ("cnn", {"lr": 0.002}), "cnn_epochs": ("cnn", {"epochs": 3}),
           "cnn_input_size": ("cnn", {"input_size": 64})}
#: the training rule of each section
RULES = {"dr": "dr_train", "cnn": "cnn_train"}


@pytest.fixture(scope="module")
def rerun_plans(tmp_path_factory) -> dict:
    """An Aff-Wild2-layout dataset ``aw`` whose dr_train job for DR_TARGET and cnn_train job for CNN_TARGET
    Snakemake has recorded (by --touch, which runs nothing) with FIRST, their inputs and output stand-in
    files each newer than the last; then a dry run of both targets with FIRST, with RUNTIME and with each
    of SCIENCE: name ("first", "runtime" or a SCIENCE key) -> its output."""
    from test_datasets import affwild2_tree

    tmp_path = tmp_path_factory.mktemp("rerun_plans")
    root = affwild2_tree(tmp_path / "Aff-Wild2")
    shutil.copy(ROOT / "workflow_config.yaml", tmp_path / "workflow_config.yaml")
    entry = {"adapter": "affwild2", "root": str(root), "test_list": "test_set_release.txt"}

    def config(name, settings):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({"datasets": {"aw": {**entry, **settings}}}))
        return path

    base = ["-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    first = config("first", FIRST)
    for args in (["--cores", "1", "results/aw/manifest.parquet"], ["--cores", "1", "--touch", *TARGETS]):
        res = subprocess.run([sys.executable, "-m", "snakemake", *base, "--configfile", str(first), *args],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    # --touch recorded the jobs without running them: stand-in files, each newer than its inputs
    stamp = os.stat(tmp_path / "results/aw/manifest.parquet").st_mtime
    for step, pattern in enumerate(("faces/{}.parquet", "static/{}.h5")):
        for video in ("1-30-640x360", "video10_1_left", "video10_1_right"):
            path = tmp_path / "results/aw" / pattern.format(video)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path, (stamp + 10 * (step + 1),) * 2)
    for target in TARGETS:
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / target).touch()
        os.utime(tmp_path / target, (stamp + 30,) * 2)
    configs = {"first": first, "runtime": config("runtime", RUNTIME),
               **{name: config(name, {section: settings}) for name, (section, settings) in SCIENCE.items()}}
    return _dry_runs(base, configs, TARGETS)


def _assert_retrain_follows_the_plan(outs: dict, section: str) -> None:
    rule = RULES[section]
    assert "Nothing to be done" in outs["first"]
    assert "Nothing to be done" in outs["runtime"]
    for name, (changed, _) in SCIENCE.items():
        out = outs[name]
        if changed == section:
            assert f"rule {rule}:" in out and "Params have changed" in out, (name, out[-3000:])
        else:  # another job's science setting
            assert f"rule {rule}:" not in out, (name, out[-3000:])


def test_dr_device_and_loader_settings_do_not_retrain_science_keys_do(rerun_plans):
    """Snakemake records dr_train's params with the model (here by --touch, which runs nothing); a later dry
    run plans dr_train again only when a setting of plan.DR_RETRAIN_KEYS changed (issue 14 §3)."""
    _assert_retrain_follows_the_plan(rerun_plans, "dr")


def test_cnn_loader_and_cache_settings_do_not_rerun_science_keys_do(rerun_plans):
    """As for the DR models: cnn_train is planned again only when a cnn setting outside
    plan.CNN_RUNTIME_KEYS changed (loader processes and cache size change neither weights nor features)."""
    _assert_retrain_follows_the_plan(rerun_plans, "cnn")


def test_the_longest_chain_is_scheduled_first():
    from affpipe.plan import CHAIN_PRIORITY, cnn_priority

    assert CHAIN_PRIORITY > 0
    assert cnn_priority("mdr") == cnn_priority("sfa+mdr") == CHAIN_PRIORITY
    assert cnn_priority("sfa") == cnn_priority("dfa+dfs") == cnn_priority("dfm") == 0
    from affpipe.resources import REPO_ROOT

    rules = {p.name: p.read_text() for p in (REPO_ROOT / "rules").glob("*.smk")}
    for rule, where in {"faces": "faces.smk", "static": "static.smk", "dr_train": "dr.smk", "dr_infer": "dr.smk"}.items():
        body = rules[where].split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
        assert "priority: CHAIN_PRIORITY" in body, rule
    for rule in ("cnn_train", "cnn_features"):
        body = rules["cnn.smk"].split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
        assert "priority: cnn_priority" in body, rule
