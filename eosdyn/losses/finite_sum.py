"""Finite-sum losses L(θ) = (1/n) Σᵢ ℓᵢ(θ), whose per-example gradients define minibatch noise.

:class:`FiniteSumLoss` extends the :class:`~eosdyn.losses.base.Loss` contract with one
more numba kernel function::

    per_example_grad_fn(theta, params) -> (n, d)    row i = ∇ℓᵢ(θ)

so that :class:`~eosdyn.sde.MinibatchNoise` can form the covariance of the
minibatch gradient at θ inside the SDE kernels, and, optionally, a minibatch kernel::

    batch_fn(theta, params, idx, out) -> L_B(θ)   writes g_B = (1/B) Σ_{k<B} ∇ℓ_{idx[k]}(θ)
                                                  into ``out`` (d,) and returns the batch loss
                                                  L_B = (1/B) Σ_{k<B} ℓ_{idx[k]}(θ)

(idx: int64 (B,), repeats allowed), which the stepping core calls once per step of
:class:`eosdyn.rules.SGD` on the batch it has drawn (:mod:`eosdyn.engine.minibatch`).

:class:`LeastSquares` is the finite-sum loss the SDE engine ships: linear regression

    L(θ) = 1/(2n) Σᵢ (xᵢᵀθ − yᵢ)²,   ℓᵢ(θ) = ½ (xᵢᵀθ − yᵢ)²,
    ∇ℓᵢ(θ) = xᵢ (xᵢᵀθ − yᵢ),   ∇L = Xᵀ(Xθ − y)/n,   ∇²L = XᵀX/n (constant).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import finite_matrix, finite_vector, nonneg_int
from .base import Loss


# --- least-squares kernel functions (params = (X, y, H, b), H = XᵀX/n, b = Xᵀy/n) -----
@njit(cache=True)
def _ls_value(theta, params):
    X, y = params[0], params[1]
    n, d = X.shape
    tot = 0.0
    for i in range(n):
        r = -y[i]
        for j in range(d):
            r += X[i, j] * theta[j]
        tot += r * r
    return 0.5 * tot / n


@njit(cache=True)
def _ls_grad_into(theta, params, out):
    """∇L = Hθ − b (H = XᵀX/n, b = Xᵀy/n precomputed: O(d²) per gradient, not O(nd)); the
    SDE engine's built-in linear drift computes exactly this sum, so both give the same bits."""
    H, b = params[2], params[3]
    d = theta.shape[0]
    for i in range(d):
        acc = -b[i]
        for j in range(d):
            acc += H[i, j] * theta[j]
        out[i] = acc


@njit(cache=True)
def _ls_grad(theta, params):
    out = np.empty(theta.shape[0])
    _ls_grad_into(theta, params, out)
    return out


@njit(cache=True)
def _ls_hess(theta, params):
    return params[2].copy()  # H = XᵀX/n, constant


@njit(cache=True)
def _ls_hvp(theta, v, params):
    return params[2] @ v


@njit(cache=True)
def ls_batch_value_grad(theta, params, idx, out):
    """out ← g_B = (1/B) Σₖ xᵢ(xᵢᵀθ − yᵢ) over i = idx[k]; returns L_B = (1/(2B)) Σₖ (xᵢᵀθ − yᵢ)²
    (one pass over the batch's rows: O(Bd))."""
    X, y = params[0], params[1]
    d = theta.shape[0]
    B = idx.shape[0]
    for j in range(d):
        out[j] = 0.0
    tot = 0.0
    for k in range(B):
        i = idx[k]
        r = -y[i]
        for j in range(d):
            r += X[i, j] * theta[j]
        tot += r * r
        for j in range(d):
            out[j] += X[i, j] * r
    for j in range(d):
        out[j] /= B
    return 0.5 * tot / B


@njit(cache=True)
def ls_per_example_grad(theta, params):
    """Rows ∇ℓᵢ(θ) = xᵢ (xᵢᵀθ − yᵢ) of the least-squares loss, shape (n, d)."""
    X, y = params[0], params[1]
    n, d = X.shape
    G = np.empty((n, d))
    for i in range(n):
        r = -y[i]
        for j in range(d):
            r += X[i, j] * theta[j]
        for j in range(d):
            G[i, j] = X[i, j] * r
    return G


class FiniteSumLoss(Loss):
    """A loss L = (1/n) Σᵢ ℓᵢ with a per-example gradient kernel.

    Extra attributes: ``n_examples`` (n), ``per_example_grad_fn(theta, params) ->
    (n, d)`` (numba), whose row mean must equal ``grad_fn``, and ``batch_fn`` (numba, the
    minibatch kernel of the module docstring, or None), which :class:`eosdyn.rules.SGD` needs
    (with idx = 0 … n − 1 its value and gradient must equal ``value_fn`` and ``grad_fn``).
    """

    name = "finite_sum"

    def __init__(self, value_fn, grad_fn, hess_fn, hvp_fn, params, dim, min_value,
                 per_example_grad_fn, n_examples, grad_into_fn=None, batch_fn=None):
        super().__init__(value_fn, grad_fn, hess_fn, hvp_fn, params, dim, min_value,
                         grad_into_fn=grad_into_fn)
        self.per_example_grad_fn = per_example_grad_fn
        self.n_examples = int(n_examples)
        self.batch_fn = batch_fn

    def batch_value_grad(self, theta, indices):
        """(L_B(θ), g_B(θ)) on the examples ``indices`` (repeats count twice), by ``batch_fn``."""
        if self.batch_fn is None:
            raise TypeError(f"{type(self).__name__} has no minibatch kernel (batch_fn)")
        idx = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.n_examples:
            raise ValueError(f"indices must be a non-empty list of example indices in [0, {self.n_examples})")
        out = np.empty(self.dim)
        val = self.batch_fn(self._theta(theta), self.params, idx, out)
        return float(val), out

    def per_example_grads(self, theta) -> np.ndarray:
        """The (n, d) matrix of per-example gradients ∇ℓᵢ(θ)."""
        return np.asarray(self.per_example_grad_fn(self._theta(theta), self.params))

    def gradient_covariance(self, theta) -> np.ndarray:
        """C(θ) = (1/n) Σᵢ (gᵢ − ḡ)(gᵢ − ḡ)ᵀ, the population covariance of per-example gradients."""
        G = self.per_example_grads(theta)
        Gc = G - G.mean(axis=0)
        return Gc.T @ Gc / G.shape[0]

    def per_example_hessians(self, theta) -> np.ndarray:
        """The (n, d, d) per-example Hessians ∇²ℓᵢ(θ); a subclass that knows them overrides this."""
        raise TypeError(f"{type(self).__name__} does not provide per-example Hessians (needed for batch "
                        f"sharpness and SGD's stability operator); LeastSquares does")

    def minibatch_covariance(self, theta, batch_size, replace=False) -> np.ndarray:
        """Covariance of the minibatch gradient ĝ_B = (1/B) Σ_{i∈batch} gᵢ at θ.

        Sampling B examples uniformly **without** replacement (``replace=False``):
        Cov(ĝ_B) = (n − B) / (B (n − 1)) · C(θ) (finite-population correction);
        **with** replacement (``replace=True``, B i.i.d. uniform draws): C(θ)/B.
        """
        B = minibatch_factor(self.n_examples, batch_size, replace)
        return B * self.gradient_covariance(theta)


def minibatch_factor(n: int, batch_size, replace: bool) -> float:
    """f with Cov(ĝ_B) = f · C(θ): (n − B)/(B(n − 1)) without replacement, 1/B with."""
    B = nonneg_int("batch_size", batch_size, minimum=1)
    if replace:
        return 1.0 / B
    if n < B:
        raise ValueError(f"batch_size must be in [1, n_examples = {n}] when sampling without "
                         f"replacement, got {B}")
    if n == 1:
        return 0.0
    return (n - B) / (B * (n - 1.0))


class LeastSquares(FiniteSumLoss):
    """Linear regression L(θ) = 1/(2n) Σᵢ (xᵢᵀθ − yᵢ)², a finite sum with ℓᵢ = ½(xᵢᵀθ − yᵢ)².

    ∇L = Xᵀ(Xθ − y)/n = Hθ − b (computed in the second form, with H = XᵀX/n and b = Xᵀy/n
    precomputed), ∇²L = H, per-example gradients ∇ℓᵢ = xᵢ(xᵢᵀθ − yᵢ), minibatch value and
    gradient over the batch's rows (:func:`ls_batch_value_grad`, for :class:`eosdyn.rules.SGD`).
    ``min_value`` is the least-squares residual ‖Xθ* − y‖²/(2n) (numpy ``lstsq``).

    Parameters
    ----------
    X : (n, d) array
        The design matrix (one example per row).
    y : (n,) array
        The targets.
    """

    name = "least_squares"
    polynomial_degree = 2

    def __init__(self, X, y):
        X = finite_matrix("X", X)
        n, d = X.shape
        y = finite_vector("y", y)
        if y.shape[0] != n:
            raise ValueError(f"y must have length n = X.shape[0] = {n}, got {y.shape[0]}")
        sol, *_ = np.linalg.lstsq(X, y, rcond=None)
        r = X @ sol - y
        min_value = 0.5 * float(r @ r) / n
        H = X.T @ X / n
        b = X.T @ y / n
        super().__init__(_ls_value, _ls_grad, _ls_hess, _ls_hvp, (X, y, H, b), d, min_value,
                         ls_per_example_grad, n, grad_into_fn=_ls_grad_into, batch_fn=ls_batch_value_grad)
        self.X = X
        self.y = y
        self.H = self.params[2]
        self.b = self.params[3]
        self.minimizer = sol

    def per_example_hessians(self, theta=None) -> np.ndarray:
        """∇²ℓᵢ = xᵢxᵢᵀ (constant in θ), shape (n, d, d); their mean is H."""
        return np.einsum("ni,nj->nij", self.X, self.X)
