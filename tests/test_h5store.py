"""Round trips and failure modes of the HDF5 store (affpipe.io.h5store)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from affpipe import __version__
from affpipe.errors import AffpipeError
from affpipe.io.encoding import quantize_uint8
from affpipe.io.h5store import (
    DatasetSpec,
    StoreReader,
    StoreWriter,
)

S = 16


def _specs(size: int = S) -> list[DatasetSpec]:
    return [
        DatasetSpec("frame", (), "int32", "video frame"),
        DatasetSpec("valid", (), "bool", "row holds a face"),
        DatasetSpec("img", (size, size, 3), "uint8", "test image", image=True, attrs={"channel_order": "RGB"}),
        DatasetSpec("pts", (68, 2), "float32", "points"),
    ]


def _batch(rng, start: int, k: int) -> dict[str, np.ndarray]:
    return {
        "frame": np.arange(start, start + k, dtype=np.int32),
        "valid": rng.random(k) > 0.3,
        "img": rng.integers(0, 256, size=(k, S, S, 3), dtype=np.uint8),
        "pts": rng.normal(size=(k, 68, 2)),  # float64 -> float32 is a same-kind cast
    }


def test_round_trip_in_batches(tmp_path):
    rng = np.random.default_rng(0)
    video = tmp_path / "in.mp4"
    video.write_bytes(b"x" * 123)
    out = tmp_path / "sub" / "v.h5"
    batches = [_batch(rng, 0, 5), _batch(rng, 5, 0), _batch(rng, 5, 7)]
    with StoreWriter(out, _specs(), stage="static", settings={"size": S}, inputs=[video], attrs={"fps": 25.0}) as w:
        for b in batches:
            w.append(**b)
    assert out.is_file()
    assert not list(out.parent.glob("*.tmp*"))
    with StoreReader(out, stage="static", expect=_specs()) as r:
        assert r.n_rows == 12
        np.testing.assert_array_equal(r.frames, np.arange(12))
        np.testing.assert_array_equal(r["img"][:], np.concatenate([b["img"] for b in batches]))
        np.testing.assert_array_equal(r["pts"][:], np.concatenate([b["pts"] for b in batches]).astype(np.float32))
        np.testing.assert_array_equal(r.valid, np.concatenate([b["valid"] for b in batches]))
        assert r.settings == {"size": S}
        assert r.inputs[0]["size"] == 123 and r.inputs[0]["path"].endswith("in.mp4")
        assert r.h5.attrs["affpipe_version"] == __version__
        assert r.h5.attrs["fps"] == 25.0
        assert r.image_names() == ["img"]
        assert r.row_of_frame(7) == 7 and r.row_of_frame(99) is None
        ds = r["img"]
        assert ds.chunks == (1, S, S, 3)
        assert ds.compression == "gzip"
        assert ds.attrs["channel_order"] == "RGB" and ds.attrs["kind"] == "image"
        np.testing.assert_array_equal(r.read_image("img", 3), batches[0]["img"][3])


def test_exception_leaves_no_file(tmp_path):
    out = tmp_path / "v.h5"
    rng = np.random.default_rng(1)
    with pytest.raises(RuntimeError):
        with StoreWriter(out, _specs(), stage="static", settings={}) as w:
            w.append(**_batch(rng, 0, 3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_previous_file(tmp_path):
    out = tmp_path / "v.h5"
    rng = np.random.default_rng(2)
    with StoreWriter(out, _specs(), stage="static", settings={}) as w:
        w.append(**_batch(rng, 0, 2))
    before = out.read_bytes()
    with pytest.raises(ValueError):
        with StoreWriter(out, _specs(), stage="static", settings={}) as w:
            bad = _batch(rng, 0, 2)
            bad["img"] = bad["img"].astype(np.float32)  # float -> uint8 is refused
            w.append(**bad)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.h5"]


def test_append_validates(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="missing"):
        with StoreWriter(tmp_path / "a.h5", _specs(), stage="s", settings={}) as w:
            b = _batch(rng, 0, 2)
            del b["pts"]
            w.append(**b)
    with pytest.raises(ValueError, match="rows"):
        with StoreWriter(tmp_path / "a.h5", _specs(), stage="s", settings={}) as w:
            b = _batch(rng, 0, 2)
            b["frame"] = b["frame"][:1]
            w.append(**b)
    with pytest.raises(ValueError, match="shape"):
        with StoreWriter(tmp_path / "a.h5", _specs(), stage="s", settings={}) as w:
            b = _batch(rng, 0, 2)
            b["img"] = b["img"][:, :8]
            w.append(**b)
    assert not list(tmp_path.iterdir())


def test_foreign_truncated_and_wrong_files(tmp_path):
    # foreign HDF5 file
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(AffpipeError, match="not an affpipe store") as ei:
        StoreReader(foreign)
    assert str(foreign) in str(ei.value)
    # not HDF5 at all
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(AffpipeError, match="cannot open as HDF5"):
        StoreReader(text)
    # truncated file
    good = tmp_path / "good.h5"
    rng = np.random.default_rng(4)
    with StoreWriter(good, _specs(), stage="static", settings={}) as w:
        w.append(**_batch(rng, 0, 4))
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AffpipeError, match=str(trunc)):
        r = StoreReader(trunc)
        r["img"][:]  # pragma: no cover - opening should already fail
    # missing file
    with pytest.raises(AffpipeError, match="does not exist"):
        StoreReader(tmp_path / "nope.h5")
    # wrong stage / wrong expected shape
    with pytest.raises(AffpipeError, match="stage 'static', expected 'dynamic'"):
        StoreReader(good, stage="dynamic")
    with pytest.raises(AffpipeError, match="row shape"):
        StoreReader(good, expect=_specs(size=32))
    # rows disagree with n_rows (hand-edited / partially rewritten file)
    edited = tmp_path / "edited.h5"
    edited.write_bytes(good.read_bytes())
    with h5py.File(edited, "a") as f:
        f["img"].resize(2, axis=0)
    with pytest.raises(AffpipeError, match="n_rows=4"):
        StoreReader(edited)


def test_quantized_images_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(scale=3.0, size=(4, S, S, 3)).astype(np.float32)
    x[2] = 1.5  # constant image
    q, scale, offset = quantize_uint8(x)
    specs = [
        DatasetSpec("frame", (), "int32", "frame"),
        DatasetSpec("valid", (), "bool", "valid"),
        DatasetSpec("dfa", (S, S, 3), "uint8", "dynamic image", image=True,
                    attrs={"scale_dataset": "dfa_scale", "offset_dataset": "dfa_offset"}),
        DatasetSpec("dfa_scale", (), "float32", "scale"),
        DatasetSpec("dfa_offset", (), "float32", "offset"),
    ]
    out = tmp_path / "d.h5"
    with StoreWriter(out, specs, stage="dynamic", settings={"T": 3}) as w:
        w.append(frame=np.arange(4), valid=np.ones(4, bool), dfa=q, dfa_scale=scale, dfa_offset=offset)
    with StoreReader(out, stage="dynamic", expect=specs) as r:
        for i in range(4):
            back = r.read_image("dfa", i)
            assert back.dtype == np.float32
            assert np.max(np.abs(back - x[i])) <= scale[i] / 2 + 1e-5
        assert json.loads(r.h5.attrs["settings"]) == {"T": 3}


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path):
    """SIGKILL leaves `<name>.tmp-<pid>` behind; the next atomic write of the same target removes it
    (and leftover folders), and never touches other files' temporaries."""
    from affpipe.io.atomic import atomic_path, temp_sibling

    target = tmp_path / "v.h5"
    (tmp_path / "v.h5.tmp-99999").write_bytes(b"half")
    (tmp_path / ".v.h5.tmp-99998").mkdir()
    (tmp_path / ".v.h5.tmp-99998" / "x").write_bytes(b"x")
    (tmp_path / "v.h5.old-99997").write_bytes(b"old")
    other = tmp_path / "w.h5.tmp-99999"
    other.write_bytes(b"another target's")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.h5", "w.h5.tmp-99999"]
    # glob metacharacters in the name are literal
    odd = tmp_path / "a[1].h5"
    (tmp_path / "a[1].h5.tmp-1").write_bytes(b"")
    (tmp_path / "a1.h5.tmp-1").write_bytes(b"")
    tmp = temp_sibling(odd, hidden=True)
    assert tmp.name.startswith(".a[1].h5.tmp-")
    assert not (tmp_path / "a[1].h5.tmp-1").exists() and (tmp_path / "a1.h5.tmp-1").exists()


def test_wrong_dtype_and_foreign_row_datasets_are_named(tmp_path):
    """A store whose dataset has another dtype than expected, or whose frame/valid are not the
    store's own kind (a foreign file given the format attribute), is refused naming file and dataset."""
    rng = np.random.default_rng(5)
    good = tmp_path / "good.h5"
    with StoreWriter(good, _specs(), stage="static", settings={}) as w:
        w.append(**_batch(rng, 0, 4))
    wrong = [DatasetSpec(s.name, s.shape, "float32" if s.name == "img" else s.dtype, s.description) for s in _specs()]
    with pytest.raises(AffpipeError, match="dataset 'img' has dtype uint8, expected float32") as ei:
        StoreReader(good, expect=wrong)
    assert str(good) in str(ei.value)
    edited = tmp_path / "edited.h5"
    edited.write_bytes(good.read_bytes())
    with h5py.File(edited, "a") as f:
        del f["valid"]
        f["valid"] = np.zeros(4, dtype=np.float32)
    with pytest.raises(AffpipeError, match="'valid' must be 1-D bool") as ei:
        StoreReader(edited)
    assert str(edited) in str(ei.value)


def test_commands_reading_stores_refuse_foreign_and_truncated_files(tmp_path):
    """The readers of the later stages (summary, regression features) go through StoreReader."""
    from affpipe.commands.summary import _h5
    from affpipe.regress.data import FeatureSource

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["features"] = np.zeros((3, 4), np.float32)
    for read in (_h5, FeatureSource):
        with pytest.raises(AffpipeError, match="not an affpipe store") as ei:
            read(foreign)
        assert str(foreign) in str(ei.value)
    rng = np.random.default_rng(6)
    good = tmp_path / "good.h5"
    with StoreWriter(good, _specs(), stage="static", settings={}) as w:
        w.append(**_batch(rng, 0, 4))
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for read in (_h5, FeatureSource):
        with pytest.raises(AffpipeError, match="cannot open as HDF5") as ei:
            read(trunc)
        assert str(trunc) in str(ei.value)
    # a complete store of another stage is not a features store
    with pytest.raises(AffpipeError, match="expected 'features'"):
        FeatureSource(good)
