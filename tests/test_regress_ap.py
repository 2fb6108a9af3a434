"""Affective Processes (regressor ``ap``): loss terms by hand, sampling, context selection, learning, resume, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from affpipe import metrics
from affpipe.cli import main
from affpipe.config import section_settings
from affpipe.errors import AffpipeError
from affpipe.regress import affective_processes as AP
from affpipe.regress import data as rdata
from affpipe.regress import train as rtrain
from affpipe.regress.experiment import Experiment, run_experiment
from affpipe.regress.registry import get_regressor
from support.regress_support import FAST_SETTINGS, make_dataset

pytestmark = pytest.mark.train

torch.set_num_threads(1)
TOL = dict(rtol=0, atol=1e-6)
LOG2PI = math.log(2 * math.pi)

#: a small AP for the synthetic 12-D features
SMALL = {"hidden_units": 32, "r_dim": 16, "z_dim": 8, "epochs": 6, "iterations_per_epoch": 30, "lr": 0.003,
         "test_window": 40, "test_context": 20}


def _settings(**over):
    s = dict(FAST_SETTINGS)
    s["ap"] = dict(SMALL)
    for k, v in over.items():
        if k == "ap":
            s["ap"].update(v)
        else:
            s[k] = v
    return section_settings("regression", s)


def _d(x):
    return torch.tensor(x, dtype=torch.float64)


# -- loss terms by hand ----------------------------------------------------------------------
def test_gaussian_nll_by_hand():
    y = _d([[[0.5, 0.0], [9.0, 9.0]]])
    mu = _d([[[0.0, 0.0], [0.0, 0.0]]])
    sigma = _d([[[1.0, 0.5], [1.0, 1.0]]])
    mask = _d([[[1, 1], [0, 0]]])  # the second row is unlabelled: not a target
    # -log N(0.5; 0, 1) - log N(0; 0, 0.5) = (LOG2PI/2 + 0.125) + (LOG2PI/2 + log 0.5); |T| = 1
    want = LOG2PI + 0.125 + math.log(0.5)
    torch.testing.assert_close(AP.gaussian_nll(y, mu, sigma, mask), _d([want]), **TOL)
    # agrees with torch.distributions
    ref = -torch.distributions.Normal(mu[0, 0], sigma[0, 0]).log_prob(y[0, 0]).sum()
    torch.testing.assert_close(AP.gaussian_nll(y, mu, sigma, mask)[0], ref, **TOL)


def test_kl_of_diagonal_gaussians_by_hand():
    mu_q, s_q, mu_p, s_p = _d([1.0, 0.0]), _d([1.0, 2.0]), _d([0.0, 0.0]), _d([1.0, 1.0])
    # dim 0: log 1 + (1 + 1)/2 - 1/2 = 0.5; dim 1: log(1/2) + 4/2 - 1/2 = 1.5 - log 2
    torch.testing.assert_close(AP.kl_diag_gaussians(mu_q, s_q, mu_p, s_p), _d(2.0 - math.log(2.0)), **TOL)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu_q, s_q), torch.distributions.Normal(mu_p, s_p)).sum()
    torch.testing.assert_close(AP.kl_diag_gaussians(mu_q, s_q, mu_p, s_p), ref, **TOL)
    assert AP.kl_diag_gaussians(mu_q, s_q, mu_q, s_q).item() == 0.0


def test_output_regulariser_by_hand():
    mu = _d([[[0.2, 0.1], [0.3, -0.1], [7.0, 7.0]]])
    sigma = _d([[[0.5, 0.4], [0.25, 0.6], [7.0, 7.0]]])
    rows = torch.tensor([[True, True, False]])  # the third row is padding
    kl01 = lambda m, s: -math.log(s) + (s * s + m * m) / 2 - 0.5  # noqa: E731
    # sum (as printed): m = (0.5, 0), s = (0.75, 1.0)
    torch.testing.assert_close(AP.output_regulariser(mu, sigma, rows, reduce="sum"),
                               _d([kl01(0.5, 0.75) + kl01(0.0, 1.0)]), **TOL)
    # mean: m = (0.25, 0), s = (0.375, 0.5)
    torch.testing.assert_close(AP.output_regulariser(mu, sigma, rows, reduce="mean"),
                               _d([kl01(0.25, 0.375) + kl01(0.0, 0.5)]), **TOL)
    assert kl01(0.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="reduce"):
        AP.output_regulariser(mu, sigma, rows, reduce="max")


def test_loss_combines_the_terms_with_the_configured_weights():
    torch.manual_seed(0)
    model = AP.AffectiveProcess(3, hidden=8, r_dim=4, z_dim=2, latent_sigma_min=0.1, output_sigma_min=0.01).double()
    B, L = 2, 5
    batch = {"x": torch.randn(B, L, 3, dtype=torch.float64), "y": torch.randn(B, L, 2, dtype=torch.float64),
             "mask": torch.ones(B, L, 2, dtype=torch.float64), "rows": torch.ones(B, L, dtype=torch.bool),
             "ctx": torch.tensor([[1, 0, 1, 0, 1], [0, 1, 1, 0, 0]], dtype=torch.bool),
             "ctx_y": torch.randn(B, L, 2, dtype=torch.float64)}
    hp = {"w_kl": 0.3, "w_reg": 2.0, "reg_reduce": "mean"}
    torch.manual_seed(5)
    out = AP.ap_loss(model, batch, hp)
    # the same by hand: z ~ q(z|C) with the same noise, KL(q(z|T) || q(z|C)) per target point
    torch.manual_seed(5)
    mu_c, s_c = model.latent(AP.masked_mean(model.encode(batch["x"], batch["ctx_y"]), batch["ctx"]))
    z = mu_c + s_c * torch.randn_like(s_c)
    mu_y, s_y = model.decode(batch["x"], z)
    nll = -torch.distributions.Normal(mu_y, s_y).log_prob(batch["y"]).sum(dim=(1, 2)) / L
    mu_t, s_t = model.latent(model.encode(batch["x"], batch["y"]).mean(dim=1))
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu_t, s_t), torch.distributions.Normal(mu_c, s_c)).sum(-1) / L
    reg = AP.output_regulariser(mu_y, s_y, batch["rows"], reduce="mean")
    torch.testing.assert_close(out["total"], (nll + 0.3 * kl + 2.0 * reg).mean(), **TOL)
    torch.testing.assert_close(out["kl"], kl.mean(), **TOL)


# -- sampling ----------------------------------------------------------------------------------
def test_windows_and_contexts_follow_the_paper_ranges():
    rng = np.random.default_rng(0)
    segs = np.array([[0, 30], [40, 400]])
    lengths = []
    for _ in range(500):
        a, b = AP.sample_window(rng, segs, min_len=35, max_len=70)
        assert (0 <= a < b <= 30) or (40 <= a < b <= 400)
        assert b - a <= 70 and (b - a >= 35 or (a, b) == (0, 30))  # a short segment is taken whole
        lengths.append(b - a)
    assert min(lengths) == 30 and max(lengths) == 70
    cand = np.ones(50, bool)
    cand[::2] = False
    sizes = []
    for _ in range(500):
        c = AP.sample_context(rng, cand, min_context=3)
        assert not (c & ~cand).any()  # only candidates
        sizes.append(int(c.sum()))
    assert min(sizes) == 3 and max(sizes) == 25  # 3..L, capped at the candidates


def test_context_labels_are_ground_truth_half_of_the_time(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, with_pred=True)
    rows = rdata.read_manifest(ds.manifest)
    vids = rdata.load_videos(rows, rdata.Inputs(features_dir=ds.features_dir, labels_dir=ds.labels_dir), partitions=("train",))
    segs = [np.array([[0, len(v.source)]]) for v in vids]
    hp = section_settings("regression", {})["ap"]
    wins = AP.draw_windows(np.random.default_rng(1), vids, segs, hp, 2000)
    share = np.mean([gt for *_, gt in wins])
    assert abs(share - 0.5) < 0.04  # binomial sd 0.011
    for vi, a, b, cmask, gt in wins[:200]:
        if gt:  # ground-truth context only on rows labelled in both dimensions
            assert np.isfinite(vids[vi].targets[a:b][cmask]).all()


def test_lowest_uncertainty_ties_to_the_earlier_row():
    np.testing.assert_array_equal(AP.lowest_uncertainty(np.array([0.3, 0.1, 0.3, 0.2, 0.3]), 3), [1, 1, 0, 1, 0])
    assert AP.lowest_uncertainty(np.array([0.5, 0.1]), 40).all()


def test_cosine_schedule():
    assert AP.cosine_lr(0, lr=2.5e-4, total_steps=100) == 2.5e-4
    assert AP.cosine_lr(50, lr=2.5e-4, total_steps=100) == pytest.approx(1.25e-4)
    assert AP.cosine_lr(100, lr=2.5e-4, total_steps=100) == pytest.approx(0.0, abs=1e-20)


def test_test_time_context_is_the_lowest_sigma_rows_and_z_is_mu():
    torch.manual_seed(0)
    model = AP.AffectiveProcess(4, hidden=8, r_dim=6, z_dim=3, latent_sigma_min=0.1, output_sigma_min=0.01).eval()
    x, yhat = torch.randn(10, 4), torch.randn(10, 2)
    out, sel = AP.predict_window(model, x, yhat, context=4)
    with torch.no_grad():
        r = model.encode(x, yhat)
        norms = model.latent(r)[1].norm(dim=-1)
        want_sel = torch.zeros(10, dtype=torch.bool)
        want_sel[torch.argsort(norms)[:4]] = True
        mu_c, _ = model.latent(r[want_sel].mean(0, keepdim=True))
        want = model.decode(x[None], mu_c)[0][0]
    assert torch.equal(sel, want_sel)
    torch.testing.assert_close(out, want)


# -- training ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"), with_pred=True)


def _exp(ds, name="dfm_ap"):
    return Experiment(name=name, input="dfm", regressor="ap", backbone=None, label=None,
                      manifest=ds.manifest, features_dir=ds.features_dir, labels_dir=ds.labels_dir)


def test_learns_the_synthetic_sequence_better_than_a_constant(synth, tmp_path):
    out = tmp_path / "dfm_ap" / "predictions.parquet"
    summary = run_experiment(_exp(synth), _settings(), out=out)
    df = pq.read_table(out).to_pandas()
    test = df[(df.partition == "test") & ~df.filled]
    mse, mse_const = 0.0, 0.0
    for dim in ("valence", "arousal"):
        p, t = test[f"{dim}_pred"].to_numpy(), test[f"{dim}_true"].to_numpy()
        assert metrics.ccc(p, t) > 0.4, dim  # a constant scores 0
        mse += metrics.mse(p, t)
        mse_const += metrics.mse(np.full_like(t, summary["train_label_mean"][dim]), t)
    # the decoder is per frame (x_t, z): on these noisy features valence gains less than arousal
    assert mse < 0.7 * mse_const
    h = summary["history"]
    assert {"train_nll", "train_kl", "train_reg"} <= set(h[0]) and h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[0]["lr"] < SMALL["lr"]  # the cosine schedule has started


def test_prediction_uses_no_label(synth):
    rows = rdata.read_manifest(synth.manifest)
    inputs = rdata.Inputs(features_dir=synth.features_dir, labels_dir=synth.labels_dir)
    (v,) = [v for v in rdata.load_videos(rows, inputs, partitions=("devel",)) if v.video == "devel_00"]
    s = _settings()
    torch.manual_seed(0)
    model = get_regressor("ap").build(v.source.dim, s)
    scaler = rtrain.FeatureScaler("video", rtrain.Normalizer.identity(v.source.dim))
    a = AP.predict_ap(model, v, scaler, s, device=torch.device("cpu"))
    v.labels.values[:] = np.nan
    b = AP.predict_ap(model, v, scaler, s, device=torch.device("cpu"))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(v.source), 2) and np.isfinite(a).all()


def test_interrupted_run_resumes_to_the_same_result(synth, tmp_path):
    s = _settings(ap={"epochs": 3, "iterations_per_epoch": 10})
    full = tmp_path / "full" / "predictions.parquet"
    run_experiment(_exp(synth), s, out=full)
    out = tmp_path / "cut" / "predictions.parquet"

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_exp(synth), s, out=out, on_epoch_end=stop)
    summary = run_experiment(_exp(synth), s, out=out)
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_run"] == 3
    cols = ["valence_pred", "arousal_pred"]
    np.testing.assert_array_equal(pq.read_table(full).to_pandas()[cols].to_numpy(), pq.read_table(out).to_pandas()[cols].to_numpy())


def test_paper_defaults():
    hp = section_settings("regression", {})["ap"]
    assert (hp["lr"], hp["weight_decay"], hp["batch_size"], hp["epochs"], hp["iterations_per_epoch"]) == (2.5e-4, 1e-4, 16, 25, 1000)
    assert (hp["min_window"], hp["max_window"], hp["min_context"], hp["gt_context_prob"]) == (35, 70, 3, 0.5)
    assert (hp["test_window"], hp["test_context"], hp["r_dim"], hp["w_kl"], hp["w_reg"]) == (70, 40, 128, 1.0, 1.0)
    m = get_regressor("ap").build(512, section_settings("regression", {}))
    n = sum(p.numel() for p in m.parameters())
    assert 300_000 < n < 360_000  # the paper: ~330 K parameters at 512-D features


def test_missing_backbone_predictions_name_the_file(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, with_pred=False)
    with pytest.raises(AffpipeError, match=r"train_00\.h5: the `ap` regressor needs the backbone's per-frame predictions"):
        run_experiment(_exp(ds), _settings(), out=tmp_path / "x" / "predictions.parquet")


def test_cli_runs_ap(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, lost=None, with_pred=True)
    out = tmp_path / "experiments" / "dfm_ap" / "predictions.parquet"
    settings = dict(FAST_SETTINGS, ap=dict(SMALL, epochs=2, iterations_per_epoch=5))
    rc = main(["regress", "--manifest", str(ds.manifest), "--features", str(ds.features_dir), "--labels",
               str(ds.labels_dir), "--input", "dfm", "--regressor", "ap", "--out", str(out),
               "--settings", json.dumps(settings)])
    assert rc == 0
    df = pq.read_table(out).to_pandas()
    assert len(df) == 4 * 200 and np.isfinite(df.valence_pred).all()
    assert pq.read_schema(out).metadata[b"regressor"] == b"ap"


# -- ablation variants (§5, Table 1) ------------------------------------------------------------
def _batch(B=2, L=5, D=3):
    g = torch.Generator().manual_seed(3)
    return {"x": torch.randn(B, L, D, generator=g, dtype=torch.float64),
            "y": torch.randn(B, L, 2, generator=g, dtype=torch.float64),
            "mask": torch.ones(B, L, 2, dtype=torch.float64), "rows": torch.ones(B, L, dtype=torch.bool),
            "ctx": torch.tensor([[1, 0, 1, 0, 1], [0, 1, 1, 0, 0]], dtype=torch.bool),
            "ctx_y": torch.randn(B, L, 2, generator=g, dtype=torch.float64)}


def test_default_variant_is_the_papers_model():
    assert section_settings("regression", {})["ap"]["variant"] == "ap"
    with pytest.raises(ValueError, match="variant"):
        AP.AffectiveProcess(3, hidden=8, r_dim=4, z_dim=2, latent_sigma_min=0.1, output_sigma_min=0.01, variant="np")


def test_deterministic_ap_has_no_latent_and_no_sampling():
    torch.manual_seed(0)
    model = AP.AffectiveProcess(3, hidden=8, r_dim=4, z_dim=2, latent_sigma_min=0.1, output_sigma_min=0.01,
                                variant="deterministic").double()
    assert not model.has_latent and not hasattr(model, "latent_mu")
    batch, hp = _batch(), {"w_kl": 0.3, "w_reg": 2.0, "reg_reduce": "mean"}
    a, b = AP.ap_loss(model, batch, hp), AP.ap_loss(model, batch, hp)  # no seeding in between
    assert torch.equal(a["total"], b["total"]) and float(a["kl"]) == 0.0
    # by hand: the decoder gets r_C itself; loss = NLL + w_reg reg
    r_c = AP.masked_mean(model.encode(batch["x"], batch["ctx_y"]), batch["ctx"])
    mu_y, s_y = model.decode(batch["x"], r_c)
    nll = -torch.distributions.Normal(mu_y, s_y).log_prob(batch["y"]).sum(dim=(1, 2)) / 5
    reg = AP.output_regulariser(mu_y, s_y, batch["rows"], reduce="mean")
    torch.testing.assert_close(a["total"], (nll + 2.0 * reg).mean(), **TOL)
    # prediction: every row is context, same input -> same output
    model = model.float().eval()
    x, yhat = torch.randn(9, 3), torch.randn(9, 2)
    out1, sel = AP.predict_window(model, x, yhat, context=4)
    out2, _ = AP.predict_window(model, x, yhat, context=4)
    assert sel.all() and torch.equal(out1, out2)


def test_ap_plus_det_feeds_z_and_the_deterministic_path_to_the_decoder():
    torch.manual_seed(0)
    model = AP.AffectiveProcess(3, hidden=8, r_dim=4, z_dim=2, latent_sigma_min=0.1, output_sigma_min=0.01,
                                variant="ap_det").double()
    assert model.decoder[0].in_features == 3 + 2 + 4
    batch, hp = _batch(), {"w_kl": 0.3, "w_reg": 2.0, "reg_reduce": "mean"}
    torch.manual_seed(5)
    out = AP.ap_loss(model, batch, hp)
    torch.manual_seed(5)
    r_c = AP.masked_mean(model.encode(batch["x"], batch["ctx_y"]), batch["ctx"])
    mu_c, s_c = model.latent(r_c)
    z = mu_c + s_c * torch.randn_like(s_c)
    det = AP.masked_mean(model.det_encoder(torch.cat([batch["x"], model.det_upsample(batch["ctx_y"])], -1)), batch["ctx"])
    mu_y, s_y = model.decode(batch["x"], torch.cat([z, det], -1))
    nll = -torch.distributions.Normal(mu_y, s_y).log_prob(batch["y"]).sum(dim=(1, 2)) / 5
    mu_t, s_t = model.latent(model.encode(batch["x"], batch["y"]).mean(dim=1))
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu_t, s_t), torch.distributions.Normal(mu_c, s_c)).sum(-1) / 5
    reg = AP.output_regulariser(mu_y, s_y, batch["rows"], reduce="mean")
    torch.testing.assert_close(out["total"], (nll + 0.3 * kl + 2.0 * reg).mean(), **TOL)
    # the deterministic path matters at test time (z = μ_C there)
    model = model.float().eval()
    x, yhat = torch.randn(9, 3), torch.randn(9, 2)
    before, sel = AP.predict_window(model, x, yhat, context=4)
    assert int(sel.sum()) == 4
    with torch.no_grad():
        model.det_encoder[-1].bias.add_(1.0)
    after, _ = AP.predict_window(model, x, yhat, context=4)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("variant", ["ap_det", "deterministic"])
def test_variants_train_and_predict(synth, tmp_path, variant):
    out = tmp_path / "dfm_ap" / "predictions.parquet"
    s = _settings(ap={"variant": variant, "epochs": 2, "iterations_per_epoch": 10})
    summary = run_experiment(_exp(synth), s, out=out)
    df = pq.read_table(out).to_pandas()
    test = df[(df.partition == "test") & ~df.filled]
    assert len(test) and np.isfinite(test[["valence_pred", "arousal_pred"]].to_numpy()).all()
    h = summary["history"]
    assert len(h) >= 1 and all(np.isfinite(r["train_loss"]) for r in h)
    if variant == "deterministic":
        assert all(r["train_kl"] == 0.0 for r in h)
