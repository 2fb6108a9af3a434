"""Frame index over the stores, streaming vs cached reading, and errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affpipe.cnn.data import (FrameDataset, VideoStores, build_index, encoded_bytes, make_loader, network_input_bytes,
                              network_inputs, preload, tensor_batches)
from affpipe.cnn.inputs import parse_input, to_unit
from affpipe.errors import AffpipeError
from affpipe.io.h5store import StoreReader

from support import cnn_synth


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cnnsynth")
    cnn_synth.write_dataset(root, partitions=(("train", 2), ("devel", 1)), n=30, size=16)
    return root


def stores(root, spec, videos, part="train"):
    return [VideoStores(v, {s: root / s / f"{v}.h5" for s in spec.stores}, root / "labels" / f"{v}.parquet", part)
            for v in videos]


def test_index_rows_follow_the_primary_store(root):
    spec = parse_input("dfm")
    idx = build_index(stores(root, spec, ["train_0", "train_1"]), spec)
    with StoreReader(root / "dynamic" / "train_0.h5") as r:
        frames, valid = r.frames, r.valid
    n = frames.size
    assert len(idx) == 2 * n and idx.size == 16
    assert np.array_equal(idx.frame[:n], frames) and np.array_equal(idx.valid[:n], valid)
    assert not valid.all()  # the faceless frame invalidates its windows
    v, a = cnn_synth.traces(30, 0.0)
    assert np.allclose(idx.targets[:n, 0], v[frames]) and np.allclose(idx.targets[:n, 1], a[frames])


def test_store_reader_decodes_the_fixture_images(root):
    # the fixture is written with h5py, not with affpipe's writer: the reader must recover its images
    # (tolerances: the noise of a 2x2 reference patch, 5 sigma; the regions average ~300 values)
    v, a = cnn_synth.traces(30, 0.0)
    ra, rb, ref = cnn_synth.regions(16)
    with StoreReader(root / "dynamic" / "train_0.h5") as r:
        rows = np.flatnonzero(r.valid)
        for name in ("dfa", "dfs", "dfm"):
            for row in rows:
                img, f = r.read_image(name, int(row)), int(r.frames[row])
                assert img.dtype == np.float32 and abs(img[ref].mean() - 1.0) < 0.03, (name, row)
                assert abs(img[ra].mean() - 0.5 * v[f]) < 0.01 and abs(img[rb].mean() - 0.5 * a[f]) < 0.01, (name, row)
    with StoreReader(root / "static" / "train_0.h5", stage="static") as r:
        img = r.read_image("sfa", 0)
        assert img.dtype == np.uint8 and img[ra].mean() == np.uint8(128 + 100 * v[0])


def test_mdr_rows_need_a_valid_row_in_both_stores(root):
    spec = parse_input("mdr")
    idx = build_index(stores(root, spec, ["train_0"]), spec)
    assert len(idx) == 30  # static rows
    assert idx.rows["dr"][-1] == -1 and not idx.valid[-1]  # dr has no row for the last frame
    assert not idx.valid[7]  # faceless frame
    assert idx.valid.sum() == 28
    # the unlabelled frame is valid but not a training sample
    assert np.isnan(idx.targets[3]).all() and 3 not in idx.positions(labelled=True) and 3 in idx.positions()


def test_stream_and_cache_give_identical_samples_decoded_as_the_store_reader(root):
    spec = parse_input("dfa+dfs")
    idx = build_index(stores(root, spec, ["train_0", "train_1"]), spec)
    pos = idx.positions(labelled=True)
    kw = dict(scaling="maxabs", input_mean=[0.5], input_std=[0.5])
    streamed = FrameDataset(idx, pos, spec, **kw)
    cache = preload(idx, pos, spec)
    assert cache.nbytes == encoded_bytes(idx, pos.size, spec)
    cached = FrameDataset(idx, pos, spec, cache=cache, **kw)
    for i in range(len(pos)):
        (a1, b1), t1 = streamed[i]
        (a2, b2), t2 = cached[i]
        assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(t1, t2)
    i = len(pos) - 1
    vi, row = idx.video[pos[i]], idx.rows["dynamic"][pos[i]]
    with StoreReader(idx.videos[vi].paths["dynamic"]) as r:
        ref = to_unit(r.read_image("dfs", int(row)), real=True, scaling="maxabs").transpose(2, 0, 1)
    assert np.allclose(streamed[i][0][1], (ref - 0.5) / 0.5)
    streamed.close()


def test_loader_with_worker_processes_streams_the_same_batches(root):
    spec = parse_input("dfm")
    idx = build_index(stores(root, spec, ["train_0"]), spec)
    pos = idx.positions(labelled=True)
    ds = FrameDataset(idx, pos, spec, scaling="minmax", input_mean=[0.5], input_std=[0.5])
    order = list(range(len(pos)))[::-1]
    ref = np.stack([ds[i][0][0] for i in order])
    ds.close()
    got = np.concatenate([b[0].numpy() for b, _ in make_loader(ds, order, batch_size=8, workers=1)])
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("input_size", [None, 12])
def test_prepared_inputs_give_the_loaders_batches_and_random_stream(root, input_size):
    # the prepared path must be indistinguishable from the loader's: same batch values (resized by the
    # same function, one sample at a time vs in batches) and the same draws left in the global generator
    import torch

    from affpipe.cnn.inputs import resize_batch

    spec = parse_input("dfa+dfs")
    idx = build_index(stores(root, spec, ["train_0", "train_1"]), spec)
    pos = idx.positions(labelled=True)
    ds = FrameDataset(idx, pos, spec, cache=preload(idx, pos, spec), scaling="maxabs", input_mean=[0.5], input_std=[0.5])
    inputs = network_inputs(ds, input_size=input_size)
    side = input_size or 16
    assert [tuple(x.shape) for x in inputs] == [(pos.size, 3, side, side)] * 2
    assert sum(x.numel() * x.element_size() for x in inputs) == network_input_bytes(spec, pos.size, side)
    order = np.random.default_rng(0).permutation(pos.size)

    torch.manual_seed(7)
    ref = [([resize_batch(x, input_size) for x in b], t) for b, t in make_loader(ds, order, batch_size=5, workers=0)]
    after_ref = torch.rand(3)
    torch.manual_seed(7)
    got = list(tensor_batches(inputs, idx.targets[pos], order, batch_size=5))
    after_got = torch.rand(3)

    assert len(got) == len(ref) == -(-pos.size // 5)
    for (xs, t), (ys, u) in zip(ref, got):
        assert all(torch.equal(x, y) for x, y in zip(xs, ys)) and torch.equal(t, u)
    assert torch.equal(after_ref, after_got)


def test_missing_dataset_and_store_are_named(root, tmp_path):
    import shutil

    from affpipe.dynamic.store import dynamic_specs
    from affpipe.io.h5store import StoreWriter

    path = tmp_path / "dynamic" / "v.h5"
    specs = dynamic_specs(16, keep=["dfa", "dfs"], storage="float16")
    with StoreWriter(path, specs, stage="dynamic", settings={}) as w:
        w.append(frame=np.array([4], np.int32), valid=np.array([True]), dfa=np.zeros((1, 16, 16, 3)),
                 dfs=np.zeros((1, 16, 16, 3)), ranked_share=np.zeros((1, 2)), kkt_residual=np.zeros((1, 2)))
    spec = parse_input("dfm")
    with pytest.raises(AffpipeError, match=r"v\.h5: dataset 'dfm' .* is missing.*dynamic\.keep"):
        build_index([VideoStores("v", {"dynamic": path})], spec)
    shutil.copy(root / "static" / "train_0.h5", tmp_path / "static.h5")
    with pytest.raises(AffpipeError, match="written by stage 'static', expected 'dynamic'"):
        build_index([VideoStores("v", {"dynamic": tmp_path / "static.h5"})], spec)
    with pytest.raises(AffpipeError, match="does not exist"):
        build_index([VideoStores("v", {"dynamic": tmp_path / "nope.h5"})], spec)
