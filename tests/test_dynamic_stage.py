"""The `dynamic` stage end to end on a real static store (CLI run in-process)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from affpipe import __version__
from affpipe.cli import main
from affpipe.config import section_settings
from affpipe.dynamic import masks, rankpool
from affpipe.dynamic.windows import WindowSpec
from affpipe.io.encoding import quantize_uint8 as quantize_exact_zero
from affpipe.io.h5store import StoreReader, static_specs
from support.static_support import clip_and_faces

SIZE = 32
LOST_ROWS = (2, 7)
SETTINGS = {"T": 3, "stride": 2, "hop": 1}
VALID_ENDS = (5, 8, 10)  # windows (e-4, e-2, e) of the 12-frame clip avoiding the lost rows 2 and 7


@pytest.fixture(scope="module")
def static_store(tmp_path_factory):
    """A real static store (the static stage on a 12-frame clip of a face video), 2 rows lost."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("dynamic")
    clip, faces = clip_and_faces()
    table = pq.read_table(faces)
    cols = {n: table[n].to_numpy(zero_copy_only=False).copy() for n in table.column_names}
    status = table["status"].to_pylist()
    for r in LOST_ROWS:
        status[r] = "lost"
    arrays = {k: (pa.array(status) if k == "status" else pa.array(v)) for k, v in cols.items()}
    pq.write_table(pa.table(arrays), tmp / "faces.parquet")
    out = tmp / "static.h5"
    assert main(["static", "--video", str(clip), "--faces", str(tmp / "faces.parquet"), "--out", str(out),
                 "--settings", json.dumps({"size": SIZE})]) == 0
    return out


@pytest.fixture(scope="module")
def dynamic_store(static_store):
    out = static_store.parent / "dyn" / "clip.h5"
    assert main(["dynamic", "--static", str(static_store), "--out", str(out), "--settings", json.dumps(SETTINGS),
                 "--threads", "1"]) == 0
    return out


def _static(static_store):
    with StoreReader(static_store, stage="static", expect=static_specs(SIZE)) as r:
        return r["sfa"][:], r["sfs"][:], r.valid


def test_rows_and_provenance(static_store, dynamic_store):
    spec = WindowSpec(3, 2, 1)
    with StoreReader(dynamic_store, stage="dynamic") as r:
        np.testing.assert_array_equal(r.frames, spec.ends(0, 11))
        np.testing.assert_array_equal(r.frames[r.valid], VALID_ENDS)
        names = [n for n in r.h5 if n not in ("frame", "valid")]
        assert names == ["dfa", "dfa_scale", "dfa_offset", "dfs", "dfs_scale", "dfs_offset", "mask_a", "mask_s",
                         "dfm", "dfm_scale", "dfm_offset", "ranked_share", "kkt_residual"]
        assert r.image_names() == ["dfa", "dfs", "mask_a", "mask_s", "dfm"]
        a = r.h5.attrs
        assert a["affpipe_version"] == __version__ and a["stage"] == "dynamic"
        assert json.loads(a["settings"]) == section_settings("dynamic", SETTINGS)
        st = os.stat(static_store)
        assert r.inputs[0]["path"] == str(static_store) and r.inputs[0]["size"] == st.st_size
        assert "mtime" in r.inputs[0]
        assert a["pixel_scale"] == pytest.approx(1 / 255) and a["pixel_scale_name"] == "unit"
        assert a["solver"] == "exact" and a["window_T"] == 3 and a["window_span"] == 5
        assert a["n_windows"] == 8 and a["n_skipped_windows"] == 5 and a["frames_before_first_window"] == 4
        assert a["kkt_residual_max"] <= rankpool.KKT_TOLERANCE
        assert r["dfm"].chunks == (1, SIZE, SIZE, 3) and r["dfm"].compression == "gzip"
        # invalid rows hold nothing
        bad = ~r.valid
        assert not r["dfa"][:][bad].any() and not r["mask_s"][:][bad].any()
        assert np.isnan(r["dfa_scale"][:][bad]).all() and np.isnan(r["ranked_share"][:][bad]).all()


def test_values_match_references(static_store, dynamic_store):
    sfa, sfs, _ = _static(static_store)
    spec = WindowSpec(3, 2, 1)
    with StoreReader(dynamic_store, stage="dynamic") as r:
        for end in VALID_ENDS:
            row = r.row_of_frame(end)
            idx = spec.frames(end)
            dfa_ref = rankpool.exact_rank_pool(sfa[idx] / 255.0, lam=1.0)[0]
            dfs_ref = rankpool.exact_rank_pool(sfs[idx] / 255.0, lam=1.0)[0]
            mask_s, mask_a = masks.fusion_masks(masks.dynamic_pixels(sfs[idx]), masks.dynamic_pixels(sfa[idx]))
            dfm_ref = masks.fuse_dfm(dfs_ref, dfa_ref, mask_s, mask_a)
            for name, ref in (("dfa", dfa_ref), ("dfs", dfs_ref), ("dfm", dfm_ref)):
                scale = float(r[f"{name}_scale"][row])
                got = r.read_image(name, row)
                assert np.abs(got - ref).max() <= 0.5 * scale + 1e-5 * np.abs(ref).max(), name
            np.testing.assert_array_equal(r["mask_s"][row][..., 0], mask_s)
            np.testing.assert_array_equal(r["mask_a"][row][..., 0], mask_a)
            assert mask_s.any() and mask_a.any()
            assert (r.read_image("dfm", row)[~(mask_s | mask_a)] == 0).all()  # stable pixels decode to exactly 0
            assert np.all(r["ranked_share"][row] > 0.5) and np.all(r["kkt_residual"][row] <= rankpool.KKT_TOLERANCE)


def test_threads_give_identical_output(static_store, dynamic_store, monkeypatch):
    import affpipe.dynamic.run as dyn

    monkeypatch.setattr(dyn, "MIN_WINDOWS_PER_PART", 1)  # split even this short clip into 2 worker processes
    out = static_store.parent / "dyn2" / "clip.h5"
    assert main(["dynamic", "--static", str(static_store), "--out", str(out), "--settings", json.dumps(SETTINGS),
                 "--threads", "2"]) == 0
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # part files removed
    with h5py.File(dynamic_store, "r") as a, h5py.File(out, "r") as b:
        assert list(a) == list(b)
        for name in a:
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        assert b.attrs["threads"] == 2 and b.attrs["n_rows"] == a.attrs["n_rows"]


def test_a_killed_runs_parts_and_their_temporaries_are_removed(static_store, dynamic_store):
    # a job SIGKILLed while a worker was writing its part leaves the part's temporary behind (seen in
    # test_resume): the rerun removes it with the finished parts of that run
    out = static_store.parent / "dyn_killed" / "clip.h5"
    out.parent.mkdir()
    stale = [out.with_name(f"{out.name}.part0-999.h5"), out.with_name(f"{out.name}.part1-999.h5.tmp-999")]
    other = out.with_name("other.h5.part0-999.h5.tmp-999")  # another video's: not this job's to remove
    for p in (*stale, other):
        p.write_bytes(b"partial")
    assert main(["dynamic", "--static", str(static_store), "--out", str(out), "--settings", json.dumps(SETTINGS),
                 "--threads", "1"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, other.name])
    with h5py.File(dynamic_store, "r") as a, h5py.File(out, "r") as b:
        for name in a:
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_keep_float16_and_approx(static_store):
    sfa, sfs, _ = _static(static_store)
    out = static_store.parent / "dyn3" / "clip.h5"
    settings = dict(SETTINGS, keep=["dfs"], storage="float16", solver="approx", compression="lzf")
    assert main(["dynamic", "--static", str(static_store), "--out", str(out), "--settings", json.dumps(settings)]) == 0
    with StoreReader(out, stage="dynamic") as r:
        assert r.image_names() == ["dfs"] and r["dfs"].dtype == np.float16 and r["dfs"].compression == "lzf"
        row = r.row_of_frame(8)
        ref = rankpool.approx_rank_pool(sfs[[4, 6, 8]] / 255.0)
        np.testing.assert_allclose(r["dfs"][row].astype(np.float64), ref, rtol=2e-3, atol=1e-3 * np.abs(ref).max())
        assert np.isnan(r["kkt_residual"][:]).all()
        assert r.h5.attrs["solver"] == "approx"


def test_quantization_round_trip():
    rng = np.random.default_rng(4)
    x = rng.normal(scale=1e-3, size=(6, 9, 7, 3)).astype(np.float32)
    x[:, :3] = 0.0
    x[1] = np.abs(x[1])   # all >= 0
    x[2] = -np.abs(x[2])  # all <= 0
    x[3] = 0.0            # constant
    q, scale, offset = quantize_exact_zero(x)
    assert q.dtype == np.uint8 and scale.dtype == offset.dtype == np.float32
    dec = q.astype(np.float32) * scale[:, None, None, None] + offset[:, None, None, None]
    for i in range(len(x)):
        assert np.abs(dec[i] - x[i]).max() <= 0.5 * scale[i] * (1 + 1e-5)
    assert (dec[x == 0] == 0).all()
    assert q[1].min() == q[1][x[1] == 0][0] and q[2].max() == q[2][x[2] == 0][0]


def test_short_video_and_missing_input(static_store, tmp_path, capsys):
    out = tmp_path / "short.h5"
    assert main(["dynamic", "--static", str(static_store), "--out", str(out), "--settings", json.dumps({"T": 20})]) == 0
    with StoreReader(out, stage="dynamic") as r:
        assert r.n_rows == 0
    rc = main(["dynamic", "--static", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "x.h5")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope.h5" in err and "does not exist" in err
    assert not (tmp_path / "x.h5").exists()
    rc = main(["dynamic", "--static", str(static_store), "--out", str(tmp_path / "x.h5"), "--settings", '{"T": 1}'])
    assert rc == 2 and "dynamic.T" in capsys.readouterr().err


def test_show_renders_dynamic_rows(static_store, dynamic_store, tmp_path):
    png = tmp_path / "m.png"
    assert main(["show", str(static_store), str(dynamic_store), "--frame", "8", "-o", str(png)]) == 0
    assert png.stat().st_size > 0
