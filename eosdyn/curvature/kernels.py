"""The numba curvature module: every curvature probe a numba kernel runs, in one place.

These are the in-kernel counterparts of :mod:`eosdyn.curvature` (which is written
once over the array namespace for numpy and torch, and cannot be called from a
numba kernel). The stepping core (:mod:`eosdyn.engine`) probes a rule's curvature with
:func:`probe`, records the sharpness with :func:`record_curvature`, and the analysis's
deterministic map (:meth:`eosdyn.rules.Rule.map`) uses :func:`top_eigs_exact` and
:func:`mean_curvature`. Tested against ``eigh`` and :func:`eosdyn.curvature.top_eigenpairs`
(tests/test_curvature_kernels.py).

Method codes (see :data:`eosdyn.rules.base.CURVATURE_METHODS`):
1 exact (eigh of the Hessian), 2 Lanczos (m steps, full reorthogonalisation,
warm-started from the last top Ritz vector), 3 power iteration (m iterations,
warm-started; largest *magnitude*), 4 Hutchinson (mean of uᵀHu over unit random
directions u: an estimate of tr(H)/d, not of λ_max), 5 the mean curvature tr(H)/d
itself (Hutchinson's expectation: what the deterministic map of a Hutchinson rule uses).

Preconditioned sharpness: λ_max(P⁻¹H) = λ_max(P^{-1/2} H P^{-1/2}) for a diagonal P > 0
(:func:`preconditioned_hessian`); the matvec form of the same operator, for numpy and
torch, is :func:`eosdyn.curvature.preconditioned`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Normals: eosdyn._rng's ziggurat (CHANGELOG.md). numba's disk cache checks only this file's
# stamp, not the modules it calls: this file changed with the sampler so that cached kernels recompile.
from .._rng import rng_fill_normal

EXACT, LANCZOS, POWER, HUTCHINSON, MEAN = 1, 2, 3, 4, 5


@njit(cache=True)
def top_eigs_exact(H, k, out):
    """Top-k eigenvalues of symmetric H, descending, into out[:k]; returns eigvalsh."""
    ev = np.linalg.eigvalsh(H)
    d = ev.shape[0]
    for i in range(k):
        out[i] = ev[d - 1 - i] if i < d else 0.0
    return ev


@njit(cache=True)
def _normalize(v):
    n = np.sqrt(np.sum(v * v))
    if n > 0:
        v /= n
    return n


@njit(cache=True)
def _start_vector(warm, rng):
    """The unit warm start (last probe's top vector), or a random one where there is none."""
    q = warm.copy()
    if _normalize(q) == 0.0:
        rng_fill_normal(rng, q)
        _normalize(q)
    return q


@njit(cache=True)
def mean_curvature(H, k, out):
    """tr(H)/d into out[:k]: the expectation of Hutchinson's uᵀHu over unit directions u."""
    s = 0.0
    for i in range(H.shape[0]):
        s += H[i, i]
    for i in range(k):
        out[i] = s / H.shape[0]


@njit
def probe(sel_probe, hess_fn, hvp_fn, theta, params, k, m, nsamp, rng, warm, out):
    """Fill out[:k] with the curvature estimate of method ``sel_probe`` (a method code: EXACT,
    LANCZOS, POWER, HUTCHINSON or MEAN); updates the warm-start vector in place.

    Takes the loss's Hessian and HVP kernels as arguments, so it is compiled with the
    simulator kernel that calls it (not cached on its own). In a specialised kernel
    (:func:`eosdyn.codegen.specialise`) the method is a module constant, so numba compiles
    only its branch: EoS-Ada's Lanczos kernel carries no power iteration, no Hutchinson
    estimator and no dense eigensolver of the Hessian.
    """
    d = theta.shape[0]
    if sel_probe == EXACT or sel_probe == MEAN:
        H = hess_fn(theta, params)
        if not np.all(np.isfinite(H)):
            for i in range(k):
                out[i] = np.nan
            return
        if sel_probe == EXACT:
            top_eigs_exact(H, k, out)
        else:
            mean_curvature(H, k, out)
    elif sel_probe == LANCZOS:
        mm = min(m, d)
        Q = np.zeros((mm, d))
        alpha = np.zeros(mm)
        beta = np.zeros(mm)
        q = _start_vector(warm, rng)
        used = 0
        for j in range(mm):
            for i in range(d):  # not Q[j] = q: a slice assignment costs seconds to compile (eosdyn._arrays)
                Q[j, i] = q[i]
            w = hvp_fn(theta, q, params)
            a = np.dot(w, q)
            alpha[j] = a
            used = j + 1
            # full reorthogonalisation (twice is enough)
            for _ in range(2):
                for i in range(j + 1):
                    w -= np.dot(w, Q[i]) * Q[i]
            b = np.sqrt(np.dot(w, w))
            if j + 1 < mm:
                if b <= 1e-12 * (abs(a) + 1.0):
                    # The Krylov space is invariant (e.g. warm-started at an exact
                    # eigenvector): continue in a fresh random direction orthogonal to it,
                    # with a zero coupling, so the other top eigenvalues are still found.
                    beta[j] = 0.0
                    w = np.empty(d)
                    rng_fill_normal(rng, w)
                    for _ in range(2):
                        for i in range(j + 1):
                            w -= np.dot(w, Q[i]) * Q[i]
                    b = np.sqrt(np.dot(w, w))
                else:
                    beta[j] = b
                q = w / b
        T = np.zeros((used, used))
        for i in range(used):
            T[i, i] = alpha[i]
            if i + 1 < used:
                T[i, i + 1] = beta[i]
                T[i + 1, i] = beta[i]
        ev, ew = np.linalg.eigh(T)
        for i in range(k):
            out[i] = ev[used - 1 - i] if i < used else ev[0]
        # warm start: the top Ritz vector
        top = ew[:, used - 1]
        warm[:] = 0.0
        for i in range(used):
            warm += top[i] * Q[i]
    elif sel_probe == POWER:
        q = _start_vector(warm, rng)
        lam = 0.0
        for _ in range(m):
            w = hvp_fn(theta, q, params)
            lam = np.dot(w, q)
            if _normalize(w) == 0.0:
                break
            q = w
        for i in range(d):
            warm[i] = q[i]
        out[0] = lam
        for i in range(1, k):
            out[i] = lam
    elif sel_probe == HUTCHINSON:
        u = np.empty(d)
        acc = 0.0
        for _ in range(nsamp):
            rng_fill_normal(rng, u)
            _normalize(u)
            acc += np.dot(u, hvp_fn(theta, u, params))
        out[0] = acc / nsamp
        for i in range(1, k):
            out[i] = out[0]


@njit(cache=True)
def preconditioned_hessian(H, P):
    """P^{-1/2} H P^{-1/2} for a diagonal P (d,): same eigenvalues as P⁻¹H, symmetric.

    Returns an all-NaN matrix when some P_i is not > 0 (λ_max(P⁻¹H) is undefined there).
    """
    d = H.shape[0]
    S = np.empty_like(H)
    for i in range(d):
        if not P[i] > 0.0:
            S[:, :] = np.nan
            return S
    for i in range(d):
        si = 1.0 / np.sqrt(P[i])
        for j in range(d):
            S[i, j] = si * H[i, j] / np.sqrt(P[j])
    return S


@njit(cache=True)
def record_curvature(H, pre, r, out_sharp, out_l2, out_psharp):
    """Record r of λ₁, λ₂ of H and, for preconditioned rules, λ_max(P^{-1/2} H P^{-1/2}).

    ``pre`` is P (d,), or None for a rule without a preconditioner (a separate, smaller
    specialisation: no preconditioned-sharpness code).

    A Hessian with a non-finite entry never reaches LAPACK: the record's curvature is
    NaN (divergence is decided by θ, the gradient and the loss; a +inf Hessian is
    legitimate, e.g. SqrtLoss exactly at L = L*). So is the preconditioned sharpness
    where P has an entry that is not > 0 (Adam with eps = 0 on a coordinate whose
    gradient has always been 0).
    """
    if not np.all(np.isfinite(H)):
        if out_sharp.shape[0] > 0:
            out_sharp[r] = np.nan
        if out_l2.shape[0] > 0:
            out_l2[r] = np.nan
        if pre is not None:
            if out_psharp.shape[0] > 0:
                out_psharp[r] = np.nan
        return
    ev = np.linalg.eigvalsh(H)
    d = ev.shape[0]
    if out_sharp.shape[0] > 0:
        out_sharp[r] = ev[d - 1]
    if out_l2.shape[0] > 0:
        out_l2[r] = ev[d - 2] if d > 1 else np.nan
    if pre is not None:  # (None: a rule without a preconditioner; numba leaves this branch out)
        if out_psharp.shape[0] > 0:
            S = preconditioned_hessian(H, pre)
            out_psharp[r] = np.linalg.eigvalsh(S)[d - 1] if np.isfinite(S[0, 0]) else np.nan
