"""The loss contract shared by every toy loss, the simulators and the analysis.

A loss is *data plus pure numba functions*. Each kernel function takes the
parameter vector and a tuple of float64 arrays (the loss's data), so a numba
kernel that receives the functions as arguments can call them::

    value_fn(theta, params) -> float
    grad_fn(theta, params)  -> (d,)
    hess_fn(theta, params)  -> (d, d)
    hvp_fn(theta, v, params) -> (d,)
    grad_into_fn(theta, params, out)   (optional: writes ∇L into ``out`` without
                                        allocating; derived from grad_fn if absent)
    grad_block_fn(X, params, G, W)     (optional: ∇L of B points at once in
                                        structure-of-arrays layout, X and G (d, B),
                                        W a (d, B) scratch; column b of G must be
                                        bit-identical to grad_into_fn on column b
                                        of X. With it, `eosdyn.ensemble` runs the
                                        blocked kernel that vectorises across
                                        trajectories.)

Losses of the same family share the same compiled functions (the data differs),
so a kernel is compiled once per family, not once per instance.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validate import finite_vector


class Loss:
    """Base class: a differentiable loss L: R^d -> R with known minimum value L*.

    Attributes
    ----------
    dim : int
        Number of parameters d.
    min_value : float
        L* = inf L (``nan`` where unknown).
    params : tuple of float64 arrays
        The data the kernel functions read.
    value_fn, grad_fn, hess_fn, hvp_fn, grad_into_fn : numba dispatchers
        The kernel functions described in the module docstring.
    grad_block_fn : numba dispatcher or None
        The blocked gradient (module docstring), where the family has one.
    """

    name = "loss"

    #: Degree of L as a polynomial in θ, or None. When set, :meth:`third_derivative` is
    #: exact: the HVP along a line is then a polynomial of known degree in the step.
    polynomial_degree: int | None = None

    def __init__(self, value_fn, grad_fn, hess_fn, hvp_fn, params, dim, min_value, grad_into_fn=None,
                 grad_block_fn=None):
        self.value_fn = value_fn
        self.grad_block_fn = grad_block_fn
        self.grad_fn = grad_fn
        self.grad_into_fn = grad_into_fn if grad_into_fn is not None else grad_into_from_grad(grad_fn)
        self.hess_fn = hess_fn
        self.hvp_fn = hvp_fn if hvp_fn is not None else hvp_from_hess(hess_fn)
        self.params = tuple(np.ascontiguousarray(p, dtype=np.float64) for p in params)
        if len(self.params) == 0:
            self.params = (np.zeros(0),)
        self.dim = int(dim)
        self.min_value = float(min_value)

    # --- the public, checked API -------------------------------------------------
    def _theta(self, theta):
        return finite_vector("theta", theta, self.dim)

    def value(self, theta) -> float:
        """L(θ)."""
        return float(self.value_fn(self._theta(theta), self.params))

    def grad(self, theta) -> np.ndarray:
        """∇L(θ), shape (d,)."""
        return np.asarray(self.grad_fn(self._theta(theta), self.params))

    def hess(self, theta) -> np.ndarray:
        """∇²L(θ), shape (d, d), symmetric."""
        return np.asarray(self.hess_fn(self._theta(theta), self.params))

    def hvp(self, theta, v) -> np.ndarray:
        """∇²L(θ) v, shape (d,)."""
        v = finite_vector("v", v, self.dim)
        return np.asarray(self.hvp_fn(self._theta(theta), v, self.params))

    def sharpness(self, theta) -> float:
        """λ_max(∇²L(θ)), the largest *algebraic* Hessian eigenvalue."""
        return float(np.linalg.eigvalsh(self.hess(theta))[-1])

    def third_derivative(self, theta, u, v) -> np.ndarray:
        """D³L(θ)[u, v, ·] = ∇_θ (uᵀ ∇²L(θ) v), shape (d,).

        With u = v the top Hessian eigenvector this is ∇S, the gradient of the sharpness
        S = λ₁(∇²L) (first-order perturbation theory; Damian, Nichani & Lee, ICLR 2023,
        §2; Cohen et al., ICLR 2025, §3), the quantity central flows and self-stabilization
        are built on. Exact for every built-in loss:

        * polynomial losses (``polynomial_degree`` set: :class:`Quadratic`, :class:`DeepLinear`,
          :class:`ScalarNet`, :class:`ZhuMinimalist`…): ε ↦ ∇²L(θ + εu)v is a polynomial of
          degree m = deg − 2, recovered *exactly* (no truncation error, only rounding)
          from its values at m + 1 Chebyshev nodes, and differentiated at ε = 0;
        * sympy losses: the symbolic third-derivative tensor, compiled;
        * :class:`SqrtLoss`: the chain rule through the base loss's own third derivative.

        Raises TypeError for a loss with no exact third derivative (never falls back to
        finite differences).
        """
        theta = self._theta(theta)
        u = finite_vector("u", u, self.dim)
        v = finite_vector("v", v, self.dim)
        return np.asarray(self._third_derivative(theta, u, v), dtype=np.float64)

    def _third_derivative(self, theta, u, v):
        deg = self.polynomial_degree
        if deg is None:
            raise TypeError(
                f"{type(self).__name__} has no exact third derivative; losses with one: Quadratic, "
                "LeastSquares, DeepLinear, ScalarNet, ZhuMinimalist, LogisticCubic, SympyLoss "
                "(from_sympy), and SqrtLoss of any of these")
        return polynomial_line_derivative(lambda e: self.hvp_fn(theta + e * u, v, self.params), int(deg) - 2,
                                          scale=_line_scale(theta, u), dim=self.dim)

    def kernel_functions(self):
        """(value_fn, grad_into_fn, hess_fn, hvp_fn, params): what the simulator kernels take."""
        return self.value_fn, self.grad_into_fn, self.hess_fn, self.hvp_fn, self.params

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, min_value={self.min_value:g})"


def _line_scale(theta, u):
    """Half-width r of the interpolation interval along u: θ's own scale, at least 1 (in ‖εu‖)."""
    nu = float(np.linalg.norm(u))
    if nu == 0.0:
        return 1.0
    return max(1.0, float(np.max(np.abs(theta)))) / nu


def polynomial_line_derivative(f, degree, scale, dim):
    """p'(0) for a vector polynomial p(ε) = f(ε) of known degree, from degree + 1 values.

    The values at the Chebyshev nodes ε_j = r·cos(π(j + ½)/(m + 1)) determine p exactly;
    p'(0) is read off the Chebyshev interpolant (well conditioned on [−r, r]).
    """
    if degree <= 0:
        return np.zeros(dim)
    m = degree
    nodes = scale * np.cos(np.pi * (np.arange(m + 1) + 0.5) / (m + 1))
    values = np.array([np.asarray(f(e), dtype=np.float64) for e in nodes])      # (m+1, d)
    coef = np.polynomial.chebyshev.chebfit(nodes / scale, values, m)            # (m+1, d)
    dcoef = np.polynomial.chebyshev.chebder(coef, axis=0)
    return np.polynomial.chebyshev.chebval(0.0, dcoef) / scale


_HVP_CACHE: dict = {}
# id(derived kernel) -> (how it was derived, the kernel it wraps); lets the simulator
# regenerate such closures as cacheable module-level code (eosdyn.sim.kernels).
DERIVED: dict = {}


def hvp_from_hess(hess_fn):
    """An hvp kernel ``H(θ) @ v`` built from a Hessian kernel (cached per hess_fn)."""
    key = id(hess_fn)
    if key not in _HVP_CACHE:
        @njit
        def hvp_fn(theta, v, params):
            return hess_fn(theta, params) @ v

        _HVP_CACHE[key] = (hess_fn, hvp_fn)
        DERIVED[id(hvp_fn)] = ("hvp_from_hess", hess_fn)
    return _HVP_CACHE[key][1]


_GRAD_INTO_CACHE: dict = {}


def grad_into_from_grad(grad_fn):
    """An in-place gradient kernel ``out[:] = grad_fn(θ, params)`` (cached per grad_fn)."""
    key = id(grad_fn)
    if key not in _GRAD_INTO_CACHE:
        @njit
        def grad_into_fn(theta, params, out):
            g = grad_fn(theta, params)
            for i in range(out.shape[0]):
                out[i] = g[i]

        _GRAD_INTO_CACHE[key] = (grad_fn, grad_into_fn)
        DERIVED[id(grad_into_fn)] = ("grad_into_from_grad", grad_fn)
    return _GRAD_INTO_CACHE[key][1]
