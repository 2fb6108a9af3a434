"""Multi-level CNN-RNN (Kollias & Zafeiriou): CCC loss, median filter, model, settings, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy import ndimage, signal

from affpipe import metrics
from affpipe.cli import main
from affpipe.config import section_settings
from affpipe.errors import AffpipeError, ConfigError
from affpipe.io.h5store import DatasetSpec, StoreWriter, static_specs
from affpipe.regress import data as rdata
from affpipe.regress import multilevel
from affpipe.regress.experiment import Experiment, run_experiment
from affpipe.regress.losses import masked_ccc_loss, masked_mse
from affpipe.regress.registry import get_regressor
from affpipe.regress.postprocess import median_filter, median_filter_predictions
from support.regress_support import FPS, make_dataset

pytestmark = pytest.mark.train

torch.set_num_threads(1)

#: small and fast: 16-unit GRUs, short sequences, no median filter (tested separately)
FAST = {"max_epochs": 15, "patience": 0, "device": "cpu",
        "multilevel": {"gru_units": 16, "seq_len": 40, "train_hop": 20, "batch_size": 4, "lr": 0.01,
                       "dropout": 0.0, "median_filter": {"valence": 1, "arousal": 1}}}
TAP_WIDTHS = {"tap_low": 6, "tap_high": 5}


def _settings(**over):
    s = json.loads(json.dumps(FAST))
    for k, v in over.items():
        if k == "multilevel":
            s["multilevel"].update(v)
        else:
            s[k] = v
    return section_settings("regression", s)


# -- synthetic multi-level stores ------------------------------------------------------------
def add_taps(ds, *, seed: int = 1) -> None:
    """Rewrite every features store of ``ds`` with taps: valence is readable from ``tap_low`` only,
    arousal from ``tap_high`` only, ``features`` (fc) keeps the original mixed signal; plus a static
    store of landmarks per video."""
    import h5py

    rng = np.random.default_rng(seed)
    W_low = rng.normal(size=(1, TAP_WIDTHS["tap_low"]))
    W_high = rng.normal(size=(1, TAP_WIDTHS["tap_high"]))
    static_dir = ds.root / "static"
    for vid in ds.videos:
        path = ds.features_dir / f"{vid}.h5"
        with h5py.File(path, "r") as f:
            frames, valid, feats = f["frame"][:], f["valid"][:], f["features"][:]
        lab = pq.read_table(ds.labels_dir / f"{vid}.parquet").to_pandas()
        y = np.stack([np.nan_to_num(lab.valence.to_numpy()), np.nan_to_num(lab.arousal.to_numpy())], 1)[frames]
        low = y[:, :1] @ W_low + rng.normal(scale=0.3, size=(frames.size, TAP_WIDTHS["tap_low"]))
        high = y[:, 1:] @ W_high + rng.normal(scale=0.3, size=(frames.size, TAP_WIDTHS["tap_high"]))
        specs = [DatasetSpec("frame", (), "int32", "frame"), DatasetSpec("valid", (), "bool", "valid"),
                 DatasetSpec("features", (feats.shape[1],), "float32", "fc"),
                 DatasetSpec("tap_low", (TAP_WIDTHS["tap_low"],), "float32", "low"),
                 DatasetSpec("tap_high", (TAP_WIDTHS["tap_high"],), "float32", "high")]
        nan = lambda a: np.where(valid[:, None], a, np.nan).astype(np.float32)  # noqa: E731
        with StoreWriter(path, specs, stage="features", settings={"backbone": "small"}, attrs={"backbone": "small"}) as w:
            w.append(frame=frames, valid=valid, features=nan(feats), tap_low=nan(low), tap_high=nan(high))
        n = len(lab)
        lm = rng.uniform(10, 50, size=(n, 68, 2)).astype(np.float32)
        svalid = np.ones(n, bool)
        svalid[60:63] = False  # three frames without a face: their feature rows are dropped
        lm[~svalid] = np.nan
        size = 8
        with StoreWriter(static_dir / f"{vid}.h5", static_specs(size), stage="static", settings={},
                         attrs={"size": size}) as w:
            w.append(frame=np.arange(n, dtype=np.int32), time_s=np.arange(n) / FPS, valid=svalid,
                     sfa=np.zeros((n, size, size, 3), np.uint8), sfs=np.zeros((n, size, size, 3), np.uint8),
                     landmarks=lm, transform=np.zeros((n, 2, 3)))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("ml"), lost=None, partitions={"train": 6, "devel": 2, "test": 2})
    add_taps(ds)
    return ds


def _exp(ds, name="dfm_multilevel", static=True):
    return Experiment(name=name, input="dfm", regressor="multilevel", backbone=None, label=None, manifest=ds.manifest,
                      features_dir=ds.features_dir, labels_dir=ds.labels_dir,
                      static_dir=ds.root / "static" if static else None)


# -- CCC loss --------------------------------------------------------------------------------
def test_ccc_loss_matches_hand_computation():
    # valence: x = 1,2,3,4 vs y = 2,4,6,8: means 2.5, 5; var 1.25, 5; cov 2.5 -> CCC = 5 / 12.5 = 0.4
    # arousal: x = 0,0,1,1 vs y = 0,1,0,1: cov 0 -> CCC 0.  Loss = 1 - (0.4 + 0) / 2 = 0.8
    out = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 1.0], [4.0, 1.0]]])
    y = torch.tensor([[[2.0, 0.0], [4.0, 1.0], [6.0, 0.0], [8.0, 1.0]]])
    loss = masked_ccc_loss(out, y, torch.ones_like(y))
    assert abs(loss.item() - 0.8) < 1e-6
    # perfect prediction -> 0; prediction = -label (CCC -1 on both) -> 2
    assert abs(masked_ccc_loss(y, y, torch.ones_like(y)).item()) < 1e-6
    yc = y - y.mean(dim=1, keepdim=True)
    assert abs(masked_ccc_loss(-yc, yc, torch.ones_like(y)).item() - 2.0) < 1e-6


def test_ccc_loss_concatenates_the_batch_and_agrees_with_the_metric():
    rng = np.random.default_rng(0)
    out, y = rng.normal(size=(3, 7, 2)), rng.normal(size=(3, 7, 2)) * 0.5 + 0.2
    loss = masked_ccc_loss(torch.tensor(out, dtype=torch.float32), torch.tensor(y, dtype=torch.float32),
                           torch.ones(3, 7, 2))
    want = 1 - np.mean([metrics.ccc(out[..., d].ravel(), y[..., d].ravel()) for d in range(2)])
    assert abs(loss.item() - want) < 1e-5


def test_masked_entries_and_padding_are_ignored():
    rng = np.random.default_rng(1)
    out = torch.tensor(rng.normal(size=(2, 6, 2)), dtype=torch.float32, requires_grad=True)
    y = torch.tensor(rng.normal(size=(2, 6, 2)), dtype=torch.float32)
    mask = torch.ones(2, 6, 2)
    mask[1, 4:] = 0  # padding of a shorter sequence
    mask[0, 2, 1] = 0  # one unlabelled arousal entry
    y_nan = y.clone()
    y_nan[mask == 0] = float("nan")  # unlabelled targets are NaN in the data
    loss = masked_ccc_loss(out, y_nan, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(out.grad[mask == 0] == 0)
    keep = mask.numpy() > 0
    o, t = out.detach().numpy(), y.numpy()
    want = 1 - np.mean([metrics.ccc(o[..., d][keep[..., d]], t[..., d][keep[..., d]]) for d in range(2)])
    assert abs(loss.item() - want) < 1e-5
    # a dimension without any labelled entry is left out of the mean; no label at all -> 0, zero gradient
    m2 = torch.ones(2, 6, 2)
    m2[..., 1] = 0
    want_v = 1 - metrics.ccc(o[..., 0].ravel(), t[..., 0].ravel())
    assert abs(masked_ccc_loss(out, y, m2).item() - want_v) < 1e-5
    out.grad = None
    zero = masked_ccc_loss(out, y_nan, torch.zeros(2, 6, 2))
    zero.backward()
    assert zero.item() == 0.0 and torch.all(out.grad == 0)
    # the MSE loss of the generic trainer is unchanged: mean over the masked-in entries
    assert abs(masked_mse(out, y.nan_to_num(), mask).item() - float(((o - t) ** 2)[keep].mean())) < 1e-6


# -- median filter ---------------------------------------------------------------------------
def test_median_filter_equals_scipy_away_from_the_edges_and_shrinks_at_them():
    x = np.random.default_rng(2).normal(size=300)
    for w in (3, 81):
        h = w // 2
        got = median_filter(x, window=w)
        assert np.array_equal(got[h:-h], signal.medfilt(x, w)[h:-h])
        assert np.array_equal(got[h:-h], ndimage.median_filter(x, size=w, mode="nearest")[h:-h])
        # the edges: median of the frames that exist inside the window
        for t in (0, 1, h - 1, x.size - 1):
            assert got[t] == np.median(x[max(0, t - h): t + h + 1])
    # by hand, window 3: [5, 1, 4, 2, 3] -> [med(5,1), med(5,1,4), med(1,4,2), med(4,2,3), med(2,3)]
    assert median_filter(np.array([5.0, 1, 4, 2, 3]), window=3).tolist() == [3.0, 4.0, 2.0, 3.0, 2.5]
    # shorter than the window: every frame's window is shrunk; window 1 is the identity
    assert median_filter(np.array([5.0, 1, 4]), window=81).tolist() == [4.0, 4.0, 4.0]
    assert np.array_equal(median_filter(x, window=1), x)
    with pytest.raises(ValueError, match="odd"):
        median_filter(x, window=4)
    p = np.stack([x, -x], 1)
    both = median_filter_predictions(p, windows=(81, 3))
    assert np.array_equal(both[:, 0], median_filter(x, window=81)) and np.array_equal(both[:, 1], median_filter(-x, window=3))


# -- model and settings ----------------------------------------------------------------------
def test_paper_defaults_and_overrides():
    s = section_settings("regression", {})
    hp = s["multilevel"]
    assert (hp["gru_units"], hp["gru_layers"], hp["taps"], hp["landmarks"]) == (128, 2, ["low", "high", "fc"], False)
    eff = multilevel.prepare_settings(s)
    assert (eff["seq_len"], eff["batch_size"], eff["loss"], eff["lr"], eff["optimizer"]) == (80, 4, "ccc", 0.001, "adam")
    assert eff["median_filter"] == {"valence": 81, "arousal": 3}
    assert (s["seq_len"], s["loss"], s["median_filter"]) == (100, "mse", {"valence": 1, "arousal": 1})  # BGRU unchanged
    eff = multilevel.prepare_settings(section_settings("regression", {"seq_len": 50, "multilevel": {"seq_len": None}}))
    assert eff["seq_len"] == 50  # null = the top-level value
    assert multilevel.input_datasets(s) == ("tap_low", "tap_high", "features")
    lm = section_settings("regression", {"multilevel": {"landmarks": True, "taps": ["high", "fc"]}})
    assert multilevel.input_datasets(lm) == ("tap_high", "features", "landmarks")
    with pytest.raises(ConfigError, match="landmarks joins the `fc` tap"):
        multilevel.input_datasets(section_settings("regression", {"multilevel": {"landmarks": True, "taps": ["low"]}}))
    with pytest.raises(ConfigError, match="median_filter.valence must be a positive odd"):
        multilevel.prepare_settings(section_settings("regression", {"multilevel": {"median_filter": {"valence": 80}}}))
    spec = get_regressor("multilevel")
    assert spec.kind == "sequence" and spec.fit is multilevel.fit


def test_model_routes_each_tap_to_its_own_gru_and_ignores_padding():
    torch.manual_seed(0)
    groups = [("tap_low", 3), ("tap_high", 4), ("features", 5), ("landmarks", 136)]
    net = multilevel.MultiLevelGRU(groups, units=8, layers=2, dropout=0.0).eval()
    assert {t: g.input_size for t, g in net.grus.items()} == {"low": 3, "high": 4, "fc": 5 + 136}
    assert net.grus["fc"].num_layers == 2 and net.grus["fc"].hidden_size == 8 and net.head.in_features == 24
    x = torch.randn(2, 9, 148)
    with torch.no_grad():
        out = net(x, torch.tensor([9, 5]))
        assert out.shape == (2, 9, 2)
        # padding after row 5 of sequence 2 changes nothing before it (unidirectional, packed)
        x2 = x.clone()
        x2[1, 5:] = 100.0
        assert torch.allclose(net(x2, torch.tensor([9, 5]))[1, :5], out[1, :5], atol=1e-6)
        # the low-level GRU sees only the tap_low columns: changing tap_high moves only via its own GRU
        x3 = x.clone()
        x3[..., 3:7] += 1.0
        h_low = net.grus["low"](x[..., :3])[0]
        assert torch.allclose(net.grus["low"](x3[..., :3])[0], h_low)
    with pytest.raises(ValueError, match="needs the column group"):
        multilevel.MultiLevelGRU([("features", 5)], taps=("low", "fc"))


# -- training --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlrun") / "dfm_multilevel" / "predictions.parquet"
    summary = run_experiment(_exp(synth), _settings(), out=out, summary_out=out.with_name("training.json"))
    return out, summary


def test_learns_the_synthetic_sequence_better_than_a_constant(trained):
    out, summary = trained
    df = pq.read_table(out).to_pandas()
    test = df[(df.partition == "test") & ~df.filled]
    assert summary["settings"]["loss"] == "ccc" and summary["settings"]["seq_len"] == 40
    assert "train_ccc_loss" in summary["history"][0]
    assert summary["input_groups"] == [["tap_low", 6], ["tap_high", 5], ["features", 12]]
    mean = np.array(list(summary["train_label_mean"].values()))
    for d, name in enumerate(("valence", "arousal")):
        pred, true = test[f"{name}_pred"].to_numpy(), test[f"{name}_true"].to_numpy()
        ok = np.isfinite(true)
        ccc = metrics.ccc(pred[ok], true[ok])
        mse_model = metrics.mse(pred[ok], true[ok])
        mse_const = metrics.mse(np.full(ok.sum(), mean[d]), true[ok])  # the constant predictor: CCC 0
        assert ccc > 0.6, (name, ccc)
        assert mse_model < 0.6 * mse_const, (name, mse_model, mse_const)


def test_landmarks_are_read_at_each_rows_frame_and_rows_without_them_dropped(synth):
    settings = _settings(multilevel={"landmarks": True})
    inputs = rdata.Inputs(features_dir=synth.features_dir, labels_dir=synth.labels_dir,
                          dataset=multilevel.input_datasets(settings), static_dir=synth.root / "static")
    v = rdata.load_videos(rdata.read_manifest(synth.manifest), inputs, partitions=("train",))[0]
    assert v.source.groups[-1] == ("landmarks", 136) and v.source.no_landmarks == 3
    assert not np.isin([60, 61, 62], v.frames).any()
    import h5py

    with h5py.File(synth.root / "static" / f"{v.video}.h5") as f:
        lm = f["landmarks"][:]
    k = int(np.flatnonzero(v.frames == 100)[0])
    assert np.array_equal(v.source.rows(k, k + 1)[0, -136:], lm[100].reshape(-1))
    no_static = rdata.Inputs(features_dir=synth.features_dir, labels_dir=synth.labels_dir,
                             dataset=multilevel.input_datasets(settings))
    with pytest.raises(ConfigError, match="aligned landmarks.*--static"):
        rdata.load_videos(rdata.read_manifest(synth.manifest), no_static, partitions=("train",))


def test_features_without_taps_name_the_file_and_the_key(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 1, "devel": 1, "test": 1}, lost=None)
    with pytest.raises(AffpipeError, match=r"devel_00\.h5: features store has no `tap_low` dataset.*cnn\.store_taps"):
        run_experiment(_exp(ds, static=False), _settings(max_epochs=1), out=tmp_path / "p.parquet")


def test_cli_regress_and_evaluate_with_landmarks_and_median_filter(synth, tmp_path, caplog):
    out = tmp_path / "experiments" / "dfm_multilevel" / "predictions.parquet"
    settings = _settings(max_epochs=3, multilevel={"landmarks": True, "median_filter": {"valence": 9, "arousal": 3}})
    rc = main(["regress", "--manifest", str(synth.manifest), "--features", str(synth.features_dir), "--labels",
               str(synth.labels_dir), "--static", str(synth.root / "static"), "--input", "dfm", "--regressor",
               "multilevel", "--out", str(out), "--settings", json.dumps(settings)])
    assert rc == 0
    df = pq.read_table(out).to_pandas()
    meta = pq.read_schema(out).metadata
    assert b"valence 9 frames, arousal 3 frames" in meta[b"postprocessing"] and meta[b"regressor"] == b"multilevel"
    for vid, g in df.groupby("video"):
        g = g.sort_values("frame")
        assert np.allclose(g.valence_pred, median_filter(g.valence_pred_raw.to_numpy(), window=9), atol=1e-6)
        assert np.allclose(g.arousal_pred, median_filter(g.arousal_pred_raw.to_numpy(), window=3), atol=1e-6)
    summary = json.loads(out.with_name("training.json").read_text())
    assert summary["input_groups"][-1] == ["landmarks", 136] and summary["settings"]["median_filter"]["valence"] == 9
    ccc_json = tmp_path / "ccc.json"
    rc = main(["evaluate", "--manifest", str(synth.manifest), "--predictions", f"dfm_multilevel={out}",
               "--out", str(ccc_json)])
    assert rc == 0
    rep = json.loads(ccc_json.read_text())
    e = rep["experiments"]["dfm_multilevel"]
    assert "median" in e["postprocessing"] and set(e["partitions_unfiltered"]) == set(e["partitions"])
    test = df[df.partition == "test"]
    want_raw = metrics.ccc(test.valence_pred_raw.to_numpy(), test.valence_true.to_numpy(), nan_policy="omit")
    want = metrics.ccc(test.valence_pred.to_numpy(), test.valence_true.to_numpy(), nan_policy="omit")
    assert abs(rep["summary"]["ccc_unfiltered"]["dfm_multilevel"]["test"]["valence"] - want_raw) < 1e-5
    assert abs(rep["summary"]["ccc"]["dfm_multilevel"]["test"]["valence"] - want) < 1e-5
    assert want != want_raw


def test_interrupted_run_resumes_to_the_same_result(synth, tmp_path):
    settings = _settings(max_epochs=4)
    full = tmp_path / "full" / "predictions.parquet"
    run_experiment(_exp(synth), settings, out=full)

    class Stop(Exception):
        pass

    def stop_after_2(epoch, record):
        if epoch == 2:
            raise Stop

    part = tmp_path / "part" / "predictions.parquet"
    with pytest.raises(Stop):
        run_experiment(_exp(synth), settings, out=part, on_epoch_end=stop_after_2)
    assert part.with_name("checkpoint.pt").is_file() and not part.exists()
    summary = run_experiment(_exp(synth), settings, out=part)
    assert summary["resumed_from_epoch"] == 2
    a, b = pq.read_table(full).to_pandas(), pq.read_table(part).to_pandas()
    assert np.array_equal(a.valence_pred.to_numpy(), b.valence_pred.to_numpy())
    assert np.array_equal(a.arousal_pred.to_numpy(), b.arousal_pred.to_numpy())
