"""The DR commands end to end (dr-train, dr-infer, dr-rank, show, inspect), run in-process on synthetic stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affpipe.cli import main
from affpipe.dr import infer, runtime
from affpipe.io.h5store import open_static
from support.dr_support import moving_blob_frames, tiny_settings, write_dataset, write_static

pytestmark = pytest.mark.train

torch.set_num_threads(1)
N = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dr_cli")
    videos = {
        "tr_a": ("train", moving_blob_frames(N, seed=1)),
        "tr_b": ("train", moving_blob_frames(N, seed=2)),
        "dev_a": ("devel", moving_blob_frames(N, seed=3)),
        "te_a": ("test", moving_blob_frames(N, seed=4)),
    }
    manifest, static_dir = write_dataset(root, videos)
    # one test video loses its face on frames 10-12: those rows must stay invalid in the DR store
    frames = moving_blob_frames(N, seed=5)
    valid = np.ones(N, bool)
    valid[10:13] = False
    write_static(static_dir / "te_b.h5", frames, valid=valid)
    import pyarrow.parquet as pq
    import pyarrow as pa

    table = pq.read_table(manifest).to_pylist()
    table.append({"video": "te_b", "path": "videos/te_b.mp4", "partition": "test", "fps": 25.0, "n_frames": N, "subject": "te_b"})
    pq.write_table(pa.Table.from_pylist(table), manifest)
    settings = json.dumps(tiny_settings())
    models = []
    for T in (1, 2):
        out = root / "dr" / f"model_T{T}.pt"
        rc = main(["dr-train", "--manifest", str(manifest), "--static-dir", str(static_dir), "--T", str(T),
                   "--out", str(out), "--settings", settings, "--threads", "1"])
        assert rc == 0
        models.append(out)
    return root, manifest, static_dir, models, settings


def test_train_writes_a_model_with_its_history(dataset):
    root, manifest, static_dir, models, _ = dataset
    for T, path in zip((1, 2), models):
        model, meta = runtime.load_model(path)
        assert meta["T"] == T and meta["size"] == 32 and meta["stride"] == 1
        assert meta["train_videos"] == ["tr_a", "tr_b"] and meta["val_videos"] == ["dev_a"]
        assert len(meta["history"]) == 2
        for rec in meta["history"]:
            assert 0.0 <= rec["val_accuracy"] <= 1.0 and rec["val_windows"] > 0
        assert not path.with_name(path.name + ".ckpt").exists()


def test_infer_keeps_the_static_rows_and_marks_missing_faces(dataset, tmp_path):
    root, manifest, static_dir, models, settings = dataset
    out = tmp_path / "te_b.h5"
    assert main(["dr-infer", "--models", *map(str, models), "--static", str(static_dir / "te_b.h5"), "--out", str(out),
                 "--settings", settings]) == 0
    with open_static(static_dir / "te_b.h5") as s, infer.open_dr(out) as d:
        assert np.array_equal(d.frames, s.frames) and np.array_equal(d.valid, s.valid)
        assert list(d.h5.attrs["levels"]) == [1, 2]
        assert json.loads(d.h5.attrs["mdr_channels"])[:4] == ["image_R", "image_G", "image_B", "dr_T1_0"]
        assert not d["dr_T1"][10:13].any() and np.isnan(d["dr_T1_scale"][10:13]).all()
        # stored DRs decode to the model's output within the quantisation step
        model, _ = runtime.load_model(models[1])
        rows = np.array([0, 20, 39])
        x = torch.from_numpy(s["sfa"][rows]).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            direct = model(x).permute(0, 2, 3, 1).numpy()
        stored = infer.read_dr(d, 2, rows)
        step = d["dr_T2_scale"][:][rows]
        assert np.all(np.abs(stored - direct) <= step[:, None, None, None] / 2 + 1e-6)
        assert stored.min() >= -1 - 1e-6 and stored.max() <= 1 + 1e-6
    mdr, frame, valid = infer.read_mdr(static_dir / "te_b.h5", out)
    assert mdr.shape == (N - 3, 32, 32, 9) and mdr.dtype == np.float32
    assert valid.all() and 11 not in frame.tolist()
    with open_static(static_dir / "te_b.h5") as s:
        np.testing.assert_allclose(mdr[0, ..., :3], s["sfa"][0] / 255, atol=1e-6)


def test_every_video_in_one_run_equals_each_video_alone(dataset, tmp_path, capsys):
    """`--manifest --static-dir --out-dir` (the workflow's one job per dataset) writes, for every
    manifest video, the file `--static --out` writes for that video alone, bit for bit (only the
    creation time differs), and replaces the output folder as a whole."""
    from support import run_outputs

    root, manifest, static_dir, models, settings = dataset
    out = tmp_path / "dr" / "videos"
    out.mkdir(parents=True)
    (out / "stale.h5").write_text("from an earlier run")
    assert main(["dr-infer", "--models", *map(str, models), "--manifest", str(manifest), "--static-dir", str(static_dir),
                 "--out-dir", str(out), "--settings", settings]) == 0
    videos = ["dev_a", "te_a", "te_b", "tr_a", "tr_b"]
    assert sorted(p.name for p in out.iterdir()) == [f"{v}.h5" for v in videos]
    assert not [p for p in out.parent.iterdir() if p.name != "videos"]  # no temporary folder left
    for video in videos:
        one = tmp_path / "one" / f"{video}.h5"
        assert main(["dr-infer", "--models", *map(str, models), "--static", str(static_dir / f"{video}.h5"),
                     "--out", str(one), "--settings", settings]) == 0
        a, b = (run_outputs._h5_content(f, tmp_path) for f in (out / f"{video}.h5", one))
        assert run_outputs._same(a, b), video
    # a missing static store stops the run before any work, naming the file; the old folder stays
    (static_dir / "te_a.h5").rename(tmp_path / "te_a.h5")
    try:
        rc = main(["dr-infer", "--models", *map(str, models), "--manifest", str(manifest), "--static-dir",
                   str(static_dir), "--out-dir", str(out), "--settings", settings])
    finally:
        (tmp_path / "te_a.h5").rename(static_dir / "te_a.h5")
    err = capsys.readouterr().err
    assert rc == 2 and f"{static_dir / 'te_a.h5'}: static store does not exist" in err
    assert sorted(p.name for p in out.iterdir()) == [f"{v}.h5" for v in videos]
    # one video or every video, not a mix
    rc = main(["dr-infer", "--models", str(models[0]), "--static", str(static_dir / "te_a.h5"), "--out-dir", str(out)])
    assert rc == 2 and "--manifest, --static-dir and --out-dir (every video)" in capsys.readouterr().err


def test_float16_storage_round_trips(dataset, tmp_path):
    root, manifest, static_dir, models, _ = dataset
    out = tmp_path / "f16.h5"
    s = json.dumps(tiny_settings(storage="float16"))
    assert main(["dr-infer", "--models", str(models[0]), "--static", str(static_dir / "dev_a.h5"), "--out", str(out), "--settings", s]) == 0
    with infer.open_dr(out) as d:
        assert d["dr_T1"].dtype == np.float16 and "dr_T1_scale" not in d
        assert np.isfinite(infer.read_dr(d, 1, np.arange(N))).all()


def test_rank_reports_dr_upper_bound_baseline_and_chance(dataset, tmp_path):
    root, manifest, static_dir, models, settings = dataset
    out = tmp_path / "ranking.json"
    assert main(["dr-rank", "--models", *map(str, models), "--manifest", str(manifest), "--static-dir", str(static_dir),
                 "--out", str(out), "--settings", settings]) == 0
    doc = json.loads(out.read_text())
    # default: every video the models did not train on (devel and test), training videos left out
    assert sorted(v["video"] for v in doc["videos"]) == ["dev_a", "te_a", "te_b"]
    assert sorted(v["video"] for v in doc["left_out"]) == ["tr_a", "tr_b"]
    for key, T in (("T1", 1), ("T2", 2)):
        lvl = doc["levels"][key]
        assert lvl["T"] == T and lvl["chance"] == 0.5 and lvl["pairs_per_window"] == T * (T + 1)
        assert lvl["ranksvm_upper_bound"]["accuracy"] == 1.0
        assert lvl["ranksvm_upper_bound"]["kkt_residual_max"] <= 1e-9
        # the bound depends on the RankSVM's λ: it is recorded with the figure
        assert lvl["ranksvm_upper_bound"]["lambda"] == json.loads(settings).get("ranksvm_lambda", 1.0)
        assert 0.0 <= lvl["dr"]["accuracy"] <= 1.0
        assert lvl["similarity_baseline"]["accuracy"] > 0.8
        # te_b: windows through frames 10-12 are not scored
        assert lvl["per_video"]["te_b"]["windows"] == N - 2 * T - 3 - 2 * T
        assert lvl["dr"]["windows"] == sum(v["windows"] for v in lvl["per_video"].values())
    # direct store list: no manifest, ids from file names
    out2 = tmp_path / "direct.json"
    assert main(["dr-rank", "--models", str(models[0]), "--static", str(static_dir / "tr_a.h5"), "--out", str(out2),
                 "--settings", settings]) == 0
    assert [v["video"] for v in json.loads(out2.read_text())["videos"]] == ["tr_a"]


def test_show_and_inspect_render_dr_frames(dataset, tmp_path, capsys):
    root, manifest, static_dir, models, settings = dataset
    dr = tmp_path / "dev_a.h5"
    assert main(["dr-infer", "--models", *map(str, models), "--static", str(static_dir / "dev_a.h5"), "--out", str(dr),
                 "--settings", settings]) == 0
    png = tmp_path / "m.png"
    assert main(["show", str(static_dir / "dev_a.h5"), str(dr), "--frame", "5", "-o", str(png)]) == 0
    assert png.stat().st_size > 1000
    from affpipe.commands.show import collect_panels

    panels, warning = collect_panels(dr, 5)
    assert warning is None and [p.title for p in panels] == ["dr_T1", "dr_T2"]
    assert all("0 = grey" in p.subtitle for p in panels)
    assert main(["inspect", str(dr)]) == 0
    assert "dr_T2" in capsys.readouterr().out


def test_errors_name_the_file(dataset, tmp_path, capsys):
    root, manifest, static_dir, models, settings = dataset
    missing = tmp_path / "static"
    missing.mkdir()
    rc = main(["dr-train", "--manifest", str(manifest), "--static-dir", str(missing), "--T", "1", "--out",
               str(tmp_path / "m.pt"), "--settings", settings])
    err = capsys.readouterr().err
    assert rc == 2 and "tr_a.h5" in err and "static store" in err
    # a model trained on 32x32 faces refuses 48x48 static stores
    big = write_static(tmp_path / "big.h5", moving_blob_frames(8, size=48))
    rc = main(["dr-infer", "--models", str(models[0]), "--static", str(big), "--out", str(tmp_path / "o.h5"), "--settings", settings])
    err = capsys.readouterr().err
    assert rc == 2 and "big.h5" in err and "32x32" in err
    assert not (tmp_path / "o.h5").exists()
    rc = main(["dr-train", "--manifest", str(manifest), "--static-dir", str(static_dir), "--T", "1", "--out",
               str(tmp_path / "m.pt"), "--settings", json.dumps({"theta": "sometimes"})])
    assert rc == 2 and "dr.theta" in capsys.readouterr().err
