"""A ready-made point function for sweeps, the CLI example and the sweep benchmark.

:func:`noisy_gd_quadratic` runs an ensemble of gradient-descent trajectories with
additive Gaussian gradient noise of standard deviation σ on the diagonal quadratic
L(θ) = ½ Σ_i λ_i θ_i², λ_i = λ_max (i+1)/d:

    θ_{t+1} = θ_t − η (H θ_t + σ ξ_t),   ξ_t ~ N(0, I_d),   θ_0 = (1, …, 1).

It is the stepping core's GD with its additive noise (:func:`eosdyn.ensemble` with
``noise=Isotropic(σ)``): under the core's default ``"sgd"`` convention (:mod:`eosdyn.engine.noise`)
a step adds η·B ξ, so gradient noise ησξ is B = σ·I, per-step covariance η²σ²I.

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

from .._validate import nonneg_int, positive

__all__ = ["noisy_gd_quadratic"]


def noisy_gd_quadratic(eta, sigma=0.0, seed=0, n_traj=256, steps=200, dim=8, lam_max=1.0, record_every=10):
    """Ensemble of noisy GD runs on a diagonal quadratic (see the module docstring).

    Returns an :class:`xarray.Dataset` with ``loss`` (ensemble mean of L(θ_t), every
    ``record_every`` steps, along ``step``), ``final_loss`` (its last value) and
    ``diverged`` (fraction of trajectories that diverged or whose final loss is > 1e12).
    """
    import eosdyn

    from ..losses import Quadratic
    from ..rules import GD
    from ..sde.noise import Isotropic

    eta = positive("eta", eta)
    sigma = positive("sigma", sigma, allow_zero=True)
    seed = nonneg_int("seed", seed)
    n_traj = nonneg_int("n_traj", n_traj, minimum=1)
    steps = nonneg_int("steps", steps, minimum=1)
    dim = nonneg_int("dim", dim, minimum=1)
    lam_max = positive("lam_max", lam_max)
    record_every = nonneg_int("record_every", record_every, minimum=1)
    eigs = lam_max * np.arange(1, dim + 1, dtype=np.float64) / dim
    res = eosdyn.ensemble(Quadratic(eigs=eigs), GD(eta), np.ones((n_traj, dim)), steps, record_every=record_every,
                          seed=seed, track_sharpness=False,
                          noise=Isotropic(sigma) if sigma > 0 else None, convention="sgd")
    final = res.loss[:, -1]
    diverged = float(np.mean(res.diverged | ~np.isfinite(final) | (final > 1e12)))
    mean_loss = res.loss.mean(axis=0)
    return xr.Dataset(
        {
            "loss": ("step", mean_loss),
            "final_loss": mean_loss[-1],
            "diverged": diverged,
        },
        coords={"step": res.step},
        attrs={"lam_max": lam_max, "dim": dim, "n_traj": n_traj},
    )
