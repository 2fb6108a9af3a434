"""Rank pooling of a window of images into one dynamic image (DFM paper §3.2, Eq. 1-3).

For a window of T images I_1..I_T (flattened to vectors of D values) with running means
``V_t = mean(I_1..I_t)``, the dynamic image is the minimiser

    d* = argmin_d  λ/2 ||d||² + γ Σ_{t<q} max(0, 1 - <d, V_q - V_t>),   γ = 2 / (T (T-1))

a linear RankSVM over the M = T(T-1)/2 ordered pairs. Two solvers are provided.

**Exact** (:func:`solve_ranksvm`). With ``C = γ/λ`` the problem is ``λ (½||d||² + C Σ hinge)``, whose
dual is the box QP ``max_α 1ᵀα - ½ αᵀKα, 0 <= α <= C`` with ``K = P A G Aᵀ Pᵀ`` (``G`` the T x T
Gram matrix of the frames, ``A`` the running-mean matrix, ``P`` the pair-difference matrix) and
``d = Σ_k α_k x_k`` a weighted sum of the frames. Everything is computed from the Gram matrix of the
T-1 *consecutive differences* ``Δ_j = I_{j+1} - I_j`` instead of ``G`` (``x = S Δ`` with
``S = P A B``, :func:`delta_pair_matrix`): the pairs' inner products are then sums of products of
small numbers, with none of the cancellation ``G_qq + G_tt - 2 G_qt`` suffers, and overlapping windows
share the Δ dot products (the streaming code in :mod:`affpipe.dynamic.windows` computes each one once).

The QP is solved in the r <= T-1 dimensional space spanned by the window (``H = R Rᵀ``, ``Z = S R``,
``u = Zᵀα``, ``||d|| = ||u||``), for a whole batch of windows at once:

1. the starting point is α = C for every pair (Bilen's solution, scaled), which is already optimal
   when C <= C* (checked first);
2. Newton's method with an exact line search on the Huber-smoothed hinge (smoothing width
   δ = 0.1, 0.01, ...; each smoothed problem is a strongly convex piecewise quadratic in u, and a
   Newton step that stays on one piece lands exactly on its minimiser);
3. after each smoothed problem, an *exact polish*: the pairs are split into margin < 1 (α = C),
   = 1 (free) and > 1 (α = 0) as the smoothed solution says, the free α solve the linear KKT system
   exactly, and up to :data:`POLISH_CORRECTIONS` primal-dual active-set corrections fix the pairs
   that are on the wrong side. A window is finished when every KKT condition holds to
   :data:`KKT_TOLERANCE` (margin units, i.e. relative to the target margin 1). The KKT residual and
   the relative duality gap of every window are reported, never hidden.

For T = 20 that is a 19-dimensional problem with 190 pairs: typically 5-7 Newton iterations, each a
batched 19 x 19 solve, and one to three polishes. Steps 1-3 are :func:`solve_pair_qp`, public for
other pair sets (the DR ranking bound of :mod:`affpipe.dr.ranking`), with :func:`gram_root`.

**Approximate** (:func:`approx_coefficients`, Bilen et al. 2016): the frame weights
``α_t = 2(T-t+1) - (T+1)(H_T - H_{t-1})``. They are exactly ``Σ_{t<q} (V_q - V_t)`` written as a
weighted sum of frames (factor 1), i.e. the negative gradient of the hinge term at d = 0 divided by
γ: each V_t appears with sign + in the t-1 pairs where it is the later frame and - in the T-t where it
is the earlier one, so the sum is ``Σ_t (2t - T - 1) V_t``, and I_τ enters every V_t with t >= τ with
weight 1/t, giving ``Σ_{t>=τ} (2 - (T+1)/t) = 2(T-τ+1) - (T+1)(H_T - H_{τ-1})``. Hence,
when ``C <= C* = 1 / max_k (K 1)_k`` every dual variable sits at its bound C and the exact solution
is ``d* = C Σ_k x_k = (γ/λ) Σ_t α_t I_t``: approximate rank pooling is, up to the factor γ/λ, the
exact RankSVM solution in the heavily regularised regime (tested in ``tests/test_rankpool.py``).

All functions here are pure array-in/array-out; pixel scaling is the caller's choice (see
``affpipe/schemas/dynamic.schema.yaml``, key ``pixel_scale``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Accepted KKT residual of the exact solver, in margin units (the target margin is 1): every pair
#: with α = 0 has margin >= 1 - tol, with α = C margin <= 1 + tol, free pairs |margin - 1| <= tol,
#: and 0 - tol*C <= α <= C + tol*C. Measured against the Gram matrix the solver is given (the
#: streaming code of :mod:`affpipe.dynamic.windows` gives float32 dot products; against the float64 Gram
#: matrix the same solutions have residuals up to ~1e-7, see docs/dynamic.md).
KKT_TOLERANCE = 1e-9
#: Smoothing widths of the Huber-hinge continuation: start, factor per stage, last stage tried.
SMOOTHING_START = 0.1
SMOOTHING_FACTOR = 0.1
SMOOTHING_MIN = 1e-14
#: Newton iterations in all, per window (each is one batched r x r solve; 5-20 are typical).
MAX_ITER = 200
#: Ridge added to the Δ Gram matrix (relative to its mean diagonal) before its Cholesky factor.
CHOLESKY_RIDGE = 1e-13
#: A polish is tried only when at most this many times r pairs are free (r = T-1 generically
#: bounds them; the slack admits degenerate windows, e.g. with repeated frames).
FREE_PAIRS_LIMIT = 2
#: Primal-dual active-set corrections tried after each polish (see :func:`_polish`).
POLISH_CORRECTIONS = 4
#: Relative eigenvalue below which a direction of the window's Δ Gram matrix is treated as empty.
EIGEN_RTOL = 1e-13


# --------------------------------------------------------------------------------------------
# Structure matrices
# --------------------------------------------------------------------------------------------
def n_pairs(window: int) -> int:
    """Number of ordered pairs t < q in a window of ``window`` frames: T(T-1)/2."""
    return window * (window - 1) // 2


def rank_gamma(window: int) -> float:
    """γ = 2 / (T (T-1)) of Eq. 3 (one over the number of pairs)."""
    if window < 2:
        raise ValueError("a rank-pooling window needs at least 2 frames")
    return 2.0 / (window * (window - 1))


@functools.lru_cache(maxsize=64)
def pair_indices(window: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (0-based) of the pairs, ``earlier[k] < later[k]``, in row-major order.

    Returns
    -------
    earlier, later : (M,) int64
    """
    earlier, later = np.triu_indices(window, 1)
    earlier.setflags(write=False)
    later.setflags(write=False)
    return earlier, later


@functools.lru_cache(maxsize=64)
def running_mean_matrix(window: int) -> np.ndarray:
    """A with ``V = A I``: ``A[t, τ] = 1/(t+1)`` for ``τ <= t`` (0-based), else 0.

    Returns
    -------
    (T, T) float64
    """
    t = np.arange(window)
    a = np.tril(np.ones((window, window))) / (t + 1.0)[:, None]
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=64)
def pair_difference_matrix(window: int) -> np.ndarray:
    """P with ``(P V)_k = V_later[k] - V_earlier[k]``.

    Returns
    -------
    (M, T) float64
    """
    earlier, later = pair_indices(window)
    p = np.zeros((len(earlier), window))
    rows = np.arange(len(earlier))
    p[rows, later] = 1.0
    p[rows, earlier] = -1.0
    p.setflags(write=False)
    return p


@functools.lru_cache(maxsize=64)
def delta_pair_matrix(window: int) -> np.ndarray:
    """S with ``x_k = V_later - V_earlier = Σ_j S[k, j] Δ_j``, ``Δ_j = I_{j+1} - I_j`` (0-based j).

    ``S = P A B`` with ``B[τ, j] = 1`` if ``j < τ`` (``I_τ = I_0 + Σ_{j<τ} Δ_j``); since ``A B`` is
    ``max(0, t - j) / (t + 1)`` this is built directly.

    Returns
    -------
    (M, T-1) float64
    """
    t = np.arange(window)[:, None]
    j = np.arange(window - 1)[None, :]
    ab = np.maximum(0, t - j) / (t + 1.0)
    earlier, later = pair_indices(window)
    s = ab[later] - ab[earlier]
    s.setflags(write=False)
    return s


def delta_to_frame_weights(coef: np.ndarray) -> np.ndarray:
    """Frame weights w with ``Σ_t w_t I_t = Σ_j c_j Δ_j`` (and ``Σ_t w_t = 0``).

    Parameters
    ----------
    coef : (..., T-1) float
        Coefficients c of the consecutive differences.

    Returns
    -------
    (..., T) float64
    """
    c = np.asarray(coef, dtype=np.float64)
    zero = np.zeros(c.shape[:-1] + (1,))
    padded = np.concatenate([zero, c, zero], axis=-1)
    return padded[..., :-1] - padded[..., 1:]


def frame_to_delta_coefficients(weights: np.ndarray) -> np.ndarray:
    """Coefficients c of the differences with ``Σ_j c_j Δ_j = Σ_t w_t I_t``; needs ``Σ_t w_t = 0``.

    ``c_j = Σ_{τ > j} w_τ`` (suffix sums).

    Parameters
    ----------
    weights : (..., T) float

    Returns
    -------
    (..., T-1) float64
    """
    w = np.asarray(weights, dtype=np.float64)
    suffix = np.cumsum(w[..., ::-1], axis=-1)[..., ::-1]
    return suffix[..., 1:]


def delta_gram_from_frame_gram(frame_gram: np.ndarray) -> np.ndarray:
    """Gram matrix of the consecutive differences from the frames' Gram matrix G.

    ``H = D G Dᵀ`` with D the (T-1, T) difference matrix. Mathematically exact, but it subtracts
    large, nearly equal dot products (``G_{j+1,l+1} - G_{j+1,l} - ...``): prefer computing H from
    the differences themselves (as :mod:`affpipe.dynamic.windows` does) when the frames are at hand.

    Parameters
    ----------
    frame_gram : (..., T, T) float

    Returns
    -------
    (..., T-1, T-1) float64
    """
    g = np.asarray(frame_gram, dtype=np.float64)
    t = g.shape[-1]
    diff = np.diff(np.eye(t), axis=0)  # (T-1, T): row j is e_{j+1} - e_j
    return diff @ g @ diff.T


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Consecutive differences of a window, flattened.

    Parameters
    ----------
    frames : (T, ...) real
        The window's frames (any per-frame shape).

    Returns
    -------
    (T-1, D) float64
    """
    x = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
    return np.diff(x, axis=0)


# --------------------------------------------------------------------------------------------
# Approximate rank pooling (Bilen et al.)
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def approx_coefficients(window: int) -> np.ndarray:
    """Approximate-rank-pooling frame weights ``α_t = 2(T-t+1) - (T+1)(H_T - H_{t-1})``, t = 1..T.

    ``H_t`` is the t-th harmonic number (``H_0 = 0``). The weights sum to zero and equal
    ``Σ_{t<q} (V_q - V_t)`` expressed as a weighted sum of the raw frames.

    Returns
    -------
    (T,) float64
    """
    if window < 2:
        raise ValueError("a rank-pooling window needs at least 2 frames")
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, window + 1))])  # H_0..H_T
    t = np.arange(1, window + 1)
    alpha = 2.0 * (window - t + 1) - (window + 1) * (harmonic[window] - harmonic[t - 1])
    alpha.setflags(write=False)
    return alpha


def approx_rank_pool(frames: np.ndarray) -> np.ndarray:
    """Approximate dynamic image ``Σ_t α_t I_t`` of one window.

    Parameters
    ----------
    frames : (T, ...) real
        The window's frames, oldest first.

    Returns
    -------
    (...) float64
        Same per-frame shape as the input.
    """
    x = np.asarray(frames, dtype=np.float64)
    coef = approx_coefficients(len(x))
    return np.tensordot(coef, x, axes=(0, 0))


# --------------------------------------------------------------------------------------------
# Exact RankSVM
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankSvmSolution:
    """Exact RankSVM solutions of a batch of B windows of T frames (M = T(T-1)/2 pairs).

    Attributes
    ----------
    delta_coef : (B, T-1) float64
        ``d = Σ_j delta_coef[j] Δ_j`` with ``Δ_j = I_{j+1} - I_j``.
    frame_weights : (B, T) float64
        ``d = Σ_t frame_weights[t] I_t`` (they sum to 0).
    alpha : (B, M) float64
        Dual variables, ``0 <= α <= C``, ``d = Σ_k α_k (V_later - V_earlier)``.
    margins : (B, M) float64
        ``<d, V_later - V_earlier>`` per pair (> 0: pair ranked correctly).
    objective : (B,) float64
        Primal objective ``λ/2 ||d||² + γ Σ hinge`` of Eq. 3.
    duality_gap : (B,) float64
        (primal - dual) / primal: a certificate of optimality (0 up to rounding).
    kkt_residual : (B,) float64
        Largest KKT violation in margin units (see :data:`KKT_TOLERANCE`).
    n_upper, n_free, n_lower : (B,) int64
        Pairs with α = C (margin < 1), 0 < α < C (margin = 1) and α = 0 (margin > 1).
    iterations : (B,) int64
        Newton iterations used.
    C : float
        γ/λ, the box bound.
    """

    delta_coef: np.ndarray
    frame_weights: np.ndarray
    alpha: np.ndarray
    margins: np.ndarray
    objective: np.ndarray
    duality_gap: np.ndarray
    kkt_residual: np.ndarray
    n_upper: np.ndarray
    n_free: np.ndarray
    n_lower: np.ndarray
    iterations: np.ndarray
    C: float

    @property
    def ranked_share(self) -> np.ndarray:
        """(B,) share of pairs ranked correctly (margin > 0)."""
        return (self.margins > 0).mean(axis=1)

    @property
    def at_bound_share(self) -> np.ndarray:
        """(B,) share of dual variables at the upper bound C (pairs inside the margin)."""
        return self.n_upper / self.margins.shape[1]


def _pattern(z: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Piece of the smoothed hinge each pair is on: 0 (z <= 0), 1 (quadratic), 2 (linear).

    ``z`` is (B, M), ``delta`` (B, 1).
    """
    return (z > 0).astype(np.int8) + (z >= delta).astype(np.int8)


def _line_search(u: np.ndarray, p: np.ndarray, z: np.ndarray, a: np.ndarray, C: float, delta: np.ndarray) -> np.ndarray:
    """Exact minimiser t >= 0 of ``φ(t) = ½||u + t p||² + C Σ_k h_δ(z_k - t a_k)`` for a batch.

    φ' is piecewise linear and increasing; its slope changes by ±(C/δ) a_k² where a pair enters or
    leaves the quadratic zone of the Huber hinge. Sorting those 2M breakpoints and accumulating
    the slopes finds the root in O(M log M).

    Parameters
    ----------
    u, p : (B, r) float64
        Current point and search direction (a descent direction).
    z, a : (B, M) float64
        ``1 - margins`` at u and ``Z p``.
    delta : (B, 1) float64
        Smoothing width per window.

    Returns
    -------
    (B,) float64
    """
    b, m = z.shape
    k = C / delta[:, 0]
    g0 = np.einsum("br,br->b", u, p) - C * np.einsum("bm,bm->b", a, np.clip(z / delta, 0.0, 1.0))
    quad0 = ((z > 0) & (z < delta)).astype(np.float64)
    a2 = a * a
    slope0 = np.einsum("br,br->b", p, p) + k * np.einsum("bm,bm->b", a2, quad0)
    with np.errstate(divide="ignore", invalid="ignore"):
        times = np.concatenate([z / a, (z - delta) / a], axis=1)
    # y = z - t a: with a < 0 it rises through 0 (enters the quadratic zone), then through δ (leaves)
    enter = np.concatenate([a < 0, a > 0], axis=1)
    change = k[:, None] * np.where(enter, 1.0, -1.0) * np.concatenate([a2, a2], axis=1)
    ok = np.isfinite(times) & (times > 0)
    times = np.where(ok, times, np.inf)
    order = np.argsort(times, axis=1)
    times = np.take_along_axis(times, order, axis=1)
    change = np.take_along_axis(np.where(ok, change, 0.0), order, axis=1)
    slopes = slope0[:, None] + np.concatenate([np.zeros((b, 1)), np.cumsum(change, axis=1)], axis=1)
    t_start = np.concatenate([np.zeros((b, 1)), times], axis=1)  # interval i is [t_start[i], times[i]]
    with np.errstate(invalid="ignore"):
        lengths = times - t_start[:, :-1]
        incr = np.where(np.isfinite(lengths), slopes[:, :-1] * lengths, np.inf)
    deriv = g0[:, None] + np.cumsum(incr, axis=1)  # φ' at the end of interval i
    idx = np.argmax(np.concatenate([deriv >= 0, np.ones((b, 1), bool)], axis=1), axis=1)
    rows = np.arange(b)
    d_start = np.where(idx > 0, deriv[rows, np.maximum(idx - 1, 0)], g0)
    s = slopes[rows, idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = t_start[rows, idx] - d_start / s
    return np.where(s > 0, np.maximum(t, 0.0), 0.0)


def _newton_step(z_mat: np.ndarray, u: np.ndarray, C: float, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Newton step with exact line search on ``½||u||² + C Σ h_δ(1 - Z u)``, for a batch.

    Parameters
    ----------
    z_mat : (B, M, r) float64
    u : (B, r) float64
    delta : (B, 1) float64

    Returns
    -------
    u_new : (B, r) float64
    converged : (B,) bool
        True where ``u_new`` minimises the smoothed objective: the step stayed on one piece of the
        piecewise quadratic, so it landed exactly on that piece's (the global) minimiser.
    """
    r = z_mat.shape[2]
    z = 1.0 - (z_mat @ u[..., None])[..., 0]
    grad = u - C * (np.clip(z / delta, 0.0, 1.0)[:, None, :] @ z_mat)[:, 0]
    zq = _gather_rows(z_mat, (z > 0) & (z < delta))
    hess = np.eye(r) + (C / delta[:, :, None]) * (np.swapaxes(zq, 1, 2) @ zq)
    p = -_solve_batch(hess, grad)
    a = (z_mat @ p[..., None])[..., 0]
    t = _line_search(u, p, z, a, C, delta)
    u_new = u + t[:, None] * p
    z_new = z - t[:, None] * a
    same = (_pattern(z_new, delta) == _pattern(z, delta)).all(axis=1)
    tiny = np.sqrt(np.einsum("br,br->b", grad, grad)) <= 1e-14 * (1.0 + np.sqrt(np.einsum("br,br->b", u, u)))
    return u_new, same | tiny | (t == 0.0)


def _solve_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` for a batch, ``a`` (B, n, n), ``b`` (B, n); least squares where singular."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.empty_like(b)
        for i in range(len(a)):
            try:
                out[i] = np.linalg.solve(a[i], b[i])
            except np.linalg.LinAlgError:
                out[i] = np.linalg.lstsq(a[i], b[i], rcond=None)[0]
        return out


def _gather_rows(z_mat: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of each window's Z selected by a mask, packed first and zero-padded.

    Parameters
    ----------
    z_mat : (B, M, r) float64
    rows : (B, M) bool

    Returns
    -------
    (B, max_b rows_b.sum(), r) float64
    """
    count = int(rows.sum(axis=1).max()) if rows.size else 0
    if count == 0:
        return np.zeros(z_mat.shape[:1] + (0,) + z_mat.shape[2:])
    order = np.argsort(~rows, axis=1, kind="stable")[:, :count]
    sel = np.take_along_axis(rows, order, axis=1)
    return np.take_along_axis(z_mat, order[..., None], axis=1) * sel[..., None]


def _solve_sets(z_mat: np.ndarray, upper: np.ndarray, free: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    """Dual variables for given active sets: α = C on ``upper``, the free α solve their margins = 1.

    The free α are the (minimum-norm) solution of ``K_FF α_F = 1 - C K_FU 1``.

    Parameters
    ----------
    z_mat : (B, M, r) float64
    upper, free : (B, M) bool
        Disjoint; every other pair gets α = 0.

    Returns
    -------
    alpha : (B, M) float64
        Not clipped: free α may leave [0, C] when the sets are wrong.
    solvable : (B,) bool
        False where more than ``FREE_PAIRS_LIMIT * r`` pairs are free (not attempted).
    """
    b, m, r = z_mat.shape
    n_free = free.sum(axis=1)
    solvable = n_free <= FREE_PAIRS_LIMIT * r
    free = free & solvable[:, None]
    alpha = np.where(upper, C, 0.0)
    fmax = int(n_free[solvable].max()) if solvable.any() else 0
    if fmax:
        order = np.argsort(~free, axis=1, kind="stable")[:, :fmax]  # free rows first
        sel = np.take_along_axis(free, order, axis=1)  # (B, fmax) which gathered rows are real
        zf = np.take_along_axis(z_mat, order[..., None], axis=1) * sel[..., None]  # (B, fmax, r)
        v = C * (upper.astype(np.float64)[:, None, :] @ z_mat)[:, 0]  # (B, r)
        rhs = (1.0 - (zf @ v[..., None])[..., 0]) * sel
        kff = zf @ np.swapaxes(zf, 1, 2)
        # identity on the padding rows; a relative ridge far below the data's own rounding keeps
        # K_FF invertible when the free rows are dependent (the solve then approaches the
        # minimum-norm solution, and the KKT check decides whether it is acceptable)
        diag = np.einsum("bii->bi", kff)
        ridge = CHOLESKY_RIDGE * np.maximum(diag.max(axis=1), np.finfo(float).tiny)
        kff += np.eye(fmax) * np.where(sel, ridge[:, None], 1.0)[:, None, :]
        af = _solve_batch(kff, rhs)
        rows = np.repeat(np.arange(b), fmax).reshape(b, fmax)
        alpha[rows[sel], order[sel]] = af[sel]
    return alpha, solvable


def _polish(z_mat: np.ndarray, z: np.ndarray, C: float, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact KKT solve for the active sets a smoothed solution suggests, for a batch.

    Pairs with ``z = 1 - margin >= δ`` start at α = C, pairs with ``z <= 0`` at α = 0, the pairs in
    between are free (:func:`_solve_sets`). Up to :data:`POLISH_CORRECTIONS` primal-dual active-set
    corrections then move every violator (free α outside [0, C] to its bound, bound pairs on the
    wrong side of the margin to the free set) and solve again; from sets that are nearly right this
    converges in one or two rounds.

    Parameters
    ----------
    z_mat : (B, M, r) float64
        Pair vectors in the reduced space.
    z : (B, M) float64
        ``1 - margins`` at the smoothed solution.
    delta : (B,) float64
        Smoothing width the sets are read with (0: every pair with margin <= 1 at C).

    Returns
    -------
    alpha : (B, M) float64
        Dual variables clipped to [0, C] (the best round).
    residual : (B,) float64
        KKT residual of ``alpha`` (margin units).
    """
    b, m, r = z_mat.shape
    delta = np.asarray(delta, dtype=np.float64).reshape(-1, 1)
    upper = z >= delta
    free = (z > 0) & ~upper
    best = np.zeros((b, m))
    best_res = np.full(b, np.inf)
    todo = np.arange(b)
    for _ in range(1 + POLISH_CORRECTIONS):
        zt = z_mat[todo]
        raw, solvable = _solve_sets(zt, upper[todo], free[todo], C)
        alpha = np.clip(raw, 0.0, C)
        res = np.where(solvable, _kkt_residual(zt, alpha, C), np.inf)
        better = res < best_res[todo]
        best[todo[better]] = alpha[better]
        best_res[todo[better]] = res[better]
        keep = (res > KKT_TOLERANCE) & solvable
        if not keep.any():
            break
        # primal-dual active-set update from the unclipped solution
        g = (zt @ (raw[:, None, :] @ zt)[:, 0][..., None])[..., 0] - 1.0  # margins - 1
        up, fr = upper[todo], free[todo]
        lo = ~up & ~fr
        new_up = (fr & (raw > C)) | (up & (g <= 0))
        new_fr = (fr & (raw >= 0) & (raw <= C)) | (lo & (g < 0)) | (up & (g > 0))
        upper[todo], free[todo] = new_up, new_fr
        todo = todo[keep]
    return best, best_res


def _kkt_residual(z_mat: np.ndarray, alpha: np.ndarray, C: float) -> np.ndarray:
    """Largest KKT violation of dual points ``alpha`` (in [0, C]) in margin units, per window.

    Parameters
    ----------
    z_mat : (B, M, r) float64
    alpha : (B, M) float64

    Returns
    -------
    (B,) float64
    """
    u = (alpha[:, None, :] @ z_mat)[:, 0]
    g = (z_mat @ u[..., None])[..., 0] - 1.0
    viol = np.where(alpha <= 0.0, np.maximum(-g, 0.0), np.where(alpha >= C, np.maximum(g, 0.0), np.abs(g)))
    return viol.max(axis=1) if viol.shape[1] else np.zeros(len(alpha))


def gram_root(gram: np.ndarray) -> np.ndarray:
    """A square root R of each Gram matrix of a batch, ``H ≈ R Rᵀ`` (for the reduced pair vectors).

    Cholesky is ~20x cheaper than an eigendecomposition for these tiny matrices; a relative ridge of
    :data:`CHOLESKY_RIDGE` times the mean diagonal (far below the float32 rounding of H itself) keeps
    it defined for singular H (repeated frames), and when it still fails the eigendecomposition is
    used, with eigenvalues below :data:`EIGEN_RTOL` (relative) treated as 0.

    Parameters
    ----------
    gram : (B, n, n) float64
        Symmetric positive semi-definite.

    Returns
    -------
    (B, n, n) float64
    """
    n = gram.shape[-1]
    scale = np.maximum(np.trace(gram, axis1=1, axis2=2) / n, np.finfo(float).tiny)
    ridged = gram + (CHOLESKY_RIDGE * scale)[:, None, None] * np.eye(n)
    try:
        return np.linalg.cholesky(ridged)
    except np.linalg.LinAlgError:
        evals, evecs = np.linalg.eigh(gram)
        top = np.maximum(evals[:, -1:], 0.0)
        evals = np.where(evals > EIGEN_RTOL * n * top, evals, 0.0)
        return evecs * np.sqrt(evals)[:, None, :]


def _reduced_pairs(delta_gram: np.ndarray) -> np.ndarray:
    """Pair vectors in the window's own coordinates: ``Z = S R`` with ``H = R Rᵀ`` (:func:`gram_root`).

    Parameters
    ----------
    delta_gram : (B, T-1, T-1) float64

    Returns
    -------
    (B, M, T-1) float64, with ``Z Zᵀ = K`` (the pair Gram matrix).
    """
    n = delta_gram.shape[-1]
    s = delta_pair_matrix(n + 1)
    return np.einsum("mj,bjr->bmr", s, gram_root(delta_gram))


def solve_pair_qp(z_mat: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dual box QP ``max_α 1ᵀα - ½ αᵀ Z Zᵀ α, 0 <= α <= C`` of a linear RankSVM, for a batch.

    The solver of :func:`solve_ranksvm` for any pair set (the DR ranking bound of
    :mod:`affpipe.dr.ranking` uses it on its bidirectional pairs): starting from α = C for every pair
    (exact when every pair is inside the margin), Newton's method on the Huber-smoothed hinge
    (widths :data:`SMOOTHING_START` times powers of :data:`SMOOTHING_FACTOR` down to
    :data:`SMOOTHING_MIN`), an exact active-set polish after each smoothed problem, until the KKT
    residual is at most :data:`KKT_TOLERANCE` or :data:`MAX_ITER` Newton iterations are spent.

    Parameters
    ----------
    z_mat : (B, M, r) float64
        Pair vectors in a reduced basis (``Z Zᵀ`` = the pairs' Gram matrix), e.g. the pair
        matrix times :func:`gram_root` of the frames' (or differences') Gram matrix.
    C : float
        Box bound γ/λ.

    Returns
    -------
    alpha : (B, M) float64
        Dual variables in [0, C]; the primal solution is ``Σ_k α_k x_k``.
    kkt_residual : (B,) float64
        Largest KKT violation in margin units (reported, never hidden, when above the tolerance).
    iterations : (B,) int64
        Newton iterations used.
    """
    b, m, _ = z_mat.shape
    alpha = np.zeros((b, m))
    residual = np.full(b, np.inf)
    iterations = np.zeros(b, dtype=np.int64)
    # Start from all α = C (Bilen's approximate solution, scaled), which is exact when C <= C*:
    # the first polish (δ = 0) puts every pair with margin <= 1 at C.
    u = C * z_mat.sum(axis=1)
    delta = np.zeros((b, 1))
    todo = np.arange(b)
    stage_done = np.ones(b, dtype=bool)
    while todo.size:
        zt = z_mat[todo]
        if iterations[todo].any():
            u_new, conv = _newton_step(zt, u[todo], C, delta[todo])
            u[todo] = u_new
            stage_done[todo] = conv
        iterations[todo] += 1
        pol = np.flatnonzero(stage_done[todo])  # polish once a smoothed problem is solved
        if pol.size:
            tp = todo[pol]
            z = 1.0 - (zt[pol] @ u[tp][..., None])[..., 0]
            a, res = _polish(zt[pol], z, C, delta[tp, 0])
            better = res < residual[tp]
            alpha[tp[better]] = a[better]
            residual[tp[better]] = res[better]
        todo = todo[(residual[todo] > KKT_TOLERANCE) & (iterations[todo] <= MAX_ITER)]
        # a smoothed problem solved without revealing the active sets: smooth less
        nxt = todo[stage_done[todo]]
        delta[nxt] = np.where(delta[nxt] == 0, SMOOTHING_START, delta[nxt] * SMOOTHING_FACTOR)
        todo = todo[delta[todo, 0] >= SMOOTHING_MIN]
    return alpha, residual, iterations - 1


def solve_ranksvm(delta_gram: np.ndarray, *, lam: float) -> RankSvmSolution:
    """Exact minimiser of Eq. 3 for each window of a batch, from the Gram matrix of its differences.

    Parameters
    ----------
    delta_gram : (B, T-1, T-1) or (T-1, T-1) float
        ``H[j, l] = <Δ_j, Δ_l>`` with ``Δ_j = I_{j+1} - I_j`` (the window's frames oldest first, in
        the pixel scale the problem is to be solved in). Symmetric positive semi-definite.
    lam : float
        λ of Eq. 3 (> 0).

    Returns
    -------
    RankSvmSolution
        Batched results (a leading axis of 1 for a single window). ``kkt_residual`` is at most
        :data:`KKT_TOLERANCE` unless the problem is numerically degenerate (then it is reported, not
        hidden).
    """
    h = np.asarray(delta_gram, dtype=np.float64)
    if h.ndim == 2:
        h = h[None]
    if h.ndim != 3 or h.shape[1] != h.shape[2] or h.shape[1] < 1:
        raise ValueError(f"delta_gram must be (B, T-1, T-1), got {np.shape(delta_gram)}")
    if not lam > 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    h = 0.5 * (h + np.swapaxes(h, 1, 2))
    n = h.shape[1]
    window = n + 1
    C = rank_gamma(window) / lam
    zmat = _reduced_pairs(h)  # (B, M, r)
    alpha, residual, iterations = solve_pair_qp(zmat, C)

    u = np.einsum("bmr,bm->br", zmat, alpha)
    margins = np.einsum("bmr,br->bm", zmat, u)
    norm2 = np.einsum("br,br->b", u, u)
    hinge = np.maximum(0.0, 1.0 - margins).sum(axis=1)
    primal = 0.5 * norm2 + C * hinge
    dual = alpha.sum(axis=1) - 0.5 * norm2
    gap = (primal - dual) / np.maximum(primal, np.finfo(float).tiny)
    coef = np.einsum("mj,bm->bj", delta_pair_matrix(window), alpha)
    upper = alpha >= C
    lower = alpha <= 0.0
    return RankSvmSolution(
        delta_coef=coef,
        frame_weights=delta_to_frame_weights(coef),
        alpha=alpha,
        margins=margins,
        objective=lam * primal,
        duality_gap=gap,
        kkt_residual=residual,
        n_upper=upper.sum(axis=1),
        n_free=(~upper & ~lower).sum(axis=1),
        n_lower=lower.sum(axis=1),
        iterations=iterations,
        C=C,
    )


def exact_rank_pool(frames: np.ndarray, *, lam: float) -> tuple[np.ndarray, RankSvmSolution]:
    """Exact dynamic image of one window (convenience wrapper of :func:`solve_ranksvm`).

    Parameters
    ----------
    frames : (T, ...) real
        The window's frames, oldest first, in the pixel scale of the problem.
    lam : float
        λ of Eq. 3.

    Returns
    -------
    d : (...) float64
        The dynamic image, same per-frame shape as the input.
    solution : RankSvmSolution
        Solver diagnostics (batch of one).
    """
    x = np.asarray(frames)
    delta = frame_differences(x)
    sol = solve_ranksvm(delta @ delta.T, lam=lam)
    d = sol.delta_coef[0] @ delta
    return d.reshape(x.shape[1:]), sol


def pair_vectors(frames: np.ndarray) -> np.ndarray:
    """Explicit pair differences ``V_later - V_earlier`` of one window (for reference solvers).

    Parameters
    ----------
    frames : (T, ...) real

    Returns
    -------
    (M, D) float64
    """
    x = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
    v = running_mean_matrix(len(x)) @ x
    earlier, later = pair_indices(len(x))
    return v[later] - v[earlier]


def ranksvm_objective(d: np.ndarray, frames: np.ndarray, *, lam: float) -> float:
    """Eq. 3 evaluated at ``d`` for one window (reference implementation on explicit pairs).

    Parameters
    ----------
    d : (...) real
        Candidate dynamic image, per-frame shape.
    frames : (T, ...) real
    lam : float
    """
    x = pair_vectors(frames)
    dv = np.asarray(d, dtype=np.float64).ravel()
    hinge = np.maximum(0.0, 1.0 - x @ dv).sum()
    return float(lam / 2 * dv @ dv + rank_gamma(len(frames)) * hinge)
