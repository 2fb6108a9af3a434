"""DR building blocks: window geometry, the rank loss of Eq. 3, θ calibration, the UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affpipe.dr import rankloss
from affpipe.dr import windows as win
from affpipe.dr.unet import UNet, UNetConfig

torch.set_num_threads(1)


# --- windows -----------------------------------------------------------------------------------
def test_effective_stride_scales_with_frame_rate():
    assert win.effective_stride(2, 25.0, reference_fps=25) == 2
    assert win.effective_stride(2, 49.979, reference_fps=25) == 4  # SEMAINE: doubled, as in the paper
    assert win.effective_stride(2, 30.0, reference_fps=25) == 2
    assert win.effective_stride(2, 23.976, reference_fps=25) == 2
    assert win.effective_stride(2, 12.0, reference_fps=25) == 2  # never below the configured stride
    with pytest.raises(ValueError):
        win.effective_stride(2, float("nan"), reference_fps=25)


def _eq3_pairs(T):
    """The index pairs of the two double sums of Eq. 3, written as in the paper (t = centre)."""
    t = T
    pairs = []
    for b in range(t - T, t):
        for a in range(b + 1, t + 1):
            pairs.append((a, b))
    for a in range(t, t + T):
        for b in range(a + 1, t + T + 1):
            pairs.append((a, b))
    return pairs


@pytest.mark.parametrize("T", [1, 2, 3, 5])
def test_same_side_pairs_are_those_of_eq3(T):
    near, far = win.same_side_pairs(T)
    assert list(zip(near.tolist(), far.tolist())) == _eq3_pairs(T)
    assert near.size == win.n_pairs(T) == T * (T + 1)
    assert np.all(np.abs(near - T) < np.abs(far - T))  # a nearer to t than b
    assert np.all((near - T) * (far - T) >= 0)  # same side (a may be t itself)
    side = win.pair_sides(T)
    assert (side < 0).sum() == (side > 0).sum() == T * (T + 1) // 2


def test_valid_centres_need_every_sampled_frame_valid():
    frames = np.array([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14])  # frame 7 has no row
    valid = np.ones(frames.size, bool)
    valid[frames == 11] = False
    centres, rows = win.valid_centres(frames, valid, T=1, stride=2)
    # windows c-2, c, c+2 fully present and valid: c in 2..4 (6 needs 8 ok but c=5 needs 7: missing)
    assert centres.tolist() == [2, 3, 4, 6, 8, 10, 12]
    for c, r in zip(centres, rows):
        assert frames[r].tolist() == [c - 2, c, c + 2]
        assert valid[r].all()
    assert 11 not in set(frames[rows].ravel().tolist())
    assert 7 not in set(frames[rows].ravel().tolist())


# --- the rank loss -------------------------------------------------------------------------------
def test_rank_loss_matches_a_hand_computation():
    # T = 1: window (I_{t-1}, I_t, I_{t+1}); d = (1, 2); frames (1,0), (0,1), (1,1)
    # scores S = 1, 2, 3; pairs (t, t-1): δ = 2 - 1 = 1; (t, t+1): δ = 2 - 3 = -1
    # L = γ||d||² - ε + max(0, θ - 1) + max(0, θ + 1) = 0.1*5 - 0.2 + 0 + 1.5 = 1.8  (θ = 0.5)
    d = torch.tensor([[1.0, 2.0]])
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    loss, deltas = rankloss.rank_loss(d, frames, T=1, theta=0.5, gamma=0.1, epsilon=0.2)
    assert deltas.tolist() == [[1.0, -1.0]]
    assert loss.item() == pytest.approx(1.8, abs=1e-6)


def test_rank_loss_matches_eq3_written_out():
    rng = np.random.default_rng(3)
    T, theta, gamma, eps = 2, 0.7, 0.05, 0.3
    d = rng.normal(size=(4, 3, 5, 5))
    frames = rng.uniform(size=(4, 2 * T + 1, 3, 5, 5))
    loss, deltas = rankloss.rank_loss(torch.tensor(d), torch.tensor(frames), T=T, theta=theta, gamma=gamma, epsilon=eps)
    for i in range(4):
        s = [float((d[i] * frames[i, k]).sum()) for k in range(2 * T + 1)]
        expect = gamma * float((d[i] ** 2).sum()) - eps
        for a, b in _eq3_pairs(T):
            expect += max(0.0, theta - (s[a] - s[b]))
        assert loss[i].item() == pytest.approx(expect, rel=1e-5)
    np.testing.assert_allclose(deltas.numpy(), rankloss.pair_deltas_np(d, frames, T=T), rtol=1e-5, atol=1e-5)


def test_epsilon_shifts_the_loss_but_not_the_gradient():
    rng = np.random.default_rng(0)
    frames = torch.tensor(rng.uniform(size=(2, 5, 12)), dtype=torch.float32)
    grads = []
    for eps in (0.0, 5.0):
        d = torch.tensor(rng.normal(size=(2, 12)), dtype=torch.float32) if not grads else d0.detach().clone()
        d0 = d
        d.requires_grad_(True)
        loss, _ = rankloss.rank_loss(d, frames, T=2, theta=0.5, gamma=0.01, epsilon=eps)
        loss.sum().backward()
        grads.append((loss.detach().clone(), d.grad.clone()))
    assert torch.allclose(grads[0][0] - 5.0, grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_pair_difference_norms_exact_for_uint8():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(3, 5, 8, 8, 3), dtype=np.uint8)
    got = rankloss.pair_difference_norms(frames, T=2, scale=1 / 255)
    near, far = win.same_side_pairs(2)
    x = frames.reshape(3, 5, -1).astype(np.float64) / 255
    np.testing.assert_allclose(got, np.linalg.norm(x[:, near] - x[:, far], axis=2), rtol=1e-12)


def test_calibrated_theta_gives_the_target_chance_for_random_drs():
    """Monte Carlo: random DRs (iid uniform on [-1, 1]) reach δ > θ on the target share of pairs."""
    rng = np.random.default_rng(5)
    frames = rng.uniform(0, 1, size=(6, 5, 20, 20)).cumsum(axis=1) * 0.05  # drifting frames, 400 values
    norms = rankloss.pair_difference_norms(frames, T=2)
    target = 0.02  # large enough to measure by simulation
    theta = rankloss.calibrate_theta(norms, chance=target)
    assert rankloss.chance_success(theta, norms) == pytest.approx(target, rel=1e-9)
    near, far = win.same_side_pairs(2)
    x = frames.reshape(6, 5, -1)
    pairs = (x[:, near] - x[:, far]).reshape(-1, 400)
    d = rng.uniform(-1, 1, size=(20_000, 400))
    share = ((d @ pairs.T) > theta).mean()
    assert share == pytest.approx(target, rel=0.1)
    assert rankloss.chance_success(0.0, norms) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="identical"):
        rankloss.calibrate_theta(np.zeros(10), chance=0.001)


# --- the UNet -------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [32, 30, 17])
def test_unet_maps_images_to_same_size_drs_in_tanh_range(side):
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=4, depth=3))
    x = torch.rand(2, 3, side, side)
    with torch.no_grad():
        y = net(x)
        alone = net(x[:1])
    assert y.shape == x.shape
    assert float(y.abs().max()) <= 1.0
    # one image's output does not depend on the rest of the batch (GroupNorm, not BatchNorm)
    assert torch.allclose(alone, y[:1], atol=1e-5)


def test_unet_is_seeded():
    outs = []
    for _ in range(2):
        torch.manual_seed(11)
        net = UNet(UNetConfig(width=4, depth=2))
        outs.append(net(torch.ones(1, 3, 16, 16)))
    assert torch.equal(outs[0], outs[1])
