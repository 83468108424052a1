"""Stochastic trace estimators: Hutchinson's, and Hutch++ (its low-rank-deflated variant).

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

Hutch++ (:func:`hutchpp_trace`; Meyer, Musco, Musco & Woodruff, SOSA 2021) spends a
third of its products sketching the top of the spectrum (Q = orth(A S)), takes the trace
there exactly, and runs Hutchinson only on the deflated remainder: relative error
O(1/m) after m products on a positive semi-definite A, against O(1/√m) for Hutchinson.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import choice, nonneg_int
from ._xp import _DISTS, Backend, _torch
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


# ------------------------------------------------------------------------- Hutch++
@dataclass
class HutchPPResult:
    """Hutch++ trace estimate (Meyer, Musco, Musco & Woodruff 2021) and its parts.

    Attributes
    ----------
    estimate : float
        ``low_rank_trace + residual_estimate`` ≈ tr(A).
    low_rank_trace : float
        tr(QᵀAQ), the exact trace of A on the sketched range span(Q).
    residual_estimate : float
        Hutchinson's estimate of tr((I − QQᵀ) A (I − QQᵀ)), the mean of ``samples``.
    standard_error : float
        sample std (ddof=1) of ``samples`` / √(number of samples): the uncertainty of
        the residual part, which is all the randomness left once Q is fixed (nan for
        one sample).
    samples : ndarray (n_residual,)
        gᵢᵀ(I − QQᵀ)A(I − QQᵀ)gᵢ for each residual probe, host float64.
    rank : int
        Number of columns of Q (the sketch size k).
    n_matvecs : int
        Products with A: 2k (AS and AQ) + n_residual.
    dist : str
    dim : int
    """

    estimate: float
    low_rank_trace: float
    residual_estimate: float
    standard_error: float
    samples: np.ndarray
    rank: int
    n_matvecs: int
    dist: str
    dim: int

    @property
    def mean_eigenvalue(self) -> float:
        """tr(A)/dim estimate: the average eigenvalue (not the sharpness)."""
        return self.estimate / self.dim


def _orthonormal_rows(bk, Y):
    """Rows spanning the row space of ``Y`` (k, n), orthonormal, by a reduced QR of Yᵀ."""
    if bk.kind == "numpy":
        Q, _ = np.linalg.qr(Y.T)
        return np.ascontiguousarray(Q.T)
    torch = _torch()
    Q, _ = torch.linalg.qr(Y.T, mode="reduced")
    return Q.T.contiguous()


def hutchpp_trace(matvec, dim, n_matvecs=99, dist="rademacher", seed=0, like=None) -> HutchPPResult:
    """Estimate tr(A) by Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: optimal
    stochastic trace estimation", SOSA 2021, Algorithm 1).

    With a budget of m products, k = ⌊m/3⌋ and probes S ∈ R^{d×k}, G ∈ R^{d×(m−2k)}
    (i.i.d. Rademacher or Gaussian entries):

        Q = orth(A S),   tr(A) ≈ tr(QᵀAQ) + (1/(m−2k)) · tr(Gᵀ(I − QQᵀ) A (I − QQᵀ) G).

    The first term is exact on the range that A S sketches (the top of the spectrum);
    Hutchinson only estimates the trace of the deflated remainder. For symmetric
    positive semi-definite A the relative error is O(1/m) with high probability,
    against O(1/√m) for Hutchinson (Meyer et al., Theorem 1.1 and §1): for a spectrum
    that decays the deflated remainder has a much smaller Frobenius norm, and the
    variance 2‖·‖_F² of Hutchinson's samples (Avron & Toledo 2011) shrinks with it.
    (Unbiasedness: for any fixed Q the second term is an unbiased estimate of the
    remainder's trace, since G is independent of S.)

    Parameters
    ----------
    matvec : callable or square matrix
        ``v -> A v``, A symmetric.
    dim : int
    n_matvecs : int >= 3
        Total budget of products m (k = m // 3 sketch columns, m − 2k residual probes).
    dist : {"rademacher", "gaussian"}
    seed : int
        Sketch column i is vector i of stream ``seed``; residual probe j is vector k + j.
    like : array, optional
        Example array fixing namespace, dtype and device (default numpy float64).

    Returns
    -------
    HutchPPResult
    """
    dist = choice("dist", dist, _DISTS)
    bk = Backend.infer(like)
    op = as_operator(matvec, dim, bk)
    m = nonneg_int("n_matvecs", n_matvecs, minimum=3)
    seed = nonneg_int("seed", seed)
    n = op.dim
    k = min(m // 3, n)
    n_res = m - 2 * k
    AS = bk.zeros((k, n))
    for i in range(k):
        AS[i] = op(bk.random(seed, i, n, dist))
    if not bk.all_finite(AS):
        raise ValueError("matvec returned non-finite values (NaN or inf)")
    Q = _orthonormal_rows(bk, AS)          # (k, n): rows orthonormal
    low = 0.0
    for i in range(k):
        low += bk.dot(Q[i], op(Q[i]))
    samples = np.empty(n_res)
    for j in range(n_res):
        g = bk.random(seed, k + j, n, dist)
        g = g - (Q @ g) @ Q                # (I − QQᵀ) g
        Ag = op(g)
        samples[j] = bk.dot(g, Ag - (Q @ Ag) @ Q)
    if not (np.isfinite(low) and np.all(np.isfinite(samples))):
        raise ValueError("matvec returned non-finite values (NaN or inf)")
    res = float(samples.mean()) if n_res else 0.0
    se = float(samples.std(ddof=1) / np.sqrt(n_res)) if n_res > 1 else float("nan")
    return HutchPPResult(float(low) + res, float(low), res, se, samples, k, op.n, dist, n)
