"""Smooth random traces: valence/arousal ground truth and head-motion parameters.

A trace is an Ornstein-Uhlenbeck (OU) process, which reverts to 0 with time constant ``tau_s`` and
has a stationary standard deviation of 1, low-pass filtered by a Gaussian kernel so that it is
smooth from frame to frame (a raw OU path is continuous but rough, unlike a human annotation
trace). Affect traces are then squashed into (-1, 1) with ``tanh(gain * x)``.

Everything here is pure: a :class:`numpy.random.Generator` in, arrays out.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

#: Frames simulated before and after the requested span (in units of the smoothing sigma), so that
#: the Gaussian filter never sees an edge and the first frame is as random as any other.
EDGE_PAD_SIGMAS = 4.0


def ou_process(n: int, *, dt: float, tau_s: float, rng: np.random.Generator) -> np.ndarray:
    """Sample an Ornstein-Uhlenbeck path with unit stationary variance, started in equilibrium.

    Uses the exact discretisation ``x[i+1] = x[i] e^{-dt/tau} + sqrt(1 - e^{-2 dt/tau}) z[i]``.

    Parameters
    ----------
    n : int
        Number of samples.
    dt : float
        Sampling interval (seconds), e.g. ``1 / fps``.
    tau_s : float
        Mean-reversion time constant (seconds), > 0.
    rng : numpy.random.Generator
        Source of randomness (consumes ``n`` normal draws).

    Returns
    -------
    x : (n,) float64
    """
    if n < 0 or dt <= 0 or tau_s <= 0:
        raise ValueError(f"need n >= 0, dt > 0, tau_s > 0 (got n={n}, dt={dt}, tau_s={tau_s})")
    z = rng.standard_normal(n)
    if n == 0:
        return z
    rho = np.exp(-dt / tau_s)
    innov = np.sqrt(1.0 - rho * rho)
    x = np.empty(n)
    x[0] = z[0]  # stationary start: N(0, 1)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + innov * z[i]
    return x


def smooth_trace(
    n: int, *, dt: float, tau_s: float, smooth_s: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth zero-mean trace: an OU path low-pass filtered by a Gaussian of ``smooth_s`` seconds.

    The result is rescaled by the filter's theoretical variance reduction so its stationary
    standard deviation stays 1 whatever ``smooth_s`` is.

    Parameters
    ----------
    n : int
        Number of samples.
    dt : float
        Sampling interval (seconds).
    tau_s : float
        OU time constant (seconds).
    smooth_s : float
        Standard deviation of the Gaussian smoothing kernel (seconds); 0 disables smoothing.
    rng : numpy.random.Generator

    Returns
    -------
    x : (n,) float64
    """
    sigma = smooth_s / dt
    pad = int(np.ceil(EDGE_PAD_SIGMAS * sigma)) if sigma > 0 else 0
    x = ou_process(n + 2 * pad, dt=dt, tau_s=tau_s, rng=rng)
    if sigma <= 0:
        return x
    y = gaussian_filter1d(x, sigma, mode="nearest")[pad : pad + n]
    # Variance of the filtered process: sum_ij w_i w_j rho^|i-j| for the discrete kernel.
    radius = int(np.ceil(EDGE_PAD_SIGMAS * sigma))
    k = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    rho = np.exp(-dt / tau_s)
    var = float(w @ (rho ** np.abs(k[:, None] - k[None, :])) @ w)
    return y / np.sqrt(var)


def affect_trace(
    n: int, *, dt: float, tau_s: float, smooth_s: float, gain: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth valence or arousal trace in (-1, 1): ``tanh(gain * smooth_trace(...))``.

    With ``gain = 1`` the trace has a standard deviation of about 0.6 and reaches beyond +-0.9 a
    few percent of the time, so both extremes occur in most videos of a few time constants.

    Returns
    -------
    y : (n,) float64
        Values strictly inside (-1, 1).
    """
    return np.tanh(gain * smooth_trace(n, dt=dt, tau_s=tau_s, smooth_s=smooth_s, rng=rng))
