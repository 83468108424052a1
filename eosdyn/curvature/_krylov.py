"""Krylov building blocks shared by the Lanczos eigensolver and SLQ.

The basis is stored row-wise, ``V`` of shape (m+1, dim) in the caller's namespace
(each basis vector contiguous), and the projection in a host float64 array
``Hbar`` of shape (m+1, m) with the Krylov-Schur relation

    A V[:j]ᵀ = V[:j+1]ᵀ Hbar[:j+1, :j]                                   (K)

(Stewart, "A Krylov-Schur algorithm for large eigenproblems", SIAM J. Matrix Anal.
Appl. 23(3), 2001, eq. 2.1). For plain Lanczos ``Hbar[:j, :j]`` is tridiagonal;
after a thick restart (Wu & Simon, SIAM J. Matrix Anal. Appl. 22(2), 2000) its
leading block is diagonal with a spike row. Every vector is orthogonalised
against the whole basis twice (classical Gram-Schmidt with one
reorthogonalisation, "CGS2"; Giraud et al., Numer. Math. 101, 2005), so the basis
stays orthonormal to working precision and (K) holds to O(eps‖A‖).
"""
from __future__ import annotations

import numpy as np


def expand(op, bk, V, Hbar, j):
    """Apply A to ``V[j]`` and orthogonalise against ``V[:j+1]`` (CGS2).

    Stores the projection coefficients in ``Hbar[:j+1, j]`` and returns
    ``(w, beta, wnorm)``: the unnormalised new direction, its norm and ‖A V[j]‖.
    One matvec.
    """
    w = op(V[j])
    wn = bk.norm(w)
    if not np.isfinite(wn):
        raise ValueError("matvec returned non-finite values (NaN or inf)")
    Q = V[: j + 1]
    h = Q @ w
    w = w - h @ Q
    h2 = Q @ w
    w = w - h2 @ Q
    Hbar[: j + 1, j] = bk.to_numpy(h + h2)
    return w, bk.norm(w), wn


def is_breakdown(beta, wn, Hbar, j, eps) -> bool:
    """True when the new direction is rounding noise: span(V[:j]) is invariant.

    Threshold 100·eps·max(‖A v_j‖, max|Hbar|): below it, dropping the coupling
    changes (K) by a backward error of order eps‖A‖.
    """
    scale = max(wn, float(np.abs(Hbar[:j, :j]).max(initial=0.0)))
    return beta <= 100.0 * eps * scale


def random_orthonormal(bk, V, j, seed, index, n):
    """A unit vector orthogonal to ``V[:j]`` from stream (seed, index, index+1, ...).

    Returns ``(vector, next_index)``. Used after a breakdown (invariant subspace).
    """
    for _ in range(8):
        r = bk.random(seed, index, n, "gaussian")
        index += 1
        r0 = bk.norm(r)
        if j > 0:
            Q = V[:j]
            r = r - (Q @ r) @ Q
            r = r - (Q @ r) @ Q
        rn = bk.norm(r)
        if rn > 1e-6 * r0:
            return r / rn, index
    raise RuntimeError("could not draw a vector orthogonal to the Krylov basis")  # pragma: no cover


def symmetric_part(H):
    return 0.5 * (H + H.T)
