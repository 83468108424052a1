"""The noise term of the stepping core and of the SDE integrators, in numba: Σ(θ) = B(θ)B(θ)ᵀ.

**One noise convention, named** (time counted in steps). The stepping core (:mod:`eosdyn.engine`)
adds to a rule's step the term

    θ_{t+1} = F(θ_t) + c_t · B(θ_t) ξ_t,     ξ_t ~ N(0, I_m),   Cov = c_t² Σ(θ_t) per step,

with η_t the step size in force (GD's η) and c_t chosen by the run's ``convention`` — the same
keyword, values and meaning as in :mod:`eosdyn.sde` (:mod:`eosdyn.sde.noise` has the table):

- ``"sgd"`` (the default): c_t = η_t, per-step covariance η_t²Σ. SGD's step θ ← θ − η∇L_B adds
  the noise η(∇L − ∇L_B) of covariance η²Σ_B, so ``MinibatchNoise(data, B)`` (Σ = Σ_B) gives
  SGD's noise scale. For GD this is the Euler step (dt = 1) of Li, Malladi & Arora's SDE of SGD
  (arXiv 2102.12470) written in steps: dθ = −η∇L dt + η·B dW.
- ``"proposal"``: c_t = √η_t, per-step covariance η_tΣ — the EoS-Ada proposal's
  dθ = −η∇L dt + √(ηΣ) dW with t in steps. Its stationary covariance near a minimum is 1/η
  times SGD's for the same Σ (a test shows it: tests/test_sde_conventions.py).

With a rule whose step size changes (EoS-Ada's η_t = α/(λ_t + ε)), c_t follows η_t under
either convention. In physical time τ = tη the ``"sgd"`` SDE reads dθ = −∇L dτ + √η·B dW_τ.

The noise models (:mod:`eosdyn.sde.noise`) hand the kernels a kind code and data; this
module turns them into B(θ)ξ. State-dependent square roots use ``eigh``
(:func:`sqrt_psd`): Σ = V diag(w) Vᵀ, B = V diag(√w₊).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._arrays import copy_matrix
from ..losses.finite_sum import ls_per_example_grad

#: noise kinds understood by the kernels
NONE, ISO, MAT, DIAG, HESS, MB, USER_MAT, USER_DIAG, USER_COV = -1, 0, 1, 2, 3, 4, 5, 6, 7
#: a covariance with λ_min < −PSD_RTOL·max|λ| is not positive semidefinite
PSD_RTOL = 1e-10


@njit(cache=True)
def sqrt_psd(S, scale):
    """B = V diag(√(scale·w₊)) for S = V diag(w) Vᵀ; returns (B, λ_min(S), not_psd flag).

    ``not_psd`` is True when λ_min < −1e-10 · max|w|; negative eigenvalues are clipped
    to 0 in B either way (the caller decides whether to raise).
    """
    w, V = np.linalg.eigh(S)
    d = w.shape[0]
    wmax = 0.0
    for i in range(d):
        if abs(w[i]) > wmax:
            wmax = abs(w[i])
    lam_min = w[0]
    bad = lam_min < -PSD_RTOL * wmax
    B = np.empty((d, d))
    for j in range(d):
        s = np.sqrt(scale * w[j]) if w[j] > 0.0 else 0.0
        for i in range(d):
            B[i, j] = V[i, j] * s
    return B, lam_min, bad


@njit
def noise_matrix(theta, nkind, scal, mb_eigh, hess_fn, pex_fn, umat_fn, ucov_fn, lp, mb_params,
                  mbX, mby, Bout):
    """Bout ← B(θ) for the state-dependent kinds; returns (status, λ_min)."""
    d = theta.shape[0]
    m = Bout.shape[1]
    if nkind == HESS:
        if hess_fn is None:
            return 3, np.nan  # unreachable: constant Hessians are resolved in Python
        else:
            B, lam, bad = sqrt_psd(hess_fn(theta, lp), scal)
            copy_matrix(B, Bout)
            return (2 if bad else 0), lam
    if nkind == MB:
        if pex_fn is None:
            G = ls_per_example_grad(theta, (mbX, mby))
        else:
            G = pex_fn(theta, mb_params)
        n = G.shape[0]
        gbar = np.zeros(d)
        for i in range(n):
            for j in range(d):
                gbar[j] += G[i, j]
        for j in range(d):
            gbar[j] /= n
        if mb_eigh:
            S = np.zeros((d, d))
            for i in range(n):
                for a in range(d):
                    ca = G[i, a] - gbar[a]
                    for b in range(d):
                        S[a, b] += ca * (G[i, b] - gbar[b])
            f = scal / n
            for a in range(d):
                for b in range(d):
                    S[a, b] *= f
            B, lam, bad = sqrt_psd(S, 1.0)
            copy_matrix(B, Bout)
            return 0, lam
        f = np.sqrt(scal / n)
        for i in range(n):
            for j in range(d):
                Bout[j, i] = f * (G[i, j] - gbar[j])
        return 0, 0.0
    if nkind == USER_MAT:
        if umat_fn is None:
            return 3, np.nan
        else:
            U = umat_fn(theta)
            if U.shape[0] != d or U.shape[1] != m:
                return 3, np.nan
            copy_matrix(U, Bout)
            return 0, 0.0
    if nkind == USER_COV:
        if ucov_fn is None:
            return 3, np.nan
        else:
            S = ucov_fn(theta)
            if S.shape[0] != d or S.shape[1] != d:
                return 3, np.nan
            Ss = 0.5 * (S + S.T)
            B, lam, bad = sqrt_psd(Ss, 1.0)
            copy_matrix(B, Bout)
            return (2 if bad else 0), lam
    return 3, np.nan


@njit
def apply_noise(nkind, theta, v, out, scal, nz_mat, nz_vec, Bst):
    """out ← B v for a matrix already known (constant kinds, or Bst for state-dependent ones)."""
    d = out.shape[0]
    if nkind == ISO:
        for j in range(d):
            out[j] = scal * v[j]
    elif nkind == DIAG:
        for j in range(d):
            out[j] = nz_vec[j] * v[j]
    elif nkind == MAT:
        m = nz_mat.shape[1]
        for j in range(d):
            acc = 0.0
            for l in range(m):
                acc += nz_mat[j, l] * v[l]
            out[j] = acc
    else:
        m = Bst.shape[1]
        for j in range(d):
            acc = 0.0
            for l in range(m):
                acc += Bst[j, l] * v[l]
            out[j] = acc


@njit
def diagonal_noise(theta, udiag_fn, sqlr, out):
    """out ← √η·b(θ) for the diagonal user noise; returns False if b has the wrong shape."""
    if udiag_fn is None:
        return False
    else:
        b = udiag_fn(theta)
        if b.shape[0] != out.shape[0]:
            return False
        for j in range(out.shape[0]):
            out[j] = sqlr * b[j]
        return True
