r"""Scalar deep network L(w) = ½ (w_1 w_2 ⋯ w_D − y)², with O(D) gradient and HVP kernels.

The depth-D scalar (1-wide) linear network fitting one target y is the smallest model
with a *manifold of minima of varying sharpness*, the setting in which gradient descent
at the edge of stability drifts towards flatter minima (e.g. Kreisler, Nacson, Soudry &
Carmon, ICML 2023, "Gradient descent monotonically decreases the sharpness of gradient
flow solutions in scalar networks and beyond", who study this scalar network). It is the DeepLinear special case X = [[1]], Y = [[y]], all
widths 1, with dedicated prefix/suffix-product kernels because it is run for 10⁶ steps.

With p = ∏_i w_i, r = p − y and q_i = ∏_{j≠i} w_j (= ∂p/∂w_i):

    ∇L = r q,
    ∇²L = q qᵀ + r S,   S_ij = ∏_{k≠i,j} w_k (i ≠ j),  S_ii = 0.

On the manifold p = y the Hessian is the rank-one matrix q qᵀ, so its sharpness is
λ_max = ‖q‖² = Σ_i ∏_{j≠i} w_j² (:meth:`ScalarNet.manifold_sharpness`). At the balanced
minimum |w_i| = |y|^{1/D} this is D·|y|^{2(D−1)/D} (:meth:`ScalarNet.balanced_sharpness`),
the flattest point of the manifold (on it q_i = y/w_i, so ∏_i q_i² = y^{2(D−1)} and
AM–GM gives ‖q‖² ≥ D·|y|^{2(D−1)/D}, with equality iff all |w_i| are equal). ``ScalarNet(2, 1.0)`` — L = ½(xy − 1)², minima
xy = 1 of sharpness x² + y² — is the 2-D loss with a manifold of minima of varying
sharpness used for phase-plane figures.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import in_range, nonneg_int
from .base import Loss


@njit(cache=True)
def _excl_products(w):
    """q_i = ∏_{j≠i} w_j by prefix/suffix products (no division, exact at w_i = 0)."""
    D = w.shape[0]
    q = np.empty(D)
    acc = 1.0
    for i in range(D):
        q[i] = acc
        acc *= w[i]
    acc = 1.0
    for i in range(D - 1, -1, -1):
        q[i] *= acc
        acc *= w[i]
    return q


@njit(cache=True)
def _sn_value(theta, params):
    p = 1.0
    for i in range(theta.shape[0]):
        p *= theta[i]
    r = p - params[0][0]
    return 0.5 * r * r


@njit(cache=True)
def _sn_grad(theta, params):
    # one allocation: out_i = prefix_i, then × suffix_i × r on the way back
    D = theta.shape[0]
    out = np.empty(D)
    acc = 1.0
    for i in range(D):
        out[i] = acc
        acc *= theta[i]
    r = acc - params[0][0]
    acc = r
    for i in range(D - 1, -1, -1):
        out[i] *= acc
        acc *= theta[i]
    return out


@njit(cache=True)
def _sn_hess(theta, params):
    D = theta.shape[0]
    q = _excl_products(theta)
    p = 1.0
    for i in range(D):
        p *= theta[i]
    r = p - params[0][0]
    H = np.empty((D, D))
    w2 = theta.copy()
    for i in range(D):
        H[i, i] = q[i] * q[i]
        # ∏_{k≠i,j} w_k = (∏_{k≠j} of w with w_i := 1)
        w2[i] = 1.0
        s = _excl_products(w2)
        w2[i] = theta[i]
        for j in range(i + 1, D):
            h = q[i] * q[j] + r * s[j]
            H[i, j] = h
            H[j, i] = h
    return H


@njit(cache=True)
def _sn_hvp(theta, v, params):
    # forward mode on the prefix/suffix products: dq_i = d/dt ∏_{j≠i}(w_j + t v_j)
    D = theta.shape[0]
    pre = np.empty(D + 1)
    dpre = np.empty(D + 1)
    suf = np.empty(D + 1)
    dsuf = np.empty(D + 1)
    pre[0] = 1.0
    dpre[0] = 0.0
    for i in range(D):
        pre[i + 1] = pre[i] * theta[i]
        dpre[i + 1] = dpre[i] * theta[i] + pre[i] * v[i]
    suf[D] = 1.0
    dsuf[D] = 0.0
    for i in range(D - 1, -1, -1):
        suf[i] = suf[i + 1] * theta[i]
        dsuf[i] = dsuf[i + 1] * theta[i] + suf[i + 1] * v[i]
    r = pre[D] - params[0][0]
    qv = 0.0
    for i in range(D):
        qv += pre[i] * suf[i + 1] * v[i]
    out = np.empty(D)
    for i in range(D):
        q = pre[i] * suf[i + 1]
        dq = dpre[i] * suf[i + 1] + pre[i] * dsuf[i + 1]
        out[i] = qv * q + r * dq
    return out


class ScalarNet(Loss):
    r"""Depth-D scalar network L(w) = ½ (∏_{i=1}^{D} w_i − y)², w ∈ R^D; L* = 0.

    Parameters
    ----------
    depth : int >= 1
        Number of scalar layers D (= ``dim``).
    target : float
        The target y (any finite real; the minimum manifold is ∏ w_i = y).

    See the module docstring for the gradient/Hessian formulas and the sharpness of the
    minimum manifold.
    """

    name = "scalar_net"

    def __init__(self, depth, target=1.0):
        depth = nonneg_int("depth", depth, minimum=1)
        y = in_range("target", target, -np.inf, np.inf, lo_open=True, hi_open=True)
        super().__init__(_sn_value, _sn_grad, _sn_hess, _sn_hvp, (np.array([y]),), depth, 0.0)
        self.depth = depth
        self.target = y

    def manifold_sharpness(self, theta) -> float:
        r"""λ_max of the Hessian at a point of the minimum manifold ∏ w_i = y: ‖∇_w ∏w‖² = Σ_i ∏_{j≠i} w_j².

        Exact on the manifold (where ∇²L = q qᵀ). Off the manifold it is the
        Gauss–Newton sharpness ‖q‖², not λ_max of the full Hessian (use :meth:`sharpness`).
        """
        q = _excl_products(self._theta(theta))
        return float(q @ q)

    def balanced_minimum(self) -> np.ndarray:
        """The balanced minimiser |w_i| = |y|^{1/D} (w_1 carries the sign of y)."""
        w = np.full(self.depth, abs(self.target) ** (1.0 / self.depth))
        if self.target < 0:
            w[0] = -w[0]
        return w

    def balanced_sharpness(self) -> float:
        """λ_max at the balanced minimum: D·|y|^{2(D−1)/D}, the smallest sharpness on the manifold."""
        D = self.depth
        return float(D * abs(self.target) ** (2.0 * (D - 1) / D))

    def __repr__(self):
        return f"ScalarNet(depth={self.depth}, target={self.target:g})"
