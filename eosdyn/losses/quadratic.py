"""Quadratic loss L(θ) = ½ (θ − c)ᵀ H (θ − c), the linearisation of every loss at a minimum."""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import finite_vector, symmetric
from .base import Loss


@njit(cache=True)
def _value(theta, params):
    H, c = params[0], params[1]
    r = theta - c
    return 0.5 * (r @ (H @ r))


@njit(cache=True)
def _grad(theta, params):
    H, c = params[0], params[1]
    return H @ (theta - c)


@njit(cache=True)
def _grad_into(theta, params, out):
    H, c = params[0], params[1]
    d = theta.shape[0]
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += H[i, j] * (theta[j] - c[j])
        out[i] = acc


@njit(cache=True)
def _grad_block(X, params, G, W):
    # the sums of _grad_into, in the same order, with the trajectories innermost
    H, c = params[0], params[1]
    d, B = X.shape
    for i in range(d):
        for b in range(B):
            G[i, b] = 0.0
        for j in range(d):
            hij = H[i, j]
            cj = c[j]
            for b in range(B):
                G[i, b] += hij * (X[j, b] - cj)


@njit(cache=True)
def _hess(theta, params):
    return params[0].copy()


@njit(cache=True)
def _hvp(theta, v, params):
    return params[0] @ v


class Quadratic(Loss):
    """L(θ) = ½ (θ − c)ᵀ H (θ − c), with gradient H(θ − c) and constant Hessian H.

    Give either the symmetric matrix ``H`` or its eigenvalues ``eigs`` (then H is
    diagonal, H = diag(eigs)). ``center`` c defaults to 0. L* = 0 when H is PSD
    (attained at θ = c); for an indefinite H the loss is unbounded below and
    ``min_value`` is ``-inf``.

    GD with step η converges on it iff η < 2/λ_max(H) (for PSD H).
    """

    name = "quadratic"

    def __init__(self, H=None, eigs=None, center=None):
        if (H is None) == (eigs is None):
            raise ValueError("Quadratic needs exactly one of H (a symmetric matrix) or eigs (its eigenvalues)")
        if H is None:
            e = finite_vector("eigs", eigs)
            H = np.diag(e)
        H = symmetric("H", H)
        d = H.shape[0]
        c = np.zeros(d) if center is None else finite_vector("center", center, d)
        evals = np.linalg.eigvalsh(H)
        min_value = 0.0 if evals[0] >= -1e-12 * max(1.0, abs(evals[-1])) else -np.inf
        super().__init__(_value, _grad, _hess, _hvp, (H, c), d, min_value, grad_into_fn=_grad_into,
                         grad_block_fn=_grad_block)
        self.H = H
        self.center = c
        self.eigenvalues = evals

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])
