"""Training (learns, selects on devel, resumes exactly), model.pt, and the two CLI commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affpipe.cli import main
from affpipe.cnn.data import VideoStores, build_index
from affpipe.cnn.inputs import parse_input
from affpipe.cnn.train import ccc, load_model, select_data, train_model
from affpipe.config import section_settings
from affpipe.errors import AffpipeError
from affpipe.io.h5store import StoreReader

from support import cnn_synth

pytestmark = pytest.mark.train

torch.set_num_threads(1)

FAST = {"backbone": "small", "optimizer": "adam", "lr": 0.003, "batch_size": 16, "epochs": 4, "patience": None,
        "loader_workers": 0}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cnntrain")
    cnn_synth.write_dataset(root, partitions=(("train", 4), ("devel", 2), ("test", 1)), n=40, size=32)
    return root


def data_for(root, name, settings, parts=("train", "devel")):
    spec = parse_input(name, mdr_levels=settings["mdr_levels"])
    videos = []
    for part in parts:
        for v in sorted(p.stem for p in (root / "labels").glob(f"{part}_*.parquet")):
            videos.append(VideoStores(v, {s: root / s / f"{v}.h5" for s in spec.stores}, root / "labels" / f"{v}.parquet", part))
    return spec, select_data(build_index(videos, spec), settings)


def test_ccc_matches_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=100), rng.normal(size=100)
    ref = 2 * np.cov(x, y, ddof=0)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert ccc(x, y) == pytest.approx(ref)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, x + 1) < 1.0


def test_training_learns_and_resumes_exactly(root, tmp_path):
    settings = section_settings("cnn", FAST)
    spec, data = data_for(root, "dfm", settings)
    full = train_model(spec, data, settings, out=tmp_path / "a" / "model.pt")
    assert full["epochs_run"] == 4 and full["devel_score"]["ccc_mean"] > 0.5
    assert full["devel_score"]["ccc_mean"] == max(h["devel_ccc_mean"] for h in full["history"])
    # model.pt is plain tensors + plain metadata: loads with weights_only=True
    obj = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert obj["metadata"]["backbone"] == "small" and obj["metadata"]["input"] == "dfm"
    assert obj["metadata"]["channels"] == [3] and obj["metadata"]["scaling"]["dynamic_scaling"] == "maxabs"
    json.dumps(obj["metadata"])

    # interrupted after 2 epochs, then re-run with 4: continues and ends with the same weights
    part = section_settings("cnn", {**FAST, "epochs": 2})
    out_b = tmp_path / "b" / "model.pt"
    assert train_model(spec, data, part, out=out_b)["epochs_run"] == 2
    out_b.unlink()
    resumed = train_model(spec, data, settings, out=out_b)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    sa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(out_b, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    # other settings: the checkpoint is not reused
    other = train_model(spec, data, section_settings("cnn", {**FAST, "epochs": 1, "lr": 0.001}), out=out_b)
    assert other["epochs_run"] == 1


def test_loader_workers_and_streaming_do_not_change_the_model(root, tmp_path, caplog):
    """Same seed and thread count: DataLoader workers (0 or 2), streamed vs cached encoded images vs prepared
    network inputs give bit-identical weights and devel history (augmentation, sample order and dropout are
    drawn in the main process)."""
    from affpipe.cnn.data import encoded_bytes

    base = {**FAST, "epochs": 2, "augment_shift": 0.1, "dropout": 0.5, "input_size": 40}
    spec, data = data_for(root, "dfm", section_settings("cnn", base))
    encoded = encoded_bytes(data.index, data.train.size + data.devel.size, spec)  # fits, the inputs beside it do not
    modes = {"w0": ({"loader_workers": 0, "cache_bytes": 0}, "streamed from HDF5"),
             "w2": ({"loader_workers": 2, "cache_bytes": 0}, "streamed from HDF5"),
             "cached": ({"loader_workers": 2, "cache_bytes": encoded}, "cached in memory"),
             "prepared": ({"loader_workers": 2}, "network inputs prepared in memory")}
    runs = {}
    try:
        for name, (extra, path_taken) in modes.items():
            settings = section_settings("cnn", {**base, **extra})
            spec, data = data_for(root, "dfm", settings)
            caplog.clear()
            with caplog.at_level("INFO", logger="affpipe.cnn.train"):
                meta = train_model(spec, data, settings, out=tmp_path / name / "model.pt", threads=3)
            # the paths compared are really taken: 2 forked workers streaming from HDF5, the in-memory
            # encoded images, or the network inputs prepared once
            assert path_taken in caplog.text, name
            assert f"{2 if name == 'w2' else 0} loader worker(s)" in caplog.text, name
            runs[name] = (torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"],
                          [{k: v for k, v in h.items() if k != "train_s"} for h in meta["history"]])
    finally:
        torch.set_num_threads(1)
    ref_state, ref_hist = runs["w0"]
    for name, (state, hist) in runs.items():
        assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state), name
        assert hist == ref_hist, name


@pytest.mark.gpu
def test_training_on_cuda_with_amp_learns_and_loads_on_cpu(root, tmp_path):
    """The CUDA path (float16 autocast, gradient scaling, pinned loaders) learns like the CPU one,
    and its model.pt loads into a CPU model giving the same outputs."""
    settings = section_settings("cnn", {**FAST, "device": "cuda", "amp": True})
    spec, data = data_for(root, "dfm", settings)
    meta = train_model(spec, data, settings, out=tmp_path / "model.pt")
    assert meta["device"].startswith("cuda") and meta["amp"] is True
    assert meta["epochs_run"] == 4 and meta["devel_score"]["ccc_mean"] > 0.5
    net, loaded = load_model(tmp_path / "model.pt")
    assert next(net.parameters()).device.type == "cpu" and loaded["device"] == meta["device"]
    x = [torch.zeros(2, 3, 32, 32)]
    with torch.no_grad():
        on_cpu = net.forward_head(net.forward_features(x))
        gpu_net = net.to("cuda")
        on_gpu = gpu_net.forward_head(gpu_net.forward_features([t.to("cuda") for t in x])).cpu()
    assert torch.allclose(on_cpu, on_gpu, atol=1e-4)


def test_no_train_frames_is_an_error(root, tmp_path):
    settings = section_settings("cnn", FAST)
    spec, data = data_for(root, "dfm", settings, parts=("devel",))
    with pytest.raises(AffpipeError, match="no labelled train frames with a valid dfm image"):
        train_model(spec, data, settings, out=tmp_path / "model.pt")


def run(argv):
    assert main([str(a) for a in argv]) == 0


def test_cli_two_branch_train_and_features(root, tmp_path):
    settings = json.dumps({**FAST, "epochs": 2, "feature_dtype": "float16"})
    model = tmp_path / "cnn" / "dfa+dfs" / "model.pt"
    run(["cnn-train", "--input", "dfa+dfs", "--manifest", root / "manifest.parquet", "--labels", root / "labels",
         "--dynamic", root / "dynamic", "--out", model, "--settings", settings])
    net, meta = load_model(model)
    assert meta["channels"] == [3, 3] and meta["num_features"] == 512 and meta["train_videos"] == [f"train_{i}" for i in range(4)]
    out = tmp_path / "features" / "test_0.h5"
    run(["cnn-features", "--model", model, "--dynamic", root / "dynamic" / "test_0.h5", "--out", out, "--settings", settings])
    with StoreReader(out, stage="features") as r, StoreReader(root / "dynamic" / "test_0.h5") as d:
        assert np.array_equal(r.frames, d.frames) and np.array_equal(r.valid, d.valid)
        feats, pred = r["features"][:], r["pred"][:]
        assert feats.dtype == np.float16 and feats.shape == (d.n_rows, 512) and pred.dtype == np.float32
        assert np.isnan(feats[~r.valid]).all() and np.isnan(pred[~r.valid]).all()
        assert np.isfinite(feats[r.valid]).all() and np.isfinite(pred[r.valid]).all()
        assert r.h5.attrs["model_input"] == "dfa+dfs" and r.settings["backbone"] == "small"
        # the stored prediction is the network's output on that row
        row = int(np.flatnonzero(r.valid)[0])
        from affpipe.cnn.inputs import to_unit

        xs = [torch.from_numpy((to_unit(d.read_image(n, row), real=True).transpose(2, 0, 1)[None] - 0.5) / 0.5)
              for n in ("dfa", "dfs")]
        with torch.no_grad():
            f = net.forward_features(xs)
            assert torch.allclose(net.forward_head(f)[0], torch.from_numpy(pred[row]), atol=1e-5)
        assert np.allclose(feats[row], f[0].numpy(), rtol=2e-3, atol=1e-3)  # float16 storage
        # multi-level taps (cnn.store_taps, default on): same rows, same dtype, NaN where invalid,
        # the network's forward_taps on that row; fc is `features` itself
        low, high = r["tap_low"][:], r["tap_high"][:]
        assert low.shape == (d.n_rows, 2 * 32) and high.shape == (d.n_rows, 2 * 128) and low.dtype == np.float16
        assert np.isnan(low[~r.valid]).all() and np.isfinite(high[r.valid]).all()
        with torch.no_grad():
            taps = net.forward_taps(xs)
        assert torch.equal(taps["fc"], f)
        assert np.allclose(low[row], taps["low"][0].numpy(), rtol=2e-3, atol=1e-3)
        assert np.allclose(high[row], taps["high"][0].numpy(), rtol=2e-3, atol=1e-3)
    # read back by the regression stage: the asked-for datasets' columns concatenated per valid row
    from affpipe.regress.data import FeatureSource

    src = FeatureSource(out, dataset=("features", "tap_high", "tap_low"))
    assert src.groups == [("features", 512), ("tap_high", 256), ("tap_low", 64)] and src.dim == 832
    with StoreReader(out) as r:
        v = r.valid
        want = np.concatenate([r["features"][:][v], r["tap_high"][:][v], r["tap_low"][:][v]], axis=1)
    assert np.array_equal(src.rows(0, len(src)), want)
    # cnn.store_taps: false -> features and pred only
    out2 = tmp_path / "features" / "test_0_notaps.h5"
    run(["cnn-features", "--model", model, "--dynamic", root / "dynamic" / "test_0.h5", "--out", out2, "--settings",
         json.dumps({**FAST, "store_taps": False})])
    with StoreReader(out2, stage="features") as r:
        assert "features" in r and "tap_low" not in r and "tap_high" not in r
    with pytest.raises(AffpipeError, match=r"test_0_notaps\.h5: features store has no `tap_low` dataset.*cnn\.store_taps"):
        FeatureSource(out2, dataset=("features", "tap_low"))


def test_cli_mdr_and_clear_errors(root, tmp_path, capsys):
    settings = json.dumps({**FAST, "epochs": 1})
    model = tmp_path / "mdr" / "model.pt"
    run(["cnn-train", "--input", "mdr", "--manifest", root / "manifest.parquet", "--labels", root / "labels",
         "--static", root / "static", "--dr", root / "dr", "--out", model, "--settings", settings])
    out = tmp_path / "f.h5"
    run(["cnn-features", "--model", model, "--static", root / "static" / "test_0.h5", "--dr", root / "dr" / "test_0.h5",
         "--out", out])
    with StoreReader(out) as r:
        assert r.n_rows == 40 and r.valid.sum() == 38 and r["features"].dtype == np.float32
    # missing store argument, settings typo, not a model file
    assert main(["cnn-features", "--model", str(model), "--static", str(root / "static" / "test_0.h5"), "--out", str(out)]) == 2
    assert "needs the dr stores: pass --dr" in capsys.readouterr().err
    assert main(["cnn-train", "--input", "dfm", "--manifest", str(root / "manifest.parquet"), "--labels", str(root / "labels"),
                 "--dynamic", str(root / "dynamic"), "--out", str(model), "--settings", '{"backbone": "vgg19"}']) == 2
    assert "cnn.backbone" in capsys.readouterr().err
    assert main(["cnn-features", "--model", str(root / "manifest.parquet"), "--dynamic", str(root / "dynamic" / "test_0.h5"),
                 "--out", str(out)]) == 2
    assert "manifest.parquet: cannot load the CNN model" in capsys.readouterr().err


def test_cli_features_of_every_video_equal_each_video_alone(root, tmp_path, capsys):
    """`--manifest --out-dir` (the workflow's one job per input) writes, for every manifest video, the
    file `--video --out` writes for that video alone, bit for bit (only the creation time differs),
    and replaces the output folder as a whole; with folders as store arguments."""
    import pyarrow.parquet as pq

    from support import run_outputs

    settings = json.dumps({**FAST, "epochs": 1})
    model = tmp_path / "mdr" / "model.pt"
    run(["cnn-train", "--input", "mdr", "--manifest", root / "manifest.parquet", "--labels", root / "labels",
         "--static", root / "static", "--dr", root / "dr", "--out", model, "--settings", settings])
    out = tmp_path / "features" / "mdr"
    out.mkdir(parents=True)
    (out / "stale.h5").write_text("from an earlier run")
    run(["cnn-features", "--model", model, "--manifest", root / "manifest.parquet", "--static", root / "static",
         "--dr", root / "dr", "--out-dir", out, "--settings", settings])
    videos = sorted(pq.read_table(root / "manifest.parquet").column("video").to_pylist())
    assert sorted(p.name for p in out.iterdir()) == [f"{v}.h5" for v in videos]
    assert [p.name for p in out.parent.iterdir()] == ["mdr"]  # no temporary folder left
    for video in videos:
        one = tmp_path / "one" / f"{video}.h5"
        run(["cnn-features", "--model", model, "--video", video, "--static", root / "static" / f"{video}.h5",
             "--dr", root / "dr" / f"{video}.h5", "--out", one, "--settings", settings])
        a, b = (run_outputs._h5_content(f, tmp_path) for f in (out / f"{video}.h5", one))
        assert run_outputs._same(a, b), video
    # a missing store stops the run before any work, naming the file
    assert main(["cnn-features", "--model", str(model), "--manifest", str(root / "manifest.parquet"), "--static",
                 str(root / "static"), "--dr", str(tmp_path / "nodr"), "--out-dir", str(out)]) == 2
    assert f"{tmp_path / 'nodr' / videos[0]}.h5: store file does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [f"{v}.h5" for v in videos]
    assert main(["cnn-features", "--model", str(model), "--static", str(root / "static"), "--dr", str(root / "dr"),
                 "--out-dir", str(out)]) == 2
    assert "--manifest and --out-dir go together" in capsys.readouterr().err


def test_random_shift_translates_both_branches_alike():
    from affpipe.cnn.train import random_shift

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a, b = random_shift([x, x + 1000], 2, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(b, a + 1000)
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="replicate")
    for i in range(2):
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(a[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(hits) == 1
    again = random_shift([x], 2, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(again, a)


def test_cli_pretrained_mode_extracts_the_given_weights_fc6(root, tmp_path, monkeypatch, capsys):
    """cnn.mode: pretrained: no training; features = fc6 of a VGG-Face-layout state dict, no `pred`."""
    from affpipe.cnn import backbones as bb
    from affpipe.cnn.inputs import to_unit

    monkeypatch.setattr(bb, "VGG_FC", 64)  # the real 13 convolutions, a small fc6 on 1x1 pooling
    monkeypatch.setattr(bb, "VGG_POOL", 1)
    torch.manual_seed(3)
    ref = bb.create_backbone("vgg16", in_channels=3).eval()
    names = {v: k for k, v in bb.VGGFACE_NAMES.items()}
    state = {}
    for key, value in ref.state_dict().items():
        layer, _, param = key.rpartition(".")
        state[f"{names[layer]}.{param}"] = value.clone()
    state["fc8.weight"], state["fc8.bias"] = torch.zeros(10, 64), torch.zeros(10)
    weights = tmp_path / "vggface.pt"
    torch.save(state, weights)

    settings = {**FAST, "backbone": "vgg16", "mode": "pretrained", "weights": str(weights), "epochs": 50}
    model = tmp_path / "cnn" / "dfm" / "model.pt"
    train = ["cnn-train", "--input", "dfm", "--manifest", root / "manifest.parquet", "--labels", root / "labels",
             "--dynamic", root / "dynamic", "--out", model]
    run([*train, "--settings", json.dumps(settings)])
    net, meta = load_model(model)
    assert meta["mode"] == "pretrained" and meta["epochs_run"] == 0 and meta["history"] == []
    assert meta["weights"] == str(weights) and len(meta["weights_sha256"]) == 64
    assert not (model.parent / "checkpoint.pt").exists()  # nothing was trained
    for key, value in ref.state_dict().items():
        assert torch.equal(net.branches[0].state_dict()[key], value), key

    out = tmp_path / "features" / "test_0.h5"
    run(["cnn-features", "--model", model, "--dynamic", root / "dynamic" / "test_0.h5", "--out", out,
         "--settings", json.dumps(settings)])
    with StoreReader(out, stage="features") as r, StoreReader(root / "dynamic" / "test_0.h5") as d:
        assert "pred" not in r and r.h5.attrs["model_mode"] == "pretrained"
        feats = r["features"][:]
        assert feats.shape == (d.n_rows, 64) and np.isnan(feats[~r.valid]).all()
        rows = np.flatnonzero(r.valid)[:3]
        x = torch.from_numpy(np.stack([(to_unit(d.read_image("dfm", int(i)), real=True).transpose(2, 0, 1) - 0.5) / 0.5
                                       for i in rows]))
        with torch.no_grad():
            want = torch.relu(ref.fc6(torch.flatten(ref.avgpool(ref.features(x)), 1))).numpy()  # fc6 after ReLU
        np.testing.assert_allclose(feats[rows], want, rtol=1e-4, atol=1e-5)
    from affpipe.regress.data import FeatureSource

    with pytest.raises(AffpipeError, match="no `pred` dataset.*cnn.mode: pretrained"):
        FeatureSource(out, dataset="pred")
    assert FeatureSource(out, dataset="features").dim == 64

    # clear errors: no weights; a layer missing from the file (named in both layouts); wrong backbone
    capsys.readouterr()
    assert main([*map(str, train), "--settings", json.dumps({**settings, "weights": None})]) == 2
    assert "cnn.mode: pretrained needs cnn.weights" in capsys.readouterr().err
    del state["conv3_2.weight"]
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    assert main([*map(str, train), "--settings", json.dumps({**settings, "weights": str(broken)})]) == 2
    err = capsys.readouterr().err
    assert "broken.pt" in err and "'features.12.weight' (VGG-Face conv3_2.weight)" in err
    assert main([*map(str, train), "--settings", json.dumps({**settings, "backbone": "small"})]) == 2
    assert "needs cnn.backbone: vgg16" in capsys.readouterr().err


def test_weights_file_is_an_input_of_cnn_train(tmp_path):
    """Changing cnn.weights re-makes model.pt (and so every features file): the file is a rule input."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    missing = tmp_path / "vggface_missing.pt"
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "results/demo/cnn/dfm/model.pt", "--config",
                          f"datasets={{demo: {{cnn: {{mode: pretrained, weights: {missing}}}}}}}"],
                         cwd=repo, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Missing input files for rule cnn_train" in out and str(missing) in out, out
