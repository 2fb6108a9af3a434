"""Ranking accuracy of DRs on unseen videos, next to the per-window RankSVM upper bound (DR paper §4.3).

For a window of 2T+1 frames centred on t, a DR ``d_t`` ranks the same-side pair (a, b) (a nearer
to t) correctly when ``δ_ab = <d_t, I_a> - <d_t, I_b> > 0``; the ranking accuracy is the share of
correctly ranked pairs, pooled over windows. Chance is 50 % (a random d gives δ_ab > 0 or < 0
with equal probability).

Three rankers are scored on exactly the same windows and pairs:

* **DR**: the UNet's output for the centre frame alone (:func:`model_deltas`);
* **RankSVM upper bound**: for each window, the linear RankSVM trained on that window's own pairs
  (``λ/2 ||d||² + (1/M) Σ_pairs max(0, 1 - δ_ab)``, M = T(T+1)), i.e. the best a linear ranker can do
  when it sees the frames it ranks (:func:`ranksvm_deltas`). Solved exactly with the
  Newton/active-set pair-QP solver of :mod:`affpipe.dynamic.rankpool` (KKT residual reported);
* **similarity baseline**: ``d_t = I_t - mean(I_t)``, no learning (:func:`similarity_deltas`):
  frames nearer in time tend to look more like I_t, so this already ranks above chance; a DR has
  to beat it to show that it learnt something about facial motion.

Pixels are in [0, 1] (uint8/255) throughout.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from affpipe.dynamic import rankpool
from affpipe.dr import PIXEL_SCALE
from affpipe.dr.windows import n_pairs, pair_sides, same_side_pairs

#: chance-level ranking accuracy of a random ranker
CHANCE = 0.5


# --------------------------------------------------------------------------------------------
# RankSVM on the bidirectional pairs (upper bound)
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def centre_pair_matrix(T: int) -> np.ndarray:
    """P with ``I_a - I_b = Σ_j P[k, j] E_j``, ``E_j = I_j - I_t`` for the 2T non-centre frames.

    Returns
    -------
    (T(T+1), 2T) float64
        Columns are the window indices 0..2T without the centre T.
    """
    near, far = same_side_pairs(T)
    col = {j: i for i, j in enumerate(k for k in range(2 * T + 1) if k != T)}
    p = np.zeros((near.size, 2 * T))
    for k, (a, b) in enumerate(zip(near, far)):
        if a != T:
            p[k, col[int(a)]] += 1.0
        if b != T:
            p[k, col[int(b)]] -= 1.0
    p.setflags(write=False)
    return p


def centre_gram(frames: np.ndarray, *, T: int, scale: float = PIXEL_SCALE) -> np.ndarray:
    """Gram matrices of the differences ``E_j = I_j - I_t`` from the centre frame.

    Parameters
    ----------
    frames : (B, 2T+1, ...) uint8 or real
        Windows, oldest first.
    scale : float, keyword-only
        Pixel scale (uint8 -> [0, 1] by default).

    Returns
    -------
    (B, 2T, 2T) float64
        Exact for uint8 frames (integer differences, products summed in float64 below 2**53).
    """
    x = np.asarray(frames)
    b, n = x.shape[:2]
    if n != 2 * T + 1:
        raise ValueError(f"windows have {n} frames, expected 2T+1 = {2 * T + 1}")
    x = x.reshape(b, n, -1)
    if x.dtype.kind in "ui":
        e = x.astype(np.int32)
        e = (np.delete(e, T, axis=1) - e[:, T:T + 1]).astype(np.float64)
    else:
        x = x.astype(np.float64)
        e = np.delete(x, T, axis=1) - x[:, T:T + 1]
    return (e @ np.swapaxes(e, 1, 2)) * (scale * scale)


def ranksvm_deltas(frames: np.ndarray, *, T: int, lam: float, scale: float = PIXEL_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """δ_ab of each window's own RankSVM solution on its same-side pairs (the upper bound).

    Minimises ``λ/2 ||d||² + (1/M) Σ_pairs max(0, 1 - <d, I_a - I_b>)`` per window.

    Parameters
    ----------
    frames : (B, 2T+1, ...) uint8 or real
    T : int, keyword-only
    lam : float, keyword-only
        λ (> 0).
    scale : float, keyword-only
        Pixel scale.

    Returns
    -------
    deltas : (B, T(T+1)) float64
        Margins of the optimal d on the window's pairs (> 0: ranked correctly).
    kkt_residual : (B,) float64
        Optimality certificate of each solution (margin units).
    """
    if not lam > 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    h = centre_gram(frames, T=T, scale=scale)
    # H = R Rᵀ (ridged for repeated frames, as in rankpool)
    z_mat = np.einsum("mj,bjr->bmr", centre_pair_matrix(T), rankpool.gram_root(h))
    C = 1.0 / (n_pairs(T) * lam)
    alpha, residual, _ = rankpool.solve_pair_qp(z_mat, C)
    # margins from the exact pair Gram matrix K = P H Pᵀ (not from the ridged root): pairs of
    # identical frames get exactly δ = 0, a tie, instead of a rounding-level "success"
    p = centre_pair_matrix(T)
    k = np.einsum("mj,bjl,nl->bmn", p, h, p)
    return np.einsum("bmn,bn->bm", k, alpha), residual


def ranksvm_direction(frames: np.ndarray, *, T: int, lam: float, scale: float = PIXEL_SCALE) -> np.ndarray:
    """The RankSVM solution d of one window as an image (for inspection and reference tests).

    Parameters
    ----------
    frames : (2T+1, ...) real or uint8

    Returns
    -------
    (...) float64, the per-frame shape.
    """
    x = np.asarray(frames)
    h = centre_gram(x[None], T=T, scale=scale)
    n = h.shape[-1]
    evals, evecs = np.linalg.eigh(h[0])
    keep = evals > rankpool.EIGEN_RTOL * n * max(evals[-1], 0.0)
    root = evecs[:, keep] * np.sqrt(evals[keep])
    z_mat = (centre_pair_matrix(T) @ root)[None]
    alpha, _, _ = rankpool.solve_pair_qp(z_mat, 1.0 / (n_pairs(T) * lam))
    xf = x.reshape(x.shape[0], -1).astype(np.float64) * scale
    near, far = same_side_pairs(T)
    d = alpha[0] @ (xf[near] - xf[far])
    return d.reshape(x.shape[1:])


# --------------------------------------------------------------------------------------------
# the other rankers
# --------------------------------------------------------------------------------------------
def deltas_from_directions(d: np.ndarray, frames: np.ndarray, *, T: int, scale: float = PIXEL_SCALE) -> np.ndarray:
    """δ_ab of given DRs on their windows (float64).

    Parameters
    ----------
    d : (B, ...) real
        One DR per window, per-frame shape of ``frames``.
    frames : (B, 2T+1, ...) uint8 or real

    Returns
    -------
    (B, T(T+1)) float64
    """
    b = d.shape[0]
    x = np.asarray(frames).reshape(b, 2 * T + 1, -1).astype(np.float64) * scale
    scores = np.einsum("bnd,bd->bn", x, np.asarray(d, dtype=np.float64).reshape(b, -1))
    near, far = same_side_pairs(T)
    return scores[:, near] - scores[:, far]


def similarity_deltas(frames: np.ndarray, *, T: int, scale: float = PIXEL_SCALE) -> np.ndarray:
    """δ_ab of the untrained baseline ``d_t = I_t - mean(I_t)`` (B, T(T+1)) float64."""
    x = np.asarray(frames)
    centre = x[:, T].reshape(x.shape[0], -1).astype(np.float64) * scale
    d = centre - centre.mean(axis=1, keepdims=True)
    return deltas_from_directions(d, x, T=T, scale=scale)


def model_directions(model, centres: np.ndarray, *, device, batch_size: int) -> np.ndarray:
    """DRs of some centre frames.

    Parameters
    ----------
    model : affpipe.dr.unet.UNet
    centres : (B, S, S, 3) uint8

    Returns
    -------
    (B, S, S, 3) float32
    """
    import torch

    out = np.empty(centres.shape, dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for a in range(0, len(centres), batch_size):
            x = torch.from_numpy(centres[a:a + batch_size]).to(device).permute(0, 3, 1, 2).float().mul_(PIXEL_SCALE)
            out[a:a + batch_size] = model(x).float().permute(0, 2, 3, 1).cpu().numpy()
    return out


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------
def accuracy_summary(deltas: np.ndarray, *, T: int) -> dict[str, Any]:
    """Ranking accuracy of some windows' pair differences.

    Parameters
    ----------
    deltas : (B, T(T+1)) float

    Returns
    -------
    dict
        ``accuracy`` (pooled share of pairs with δ > 0), ``accuracy_past`` / ``accuracy_future``
        (pairs before / after the centre), ``accuracy_by_gap`` (by ``|far - near|`` in samples),
        ``window_accuracy_mean`` / ``_sd`` (per-window shares), ``windows``, ``pairs``, ``ties``
        (pairs with δ == 0, counted as wrong).
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    nan = float("nan")
    if deltas.size == 0:
        return {"accuracy": nan, "windows": 0, "pairs": 0}
    ok = deltas > 0
    side = pair_sides(T)
    near, far = same_side_pairs(T)
    gap = np.abs(far - near)
    per_window = ok.mean(axis=1)
    return {
        "accuracy": float(ok.mean()),
        "accuracy_past": float(ok[:, side < 0].mean()),
        "accuracy_future": float(ok[:, side > 0].mean()),
        "accuracy_by_gap": {str(g): float(ok[:, gap == g].mean()) for g in range(1, T + 1)},
        "window_accuracy_mean": float(per_window.mean()),
        "window_accuracy_sd": float(per_window.std()),
        "windows": int(deltas.shape[0]),
        "pairs": int(deltas.size),
        "ties": int((deltas == 0).sum()),
    }
