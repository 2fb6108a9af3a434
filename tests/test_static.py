"""The `static` stage on a short real clip, plus `inspect` and `show` (CLI run in-process)."""

from __future__ import annotations

import json
import logging

import cv2
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from affpipe.cli import main
from affpipe.commands.show import display_image
from affpipe.io.encoding import quantize_uint8
from affpipe.io.h5store import DatasetSpec, StoreReader, StoreWriter, static_specs
from affpipe.io.video import iter_frames
from affpipe.static import align, sfs
from support.static_support import clip_and_faces

SIZE = 64
SETTINGS = {"size": SIZE, "margin": 0.1}
LOST_ROWS = (2, 7)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the stage once on the clip with two rows marked lost by the tracker."""
    tmp = tmp_path_factory.mktemp("static")
    clip, faces = clip_and_faces()
    table = pq.read_table(faces)
    status = table["status"].to_pylist()
    cols = {name: table[name].to_numpy(zero_copy_only=False).copy() for name in table.column_names}
    for r in LOST_ROWS:
        status[r] = "lost"
        for j in range(68):
            cols[f"x{j}"][r] = np.nan
            cols[f"y{j}"][r] = np.nan
    arrays = {k: (pa.array(status) if k == "status" else pa.array(v)) for k, v in cols.items()}
    faces_lost = tmp / "faces.parquet"
    pq.write_table(pa.table(arrays), faces_lost)
    out = tmp / "static" / "clip.h5"
    rc = main(["static", "--video", str(clip), "--faces", str(faces_lost), "--out", str(out), "--settings", json.dumps(SETTINGS)])
    assert rc == 0
    return clip, faces_lost, out, tmp


def test_stage_output(run):
    clip, faces, out, _ = run
    frames = [f for _, _, f in iter_frames(clip)]
    table = pq.read_table(faces)
    with StoreReader(out, stage="static", expect=static_specs(SIZE)) as r:
        n = len(frames)
        assert r.n_rows == n == table.num_rows
        np.testing.assert_array_equal(r.frames, np.arange(n))
        expected_valid = np.array([s != "lost" for s in table["status"].to_pylist()])
        np.testing.assert_array_equal(r.valid, expected_valid)
        assert not r.valid[list(LOST_ROWS)].any() and r.valid.sum() == n - len(LOST_ROWS)
        assert r.settings["size"] == SIZE and r.settings["align_landmarks"] == "rigid"
        assert [i["path"] for i in r.inputs] == [str(clip), str(faces)]
        assert r.h5.attrs["size"] == SIZE
        sfa, sfs_img = r["sfa"][:], r["sfs"][:]
        lms, mats = r["landmarks"][:], r["transform"][:]
        np.testing.assert_allclose(r["time_s"][:], table["time_s"].to_numpy(), atol=1e-6)
    for i in LOST_ROWS:
        assert not sfa[i].any() and not sfs_img[i].any()
        assert np.isnan(lms[i]).all() and np.isnan(mats[i]).all()
    xs = np.stack([table[f"x{j}"].to_numpy() for j in range(68)], 1)
    ys = np.stack([table[f"y{j}"].to_numpy() for j in range(68)], 1)
    raw = np.stack([xs, ys], 2).astype(np.float64)
    for i in np.flatnonzero(expected_valid):
        # stored transform maps the tracker's landmarks onto the stored aligned landmarks
        np.testing.assert_allclose(align.transform_points(raw[i], mats[i]), lms[i], atol=1e-3)
        hull = align.hull_mask(lms[i].astype(np.float64), size=SIZE)
        assert not sfa[i][~hull].any() and sfa[i][hull].any()
        np.testing.assert_array_equal(sfs_img[i], sfs.static_shape(lms[i].astype(np.float64), size=SIZE, eyebrow_thickness=0.2))
    # SFA is RGB: it equals the aligned BGR frame with channels reversed
    i = int(np.flatnonzero(expected_valid)[0])
    face = align.align_face(frames[i], raw[i], size=SIZE, margin=0.1)
    np.testing.assert_array_equal(sfa[i], face.sfa[..., ::-1])


def _faces_with_rows(faces, tmp, rows, name):
    table = pq.read_table(faces)
    path = tmp / name
    pq.write_table(table.take(pa.array(rows)) if rows is not None else table, path)
    return path


def test_frame_count_mismatch_is_an_error(run, capsys):
    clip, faces, _, tmp = run
    n = pq.read_metadata(faces).num_rows
    short = _faces_with_rows(faces, tmp, list(range(n - 1)), "short.parquet")
    out = tmp / "bad" / "x.h5"
    rc = main(["static", "--video", str(clip), "--faces", str(short), "--out", str(out), "--settings", json.dumps(SETTINGS)])
    err = capsys.readouterr().err
    assert rc == 2 and str(short) in err and f"has {n - 1} rows" in err and "decodes more frames" in err
    assert not out.exists() and not list(out.parent.glob("*"))
    long = tmp / "long.parquet"
    table = pq.read_table(faces)
    extra = table.slice(n - 1, 1).set_column(0, "frame", pa.array([n], pa.int32()))
    pq.write_table(pa.concat_tables([table, extra]), long)
    rc = main(["static", "--video", str(clip), "--faces", str(long), "--out", str(out), "--settings", json.dumps(SETTINGS)])
    err = capsys.readouterr().err
    assert rc == 2 and str(long) in err and f"decodes only {n} frames" in err
    assert not out.exists()
    # rows out of order / wrong frame numbers
    shuffled = _faces_with_rows(faces, tmp, [1, 0] + list(range(2, n)), "shuffled.parquet")
    rc = main(["static", "--video", str(clip), "--faces", str(shuffled), "--out", str(out), "--settings", json.dumps(SETTINGS)])
    assert rc == 2 and "row 0 is for frame 1" in capsys.readouterr().err
    # missing columns, bad settings
    nocols = tmp / "nocols.parquet"
    pq.write_table(pq.read_table(faces).drop_columns(["x5", "status"]), nocols)
    rc = main(["static", "--video", str(clip), "--faces", str(nocols), "--out", str(out)])
    assert rc == 2 and "lacks column(s) status, x5" in capsys.readouterr().err
    rc = main(["static", "--video", str(clip), "--faces", str(faces), "--out", str(out), "--settings", '{"size": 8}'])
    assert rc == 2 and "static.size" in capsys.readouterr().err


def test_inspect(run, capsys):
    clip, faces, out, _ = run
    assert main(["inspect", str(out), str(faces)]) == 0
    text = capsys.readouterr().out
    for needle in ("stage: static", "affpipe_version", f"size = {SIZE}", str(clip), f"/sfa: shape=(12, {SIZE}, {SIZE}, 3) dtype=uint8",
                   f"chunks=(1, {SIZE}, {SIZE}, 3)", "compression=gzip", "channel_order: RGB", "valid: 10/12 (83.3 %)",
                   "invalid frames: 2, 7", "x0..x67: float (68 columns)", "status counts:", "lost=2"):
        assert needle in text, needle


def _fake_dynamic(path, *, size, first, n):
    """A dynamic-stage-like store: float16 and uint8+scale/offset images, binary masks."""
    rng = np.random.default_rng(0)
    specs = [
        DatasetSpec("frame", (), "int32", "last frame of the window"),
        DatasetSpec("valid", (), "bool", "window complete"),
        DatasetSpec("dfa", (size, size, 3), "float16", "dynamic appearance", image=True, attrs={"channel_order": "RGB"}),
        DatasetSpec("dfs", (size, size, 3), "uint8", "dynamic shape", image=True,
                    attrs={"scale_dataset": "dfs_scale", "offset_dataset": "dfs_offset"}),
        DatasetSpec("dfs_scale", (), "float32", "scale"),
        DatasetSpec("dfs_offset", (), "float32", "offset"),
        DatasetSpec("mask_a", (size, size, 1), "uint8", "appearance mask 0/1", image=True),
        DatasetSpec("mask_s", (size, size, 1), "uint8", "shape mask 0/1", image=True),
        DatasetSpec("dfm", (size, size, 3), "float16", "fused", image=True),
    ]
    q, sc, off = quantize_uint8(rng.normal(size=(n, size, size, 3)))
    mask = (rng.random((n, size, size, 1)) > 0.5).astype(np.uint8)
    with StoreWriter(path, specs, stage="dynamic", settings={"T": 5}) as w:
        w.append(frame=np.arange(first, first + n), valid=np.ones(n, bool),
                 dfa=rng.normal(size=(n, size, size, 3)).astype(np.float16), dfs=q, dfs_scale=sc, dfs_offset=off,
                 mask_a=mask, mask_s=1 - mask, dfm=rng.normal(size=(n, size, size, 3)).astype(np.float16))


def test_show_montage(run, tmp_path, caplog):
    _, _, out, _ = run
    dyn = tmp_path / "dyn.h5"
    _fake_dynamic(dyn, size=SIZE, first=4, n=8)
    png = tmp_path / "m.png"
    assert main(["show", str(out), str(dyn), "--frame", "5", "-o", str(png), "--landmarks"]) == 0
    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] > 2.5 * img.shape[0]  # one row of 7 panels
    # a frame before the first window and an invalid static frame are reported, not drawn
    caplog.clear()
    png2 = tmp_path / "m2.png"
    assert main(["show", str(out), str(dyn), "--frame", str(LOST_ROWS[0]), "-o", str(png2)]) == 0
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"frame {LOST_ROWS[0]} is invalid" in messages
    assert "before the first row (frame 4)" in messages
    assert png2.is_file()
    # --frame auto: the middle frame valid in both files (dynamic 4..11, static all but 2 and 7)
    caplog.set_level(logging.INFO)
    caplog.clear()
    assert main(["show", str(out), str(dyn), "--frame", "auto", "-o", str(png2)]) == 0
    chosen = [r.getMessage() for r in caplog.records if "chose frame" in r.getMessage()]
    assert chosen == ["show: --frame auto chose frame 8"]


def test_show_and_inspect_reject_foreign_files(tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros((2, 3))
    rc = main(["show", str(foreign), "--frame", "0", "-o", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 2 and str(foreign) in err and "not an affpipe store" in err
    assert not (tmp_path / "x.png").exists()
    assert main(["inspect", str(foreign)]) == 0
    assert "not an affpipe store" in capsys.readouterr().out
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 100)
    assert main(["inspect", str(junk)]) == 2
    assert str(junk) in capsys.readouterr().err


def test_display_image_mapping():
    rgb = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    shown, note = display_image(rgb, value_range=[0, 255])
    np.testing.assert_allclose(shown, rgb / 255.0)
    assert note == "as stored"
    real = np.linspace(-2, 3, 48, dtype=np.float32).reshape(4, 4, 3)
    shown, note = display_image(real)
    assert shown.min() == 0 and shown.max() == 1 and "min-max [-2, 3]" in note
    mask = np.zeros((4, 4, 1), np.uint8)
    mask[1, 1] = 1
    shown, _ = display_image(mask)
    assert shown.shape == (4, 4) and shown[1, 1] == 1 and shown.sum() == 1
    shown, note = display_image(np.full((4, 4, 3), 7.0))
    assert not shown.any() and "constant 7" in note


def test_open_static(run, tmp_path):
    from affpipe.errors import AffpipeError
    from affpipe.io.h5store import open_static

    _, _, out, _ = run
    with open_static(out) as r:
        assert r["sfa"].shape[1:] == (SIZE, SIZE, 3)
    dyn = tmp_path / "dyn.h5"
    _fake_dynamic(dyn, size=SIZE, first=0, n=2)
    with pytest.raises(AffpipeError, match="stage 'dynamic', expected 'static'"):
        open_static(dyn)
