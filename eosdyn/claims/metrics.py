"""The proposals' metrics, as plain functions of a run's records (numpy in, numbers out).

* :func:`epochs_to_target` — the first evaluation at which a curve reaches a target
  (DCAO proposal, §2.6: epochs and wall-clock time to 90 % of the best validation accuracy);
* :func:`expected_calibration_error` — ECE with equal-width confidence bins (Guo et al.,
  ICML 2017, eq. 3; the EoS-Ada proposal's calibration metric);
* :func:`oscillation_spectrum` — the periodogram of the detrended log training loss, and
  :func:`high_frequency_fraction`, the share of its power at periods of at most 4 steps
  (the EoS-Ada proposal's loss-oscillation spectrum: at the edge of stability the loss
  oscillates with period 2);
* :func:`loss_fluctuation` and :func:`relative_spread` — the "stability" of the DCAO
  proposal: the spread of the training loss and of λ₁ over time;
* :func:`mean_ci` and :func:`ratio_ci` — 95 % intervals over seeds (Student t; bootstrap).
"""
from __future__ import annotations

import numpy as np


def epochs_to_target(x, curve, target) -> float:
    """The first ``x`` at which ``curve >= target`` (NaN if never; NaN entries never reach it)."""
    x, curve = np.asarray(x, float), np.asarray(curve, float)
    hit = np.flatnonzero(np.nan_to_num(curve, nan=-np.inf) >= target)
    return float(x[hit[0]]) if hit.size else float("nan")


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE = Σ_b (|B_b|/n) |acc(B_b) − conf(B_b)| over ``n_bins`` equal-width confidence bins.

    ``probs`` (n, classes) are predicted probabilities, ``labels`` (n,) the true classes;
    the confidence is the top probability and a bin is (k/n_bins, (k+1)/n_bins].
    """
    probs, labels = np.asarray(probs, float), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (n, classes) with n = len(labels), got {probs.shape} and {labels.shape}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def _detrended_log(loss, window: int):
    y = np.log(np.asarray(loss, float))
    y = y[np.isfinite(y)]
    if y.size < 2 * window + 2:
        return None
    kernel = np.ones(2 * window + 1) / (2 * window + 1)
    trend = np.convolve(y, kernel, mode="valid")
    return y[window:-window] - trend


def oscillation_spectrum(loss, window: int = 8):
    """(frequencies in cycles per step, power) of log L_t minus its (2·window+1)-step moving mean.

    Returns empty arrays when the series is too short (or not positive and finite).
    """
    r = _detrended_log(loss, window)
    if r is None:
        return np.zeros(0), np.zeros(0)
    power = np.abs(np.fft.rfft(r - r.mean())) ** 2
    freqs = np.fft.rfftfreq(r.size)
    return freqs[1:], power[1:]


def high_frequency_fraction(loss, window: int = 8, min_freq: float = 0.25) -> float:
    """Share of the detrended log-loss power at frequencies >= ``min_freq`` (periods <= 4 steps)."""
    f, p = oscillation_spectrum(loss, window)
    if p.size == 0:
        return float("nan")
    if p.sum() <= (1e-12 ** 2) * p.size ** 2:  # no fluctuation beyond rounding: nothing oscillates
        return 0.0
    return float(p[f >= min_freq].sum() / p.sum())


def loss_fluctuation(loss, window: int = 8) -> float:
    """Standard deviation of log L_t around its moving mean: the step-to-step spread of the loss."""
    r = _detrended_log(loss, window)
    return float("nan") if r is None else float(np.std(r))


def relative_spread(x) -> float:
    """Standard deviation over mean of the finite entries (e.g. λ₁ over the second half of training)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size < 2 or x.mean() == 0:
        return float("nan")
    return float(np.std(x, ddof=1) / abs(np.mean(x)))


def mean_ci(values, level: float = 0.95):
    """(mean, low, high): Student-t interval of the mean of the finite values (NaN if < 2)."""
    from scipy import stats

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - h, m + h


def ratio_ci(num, den, level: float = 0.95, n_boot: int = 2000, seed: int = 0):
    """(mean(num)/mean(den), low, high): percentile bootstrap over the seeds of each group.

    A run that never reached its target (NaN) counts as not reaching it: the ratio is then
    NaN unless every run of both groups has a value.
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    if num.size == 0 or den.size == 0 or not (np.all(np.isfinite(num)) and np.all(np.isfinite(den))):
        return float("nan"), float("nan"), float("nan")
    r = float(num.mean() / den.mean())
    rng = np.random.default_rng(seed)
    bn = rng.choice(num, (n_boot, num.size)).mean(axis=1)
    bd = rng.choice(den, (n_boot, den.size)).mean(axis=1)
    ok = bd != 0
    qs = np.quantile(bn[ok] / bd[ok], [0.5 - level / 2, 0.5 + level / 2])
    return r, float(qs[0]), float(qs[1])
