"""Self-attention baseline (regressor ``attention``): positional encoding, padding, size, learning, CLI."""

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
from affpipe.errors import ConfigError
from affpipe.regress.attention import SelfAttentionRegressor, sinusoidal_encoding
from affpipe.regress.experiment import Experiment, run_experiment
from affpipe.regress.registry import get_regressor
from support.regress_support import FAST_SETTINGS, make_dataset

pytestmark = pytest.mark.train

torch.set_num_threads(1)
SMALL = {"d_model": 16, "heads": 2, "feedforward": 32}


def _settings(**over):
    return section_settings("regression", {**FAST_SETTINGS, "attention": SMALL, **over})


def test_sinusoidal_encoding_by_hand():
    pe = sinusoidal_encoding(3, 4)
    assert pe.shape == (3, 4)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    # position 1: sin(1), cos(1), sin(1 / 10000^(2/4)), cos(1 / 100)
    want = torch.tensor([math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)], dtype=torch.float32)
    torch.testing.assert_close(pe[1], want, rtol=0, atol=1e-6)


def test_padding_does_not_leak_into_real_rows():
    torch.manual_seed(0)
    m = SelfAttentionRegressor(5, d_model=8, heads=2, layers=2, feedforward=16).eval()
    short, long = torch.randn(1, 6, 5), torch.randn(1, 10, 5)
    batch = torch.zeros(2, 10, 5)
    batch[0, :6] = short[0]
    batch[0, 6:] = 100.0  # garbage in the padding
    batch[1] = long[0]
    with torch.no_grad():
        alone = m(short, torch.tensor([6]))
        both = m(batch, torch.tensor([6, 10]))
    torch.testing.assert_close(both[0, :6], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[1], m(long, torch.tensor([10]))[0], rtol=1e-5, atol=1e-5)


def test_paper_size_and_heads_check():
    s = section_settings("regression", {})
    hp = s["attention"]
    assert (hp["d_model"], hp["heads"], hp["layers"], hp["seq_len"]) == (512, 32, 2, 30)
    m = get_regressor("attention").build(512, s)
    n = sum(p.numel() for p in m.parameters())
    assert 4.0e6 < n < 4.5e6  # the paper: ~4.2 M parameters
    with pytest.raises(ConfigError, match=r"regression.attention.d_model \(30\) must be a multiple of regression.attention.heads \(4\)"):
        SelfAttentionRegressor(8, d_model=30, heads=4, layers=1, feedforward=8)


def test_learns_the_synthetic_sequence_better_than_a_constant(tmp_path):
    ds = make_dataset(tmp_path)
    out = tmp_path / "dfm_attention" / "predictions.parquet"
    exp = Experiment(name="dfm_attention", input="dfm", regressor="attention", backbone=None, label=None,
                     manifest=ds.manifest, features_dir=ds.features_dir, labels_dir=ds.labels_dir)
    summary = run_experiment(exp, _settings(seq_len=100, train_hop=50), out=out)
    assert (summary["settings"]["seq_len"], summary["settings"]["train_hop"]) == (30, 15)  # attention's own L
    df = pq.read_table(out).to_pandas()
    test = df[(df.partition == "test") & ~df.filled]
    for dim in ("valence", "arousal"):
        p, t = test[f"{dim}_pred"].to_numpy(), test[f"{dim}_true"].to_numpy()
        assert metrics.ccc(p, t) > 0.5, dim
        assert metrics.mse(p, t) < 0.6 * metrics.mse(np.full_like(t, summary["train_label_mean"][dim]), t), dim


def test_cli_runs_attention(tmp_path):
    ds = make_dataset(tmp_path, partitions={"train": 2, "devel": 1, "test": 1}, lost=None)
    out = tmp_path / "experiments" / "dfm_attention" / "predictions.parquet"
    settings = dict(FAST_SETTINGS, max_epochs=2, attention=SMALL)
    rc = main(["regress", "--manifest", str(ds.manifest), "--features", str(ds.features_dir), "--labels",
               str(ds.labels_dir), "--input", "dfm", "--regressor", "attention", "--out", str(out),
               "--settings", json.dumps(settings)])
    assert rc == 0
    assert len(pq.read_table(out)) == 4 * 200
    assert json.loads(out.with_name("training.json").read_text())["regressor"] == "attention"
