"""The rank loss of the DR paper (Eq. 1-3), ranking accuracy, and the choice of the margin θ.

For a DR ``d_t`` and the window's frames ``I_{t-T}..I_{t+T}`` the scores are ``S_a = <d_t, I_a>``
(Frobenius inner product over all values) and ``δ_ab = S_a - S_b`` for the same-side pairs of
:func:`affpipe.dr.windows.same_side_pairs` (a nearer to t than b). Eq. 3:

    L(d_t) = γ ||d_t||² - ε + Σ_pairs max(0, θ - δ_ab)

summed over the pairs of one window; a batch's loss is the mean over its windows. ε is a constant
offset (the paper's "relaxation factor"): it changes the reported value, never the gradient.

**θ** ("set beforehand to ensure the chance level ranking accuracy to be less than 0.1%"): a pair
counts as ranked with success only when ``δ_ab > θ``. For a *random* DR, each value iid uniform
on the UNet's output range [-1, 1] (variance 1/3), ``δ_ab`` is approximately normal with mean 0 and
variance ``||I_a - I_b||² / 3``, so the chance of success on that pair is
``Φ̄(θ √3 / ||I_a - I_b||)``. :func:`calibrate_theta` picks the θ at which the mean of that chance
over a sample of training pairs equals the target (0.1 %): θ is then expressed in the units of
the scores and adapts to the image size and to how much the faces move.

Pure functions: torch tensors in, torch tensors out (:func:`rank_loss`, :func:`pair_deltas`), or
numpy (:func:`pair_deltas_np`, :func:`chance_success`, :func:`calibrate_theta`).
"""

from __future__ import annotations

import math

import numpy as np

from affpipe.dr.windows import same_side_pairs

#: variance of one value of a random DR (iid uniform on the tanh range [-1, 1])
RANDOM_DR_VARIANCE = 1.0 / 3.0
#: bisection steps of :func:`calibrate_theta` (relative precision 2**-60)
CALIBRATION_STEPS = 60


def _pair_index(T: int, device) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    import torch

    near, far = same_side_pairs(T)
    return torch.tensor(near, device=device), torch.tensor(far, device=device)


def window_scores(d, frames):
    """Scores ``S_a = <d, I_a>`` of every frame of each window.

    Parameters
    ----------
    d : (B, ...) torch.Tensor
        DRs (any per-image shape, e.g. (B, 3, S, S)).
    frames : (B, N, ...) torch.Tensor
        The windows' frames, same per-image shape as ``d``, oldest first.

    Returns
    -------
    (B, N) torch.Tensor
        In the dtype of the inputs (pass float32 for exact sums; see :func:`rank_loss`).
    """
    b = d.shape[0]
    n = frames.shape[1]
    if frames.shape[0] != b or frames.shape[2:] != d.shape[1:]:
        raise ValueError(f"frames {tuple(frames.shape)} do not match DRs {tuple(d.shape)} as (B, N, ...)")
    return (frames.reshape(b, n, -1) @ d.reshape(b, -1, 1))[..., 0]


def pair_deltas(d, frames, *, T: int):
    """``δ_ab = S_a - S_b`` for the same-side pairs of each window (Eq. 1).

    Parameters
    ----------
    d : (B, ...) torch.Tensor
    frames : (B, 2T+1, ...) torch.Tensor
    T : int, keyword-only

    Returns
    -------
    (B, T(T+1)) torch.Tensor
        Pair order of :func:`affpipe.dr.windows.same_side_pairs`; > 0 means ranked correctly.
    """
    if frames.shape[1] != 2 * T + 1:
        raise ValueError(f"windows have {frames.shape[1]} frames, expected 2T+1 = {2 * T + 1}")
    scores = window_scores(d, frames)
    near, far = _pair_index(T, scores.device)
    return scores[:, near] - scores[:, far]


def rank_loss(d, frames, *, T: int, theta: float, gamma: float, epsilon: float = 0.0):
    """Eq. 3 for each window of a batch.

    Parameters
    ----------
    d : (B, ...) torch.Tensor
        DRs d_t (e.g. (B, 3, S, S)).
    frames : (B, 2T+1, ...) torch.Tensor
        The windows' frames in the same pixel scale as the scores, oldest first (centre at T).
    T : int, keyword-only
    theta : float, keyword-only
        Rank-success margin θ (score units).
    gamma : float, keyword-only
        Weight γ of ``||d_t||²``.
    epsilon : float, keyword-only
        Relaxation ε, subtracted from every window's loss.

    Returns
    -------
    loss : (B,) torch.Tensor
        Per-window loss, float32 (computed in float32 even under autocast).
    deltas : (B, T(T+1)) torch.Tensor
        The pair differences δ_ab (float32), for accuracy bookkeeping.
    """
    import torch

    d32 = d.float()
    deltas = pair_deltas(d32, frames.float(), T=T)
    hinge = torch.clamp(theta - deltas, min=0.0).sum(dim=1)
    reg = d32.reshape(d32.shape[0], -1).pow(2).sum(dim=1)
    return gamma * reg - epsilon + hinge, deltas


def pair_deltas_np(d: np.ndarray, frames: np.ndarray, *, T: int) -> np.ndarray:
    """float64 numpy version of :func:`pair_deltas`.

    Parameters
    ----------
    d : (B, ...) real
    frames : (B, 2T+1, ...) real

    Returns
    -------
    (B, T(T+1)) float64
    """
    d = np.asarray(d, dtype=np.float64)
    frames = np.asarray(frames, dtype=np.float64)
    b = d.shape[0]
    if frames.shape[:2] != (b, 2 * T + 1) or frames.shape[2:] != d.shape[1:]:
        raise ValueError(f"frames {frames.shape} do not match DRs {d.shape} as (B, 2T+1, ...)")
    scores = np.einsum("bnd,bd->bn", frames.reshape(b, 2 * T + 1, -1), d.reshape(b, -1))
    near, far = same_side_pairs(T)
    return scores[:, near] - scores[:, far]


def pair_difference_norms(frames: np.ndarray, *, T: int, scale: float = 1.0) -> np.ndarray:
    """``||I_a - I_b||`` for the same-side pairs of each window.

    Parameters
    ----------
    frames : (B, 2T+1, ...) real
        Windows (e.g. uint8 static images).
    T : int, keyword-only
    scale : float, keyword-only
        Pixel scale of the scores (norms are multiplied by it; e.g. 1/255 for uint8 frames).

    Returns
    -------
    (B, T(T+1)) float64

    Notes
    -----
    Computed from each window's Gram matrix, ``||a - b||² = G_aa + G_bb - 2 G_ab``: exact for
    integer-valued frames (uint8), whose Gram entries are integers below 2**53.
    """
    x = np.asarray(frames)
    b, n = x.shape[:2]
    if n != 2 * T + 1:
        raise ValueError(f"windows have {n} frames, expected 2T+1 = {2 * T + 1}")
    x = x.reshape(b, n, -1).astype(np.float64)
    gram = x @ np.swapaxes(x, 1, 2)
    near, far = same_side_pairs(T)
    sq = gram[:, near, near] + gram[:, far, far] - 2.0 * gram[:, near, far]
    return np.sqrt(np.maximum(sq, 0.0)) * scale


def _normal_sf(z: np.ndarray) -> np.ndarray:
    """Upper tail of the standard normal, ``P(Z > z)``."""
    from scipy.special import ndtr

    return ndtr(-np.asarray(z, dtype=np.float64))


def chance_success(theta: float, pair_norms: np.ndarray) -> float:
    """Mean chance that a random DR ranks a pair with success (``δ > θ``).

    Parameters
    ----------
    theta : float
        Margin θ (score units, >= 0).
    pair_norms : (...) real
        ``||I_a - I_b||`` of the pairs (:func:`pair_difference_norms`). Pairs of identical frames
        (norm 0) have δ = 0 for every DR and never succeed when θ >= 0.

    Returns
    -------
    float
        ``mean Φ̄(θ / (||I_a - I_b|| sqrt(RANDOM_DR_VARIANCE)))``; 0.5 at θ = 0 for non-identical pairs.
    """
    norms = np.asarray(pair_norms, dtype=np.float64).ravel()
    if norms.size == 0:
        raise ValueError("no pairs to compute the chance level from")
    sd = norms * math.sqrt(RANDOM_DR_VARIANCE)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, theta / sd, np.inf)
    return float(_normal_sf(z).mean())


def calibrate_theta(pair_norms: np.ndarray, *, chance: float) -> float:
    """θ at which a random DR's mean chance of ranking a pair with success equals ``chance``.

    Parameters
    ----------
    pair_norms : (...) real
        ``||I_a - I_b||`` of a sample of training pairs.
    chance : float, keyword-only
        Target chance level in (0, 0.5), e.g. 0.001 (the paper's "less than 0.1%").

    Returns
    -------
    float
        θ > 0 with ``chance_success(θ, pair_norms) == chance`` (to 2**-60 relative).

    Raises
    ------
    ValueError
        When every pair has identical frames (no motion to rank), or ``chance`` is out of range.
    """
    if not 0.0 < chance < 0.5:
        raise ValueError(f"chance must be in (0, 0.5), got {chance}")
    norms = np.asarray(pair_norms, dtype=np.float64).ravel()
    norms = norms[np.isfinite(norms)]
    moving = norms > 0
    if not moving.any():
        raise ValueError("every sampled pair has two identical frames: nothing moves, θ cannot be calibrated")
    # zero-norm pairs never succeed: the target for the moving ones is higher
    target = chance * norms.size / moving.sum()
    if target >= 0.5:
        raise ValueError(f"only {moving.mean():.1%} of the sampled pairs differ: a chance level of {chance} is unreachable")
    lo, hi = 0.0, float(norms.max()) * math.sqrt(RANDOM_DR_VARIANCE) * 40.0
    for _ in range(CALIBRATION_STEPS):
        mid = 0.5 * (lo + hi)
        if chance_success(mid, norms[moving]) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
