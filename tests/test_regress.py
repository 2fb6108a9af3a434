"""Sequence regression end to end on synthetic features: learning, honesty, resumability, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from affpipe import metrics
from affpipe.cli import main
from affpipe.config import load_schema, section_settings
from affpipe.errors import AffpipeError
from affpipe.regress import data as rdata
from affpipe.regress import train as rtrain
from affpipe.regress.experiment import Experiment, run_experiment
from affpipe.regress.bgru import BGRU
from affpipe.regress.registry import REGRESSORS, get_regressor
from support.regress_support import FAST_SETTINGS, make_dataset, write_features

pytestmark = pytest.mark.train

torch.set_num_threads(1)


def _settings(**over):
    s = dict(FAST_SETTINGS)
    s.update(over)
    return section_settings("regression", s)


def _exp(ds, regressor="bgru", name="dfm_bgru", backbone=None):
    return Experiment(name=name, input="dfm", regressor=regressor, backbone=backbone, label=None,
                      manifest=ds.manifest, features_dir=ds.features_dir, labels_dir=ds.labels_dir)


def _read(path):
    return pq.read_table(path).to_pandas()


def _ccc(df, part, dim):
    d = df[df.partition == part]
    return metrics.ccc(d[f"{dim}_pred"].to_numpy(), d[f"{dim}_true"].to_numpy(), nan_policy="omit")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    """One uninterrupted training run, recording when each features store is opened."""
    out = tmp_path_factory.mktemp("run") / "dfm_bgru" / "predictions.parquet"
    events = []
    orig_init = rdata.FeatureSource.__init__
    orig_fit = rtrain.fit_sequence_model

    def init(self, path, **kw):
        events.append(("open", Path(path).stem))
        orig_init(self, path, **kw)

    def fit(*a, **kw):
        events.append(("fit_start", ""))
        res = orig_fit(*a, **kw)
        events.append(("fit_end", ""))
        return res

    mp = pytest.MonkeyPatch()
    mp.setattr(rdata.FeatureSource, "__init__", init)
    mp.setattr(rtrain, "fit_sequence_model", fit)
    try:
        summary = run_experiment(_exp(synth), _settings(), out=out, summary_out=out.with_name("training.json"))
    finally:
        mp.undo()
    return out, summary, events


# -- model ----------------------------------------------------------------------------------
def test_bgru_ignores_padding():
    torch.manual_seed(0)
    m = BGRU(5, hidden_units=7).eval()
    short = torch.randn(1, 6, 5)
    long = torch.randn(1, 10, 5)
    batch = torch.zeros(2, 10, 5)
    batch[0, :6] = short[0]
    batch[1] = long[0]
    with torch.no_grad():
        alone = m(short, torch.tensor([6]))
        both = m(batch, torch.tensor([6, 10]))
    # the backward direction starts at the real last row, so padding never leaks into the outputs
    torch.testing.assert_close(both[0, :6], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both[0, 6:], m.head.bias.detach().expand(4, 2))  # padded rows: head(0)


def test_feature_norm_train_vs_video(synth):
    rows = rdata.read_manifest(synth.manifest)
    inputs = rdata.Inputs(features_dir=synth.features_dir, labels_dir=synth.labels_dir)
    videos = rdata.load_videos(rows, inputs, partitions=("train",))
    spans = np.array([[i, 0, len(v.source)] for i, v in enumerate(videos[:2])])
    scaler = rtrain.FeatureScaler("train", rtrain.fit_normalizer(videos, dim=12))
    x = rtrain.collate(videos, spans, scaler)["x"].numpy()
    all_rows = np.concatenate([x[i, : spans[i, 2]] for i in range(2)])
    assert np.abs(all_rows.mean(axis=0)).max() > 0.05  # two videos of a six-video train set: not centred
    x = rtrain.collate(videos, spans, rtrain.FeatureScaler("video", rtrain.Normalizer.identity(12)))["x"].numpy()
    for i in range(2):
        rows_i = x[i, : spans[i, 2]]
        np.testing.assert_allclose(rows_i.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(rows_i.std(axis=0), 1, atol=1e-4)


def test_registry_and_paper_defaults():
    assert get_regressor("none") is get_regressor("cnn")
    assert REGRESSORS["bgru"].kind == "sequence"
    with pytest.raises(AffpipeError, match=r"unknown regressor 'lstm'; known: (\w+, )*bgru, cnn, (\w+, )*none"):
        get_regressor("lstm")
    s = section_settings("regression", {})
    assert (s["bgru"]["hidden_units"], s["bgru"]["layers"]) == (200, 1)
    assert (s["optimizer"], s["lr"], s["lr_decay"], s["momentum"]) == ("sgd", 0.005, 0.0001, 0.85)
    m = REGRESSORS["bgru"].build(4096, s)
    assert m.gru.bidirectional and m.gru.hidden_size == 200 and m.gru.num_layers == 1
    assert m.head.in_features == 400 and m.head.out_features == 2


def test_schema_regressor_enum_is_the_registry():
    """`experiments.<name>.regressor` accepts exactly the registered names and aliases, and the
    registry's DAG-facing metadata holds: which regressors train, which read the landmarks."""
    enum = load_schema("experiments.schema.yaml")["additionalProperties"]["properties"]["regressor"]["enum"]
    assert sorted(enum) == sorted(REGRESSORS)
    assert {name for name, spec in REGRESSORS.items() if not spec.trains} == {"cnn", "none"}
    s = section_settings("regression", {})
    assert REGRESSORS["bgru"].reads(s) == ("features",)
    assert REGRESSORS["cnn"].reads(s) == ("pred",)
    lm = section_settings("regression", {"multilevel": {"landmarks": True}})
    assert REGRESSORS["multilevel"].reads(lm)[-1] == "landmarks"
    assert "landmarks" not in REGRESSORS["multilevel"].reads(s)


def test_default_experiments_are_the_papers_systems():
    default = load_schema("experiments.schema.yaml")["default"]
    exps = section_settings("experiments", default)
    assert list(exps) == ["dfm_bgru", "dfs_bgru", "dfa_dfs_bgru", "sfa_bgru", "mdr_cnn"]
    assert exps["dfa_dfs_bgru"]["input"] == "dfa+dfs"
    assert exps["mdr_cnn"]["regressor"] == "cnn"
    assert all(e["enabled"] for e in exps.values())


# -- training -------------------------------------------------------------------------------
def test_learns_the_synthetic_ground_truth(trained):
    out, summary, _ = trained
    df = _read(out)
    for dim in ("valence", "arousal"):
        assert _ccc(df, "test", dim) > 0.6, dim
        assert _ccc(df, "devel", dim) > 0.6, dim
    assert summary["selected_epoch"] >= 1
    assert summary["history"][summary["selected_epoch"] - 1]["devel_ccc_mean"] == pytest.approx(
        max(h["devel_ccc_mean"] for h in summary["history"])
    )


def test_predictions_cover_every_frame_and_flag_filled_ones(trained, synth):
    out, summary, _ = trained
    df = _read(out)
    assert list(df.columns) == ["video", "partition", "frame", "time_s", "valence_pred", "arousal_pred",
                                "valence_true", "arousal_true", "filled"]
    assert sorted(df.video.unique()) == sorted(synth.videos)
    assert len(df) == 200 * len(synth.videos)
    assert np.isfinite(df[["valence_pred", "arousal_pred"]].to_numpy()).all()
    v = df[df.video == "train_00"]
    # no feature before frame 18 (first dynamic window) nor on the lost-face frames 100..129
    assert v.filled.to_numpy()[:18].all() and v.filled.to_numpy()[100:130].all()
    assert not v.filled.to_numpy()[18:100].any()
    # nearest rule: frames 0..17 hold the prediction of frame 18
    assert (v.valence_pred.to_numpy()[:18] == v.valence_pred.to_numpy()[18]).all()
    # unlabelled frames keep NaN truth, never invented
    d = df[df.video == "devel_00"]
    assert d.valence_true.isna().sum() == 10
    assert summary["fill"]["train"]["filled_frames"] == 6 * 18 + 30
    assert summary["fill"]["test"]["filled_share"] == pytest.approx(18 / 200)
    meta = pq.read_schema(out).metadata
    assert meta[b"regressor"] == b"bgru" and meta[b"fill_rule"] == b"nearest"
    assert json.loads(meta[b"settings"])["seq_len"] == FAST_SETTINGS["seq_len"]
    assert not out.with_name("checkpoint.pt").exists()  # removed once the predictions are written
    model = torch.load(out.with_name("model.pt"), weights_only=True)
    assert model["input_dim"] == 12 and "gru.weight_ih_l0" in model["model"]


def test_test_partition_is_opened_only_after_training(trained):
    _, _, events = trained
    fit_end = events.index(("fit_end", ""))
    test_opens = [i for i, (kind, name) in enumerate(events) if kind == "open" and name.startswith("test_")]
    assert len(test_opens) == 2 and min(test_opens) > fit_end
    before = {name for kind, name in events[:fit_end] if kind == "open"}
    assert before == {f"train_{i:02d}" for i in range(6)} | {"devel_00", "devel_01"}


def test_interrupted_run_resumes_to_the_same_result(trained, synth, tmp_path):
    out_full, _, _ = trained
    out = tmp_path / "dfm_bgru" / "predictions.parquet"

    class Stop(Exception):
        pass

    def stop_after_4(epoch, record):
        if epoch == 4:
            raise Stop

    with pytest.raises(Stop):
        run_experiment(_exp(synth), _settings(), out=out, on_epoch_end=stop_after_4)
    ckpt = out.with_name("checkpoint.pt")
    assert ckpt.exists() and not out.exists()
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 4
    summary = run_experiment(_exp(synth), _settings(), out=out)
    assert summary["resumed_from_epoch"] == 4
    a, b = _read(out_full), _read(out)
    np.testing.assert_array_equal(a[["valence_pred", "arousal_pred"]].to_numpy(), b[["valence_pred", "arousal_pred"]].to_numpy())


def test_checkpoint_of_other_settings_is_not_resumed(synth, tmp_path):
    out = tmp_path / "x" / "predictions.parquet"

    def stop(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_exp(synth), _settings(max_epochs=2), out=out, on_epoch_end=stop)
    summary = run_experiment(_exp(synth), _settings(max_epochs=2, seed=5), out=out)
    assert summary["resumed_from_epoch"] == 0 and summary["epochs_run"] == 2


def test_collapse_is_visible_not_masked(tmp_path):
    ds = make_dataset(tmp_path, informative=False, partitions={"train": 4, "devel": 2, "test": 2}, lost=None)
    out = tmp_path / "exp" / "predictions.parquet"
    run_experiment(_exp(ds), _settings(max_epochs=4), out=out)
    df = _read(out)
    for dim in ("valence", "arousal"):
        assert abs(_ccc(df, "test", dim)) < 0.3, dim


def test_selection_needs_labelled_devel_unless_last(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 3, "test": 1}, lost=None)
    out = tmp_path / "exp" / "predictions.parquet"
    with pytest.raises(AffpipeError, match="model selection on devel needs devel videos"):
        run_experiment(_exp(ds), _settings(max_epochs=2), out=out)
    summary = run_experiment(_exp(ds), _settings(max_epochs=2, selection="last"), out=out)
    assert summary["selected_epoch"] == 2


# -- per-frame CNN predictions ----------------------------------------------------------------
def test_cnn_regressor_uses_the_stored_predictions(tmp_path):
    ds = make_dataset(tmp_path, with_pred=True, partitions={"train": 2, "devel": 1, "test": 1}, lost=None)
    out = tmp_path / "mdr_cnn" / "predictions.parquet"
    summary = run_experiment(_exp(ds, regressor="none", name="mdr_cnn"), _settings(), out=out)
    assert "history" not in summary and not out.with_name("model.pt").exists()
    import h5py

    with h5py.File(ds.features_dir / "test_00.h5") as f:
        stored = f["pred"][:]
        frames = f["frame"][:]
    df = _read(out)
    t = df[df.video == "test_00"]
    np.testing.assert_allclose(t[["valence_pred", "arousal_pred"]].to_numpy()[frames], stored, atol=0)
    assert t.filled.to_numpy()[:18].all() and not t.filled.to_numpy()[18:].any()


def test_cnn_regressor_without_pred_names_the_file(synth, tmp_path):
    with pytest.raises(AffpipeError, match=r"devel_00\.h5: features store has no `pred` dataset"):
        run_experiment(_exp(synth, regressor="cnn"), _settings(), out=tmp_path / "p.parquet")


# -- input errors ---------------------------------------------------------------------------
def test_missing_features_file_is_named(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, lost=None)
    (ds.features_dir / "devel_00.h5").unlink()
    with pytest.raises(AffpipeError, match=r"devel_00\.h5: HDF5 store does not exist"):
        run_experiment(_exp(ds), _settings(), out=tmp_path / "p.parquet")


def test_feature_width_mismatch_is_named(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, lost=None)
    n = 200
    write_features(ds.features_dir / "train_01.h5", np.arange(n), np.zeros((n, 5)), np.ones(n, bool))
    with pytest.raises(AffpipeError, match=r"train_01\.h5: `features` has 5 columns here but 12"):
        run_experiment(_exp(ds), _settings(), out=tmp_path / "p.parquet")


def test_backbone_mismatch_is_an_error(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, lost=None)
    with pytest.raises(AffpipeError, match="asks for backbone 'vgg16' but these features come from 'small'"):
        run_experiment(_exp(ds, backbone="vgg16"), _settings(), out=tmp_path / "p.parquet")


def test_non_finite_valid_feature_is_an_error(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, lost=None)
    x = np.ones((200, 12))
    x[50] = np.nan
    write_features(ds.features_dir / "train_00.h5", np.arange(200), x, np.ones(200, bool))
    with pytest.raises(AffpipeError, match=r"train_00\.h5: dataset `features` has non-finite values in valid rows \(frames 50\)"):
        run_experiment(_exp(ds), _settings(max_epochs=1), out=tmp_path / "p.parquet")


# -- CLI ------------------------------------------------------------------------------------
def test_cli_runs_one_experiment(tmp_path, capsys):
    ds = make_dataset(tmp_path, with_pred=True, partitions={"train": 2, "devel": 1, "test": 1}, lost=None)
    out = tmp_path / "experiments" / "dfm_cnn" / "predictions.parquet"
    rc = main(["regress", "--manifest", str(ds.manifest), "--features", str(ds.features_dir), "--labels",
               str(ds.labels_dir), "--input", "dfm", "--regressor", "cnn", "--label", "DFM per-frame",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads(out.with_name("training.json").read_text())
    assert summary["experiment"] == "dfm_cnn" and summary["label"] == "DFM per-frame"
    assert pq.read_schema(out).metadata[b"label"] == b"DFM per-frame"


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["regress", "--manifest", str(tmp_path / "nope.parquet"), "--features", str(tmp_path),
               "--labels", str(tmp_path), "--input", "dfm", "--out", str(tmp_path / "p.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("affpipe regress: error: ") and "nope.parquet: manifest does not exist" in err[-1]
    rc = main(["regress", "--manifest", "m", "--features", "f", "--labels", "l", "--input", "dfm",
               "--out", "p.parquet", "--settings", '{"seq_len": 0}'])
    err = capsys.readouterr().err
    assert rc == 2 and "regression.seq_len" in err
