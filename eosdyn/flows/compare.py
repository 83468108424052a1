"""Comparing GD with its flows: GD's midpoint, Gaussian smoothing, distances and prediction errors.

GD at the edge oscillates; what a flow tracks is the time average. Cohen et al. (ICLR 2025,
§3.2) compare the flow with GD's second-order midpoint

    w*_t = (w_{t−1} + 2 w_t + w_{t+1}) / 4

(the average over a period-two oscillation, to second order) and the flow's predicted
loss with the Gaussian-smoothed GD loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import positive

__all__ = ["midpoint", "smooth", "compare", "FlowComparison"]


def midpoint(theta):
    """w*_t = (w_{t−1} + 2w_t + w_{t+1})/4 for an (R, d) record (endpoints: NaN)."""
    w = np.asarray(theta, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"theta must be an (R, d) record, got shape {w.shape}")
    out = np.full_like(w, np.nan)
    if w.shape[0] >= 3:
        out[1:-1] = (w[:-2] + 2.0 * w[1:-1] + w[2:]) / 4.0
    return out


def smooth(series, sigma=5.0):
    """Gaussian smoothing (standard deviation ``sigma`` records; edges reflected)."""
    from scipy.ndimage import gaussian_filter1d

    sigma = positive("sigma", sigma)
    return gaussian_filter1d(np.asarray(series, dtype=np.float64), sigma, axis=0, mode="nearest")


@dataclass
class FlowComparison:
    """Distances and prediction errors of flows against GD, per step.

    ``step``; ``distance[name]`` = ‖w*_GD(t) − w_flow(t)‖ (GD's midpoint);
    ``loss_rel_error[name]`` = |predicted_loss − smoothed GD loss| / smoothed GD loss;
    ``sigma_sq[name]`` (the flow's top oscillation variance) beside
    ``sigma_sq_measured[name]`` = the smoothed (uᵀ(w_GD − w_flow))², u the flow's top
    eigenvector direction estimated as the top principal direction of w_GD − w_flow;
    ``summary``: per flow, the mean and max relative loss error and the final distance
    over the window given to :func:`compare`.
    """

    step: np.ndarray
    gd_loss_smoothed: np.ndarray
    distance: dict = field(default_factory=dict)
    loss_rel_error: dict = field(default_factory=dict)
    sigma_sq: dict = field(default_factory=dict)
    sigma_sq_measured: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def compare(gd, *flows, names=None, sigma=5.0, window=None) -> FlowComparison:
    """Compare a GD Trajectory (``theta`` recorded every step) with flow Trajectories.

    ``window`` = (first, last) step of the summary (default: the whole common length).
    """
    if gd.theta is None:
        raise ValueError("gd must record theta at every step (simulate(..., record_theta=True, record_every=1))")
    steps_gd = np.asarray(gd.step)
    if len(steps_gd) > 1 and np.any(np.diff(steps_gd) != 1):
        raise ValueError("gd must be recorded at every step (record_every=1)")
    names = list(names) if names is not None else [f.params.get("flow", f"flow{i}") for i, f in enumerate(flows)]
    if len(names) != len(flows):
        raise ValueError(f"names must name each flow: {len(names)} names for {len(flows)} flows")
    R = min([len(gd.step)] + [len(f.step) for f in flows])
    wstar = midpoint(gd.theta[:R])
    Ls = smooth(gd.loss[:R], sigma)
    out = FlowComparison(step=steps_gd[:R].copy(), gd_loss_smoothed=Ls)
    lo, hi = (0, R - 1) if window is None else (int(window[0]), min(int(window[1]), R - 1))
    for name, f in zip(names, flows):
        wf = f.theta[:R]
        dist = np.linalg.norm(wstar - wf, axis=1)
        pred = f.extra.get("predicted_loss", f.loss)[:R]
        err = np.abs(pred - Ls) / np.abs(Ls)
        out.distance[name] = dist
        out.loss_rel_error[name] = err
        if "sigma_sq" in f.extra:
            out.sigma_sq[name] = f.extra["sigma_sq"][:R, 0]
            diff = gd.theta[:R] - wf
            good = np.all(np.isfinite(diff), axis=1)
            if good.sum() >= 2:
                _, _, Vt = np.linalg.svd(diff[good], full_matrices=False)
                proj = diff @ Vt[0]
                out.sigma_sq_measured[name] = smooth(np.where(np.isfinite(proj), proj, 0.0) ** 2, sigma)
        sl = slice(lo, hi + 1)
        out.summary[name] = {"loss_rel_error_mean": float(np.nanmean(err[sl])),
                             "loss_rel_error_max": float(np.nanmax(err[sl])),
                             "distance_final": float(dist[hi]) if np.isfinite(dist[hi]) else float(dist[hi - 1])}
    return out
