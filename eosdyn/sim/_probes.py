"""Curvature probes the simulator kernels run inside numba, per trajectory.

These are the in-kernel counterparts of :mod:`eosdyn.curvature` (which is written
once over the array namespace for numpy and torch, and cannot be called from a
numba kernel). They are small and tested against ``eigh`` (tests/test_sim.py).

Method codes (see :data:`eosdyn.rules.base.CURVATURE_METHODS`):
1 exact (eigh of the Hessian), 2 Lanczos (m steps, full reorthogonalisation,
warm-started from the last top Ritz vector), 3 power iteration (m iterations,
warm-started; largest *magnitude*), 4 Hutchinson (mean of uᵀHu over unit random
directions u: an estimate of tr(H)/d, not of λ_max).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._rng import rng_fill_normal


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


@njit
def probe(hess_fn, hvp_fn, theta, params, method, k, m, nsamp, rng, warm, out):
    """Fill out[:k] with the curvature estimate; updates the warm-start vector in place.

    Takes the loss's Hessian and HVP kernels as arguments, so it is compiled
    with the simulator kernel that calls it (not cached on its own).
    """
    d = theta.shape[0]
    if method == 1:
        H = hess_fn(theta, params)
        if not np.all(np.isfinite(H)):
            for i in range(k):
                out[i] = np.nan
            return
        top_eigs_exact(H, k, out)
    elif method == 2:
        mm = min(m, d)
        Q = np.zeros((mm, d))
        alpha = np.zeros(mm)
        beta = np.zeros(mm)
        q = warm.copy()
        if _normalize(q) == 0.0:
            rng_fill_normal(rng, q)
            _normalize(q)
        used = 0
        for j in range(mm):
            Q[j] = q
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
    elif method == 3:
        q = warm.copy()
        if _normalize(q) == 0.0:
            rng_fill_normal(rng, q)
            _normalize(q)
        lam = 0.0
        for _ in range(m):
            w = hvp_fn(theta, q, params)
            lam = np.dot(w, q)
            if _normalize(w) == 0.0:
                break
            q = w
        warm[:] = q
        out[0] = lam
        for i in range(1, k):
            out[i] = lam
    elif method == 4:
        u = np.empty(d)
        acc = 0.0
        for _ in range(nsamp):
            rng_fill_normal(rng, u)
            _normalize(u)
            acc += np.dot(u, hvp_fn(theta, u, params))
        out[0] = acc / nsamp
        for i in range(1, k):
            out[i] = out[0]
