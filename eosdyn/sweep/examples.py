"""A ready-made point function for sweeps, the CLI example and the sweep benchmark.

:func:`noisy_gd_quadratic` runs an ensemble of gradient-descent trajectories with
additive Gaussian gradient noise on the diagonal quadratic
L(θ) = ½ Σ_i λ_i θ_i², λ_i = λ_max (i+1)/d:

    θ_{t+1} = θ_t − η (H θ_t + σ ξ_t),   ξ_t ~ N(0, I_d),   θ_0 = (1, …, 1).

Closed forms it is tested against (each coordinate is an AR(1) process with factor
1 − ηλ_i):

* σ = 0: θ_{t,i} = (1 − ηλ_i)^t, so GD diverges iff η > 2/λ_max, the classical
  stability threshold at which the Edge of Stability sits (Cohen et al., "Gradient
  descent on neural networks typically occurs at the edge of stability", ICLR
  2021, §2);
* σ > 0, η < 2/λ_max: E θ_{t,i}² → η σ² / (λ_i (2 − ηλ_i)), hence the stationary
  mean loss Σ_i η σ² / (2 (2 − ηλ_i)) (stationary variance of an AR(1) process).

Noise comes from eosdyn's per-trajectory xoshiro256** streams (:mod:`eosdyn._rng`):
results do not depend on the number of numba threads.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from numba import njit, prange

from .._rng import RNG_STATE_SIZE, rng_fill_normal, rng_init
from .._validate import nonneg_int, positive

__all__ = ["noisy_gd_quadratic"]


@njit(cache=True, parallel=True)
def _noisy_gd_kernel(eta, sigma, seed, eigs, steps, record_every, out):
    n_traj, n_rec = out.shape
    d = eigs.shape[0]
    for k in prange(n_traj):
        s = np.empty(RNG_STATE_SIZE, np.uint64)
        rng_init(np.uint64(seed), np.uint64(k), s)
        theta = np.ones(d)
        xi = np.empty(d)
        r = 0
        for t in range(steps + 1):
            if t % record_every == 0:
                loss = 0.0
                for i in range(d):
                    loss += 0.5 * eigs[i] * theta[i] * theta[i]
                out[k, r] = loss
                r += 1
            if t == steps:
                break
            if sigma > 0.0:
                rng_fill_normal(s, xi)
            for i in range(d):
                g = eigs[i] * theta[i]
                if sigma > 0.0:
                    g += sigma * xi[i]
                theta[i] -= eta * g


def noisy_gd_quadratic(eta, sigma=0.0, seed=0, n_traj=256, steps=200, dim=8, lam_max=1.0, record_every=10):
    """Ensemble of noisy GD runs on a diagonal quadratic (see the module docstring).

    Returns an :class:`xarray.Dataset` with ``loss`` (ensemble mean of L(θ_t), every
    ``record_every`` steps, along ``step``), ``final_loss`` (its last value) and
    ``diverged`` (fraction of trajectories whose final loss is not finite or > 1e12).
    """
    eta = positive("eta", eta)
    sigma = positive("sigma", sigma, allow_zero=True)
    seed = nonneg_int("seed", seed)
    n_traj = nonneg_int("n_traj", n_traj, minimum=1)
    steps = nonneg_int("steps", steps, minimum=1)
    dim = nonneg_int("dim", dim, minimum=1)
    lam_max = positive("lam_max", lam_max)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    eigs = lam_max * np.arange(1, dim + 1, dtype=np.float64) / dim
    n_rec = steps // record_every + 1
    out = np.empty((n_traj, n_rec))
    with np.errstate(over="ignore", invalid="ignore"):
        _noisy_gd_kernel(eta, sigma, seed, eigs, steps, record_every, out)
        final = out[:, -1]
        diverged = float(np.mean(~np.isfinite(final) | (final > 1e12)))
        mean_loss = out.mean(axis=0)
    return xr.Dataset(
        {
            "loss": ("step", mean_loss),
            "final_loss": mean_loss[-1],
            "diverged": diverged,
        },
        coords={"step": np.arange(n_rec) * record_every},
        attrs={"lam_max": lam_max, "dim": dim, "n_traj": n_traj},
    )
