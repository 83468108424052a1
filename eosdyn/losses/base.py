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

    def kernel_functions(self):
        """(value_fn, grad_into_fn, hess_fn, hvp_fn, params): what the simulator kernels take."""
        return self.value_fn, self.grad_into_fn, self.hess_fn, self.hvp_fn, self.params

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, min_value={self.min_value:g})"


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
