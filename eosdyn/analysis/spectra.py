r"""Power spectra of loss trajectories: the dominant period and the power at period 2.

At the edge of stability the loss oscillates, mostly with period 2 (the iterate
flips across the valley of the top Hessian mode each step; Cohen et al., ICLR 2021,
§3). :func:`oscillation_spectrum` makes this quantitative: the periodogram of the
(detrended) series x_0 … x_{N−1},

    X_k = Σ_n x_n e^{−2πi kn/N},   f_k = k/N cycles per step, k = 0 … ⌊N/2⌋,

as a one-sided power spectrum normalised by Parseval so that Σ_{k≥1} P_k equals the
variance of the detrended series:

    P_k = c_k |X_k|²/N²,  c_k = 2 for 0 < k < N/2, c_k = 1 at k = 0 and at k = N/2.

The period-2 component is the Nyquist bin f = 1/2, X_{N/2} = Σ_n (−1)ⁿ x_n, so
``period2_fraction`` = P_{N/2} / Σ_{k≥1} P_k is the fraction of the fluctuation power
that alternates step by step (1 for a pure flip-flop, 0 for a monotone series). For
odd N the first sample is dropped so that f = 1/2 lies on the grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import choice, finite_vector


@dataclass
class OscillationSpectrum:
    """``frequencies`` (cycles per step, 0 … 1/2), one-sided ``power`` (Parseval-normalised),
    ``dominant_period`` = 1/f at the largest power with f > 0 (inf if the series is
    constant), ``period2_fraction``, ``total_power`` (= variance of the detrended
    series), ``n`` samples used, ``detrend`` and ``log`` as applied."""

    frequencies: np.ndarray
    power: np.ndarray
    dominant_period: float
    period2_fraction: float
    total_power: float
    n: int
    detrend: str
    log: bool


def oscillation_spectrum(loss_series, detrend: str = "linear", log: bool = False) -> OscillationSpectrum:
    """Power spectrum, dominant period and period-2 power fraction of a loss series.

    Parameters
    ----------
    loss_series : 1-D finite array, at least 4 samples.
    detrend : "linear" (default: remove the least-squares line through the two-step means
        (x_n + x_{n+1})/2 — a plain line fit to x would absorb part of a period-2
        oscillation, since Σ n(−1)ⁿ ≠ 0), "mean" or "none".
    log : analyse log(loss) instead (for losses decaying over decades; needs loss > 0).
    """
    x = finite_vector("loss_series", loss_series)
    detrend = choice("detrend", detrend, ("linear", "mean", "none"))
    if x.size < 4:
        raise ValueError(f"loss_series needs at least 4 samples, got {x.size}")
    if log:
        if np.any(x <= 0):
            raise ValueError("loss_series must be > 0 with log=True")
        x = np.log(x)
    if x.size % 2:
        x = x[1:]
    N = x.size
    n = np.arange(N, dtype=float)
    if detrend == "linear":
        # fit the line to the two-step means m = (x_n + x_{n+1})/2 at t = n + ½: they contain no
        # period-2 component, so the trend fit cannot absorb any of the oscillation
        m = 0.5 * (x[:-1] + x[1:])
        A = np.column_stack([np.ones(N - 1), n[:-1] + 0.5])
        coef, *_ = np.linalg.lstsq(A, m, rcond=None)
        x = x - (coef[0] + coef[1] * n)
    elif detrend == "mean":
        x = x - x.mean()
    X = np.fft.rfft(x)
    P = np.abs(X) ** 2 / N**2
    P[1:-1] *= 2.0
    f = np.fft.rfftfreq(N)
    total = float(P[1:].sum())
    if total > 0:
        k = 1 + int(np.argmax(P[1:]))
        dominant = 1.0 / f[k]
        p2 = float(P[-1] / total)
    else:
        dominant = np.inf
        p2 = 0.0
    return OscillationSpectrum(frequencies=f, power=P, dominant_period=float(dominant), period2_fraction=p2,
                               total_power=total, n=N, detrend=detrend, log=bool(log))
