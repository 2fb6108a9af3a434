"""AST-Net (regressor ``astnet``): loss terms by hand, clip sampling, every-frame inference, learning, resume, CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from affpipe import metrics
from affpipe.cli import main
from affpipe.config import section_settings
from affpipe.io.atomic import write_parquet
from affpipe.regress import astnet as A
from affpipe.regress import data as rdata
from affpipe.regress import train as rtrain
from affpipe.regress.experiment import Experiment, run_experiment
from affpipe.regress.registry import get_regressor
from support.regress_support import FAST_SETTINGS, make_dataset, write_features

pytestmark = pytest.mark.train

torch.set_num_threads(1)
TOL = dict(rtol=0, atol=1e-6)

#: tiny AST-Net for the synthetic 200-frame videos: 12 positions every 3 frames (a 34-frame clip)
SMALL = {"hidden_units": [16, 12], "clip_len": 12, "clip_step": 3, "clip_stride": 2, "intervals": 3,
         "label_warmup_epochs": 1}


def _settings(**over):
    s = dict(FAST_SETTINGS, max_epochs=10, lr=0.01)
    s["astnet"] = dict(SMALL)
    for k, v in over.items():
        if k == "astnet":
            s["astnet"].update(v)
        else:
            s[k] = v
    return section_settings("regression", s)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)[None]


# -- loss terms by hand ----------------------------------------------------------------------
G = [[1.0, 0.0], [2.0, 1.0], [4.0, 1.0]]
Y = [[0.0, 0.0], [2.0, 0.0], [1.0, 1.0]]


def test_label_trend_local_global_by_hand():
    g, y, m = _t(G), _t(Y), torch.ones(1, 3, 2, dtype=torch.float64)
    # label: (1/2n) sum ||g - y||^2 = (1 + 0 + 0 + 1 + 9 + 0) / 6
    torch.testing.assert_close(A.label_loss(y, g, m), torch.tensor([11 / 6], dtype=torch.float64), **TOL)
    # trend: dg = [[1, 1], [2, 0]], dy = [[2, 0], [-1, 1]] -> (1 + 1 + 9 + 1) / 6
    torch.testing.assert_close(A.trend_loss(y, g, m), torch.tensor([2.0], dtype=torch.float64), **TOL)
    # local, M = 2 over 3 positions: intervals {0, 1}, {2}; ranges g (1, 1) vs y (2, 0) -> 2; {2}: 0 -> 2 / (2 M)
    torch.testing.assert_close(A.local_loss(y, g, m, intervals=2), torch.tensor([0.5], dtype=torch.float64), **TOL)
    # global: ranges g (3, 1), y (2, 1) -> 1
    torch.testing.assert_close(A.global_loss(y, g, m), torch.tensor([1.0], dtype=torch.float64), **TOL)


def test_unlabelled_entries_are_masked_out():
    g, y = _t(G), _t(Y)
    m = torch.ones(1, 3, 2, dtype=torch.float64)
    m[0, 1, 0] = 0.0  # valence of position 1 unknown
    g_garbage = g.clone()
    g_garbage[0, 1, 0] = 1e6
    torch.testing.assert_close(A.label_loss(y, g_garbage, m), torch.tensor([11 / 6], dtype=torch.float64), **TOL)
    # both valence differences touch position 1 and drop out; arousal differences (1 + 1) / 6 remain
    torch.testing.assert_close(A.trend_loss(y, g_garbage, m), torch.tensor([1 / 3], dtype=torch.float64), **TOL)
    # global valence range over positions {0, 2}: g 3 vs y 1 -> 4; arousal 0
    torch.testing.assert_close(A.global_loss(y, g_garbage, m), torch.tensor([4.0], dtype=torch.float64), **TOL)
    # an interval with no labelled position contributes 0 (instead of a huge range)
    m2 = torch.zeros(1, 3, 2, dtype=torch.float64)
    assert A.local_loss(y, g_garbage, m2, intervals=2).item() == 0.0 == A.global_loss(y, g_garbage, m2).item()


def test_siamese_by_hand():
    g_a, g_b = _t([[0.0, 0.0], [1.0, 1.0]]), _t([[0.5, 0.0], [1.0, 2.0]])
    y_a, y_b = _t([[0.0, 0.0], [0.0, 0.0]]), _t([[1.0, 0.0], [0.0, 1.0]])
    m = torch.ones(1, 2, 2, dtype=torch.float64)
    # label changes (0.5, 0), (0, 1); prediction changes (1, 0), (0, 1) -> 0.25 / (2 * 2)
    torch.testing.assert_close(A.siamese_loss(y_a, y_b, g_a, g_b, m, m), torch.tensor([0.0625], dtype=torch.float64), **TOL)


def test_total_is_eq1_with_the_configured_weights():
    torch.manual_seed(0)
    y_a, y_b, g_a, g_b = (torch.randn(2, 5, 2, dtype=torch.float64) for _ in range(4))
    m = torch.ones(2, 5, 2, dtype=torch.float64)
    lengths = torch.tensor([5, 4])
    m[1, 4] = 0.0
    w = A.LossWeights(trend=10.0, local=3.0, global_=0.5, siamese=1000.0, intervals=2)
    out = A.astnet_loss(y_a, y_b, g_a, g_b, m, m, lengths, w)

    def p(y, g):
        return (A.label_loss(y, g, m, lengths) + 10 * A.trend_loss(y, g, m, lengths)
                + 3 * A.local_loss(y, g, m, lengths, intervals=2) + 0.5 * A.global_loss(y, g, m))

    want = (0.5 * (p(y_a, g_a) + p(y_b, g_b)) + 1000 * A.siamese_loss(y_a, y_b, g_a, g_b, m, m, lengths)).mean()
    torch.testing.assert_close(out["total"], want, **TOL)


# -- loss scales and signs (issue 15 §3): an independent hand computation on a ramp clip --------------
#: a valence ramp -0.9, -0.7, ..., 0.9 over n = 10 positions (labels in [-1, 1]), arousal 0; the twin is
#: one native frame later, Δt = 10 frames per position, so its labels are 1/10 of a step higher
RAMP = np.stack([-0.9 + 0.2 * np.arange(10), np.zeros(10)], axis=1)
PAPER = A.LossWeights(trend=10.0, local=10.0, global_=10.0, siamese=1000.0, intervals=5)


def _ramp_terms(y_a, y_b):
    g_a, g_b = _t(RAMP), _t(RAMP + [0.02, 0.0])
    m = torch.ones(1, 10, 2, dtype=torch.float64)
    return A.astnet_loss(_t(y_a), _t(y_b), g_a, g_b, m, m, torch.tensor([10]), PAPER)


def test_term_scales_at_a_constant_prediction_by_hand():
    # y = 0 on both branches. label (1/20) sum g^2 = (2 (0.81 + 0.49 + 0.25 + 0.09 + 0.01)) / 20 = 0.165 on
    # branch A; branch B: (1/20) sum (g + 0.02)^2 = 0.165 + 10 x 0.0004 / 20 = 0.1652 (sum g = 0); mean 0.1651; trend: 9 steps of 0.2 -> 9 * 0.04 / 20 = 0.018;
    # local: 5 intervals of 2 positions, range 0.2 -> 5 * 0.04 / 10 = 0.02; global: range 1.8 -> 3.24;
    # Siamese: label change 0.02 at 10 positions -> 10 * 0.0004 / 20 = 0.0002
    zero = np.zeros((10, 2))
    t = _ramp_terms(zero, zero)
    want = {"label": 0.1651, "trend": 0.018, "local": 0.02, "global": 3.24, "siamese": 0.0002}
    for k, v in want.items():
        assert abs(float(t[k]) - v) < 1e-9, (k, float(t[k]), v)
    # with the paper's weights the global range term is ~200x the label term for labels in [-1, 1]
    assert 150 < 10 * float(t["global"]) / float(t["label"]) < 250


def test_range_terms_are_blind_to_the_sign_of_the_prediction():
    # the mirrored prediction y = -g has the labels' ranges: local = global = 0; label and trend see the sign
    t = _ramp_terms(-RAMP, -(RAMP + [0.02, 0.0]))
    assert float(t["local"]) == 0.0 and float(t["global"]) == 0.0
    # label: mean over branches of (1/20) sum (2g)^2 = 4 x the constant's; trend: (2 x 0.2)^2 x 9 / 20 = 0.072;
    # Siamese: prediction change -0.02 vs label change 0.02 -> 10 x 0.04^2 / 20 = 0.0008
    assert abs(float(t["label"]) - 4 * 0.1651) < 1e-9 and abs(float(t["trend"]) - 0.072) < 1e-12
    assert abs(float(t["siamese"]) - 0.0008) < 1e-12
    # ... so with the paper's weights the mirrored prediction costs ~20x less than a constant one: a model that
    # starts anti-correlated is pushed further that way (the trap label_warmup_epochs avoids)
    zero = np.zeros((10, 2))
    assert 15 * float(t["total"]) < float(_ramp_terms(zero, zero)["total"])
    assert float(t["total"]) > float(_ramp_terms(RAMP, RAMP + [0.02, 0.0])["total"]) == 0.0


def test_label_only_weights_keep_only_the_label_term():
    w = PAPER.label_only()
    assert (w.trend, w.local, w.global_, w.siamese, w.intervals) == (0.0, 0.0, 0.0, 0.0, 5)
    zero = np.zeros((10, 2))
    m = torch.ones(1, 10, 2, dtype=torch.float64)
    t = A.astnet_loss(_t(zero), _t(zero), _t(RAMP), _t(RAMP + [0.02, 0.0]), m, m, torch.tensor([10]), w)
    torch.testing.assert_close(t["total"], t["label"], **TOL)


def test_padding_does_not_change_a_clips_loss():
    torch.manual_seed(1)
    y, g = torch.randn(1, 4, 2, dtype=torch.float64), torch.randn(1, 4, 2, dtype=torch.float64)
    m = torch.ones(1, 4, 2, dtype=torch.float64)
    pad = lambda t, v: torch.cat([t, torch.full((1, 3, 2), v, dtype=torch.float64)], dim=1)  # noqa: E731
    yp, gp, mp = pad(y, 50.0), pad(g, -50.0), pad(m, 0.0)
    n = torch.tensor([4])
    for fn in (A.label_loss, A.trend_loss):
        torch.testing.assert_close(fn(yp, gp, mp, n), fn(y, g, m), **TOL)
    torch.testing.assert_close(A.local_loss(yp, gp, mp, n, intervals=2), A.local_loss(y, g, m, intervals=2), **TOL)
    torch.testing.assert_close(A.global_loss(yp, gp, mp), A.global_loss(y, g, m), **TOL)


def test_interval_index():
    np.testing.assert_array_equal(A.interval_index(10, 10, 5), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(A.interval_index(9, 7, 3), [0, 0, 0, 1, 1, 2, 2, -1, -1])
    np.testing.assert_array_equal(A.interval_index(3, 2, 5), [0, 1, -1])  # M capped at the clip's length


# -- clips ---------------------------------------------------------------------------------------
def test_nearest_rows_ties_to_the_earlier_row():
    frames = np.array([2, 5, 6, 10])
    got = A.nearest_rows(frames, np.array([0, 2, 3, 4, 7, 8, 9, 11]))
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 2, 2, 3, 3])


def test_clip_starts_fit_clip_and_twin_inside_the_segment():
    starts, k = A.clip_start_frames(0, 99, clip_len=5, clip_step=10, stride=1)
    assert k == 5 and starts[0] == 0 and starts[-1] == 99 - 1 - 40 and len(starts) == 59
    assert np.all(starts + 40 + 1 <= 99)
    # a segment too short for N positions gives shorter clips: 26 frames hold 3 positions and their twins
    starts, k = A.clip_start_frames(0, 25, clip_len=5, clip_step=10, stride=2)
    assert k == 3 and list(starts) == [0, 2, 4]
    assert A.clip_start_frames(7, 7, clip_len=5, clip_step=10, stride=1)[1] == 0


def test_phases_cover_every_frame_once():
    phases = A.phase_positions(3, 30, clip_step=4)
    allf = np.sort(np.concatenate(phases))
    np.testing.assert_array_equal(allf, np.arange(3, 31))
    assert all(np.all(np.diff(p) == 4) for p in phases)


def test_training_clips_respect_segments(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 1, "devel": 1, "test": 1}, n_frames=200)
    rows = rdata.read_manifest(ds.manifest)
    (v,) = rdata.load_videos(rows, rdata.Inputs(features_dir=ds.features_dir, labels_dir=ds.labels_dir), partitions=("train",))
    s = _settings(max_gap_s=0.4)  # the lost-face run 100..129 (30 frames > 10) cuts the video
    clips = A.training_clips([v], s)
    assert len(clips) > 0 and set(clips[:, 4]) == {12}
    for _, a, b, t, k in clips:
        first, last = v.frames[a], v.frames[b - 1]
        assert first <= t and t + 1 + (k - 1) * 3 <= last
        assert not (t < 100 <= t + 1 + (k - 1) * 3)  # no clip crosses the long gap


# -- inference: every phase, two branches averaged ---------------------------------------------
class FirstTwo(nn.Module):
    """A fixed per-row function (its output = the first two feature columns) to check the inference plumbing."""

    def forward(self, x, lengths=None):
        return x[..., :2]


def _one_video(tmp_path, frames, n_frames=60):
    feats = np.stack([frames, 2 * frames, np.ones_like(frames)], axis=1).astype(np.float64)
    write_features(tmp_path / "f" / "v.h5", frames, feats, np.ones(frames.size, bool))
    lab = np.zeros(n_frames, np.float32)
    write_parquet(pa.table({"frame": pa.array(np.arange(n_frames, dtype=np.int32)), "time_s": pa.array(np.arange(n_frames) / 25.0),
                            "valence": pa.array(lab), "arousal": pa.array(lab)}), tmp_path / "l" / "v.parquet")
    rows = [{"video": "v", "partition": "test", "fps": 25.0}]
    (v,) = rdata.load_videos(rows, rdata.Inputs(features_dir=tmp_path / "f", labels_dir=tmp_path / "l"), partitions=("test",))
    return v


def test_prediction_averages_the_twins_on_every_phase(tmp_path):
    # valid rows 0..19 with a 2-frame hole (bridged), then a long gap (segment cut), then 40..49
    frames = np.array([f for f in range(20) if f not in (7, 8)] + list(range(40, 50)))
    v = _one_video(tmp_path, frames)
    s = _settings(max_gap_s=0.2, feature_norm="none", astnet={"clip_len": 3, "clip_step": 4, "predict_hop": 1})
    scaler = rtrain.FeatureScaler("none", rtrain.Normalizer.identity(3))
    got = A.predict_astnet(FirstTwo(), v, scaler, s, device=torch.device("cpu"))
    # branch A sees frame f, the twin f + 1 (a missing frame -> the nearest row of the segment, ties earlier;
    # beyond the segment's end -> its last row); the prediction is their mean
    want = []
    for f in frames:
        seg = frames[frames < 30] if f < 30 else frames[frames >= 30]
        twin = seg[A.nearest_rows(seg, np.array([f + 1]))[0]]
        want.append(0.5 * (f + twin))
    np.testing.assert_allclose(got[:, 0], want, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], 2 * np.array(want), atol=1e-5)


# -- training ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    # per-frame feature noise small enough that features one frame apart are close, as with real CNN features
    # of adjacent frames: the Siamese term (weight 1000) penalises any one-frame change of the output that the
    # labels do not have, so independent per-frame noise of the default size (0.6) mostly teaches it to ignore
    # its input
    return make_dataset(tmp_path_factory.mktemp("synth"), noise=0.05)


def _exp(ds, name="dfm_astnet"):
    return Experiment(name=name, input="dfm", regressor="astnet", backbone=None, label=None,
                      manifest=ds.manifest, features_dir=ds.features_dir, labels_dir=ds.labels_dir)


@pytest.fixture(scope="module")
def trained(smooth, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "dfm_astnet" / "predictions.parquet"
    summary = run_experiment(_exp(smooth), _settings(), out=out, summary_out=out.with_name("training.json"))
    return out, summary


def test_learns_the_synthetic_sequence_better_than_a_constant(trained):
    out, summary = trained
    df = pq.read_table(out).to_pandas()
    test = df[(df.partition == "test") & ~df.filled]
    train_mean = summary["train_label_mean"]
    for dim in ("valence", "arousal"):
        p, t = test[f"{dim}_pred"].to_numpy(), test[f"{dim}_true"].to_numpy()
        ccc = metrics.ccc(p, t)
        mse, mse_const = metrics.mse(p, t), metrics.mse(np.full_like(t, train_mean[dim]), t)
        assert ccc > 0.5, (dim, ccc)
        assert mse < 0.6 * mse_const, (dim, mse, mse_const)
    h = summary["history"]
    assert {"train_label", "train_trend", "train_local", "train_global", "train_siamese"} <= set(h[0])
    full = [r for r in h if not r["label_warmup"]]  # the warm-up epochs train the label term only
    assert len(full) == len(h) - 1 and full[-1]["train_loss"] < full[0]["train_loss"]
    assert pq.read_schema(out).metadata[b"regressor"] == b"astnet"


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    # a synthetic task (labels in [-1, 1], independent per-frame feature noise 0.2) on which the label loss
    # alone learns
    return make_dataset(tmp_path_factory.mktemp("noisy"), seed=3, noise=0.2)


def _test_ccc(ds, settings, tmp_path, name):
    out = tmp_path / name / "predictions.parquet"
    summary = run_experiment(_exp(ds), settings, out=out, summary_out=out.with_name("training.json"))
    df = pq.read_table(out).to_pandas()
    d = df[(df.partition.isin(["devel", "test"])) & ~df.filled & df.valence_true.notna()]
    return {dim: metrics.ccc(d[f"{dim}_pred"].to_numpy(), d[f"{dim}_true"].to_numpy()) for dim in ("valence", "arousal")}, summary


def test_learns_where_the_label_loss_alone_learns(noisy, tmp_path):
    off = {"w_trend": 0.0, "w_local": 0.0, "w_global": 0.0, "w_siamese": 0.0, "label_warmup_epochs": 0}
    label_only, _ = _test_ccc(noisy, _settings(max_epochs=8, astnet=off), tmp_path, "label")
    assert min(label_only.values()) > 0.5, label_only
    full, summary = _test_ccc(noisy, _settings(max_epochs=8, astnet={"label_warmup_epochs": 2}), tmp_path, "full")
    assert min(full.values()) > 0.4, (full, label_only)
    h = summary["history"]
    assert [r["label_warmup"] for r in h[:3]] == [1.0, 1.0, 0.0]
    # warm-up epochs train the label loss alone, later epochs the whole Eq. 1; only the latter are selected
    assert h[0]["train_loss"] == pytest.approx(h[0]["train_label"], rel=1e-9)
    assert h[2]["train_loss"] > h[2]["train_label"] + 10 * h[2]["train_global"] - 1e-9
    assert summary["selected_epoch"] > 2


def test_warmup_must_leave_a_selectable_epoch(noisy, tmp_path):
    with pytest.raises(Exception, match="label_warmup_epochs .3. must be below max_epochs .3."):
        run_experiment(_exp(noisy), _settings(max_epochs=3, astnet={"label_warmup_epochs": 3}),
                       out=tmp_path / "x" / "predictions.parquet")


def test_interrupted_run_resumes_to_the_same_result(smooth, tmp_path):
    s = _settings(max_epochs=4)
    full = tmp_path / "full" / "predictions.parquet"
    run_experiment(_exp(smooth), s, out=full)
    out = tmp_path / "cut" / "predictions.parquet"

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_exp(smooth), s, out=out, on_epoch_end=stop)
    assert torch.load(out.with_name("checkpoint.pt"), weights_only=True)["epoch"] == 2
    summary = run_experiment(_exp(smooth), s, out=out)
    assert summary["resumed_from_epoch"] == 2
    cols = ["valence_pred", "arousal_pred"]
    np.testing.assert_array_equal(pq.read_table(full).to_pandas()[cols].to_numpy(), pq.read_table(out).to_pandas()[cols].to_numpy())


def test_paper_defaults_and_registry():
    s = section_settings("regression", {})
    hp = s["astnet"]
    assert (hp["hidden_units"], hp["clip_len"], hp["clip_step"]) == ([50, 40], 50, 10)
    assert (hp["w_trend"], hp["w_local"], hp["w_global"], hp["w_siamese"]) == (10.0, 10.0, 10.0, 1000.0)
    assert hp["label_warmup_epochs"] == 3 and hp["attribute_input"] is None  # ours, not the paper's
    spec = get_regressor("astnet")
    assert spec.fit is A.fit_astnet and spec.predict is A.predict_astnet
    m = spec.build(4096, s)
    assert [l.hidden_size for l in m.lstms] == [50, 40] and not m.lstms[0].bidirectional
    assert m.head.in_features == 40 and m.head.out_features == 2


def test_too_short_videos_are_a_clear_error(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 1, "devel": 1, "test": 1}, n_frames=30, first_valid=25,
                      lost=None, unlabelled=None)
    with pytest.raises(Exception, match="AST-Net has no training clip.*regression.astnet.clip_step"):
        run_experiment(_exp(ds), _settings(astnet={"clip_step": 10}), out=tmp_path / "x" / "predictions.parquet")


def test_cli_runs_astnet(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, lost=None, noise=0.05)
    out = tmp_path / "experiments" / "dfm_astnet" / "predictions.parquet"
    settings = dict(FAST_SETTINGS, max_epochs=2, astnet=SMALL)
    rc = main(["regress", "--manifest", str(ds.manifest), "--features", str(ds.features_dir), "--labels",
               str(ds.labels_dir), "--input", "dfm", "--regressor", "astnet", "--out", str(out),
               "--settings", json.dumps(settings)])
    assert rc == 0
    df = pq.read_table(out).to_pandas()
    assert len(df) == 4 * 200 and np.isfinite(df.valence_pred).all()
    summary = json.loads(out.with_name("training.json").read_text())
    assert summary["regressor"] == "astnet" and summary["epochs_run"] == 2
