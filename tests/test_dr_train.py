"""DR training: learns to rank a known motion, and resumes to the same weights after an interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affpipe.config import section_settings
from affpipe.dr import ranking, runtime
from affpipe.dr.data import FrameStore, build_windows, read_video_info
from affpipe.dr.train import checkpoint_path, prepare_data, train_dr
from affpipe.errors import AffpipeError
from support.dr_support import moving_blob_frames, tiny_settings, write_static

pytestmark = pytest.mark.train

torch.set_num_threads(1)
N_FRAMES = 90
TRAIN_SHARE = 0.6  # centres of the first 60 % of the sequence train; the rest is held out


N_SEQUENCES = 4  # textures/colours differ, so only the blob's motion is common to them


@pytest.fixture(scope="module")
def blob_stores(tmp_path_factory):
    """Sequences split in time: their first 60 % train, their last 40 % (unseen blob positions) is held out."""
    root = tmp_path_factory.mktemp("dr_blob")
    cut = int(TRAIN_SHARE * N_FRAMES)
    train, held = [], []
    for k in range(N_SEQUENCES):
        frames = moving_blob_frames(N_FRAMES, seed=10 + k)
        train.append(write_static(root / f"train{k}.h5", frames[:cut]))
        held.append(write_static(root / f"held{k}.h5", frames[cut:], frame_ids=np.arange(cut, N_FRAMES)))
    return root, train, held


def _held_out_accuracy(model, held, T, stride):
    infos = [read_video_info(p) for p in held]
    ws = build_windows(infos, T=T, stride=stride, reference_fps=25)
    store = FrameStore(infos, cache_mb=64)
    frames = store.windows(ws, np.arange(len(ws)))
    d = ranking.model_directions(model, np.ascontiguousarray(frames[:, T]), device=torch.device("cpu"), batch_size=16)
    return ranking.accuracy_summary(ranking.deltas_from_directions(d, frames, T=T), T=T)["accuracy"], len(ws)


def test_training_on_a_known_motion_ranks_held_out_frames_above_chance(blob_stores, tmp_path):
    root, train, held = blob_stores
    T = 2
    settings = section_settings("dr", tiny_settings(width=8, epochs=8, windows_per_epoch=64, val_partitions=[], gamma=1e-3))
    data = prepare_data([read_video_info(p) for p in train], [], T=T, settings=settings)
    meta = train_dr(data, T=T, settings=settings, out=tmp_path / "model.pt", threads=1)
    assert meta["epochs_completed"] == 8
    assert [h["epoch"] for h in meta["history"]] == list(range(1, 9))
    model, rec = runtime.load_model(tmp_path / "model.pt")
    assert rec["T"] == T and rec["theta"] > 0
    acc, n = _held_out_accuracy(model, held, T, 1)
    assert n == N_SEQUENCES * (N_FRAMES - int(TRAIN_SHARE * N_FRAMES) - 2 * T)
    torch.manual_seed(int(settings["seed"]))
    from affpipe.dr.unet import UNet, UNetConfig

    untrained = UNet(UNetConfig(**rec["arch"])).eval()
    acc0, _ = _held_out_accuracy(untrained, held, T, 1)
    # measured: 0.84 (seeds 1-3: 0.82, 0.82, 0.76); untrained about 0.5
    assert acc > 0.7, f"held-out ranking accuracy {acc:.3f} (untrained {acc0:.3f})"
    assert acc > acc0 + 0.15
    assert meta["history"][-1]["train_accuracy"] > meta["history"][0]["train_accuracy"]


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(blob_stores, tmp_path):
    root, train, held = blob_stores
    T = 1
    settings = section_settings("dr", tiny_settings(epochs=3, windows_per_epoch=24))
    info = [read_video_info(train[0])]
    val = [read_video_info(held[0])]

    straight = tmp_path / "straight" / "model_T1.pt"
    train_dr(prepare_data(info, val, T=T, settings=settings), T=T, settings=settings, out=straight, threads=1)

    resumed = tmp_path / "resumed" / "model_T1.pt"

    def crash(epoch, rec):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_dr(prepare_data(info, val, T=T, settings=settings), T=T, settings=settings, out=resumed, threads=1,
                 on_epoch_end=crash)
    assert not resumed.exists()
    ck = runtime.load_torch(checkpoint_path(resumed), what="checkpoint")
    assert ck["epoch"] == 2
    seen = []
    meta = train_dr(prepare_data(info, val, T=T, settings=settings), T=T, settings=settings, out=resumed, threads=1,
                    on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [3]  # continued, did not restart
    assert not checkpoint_path(resumed).exists()  # removed once the model is written
    a = runtime.load_torch(straight, what="model")
    b = runtime.load_torch(resumed, what="model")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert meta["history"][-1]["val_windows"] > 0


def test_checkpoint_of_other_settings_is_not_resumed(blob_stores, tmp_path, caplog):
    root, train, _ = blob_stores
    settings = section_settings("dr", tiny_settings(epochs=2, windows_per_epoch=16, val_partitions=[]))
    out = tmp_path / "m.pt"
    info = [read_video_info(train[0])]

    def stop(epoch, rec):
        raise Interrupt

    with pytest.raises(Interrupt):
        train_dr(prepare_data(info, [], T=1, settings=settings), T=1, settings=settings, out=out, on_epoch_end=stop)
    other = dict(settings, lr=settings["lr"] / 2)
    seen = []
    with caplog.at_level("WARNING"):
        train_dr(prepare_data(info, [], T=1, settings=other), T=1, settings=other, out=out, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [1, 2]
    assert "starting over" in caplog.text


def test_checkpoint_and_model_load_with_weights_only(blob_stores, tmp_path):
    root, train, _ = blob_stores
    # also the path for data larger than cache_mb: frames read from the stores in a DataLoader worker
    settings = section_settings("dr", tiny_settings(epochs=1, windows_per_epoch=8, val_partitions=[], cache_mb=0,
                                                    loader_workers=1))
    out = tmp_path / "m.pt"

    def stop(epoch, rec):
        raise Interrupt

    with pytest.raises(Interrupt):
        train_dr(prepare_data([read_video_info(train[0])], [], T=1, settings=settings), T=1, settings=settings, out=out,
                 on_epoch_end=stop)
    ck = torch.load(checkpoint_path(out), weights_only=True)
    assert ck["optimizer"]["param_groups"][0]["betas"] == (0.5, 0.9)
    train_dr(prepare_data([read_video_info(train[0])], [], T=1, settings=settings), T=1, settings=settings, out=out)
    rec = torch.load(out, weights_only=True)
    assert rec["format"] == runtime.MODEL_FORMAT and rec["settings"]["lr"] == 1e-3


def test_no_usable_window_is_a_clear_error(tmp_path):
    frames = moving_blob_frames(12)
    valid = np.ones(12, bool)
    valid[::3] = False  # every window of 2T+1 = 5 consecutive frames contains an invalid one
    path = write_static(tmp_path / "gappy.h5", frames, valid=valid)
    settings = section_settings("dr", tiny_settings(val_partitions=[]))
    with pytest.raises(AffpipeError, match="no training window"):
        prepare_data([read_video_info(path)], [], T=2, settings=settings, source=str(tmp_path))


def test_corrupt_model_file_names_the_file(tmp_path):
    bad = tmp_path / "model_T3.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(AffpipeError, match="model_T3.pt"):
        runtime.load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(AffpipeError, match="not an affpipe DR model"):
        runtime.load_model(other)
