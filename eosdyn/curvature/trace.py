"""Hutchinson's stochastic trace estimator.

For a random vector v with E[v vᵀ] = I,

    E[vᵀ A v] = E[tr(A v vᵀ)] = tr(A)

(Hutchinson, "A stochastic estimator of the trace of the influence matrix for
Laplacian smoothing splines", Commun. Stat. Simul. Comput. 19(2), 1990). The
estimate is the sample mean of vᵀAv over ``n_samples`` independent probes, with
variance per sample

    Rademacher (±1 entries):  2(‖A‖_F² − Σ_i A_ii²)   (the minimum over such v),
    Gaussian  (N(0, I)):      2‖A‖_F²

(Avron & Toledo, J. ACM 58(2), 2011, §2). Note that tr(A)/dim is the *mean*
eigenvalue of A, not λ_max: averaging vᵀAv over random Gaussian directions says
nothing about the sharpness.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import choice, nonneg_int
from ._xp import _DISTS, Backend
from .operators import as_operator


@dataclass
class HutchinsonResult:
    """Trace estimate and its uncertainty.

    Attributes
    ----------
    estimate : float
        mean of ``samples`` ≈ tr(A).
    standard_error : float
        sample std (ddof=1) / √n_samples (nan for one sample).
    samples : ndarray (n_samples,)
        vᵢᵀ A vᵢ for each probe, host float64.
    n_matvecs : int
    dist : str
    dim : int
    """

    estimate: float
    standard_error: float
    samples: np.ndarray
    n_matvecs: int
    dist: str
    dim: int

    @property
    def mean_eigenvalue(self) -> float:
        """tr(A)/dim estimate: the average eigenvalue (not the sharpness)."""
        return self.estimate / self.dim


def hutchinson_trace(matvec, dim, n_samples=100, dist="rademacher", seed=0, like=None) -> HutchinsonResult:
    """Estimate tr(A) as the mean of vᵀAv over random probes (Hutchinson 1990).

    E[vᵀAv] = tr(A) for any v with E[vvᵀ] = I, so the mean of vᵀAv over Gaussian
    (or Rademacher) v estimates tr(A), and tr(A)/d is the *mean* eigenvalue — not
    λ_max.

    Parameters
    ----------
    matvec : callable or square matrix
        ``v -> A v`` (A symmetric, or not: the estimator only needs E[vvᵀ] = I).
    dim : int
    n_samples : int >= 1
        Number of probes = number of matvecs.
    dist : {"rademacher", "gaussian"}
        Probe distribution; Rademacher has the smaller variance.
    seed : int
        Probe i is vector i of stream ``seed`` (see ``eosdyn.curvature._xp``).
    like : array, optional
        Example array fixing namespace, dtype and device (default numpy float64).

    Returns
    -------
    HutchinsonResult
    """
    dist = choice("dist", dist, _DISTS)
    bk = Backend.infer(like)
    op = as_operator(matvec, dim, bk)
    n_samples = nonneg_int("n_samples", n_samples, minimum=1)
    seed = nonneg_int("seed", seed)
    samples = np.empty(n_samples)
    for i in range(n_samples):
        v = bk.random(seed, i, op.dim, dist)
        samples[i] = bk.dot(v, op(v))
    if not np.all(np.isfinite(samples)):
        raise ValueError("matvec returned non-finite values (NaN or inf)")
    est = float(samples.mean())
    se = float(samples.std(ddof=1) / np.sqrt(n_samples)) if n_samples > 1 else float("nan")
    return HutchinsonResult(est, se, samples, op.n, dist, op.dim)
